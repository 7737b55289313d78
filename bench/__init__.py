"""Sweeps: a matrix of run configs, launched through a Launcher, collected as result records."""
