"""Launchers behind one contract (contract.Launcher). A plain dict registry, no string imports."""

from stackbench.bench.launchers.contract import Launcher
from stackbench.bench.launchers.options import LaunchOptions
from stackbench.bench.launchers.local import LocalLauncher
from stackbench.bench.launchers.slurm import SlurmLauncher
from stackbench.bench.launchers.torchrun import TorchrunLauncher

LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "torchrun": TorchrunLauncher, "slurm": SlurmLauncher}

__all__ = ["LAUNCHERS", "LaunchOptions", "Launcher"]
