"""Benchmarks (run as scripts: `.venv/bin/python benchmarks/<name>.py`); a package so mypy sees one module name."""
