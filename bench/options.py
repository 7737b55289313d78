"""How a sweep runs (not what a run is: that is core.config.RunConfig): where records go, the
launcher and its settings, deadlines, the preflight, the fit check. One dataclass: the
`invoke bench` flags beside the knobs come from it, and so do the launchers' options. The defaults
of those are the launchers' own (LaunchOptions, SlurmSettings, TorchrunSettings), read from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stackbench.bench.launchers import LaunchOptions, SlurmSettings, TorchrunSettings
from stackbench.bench.planning.fit import GPU_MEM_HELP, HOST_MEM_HELP
from stackbench.core.errors import ConfigError
from stackbench.core.options import Options, option

# a sweep is a folder of the results directory: one path component, nothing a shell reads
SWEEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}")


@dataclass(kw_only=True, frozen=True)
class BenchOptions(Options):
    launcher: str = option("local", "local (emulated nodes on this host), torchrun (hosts from --hostfile, over ssh) "
                                    "or slurm (sbatch)")
    results: str = option("results", "directory for records and logs")
    sweep: str = option("", "sweep name (default: derived from the matrix and launcher, so re-running resumes)")
    deadline: float = option(LaunchOptions.deadline_s,
                             "seconds one run may take before it is killed and recorded as timeout")
    dry_run: bool = option(False, "print the plan and the launch commands, run nothing")
    script_only: str = option("", "write each run's script (sbatch-ready for slurm, per-node commands otherwise) "
                                  "into this folder, one file per run, and run nothing; without a folder: the one "
                                  "run's script on stdout. Runs the memory model says cannot fit are left out")
    preflight: bool = option(True, "join + all-reduce check of every node before each node count's runs "
                                   "(--no-preflight skips)")
    preflight_deadline: float = option(LaunchOptions.preflight_deadline_s,
                                       "seconds every node gets to join the preflight (and for its all-reduce)")
    queue_timeout: float = option(LaunchOptions.queue_timeout_s, "slurm: seconds a job may pend before it first "
                                  "runs; then it is cancelled and recorded timeout with Slurm's reason (a job "
                                  "pending again after it ran, a requeue, is recorded node_lost at once)")
    collective_timeout: int = option(LaunchOptions.collective_timeout_s, "seconds a collective may wait before the run "
                                                                         "fails (torch's default: 1800)")
    gpu_mem: float = option(0.0, GPU_MEM_HELP + "; default: this host's GPU (CPU: its RAM per rank)")
    host_mem: float = option(0.0, HOST_MEM_HELP + "; the local launcher: this host's RAM")
    max_drop: float = option(1.0, "refuse, before anything runs, a run whose data would lose more than this share "
                                  "of rows as longer than --seq-len (0.05: at most 5%; default 1: never refuse, "
                                  "always say it)")
    autotune: bool = option(False, "measure only what is worth it: runs in order of predicted speed, a direction "
                                   "stopped at the first OOM (or what the memory model says cannot fit), "
                                   "configurations predicted clearly slower than the best measured skipped with the "
                                   "reason; --micro-batch auto proposes 1, 2, 4 ... 64 (bench/planning/autotune.py)")
    run_anyway: bool = option(False, "run configurations the memory model says cannot fit (default: record them "
                                     "skipped)")
    axis: tuple = option((), "sweep any knob: KNOB=V1,V2 (repeatable), booleans too: "
                             "--axis grad_checkpointing=true,false", iterable=True)
    env: tuple = option((), "KEY=VALUE for every rank on every host (repeatable); NCCL_*, GLOO_* ... pass through by "
                            "themselves", iterable=True)
    hostfile: str = option(TorchrunSettings.hostfile,
                           "torchrun launcher: one host per line ('host slots=8'), node 0 first")
    ssh_options: str = option(TorchrunSettings.ssh_options, "torchrun launcher: options for ssh (default: BatchMode, "
                                                            "ConnectTimeout=10, ServerAliveInterval=10)")
    partition: str = option(SlurmSettings.partition, "slurm: partition")
    account: str = option(SlurmSettings.account, "slurm: account")
    exclusive: bool = option(SlurmSettings.exclusive, "slurm: whole nodes")
    sbatch_arg: tuple = option((), "slurm: extra sbatch option (repeatable), e.g. --sbatch-arg=--qos=high",
                               iterable=True)
    slurm_gpus: str = option(SlurmSettings.gpus,
                             "slurm: request --gpus-per-node: auto (if the cluster has gpu GRES), yes, no")
    container_image: str = option(SlurmSettings.container_image, "slurm: run each node's command in this image "
                                                                 "(pyxis/enroot srun --container-image)")
    slurm_job_per_run: bool = option(False, "slurm: submit one sbatch job per run even inside an allocation "
                                            "(default there: every run is a job step of the allocation, "
                                            "SLURM_JOB_ID)")

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
                              fix="letters, digits, '.', '_', '-', not starting with '.' "
                                  "(it becomes <results>/<sweep>)")
        return opts
