"""Benchmark cases. Every module here is imported by `benchmarks.registry.load_cases` and registers its cases."""
