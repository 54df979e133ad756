"""Benchmarks: streamproxy side by side with nginx and FastAPI on this machine."""
