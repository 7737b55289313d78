"""The sbatch script of a job, rendered from what the launcher decided (no Slurm command, no clock):
the allocation, the environment (no secrets: Slurm carries those), the rendezvous variables, then
the steps, each an srun line with one task per node.

Every value in the script is checked or quoted: `#SBATCH` values are double-quoted where sbatch's
own parser needs it, a control character is refused (settings.directive), and only the job's own
variables ($SLURM_NNODES, $MASTER_ADDR ...) are left for the shell to expand (ShellVar).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from stackbench.bench.launchers.contract import export_lines
from stackbench.bench.launchers.options import LaunchOptions
from stackbench.bench.launchers.slurm.settings import SlurmSettings, directive
from stackbench.core.config import RunConfig
from stackbench.core.errors import EXIT_PREFLIGHT, ConfigError


class ShellVar(str):
    """An argument the batch shell expands (it names the job's variables: $SLURM_NNODES,
    $MASTER_ADDR ...): written in double quotes. Every other argument is single-quoted."""

    def __new__(cls, value: str) -> "ShellVar":
        assert re.fullmatch(r"[\w=:./,${}%-]+", value), value  # built here, never from user input
        return super().__new__(cls, value)


@dataclass(frozen=True)
class Paths:
    """Where a job runs and writes."""

    run_dir: Path
    """the job's folder (absolute): its script, node logs, heartbeat, preflight result"""
    cwd: Path
    """the job's working directory (--chdir): this checkout, mounted into a --container-image"""
    python: str
    """the interpreter the preflight runs with (this one: the stack sits at the same path on every node)"""


@dataclass(frozen=True)
class Gpus:
    """Whether the job asks for --gpus-per-node; asked: whether a Slurm client said if the cluster
    advertises gpu GRES (the script says which it was)."""

    request: bool
    asked: bool = False


def filename(path: Path, where: str = "--results") -> str:
    """A path for sbatch / srun --output: Slurm expands %-patterns in it (%j, %n), so a literal %
    is written %%; a backslash would turn the patterns off (Slurm's rule), so it is refused."""
    if "\\" in str(path):
        raise ConfigError(f"{path}: Slurm reads a backslash in an output path as 'no patterns'", where=where,
                          fix="use a results directory without a backslash")
    return str(path).replace("%", "%%")


def config_dirs(cfg: RunConfig) -> tuple[Path, ...]:
    """Where a run's --deepspeed file lives: mounted into a --container-image too."""
    return (Path(cfg.deepspeed).parent,) if cfg.deepspeed and Path(cfg.deepspeed).is_absolute() else ()


def minutes(seconds: float, options: LaunchOptions) -> int:
    """The job's --time: the run's seconds, the preflight's two deadlines and two minutes of start-up."""
    return math.ceil((seconds + 2 * options.preflight_deadline_s + 120) / 60)


def train_script(cfg: RunConfig, options: LaunchOptions, settings: SlurmSettings, paths: Paths, *, train: list[str],
                 env: dict[str, str], gpus: Gpus, exclude: Iterable[str] = ()) -> str:
    """One run's job: the preflight on the allocation's nodes, then `train` (one torchrun per node,
    meeting by c10d at the first host). paths.run_dir is <sweep>/<run id>."""
    run_dir = paths.run_dir
    steps = [preflight_step(settings, options, cfg.nodes, cfg.gpus_per_node, paths),
             srun(settings, paths.cwd, cfg.nodes, f"{filename(run_dir)}/node%n.log", train,
                  (run_dir.parent, *config_dirs(cfg)))]
    return batch(settings, paths, name=cfg.run_id, nodes=cfg.nodes, procs_per_node=cfg.gpus_per_node,
                 minutes=minutes(options.deadline_s, options), env=env, gpus=gpus, exclude=exclude,
                 about="preflight, then one torchrun per node (c10d at the first host)", steps=steps)


def nodes_script(argv: list[str], nodes: int, procs_per_node: int, deadline_s: float, options: LaunchOptions,
                 settings: SlurmSettings, paths: Paths, *, env: dict[str, str], gpus: Gpus,
                 exclude: Iterable[str] = ()) -> str:
    """A job that runs argv once on every node (each to its end: one failing stops no other), then
    the preflight on the same nodes (envcheck --nodes)."""
    work_dir = paths.run_dir
    steps = [srun(settings, paths.cwd, nodes, f"{filename(work_dir)}/node%n.log", argv, (work_dir,),
                  all_or_none=False) + " || true",
             preflight_step(settings, options, nodes, procs_per_node, paths)]
    return batch(settings, paths, name=work_dir.name, nodes=nodes, procs_per_node=procs_per_node,
                 minutes=minutes(deadline_s, options), env=env, gpus=gpus, exclude=exclude,
                 about="a command on every node, then the preflight", steps=steps)


