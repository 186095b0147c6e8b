"""The project's common library: settings, wire names, domain math, models, framework."""
