"""Training echo-tiny on the synthetic world: stage 1 (full tokens), stage 2 (CS2 with STE)."""
