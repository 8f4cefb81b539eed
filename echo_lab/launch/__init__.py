"""Local processes for benchmarks and tests: `echo-server` and `redis-server` on free loopback ports."""
