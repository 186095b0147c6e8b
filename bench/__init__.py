"""Benchmarks (``make bench``): each module's ``main()`` returns a markdown table."""
