"""slurm inside an allocation the team already holds (an `salloc` shell, or a batch script that runs
`invoke bench`): no job is submitted; every node of every run is a job step of that allocation,
`srun --jobid=J --nodes=1 --nodelist=HOST --whole`, started and supervised from here exactly as the
torchrun launcher starts and supervises its hosts over ssh (contract.Launcher's process path:
the preflight per node count, deadlines, the heartbeat, a lost node named and left out).

The runs of one node count use the same hosts: the allocation's first N that are alive, in
Slurm's order, so configurations are compared on the same nodes. A node count larger than the
allocation is refused before anything runs. srun carries this process's environment to the step
(--export=ALL): settings and secrets reach the ranks without being written down.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from stackbench.bench.launchers.contract import Launcher
from stackbench.bench.launchers.options import LaunchOptions
from stackbench.bench.launchers.processes import NodeCommand
from stackbench.bench.launchers.slurm import scheduler
from stackbench.core import record
from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError


@dataclass(frozen=True)
class Allocation:
    """The Slurm allocation this process runs in: its job id and its nodes, in Slurm's order."""

    job: str
    hosts: tuple[str, ...]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Allocation | None":
        """The allocation named by SLURM_JOB_ID (salloc and sbatch set it), or None outside one."""
        env = os.environ if env is None else env
        job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
        if not job:
            return None
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        hosts = tuple(scheduler.hostnames(nodelist))
        if not hosts:
            raise ConfigError(f"SLURM_JOB_ID={job} is set but its node list ({nodelist or 'SLURM_JOB_NODELIST unset'}) "
                              "names no host", where="the environment",
                              fix="run inside a live allocation (salloc / sbatch), or unset SLURM_JOB_ID to submit "
                                  "a job per run")
        return cls(job, hosts)

    def describe(self) -> str:
        return f"allocation {self.job} ({len(self.hosts)} nodes: {', '.join(self.hosts)})"


class StepLauncher(Launcher):
    name = "slurm"

    def __init__(self, options: LaunchOptions | None = None, allocation: Allocation | None = None):
        super().__init__(options)
        self.allocation = allocation or Allocation.from_env()
        if self.allocation is None:
            raise ConfigError("no Slurm allocation here (SLURM_JOB_ID is not set)", where="--launcher slurm",
                              fix="run inside salloc or an sbatch script")
        self.dead: set[str] = set()

    def request_gpus(self) -> bool:
        """Whether the allocation holds GPUs (Slurm says so in the environment it gives salloc / sbatch)."""
        env = os.environ
        tres = " ".join(env.get(k, "") for k in ("SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS",
                                                 "SLURM_GPUS_PER_NODE", "SLURM_TRES_PER_NODE"))
        return bool(tres.strip()) and tres.strip() not in ("0",) and ("gpu" in tres or any(c.isdigit() for c in tres))

    def env(self, extra: dict[str, str] | None = None, *, cuda: bool | None = None) -> dict[str, str]:
        # the ranks run on the allocation's nodes, not necessarily here: they have GPUs when it holds some
        return super().env(extra, cuda=self.request_gpus() if cuda is None else cuda)

    def live(self) -> list[str]:
        return [h for h in self.allocation.hosts if h not in self.dead]

    def hosts(self, nodes: int) -> list[str]:
        live = self.live()
        if nodes > len(live):
            dead = f", {len(self.dead)} found dead in this sweep ({', '.join(sorted(self.dead))})" if self.dead else ""
            raise ConfigError(f"{nodes} nodes asked for inside {self.allocation.describe()}{dead}", where="--nodes",
                              fix=f"ask for at most {len(live)} nodes, or a larger allocation")
        return live[:nodes]

    def exclude(self, hosts: set[str]) -> set[str]:
        found = set(hosts) & set(self.allocation.hosts)
        self.dead |= found
        return found

    def rendezvous(self, cfg: RunConfig, node: int, port: int) -> list[str]:
        master = self.hosts(cfg.nodes)[0]
        return [f"--nnodes={cfg.nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={master}:{port}",
                f"--rdzv-id={self.allocation.job}-{cfg.run_id}",
                f"--rdzv-conf=join_timeout={int(self.options.preflight_deadline_s)}"]

    def wrap(self, node_host: str, argv: list[str], env: dict[str, str]) -> NodeCommand:
        # --whole: the step gets every CPU (and GPU) the allocation holds on that node, not one CPU;
        # --export=ALL: this process's environment, secrets included, is the step's (nothing written)
        return NodeCommand(["srun", f"--jobid={self.allocation.job}", "--nodes=1", "--ntasks=1",
                            f"--nodelist={node_host}", "--whole", "--kill-on-bad-exit=1", "--export=ALL",
                            f"--chdir={os.getcwd()}", "--job-name=stackbench", *argv])

    def recorded(self, at, run) -> dict:
        return self._stamped(at, super().recorded(at, run))

    def outcome(self, at, launch, run, ended) -> dict:
        return self._stamped(at, super().outcome(at, launch, run, ended))

    def _stamped(self, at, rec: dict) -> dict:
        """The record names the allocation its steps ran in (the hosts are environment.hosts)."""
        rec["slurm_job_id"] = self.allocation.job
        rec["slurm_steps"] = "inside an allocation: one job step per node"
        record.write(at.out, rec)
        return rec

    def script(self, cfg: RunConfig, sweep_dir) -> str:
        cmds = self.commands(cfg, sweep_dir, 29500)
        lines = [f"# node {i}: {host}\n{shlex.join(self.wrap(host, c, {}).argv)} &"
                 for i, (host, c) in enumerate(zip(self.hosts(cfg.nodes), cmds))]
        return "\n".join(["#!/bin/bash", f"# {cfg.run_id}: job steps inside {self.allocation.describe()}",
                          "# run it inside that allocation; secrets (HF_TOKEN ...) come from its environment",
                          *lines, "wait"])
