"""Side-by-side benchmarks of tokrl against TRL: `python -m benchmarks [--quick]`. See benchmarks/README.md."""
