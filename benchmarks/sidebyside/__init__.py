"""The side-by-side benchmark harness (run it through benchmarks/bench.py)."""
