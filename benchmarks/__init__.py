"""Benchmarks: streamproxy side by side with nginx and FastAPI + uvicorn, on loopback.

Run with `make bench` (full, written to `benchmarks/RESULTS.md`) or `make bench-quick`
(smaller sizes, one round, written to `benchmarks/out/`). See `benchmarks/README.md`.
"""
