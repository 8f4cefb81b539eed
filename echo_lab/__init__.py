"""echo_lab: the research kit around Echo, apart from the serving library.

world/ renders the synthetic audio-visual world, train/ trains echo-tiny on it, bench/ holds
the library benchmarks; service_bench/, fuzz/, launch/ and live/ run, measure and attack a
live `echo-server` from outside (`echo-bench`, `echo-train`, `echo-demo`). `echo_core` never
imports it.
"""
