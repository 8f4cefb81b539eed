"""Benchmarks behind the `echo-bench` command."""
