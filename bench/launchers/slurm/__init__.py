"""slurm: one sbatch job per run (launcher.py: SlurmLauncher), its settings (settings.py), its
script (script.py, pure), the Slurm commands (scheduler.py, the only place that runs them), and
following a job (follow.py: a pure decide() and the loop around it)."""

from stackbench.bench.launchers.slurm.launcher import SlurmLauncher
from stackbench.bench.launchers.slurm.scheduler import partition_memory_gib
from stackbench.bench.launchers.slurm.settings import SlurmSettings, directive
from stackbench.bench.launchers.slurm.steps import Allocation, StepLauncher

__all__ = ["Allocation", "SlurmLauncher", "SlurmSettings", "StepLauncher", "directive", "partition_memory_gib"]
