"""Before and between runs: will it fit (fit, plan), how fast (calibrate), what to run next (autotune)."""
