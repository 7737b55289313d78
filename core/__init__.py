"""The bottom layer: what every folder may import and what imports nothing of ours.

errors (people-facing errors, exit codes), config (the one run config), record (the result
record: one factory, atomic io, validation, to_row), formulas (FLOPs, MFU, peaks), memory_model,
stack (the one list of packages, read without importing them), fingerprint (what a run ran on),
host (units, ports, memory of this host).
"""
