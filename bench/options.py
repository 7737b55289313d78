"""How a sweep runs (not what a run is: that is core.config.RunConfig): where records go, the
launcher and its settings, deadlines, the preflight, the fit check. One dataclass: the
`invoke bench` flags beside the knobs come from it, and so do the launchers' options."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from stackbench.core.errors import ConfigError

# a sweep is a folder of the results directory: one path component, nothing a shell reads
SWEEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}")


def option(default: Any, help: str, *, iterable: bool = False) -> Any:
    meta = {"help": help, "iterable": iterable}
    return field(default_factory=tuple, metadata=meta) if iterable else field(default=default, metadata=meta)


class Options:
    """What a command takes beside the run config's knobs: one dataclass per command, its flags
    derived from its fields (tasks.py), read from invoke's keyword arguments by `from_flags`."""

    command = ""

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def from_flags(cls, flags: dict[str, Any]):
        """From invoke's keyword arguments: numbers arrive as text (so a mistyped one is an error
        naming its flag, not invoke's traceback), the rest as they are."""
        kinds = {"float": float, "int": int}
        values = {}
        for f in cls.fields():
            if f.name not in flags:
                continue
            value, kind = flags[f.name], kinds.get(str(f.type))
            if kind and isinstance(value, str):
                try:
                    value = kind(value)
                except ValueError:
                    raise ConfigError(f"cannot read {value!r} as {'an integer' if kind is int else 'a number'}",
                                      where="--" + f.name.replace("_", "-"), fix=f"e.g. {f.default}") from None
            values[f.name] = value
        unknown = set(flags) - set(values)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}", fix=f"see ./sb --help {cls.command}")
        return cls(**values)


GPU_MEM_HELP = "GiB of one GPU for the fit check (H100 80, H200 141)"
HOST_MEM_HELP = ("GiB of RAM of one node, for what offload keeps on the host (pinned included); default: read from "
                 "Slurm (sinfo RealMemory) with --partition or the slurm launcher, else unchecked")


@dataclass(kw_only=True, frozen=True)
class BenchOptions(Options):
    launcher: str = option("local", "local (emulated nodes on this host), torchrun (hosts from --hostfile, over ssh) "
                                    "or slurm (sbatch)")
    results: str = option("results", "directory for records and logs")
    sweep: str = option("", "sweep name (default: derived from the matrix and launcher, so re-running resumes)")
    deadline: float = option(900.0, "seconds one run may take before it is killed and recorded as timeout")
    dry_run: bool = option(False, "print the plan and the launch commands, run nothing")
    script_only: str = option("", "write each run's script (sbatch-ready for slurm, per-node commands otherwise) "
                                  "into this folder, one file per run, and run nothing; without a folder: the one "
                                  "run's script on stdout. Runs the memory model says cannot fit are left out")
    preflight: bool = option(True, "join + all-reduce check of every node before each node count's runs "
                                   "(--no-preflight skips)")
    preflight_deadline: float = option(30.0, "seconds every node gets to join the preflight (and for its all-reduce)")
    queue_timeout: float = option(1800.0, "slurm: seconds a job may pend (before it first runs, and after a "
                                          "requeue) before it is cancelled and recorded timeout with Slurm's reason")
    collective_timeout: int = option(300, "seconds a collective may wait before the run fails (torch's default: 1800)")
    gpu_mem: float = option(0.0, GPU_MEM_HELP + "; default: this host's GPU (CPU: its RAM per rank)")
    host_mem: float = option(0.0, HOST_MEM_HELP + "; the local launcher: this host's RAM")
    max_drop: float = option(1.0, "refuse, before anything runs, a run whose data would lose more than this share "
                                  "of rows as longer than --seq-len (0.05: at most 5%; default 1: never refuse, "
                                  "always say it)")
    autotune: bool = option(False, "measure only what is worth it: runs in order of predicted speed, a direction "
                                   "stopped at the first OOM (or what the memory model says cannot fit), "
                                   "configurations predicted clearly slower than the best measured skipped with the "
                                   "reason; --micro-batch auto proposes 1, 2, 4 ... 64 (bench/autotune.py)")
    run_anyway: bool = option(False, "run configurations the memory model says cannot fit (default: record them "
                                     "skipped)")
    axis: tuple = option((), "sweep any knob: KNOB=V1,V2 (repeatable), booleans too: --axis grad_checkpointing=true,false",
                         iterable=True)
    env: tuple = option((), "KEY=VALUE for every rank on every host (repeatable); NCCL_*, GLOO_* ... pass through by "
                            "themselves", iterable=True)
    hostfile: str = option("", "torchrun launcher: one host per line ('host slots=8'), node 0 first")
    ssh_options: str = option("", "torchrun launcher: options for ssh (default: BatchMode, ConnectTimeout=10, ServerAliveInterval=10)")
    partition: str = option("", "slurm: partition")
    account: str = option("", "slurm: account")
    exclusive: bool = option(False, "slurm: whole nodes")
    sbatch_arg: tuple = option((), "slurm: extra sbatch option (repeatable), e.g. --sbatch-arg=--qos=high",
                               iterable=True)
    slurm_gpus: str = option("auto", "slurm: request --gpus-per-node: auto (if the cluster has gpu GRES), yes, no")
    container_image: str = option("", "slurm: run each node's command in this image (pyxis/enroot "
                                      "srun --container-image)")

    command = "bench"

    @classmethod
    def from_flags(cls, flags: dict[str, Any]) -> "BenchOptions":
        if flags.get("script_only") is True:  # --script-only with no folder: stdout
            flags = {**flags, "script_only": "-"}
        elif flags.get("script_only") in (False, None):
            flags = {**flags, "script_only": ""}
        opts = super().from_flags(flags)
        if opts.sweep and not SWEEP_NAME.fullmatch(opts.sweep):
            raise ConfigError(f"{opts.sweep!r} cannot name a sweep folder", where="--sweep",
                              fix="letters, digits, '.', '_', '-', not starting with '.' (it becomes <results>/<sweep>)")
        return opts


@dataclass(kw_only=True, frozen=True)
class PlanOptions(Options):
    """`invoke plan`'s options beside the knobs it shares with bench (same flags, same parsing)."""

    command = "plan"

    gpu_mem: float = option(80.0, GPU_MEM_HELP)
    host_mem: float = option(0.0, HOST_MEM_HELP)
    partition: str = option("", "read --host-mem from this Slurm partition's RealMemory (sinfo), when not given")
    device: str = option("H100", "GPU name for the peak FLOP/s (H100, H200, A100 ...)")
    mfu: float = option(0.4, "model FLOPs utilization the step time is predicted at")
    busbw_intra: float = option(360.0, "bus bandwidth within a node, GB/s (360: NVLink 4; the preflight measures yours)")
    busbw_inter: float = option(45.0, "bus bandwidth across nodes, GB/s (45: one 400 Gb/s NIC per GPU)")
    json: bool = option(False, "print JSON rows (stdout) instead of the tables")
    calibrate: str = option("", "a sweep's folder (results/<sweep>): fit the step-time model to its runs, show "
                                "measured vs predicted for each, predict node counts up to 512")
    plot: str = option("", "with --calibrate: where the prediction plot goes (default <sweep>/prediction.png)")
