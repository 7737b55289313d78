"""Launchers behind one contract (contract.Launcher), made by name: `make("slurm", options, partition=...)`.
A plain dict registry, no string imports. Callers (bench's sweeps, envcheck --nodes) import this
factory, not each other."""

from stackbench.bench.launchers.contract import Launcher
from stackbench.bench.launchers.local import LocalLauncher
from stackbench.bench.launchers.options import LaunchOptions
from stackbench.bench.launchers.slurm import Allocation, SlurmLauncher, SlurmSettings, StepLauncher
from stackbench.bench.launchers.torchrun import TorchrunLauncher, TorchrunSettings
from stackbench.core.errors import ConfigError

LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "torchrun": TorchrunLauncher, "slurm": SlurmLauncher}


def make(name: str, options: LaunchOptions | None = None, **settings) -> Launcher:
    """The launcher called `name`, supervising runs by `options`, with its own settings by name, the
    fields of its settings dataclass (TorchrunSettings: hostfile, ssh_options; SlurmSettings:
    partition, account, exclusive, sbatch_args, gpus, container_image, poll_s, ask_cluster)."""
    if name not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {name!r}", where="--launcher", fix=f"use {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name](options, **settings)


def in_allocation(options: LaunchOptions | None = None) -> StepLauncher | None:
    """The slurm launcher for runs inside the allocation this process holds (SLURM_JOB_ID), or None
    outside one."""
    allocation = Allocation.from_env()
    return StepLauncher(options, allocation) if allocation else None


__all__ = ["LAUNCHERS", "LaunchOptions", "Launcher", "SlurmSettings", "TorchrunSettings", "in_allocation", "make"]
