"""Service benchmarks (`echo-bench load|soak|faults|fuzz|flood|voice|live-accuracy|speech-latency`).

Real processes, real clients, loopback.
"""
