"""A tiny component service used by the framework's own tests."""
