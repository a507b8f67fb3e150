"""Sections of benchmarks/gpu_acceptance.py (the full-size acceptance run; docs/performance.md)."""
