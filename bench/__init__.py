"""Sweeps: a matrix of run specs, launched through a Launcher, collected as result records."""
