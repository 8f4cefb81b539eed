"""Fuzzers that attack a live server: hostile messages, hostile clients, odd media (`echo-bench fuzz`)."""
