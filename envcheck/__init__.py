"""Checks of the training stack. `fingerprint()` says what a run ran on; records embed it."""
