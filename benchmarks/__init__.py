"""Benchmarks: scripts that print figures (docs/performance.md). Run them as modules from the repository root, e.g.
`python -m benchmarks.bench_train`; the clocks and memory meters they share are in `benchmarks/timing.py`."""
