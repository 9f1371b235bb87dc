"""Benchmark harness: ``make bench`` (``python -m benchmarks.bench``)."""
