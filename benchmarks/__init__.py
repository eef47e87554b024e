"""Benchmarks: run each as a module from the checkout's root, `.venv/bin/python -m benchmarks.<name>`.

Shared helpers are in `benchmarks.common`; readings of processes come from `tests.support.proc`.
"""