def batch(settings: SlurmSettings, paths: Paths, *, name: str, nodes: int, procs_per_node: int, minutes: int,
          env: dict[str, str], gpus: Gpus, exclude: Iterable[str], about: str, steps: list[str]) -> str:
    """An sbatch script: the allocation, the environment (no secrets: Slurm carries those), the
    rendezvous variables, then steps (srun lines from `srun()`) in order."""
    # --no-requeue: a job Slurm requeues after a node failure would only pend again under the same id
    sb = [f"--job-name=sb-{name}"[:120], f"--nodes={nodes}", "--ntasks-per-node=1", f"--time={minutes}", "--no-requeue",
          f"--output={filename(paths.run_dir)}/slurm-%j.out", f"--chdir={paths.cwd}"]
    if gpus.request:
        sb.append(f"--gpus-per-node={procs_per_node}")
    sb += [f"--partition={settings.partition}"] * bool(settings.partition)
    sb += [f"--account={settings.account}"] * bool(settings.account)
    sb += ["--exclusive"] * settings.exclusive + list(settings.sbatch_args)
    exclude = sorted(exclude)
    if exclude:  # slurmctld believes a cut node idle until its own node timeout, and would place us there
        sb.append(f"--exclude={','.join(exclude)}")
    return "\n".join(["#!/bin/bash", *(f"#SBATCH {directive(a)}" for a in sb), f"# stackbench {name}: {about}",
                      f"# GPUs: {f'--gpus-per-node={procs_per_node}' if gpus.request else 'none requested'} "
                      f"({why_gpus(settings, gpus)})",
                      "# secrets (HF_TOKEN ...) are not written here: submit with sbatch --export=ALL from a "
                      "shell that has them",
                      "set -euo pipefail",
                      *export_lines(env),
                      "export STACKBENCH_LAUNCHED_AT=$(date +%s.%N)",
                      'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | paste -sd, -)',
                      "MASTER_ADDR=${HOSTS%%,*}",
                      "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))  # per job: jobs sharing a node do not collide",
                      "PREFLIGHT_PORT=$((MASTER_PORT + 1))",
                      f"mkdir -p {shlex.quote(str(paths.run_dir))}", *steps, ""])


def why_gpus(settings: SlurmSettings, gpus: Gpus) -> str:
    """Why the script asks for GPUs or not (its comment says)."""
    if settings.gpus != "auto":
        return f"--slurm-gpus {settings.gpus}"
    if gpus.asked:
        return "the cluster advertises gpu GRES" if gpus.request else "no node advertises a gpu GRES"
    return "--slurm-gpus auto, and no Slurm client answered here: --slurm-gpus no leaves the line out"


def srun(settings: SlurmSettings, cwd: Path, nodes: int, log: str, argv: list[str], mounts: tuple[Path, ...] = (),
         all_or_none: bool = True) -> str:
    """One srun step, one task per node, each node's output in its own log (%n: node index);
    all_or_none: one node failing stops the others (training), else each finishes (checks)."""
    cmd = ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", f"--kill-on-bad-exit={int(all_or_none)}",
           f"--output={log}"]
    if settings.container_image:
        for p in (cwd, *mounts):
            if set(str(p)) & {",", ":"}:  # pyxis splits its mount list on them
                raise ConfigError(f"{p}: pyxis cannot mount a path with ',' or ':'", where="--container-image",
                                  fix="use a results directory and checkout without ',' or ':'")
        binds = ",".join(sorted({f"{p}:{p}" for p in (cwd, *mounts)}))
        cmd += [f"--container-image={settings.container_image}", f"--container-mounts={binds}",
                f"--container-workdir={cwd}"]
    return shell(cmd + argv)


def preflight_step(settings: SlurmSettings, options: LaunchOptions, nodes: int, procs_per_node: int,
                   paths: Paths) -> str:
    """The preflight (join + all-reduce across every rank of the allocation); its failure ends the
    job with the preflight's exit code."""
    run_dir = paths.run_dir
    argv = [paths.python, "-m", "stackbench.bench.launchers.preflight", ShellVar("--nnodes=$SLURM_NNODES"),
            f"--nproc={procs_per_node}", ShellVar("--master=$MASTER_ADDR:$PREFLIGHT_PORT"), ShellVar("--hosts=$HOSTS"),
            f"--deadline={options.preflight_deadline_s:g}", f"--out={run_dir}/preflight.json"]
    log = f"{filename(run_dir)}/preflight-node%n.log"
    return f"{srun(settings, paths.cwd, nodes, log, argv, (run_dir,))} || exit {EXIT_PREFLIGHT}"


def shell(argv: list[str]) -> str:
    """Quote for the batch shell: the job's own variables (ShellVar) expand, nothing else does."""
    return " ".join(f'"{a}"' if isinstance(a, ShellVar) else shlex.quote(a) for a in argv)
