"""Launchers behind one contract (contract.Launcher). A plain dict registry, no string imports."""

from bench.launchers.contract import Launcher
from bench.launchers.options import LaunchOptions
from bench.launchers.local import LocalLauncher
from bench.launchers.slurm import SlurmLauncher
from bench.launchers.torchrun import TorchrunLauncher

LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "torchrun": TorchrunLauncher, "slurm": SlurmLauncher}

__all__ = ["LAUNCHERS", "LaunchOptions", "Launcher"]
