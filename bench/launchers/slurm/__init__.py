"""slurm: one sbatch job per run (launcher.py)."""

from stackbench.bench.launchers.slurm.launcher import *  # noqa: F401,F403
from stackbench.bench.launchers.slurm.launcher import _slurm, _submit, directive, partition_memory_gib  # noqa: F401
