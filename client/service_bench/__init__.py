"""Service benchmarks (`echo-bench load|soak|faults|fuzz`): real processes, real clients, loopback."""
