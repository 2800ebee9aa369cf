"""Benchmarks of the task store beside the raw drivers and kombu's SQLAlchemy transport.

Run ``python -m bench.run`` (or ``make bench``) from the repository root; see bench/README.md.
"""
