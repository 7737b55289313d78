"""The launcher contract: `launch(cfg, sweep_dir) -> record`. A failure is a record, not an exception.

Every launcher shares `launch`'s skeleton (clear the last attempt, start, wait, Ctrl-C, the
trainer's own record or the launcher's reading of what happened). Launchers that start one process
per node from here (local, torchrun over ssh) share all of it and `preflight` (processes.py
supervises; outcomes.py turns what happened into a record). A launcher says how to run a command on
node i (`wrap`), which host node i is (`hosts`) and how torchrun meets (`rendezvous`). Slurm
submits a job instead (`begin`, `wait`, `stop`, `outcome`) and does its preflight inside the job.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import sys
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackbench.bench.launchers import outcomes
from stackbench.bench.launchers.backends import env_for, python_for
from stackbench.bench.launchers.options import LaunchOptions
from stackbench.bench.launchers.processes import NodeCommand, kill, start, supervise
from stackbench.core import record, secrets
from stackbench.core.config import Launch, RunConfig
from stackbench.core.host import free_port, has_nvidia_driver

# Settings users tune multi-node jobs with; passed to every rank on every host, written into
# scripts and commands. Secrets among them (HF_TOKEN) are not: core.secrets says which, and each
# launcher passes those by a way that writes nothing down.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what a shell can export
PASSTHROUGH = re.compile(r"^(NCCL_|TORCH_NCCL_|GLOO_|UCX_|FI_|TORCH_DISTRIBUTED_DEBUG$|CUDA_VISIBLE_DEVICES$|"
                         r"PYTORCH_CUDA_ALLOC_CONF$|OMP_NUM_THREADS$|HF_|TRANSFORMERS_OFFLINE$|TORCH_EXTENSIONS_DIR$)")


class Launcher(ABC):
    name = "base"

    def __init__(self, options: LaunchOptions | None = None):
        self.options = options or LaunchOptions()
        # the key of the ranks' secret hashes: in this process's environment only, so every
        # launcher passes it the way it passes secrets (core.secrets)
        os.environ.setdefault(secrets.HASH_KEY, uuid.uuid4().hex)

    # --- what a launcher must say ----------------------------------------------------------------

    @abstractmethod
    def hosts(self, nodes: int) -> list[str]:
        """The host of each node (named when one does not join)."""

    @abstractmethod
    def rendezvous(self, cfg: RunConfig, node: int, port: int) -> list[str]:
        """torchrun's flags for node `node` to meet the others."""

    def exclude(self, hosts: set[str]) -> set[str]:
        """Leave hosts found dead out of every later run; the hosts this launcher can leave out (a
        launcher that places nodes itself: the hostfile's, Slurm's; emulated nodes have none)."""
        return set()

    def node_names(self, nodes: int) -> list[str]:
        """The host each node's failures are reported against."""
        return self.hosts(nodes)

    def wrap(self, node_host: str, argv: list[str], env: dict[str, str]) -> NodeCommand:
        """How to run argv on that host (ssh for a remote one). env (plain settings) is already in
        the local process's environment, and so are the secrets (this process's own)."""
        return NodeCommand(argv)

    # --- commands --------------------------------------------------------------------------------

    def bookkeeping(self, cfg: RunConfig, sweep_dir: Path, command: str = "") -> Launch:
        """The run's bookkeeping when this launcher starts it into sweep_dir."""
        return Launch(out=str(sweep_dir.resolve()), run_id=cfg.run_id, sweep_id=sweep_dir.name, launcher=self.name,
                      command=command, collective_timeout_s=self.options.collective_timeout_s,
                      secrets=",".join(sorted(k for k in self.secret_env() if k != secrets.HASH_KEY)))

    def commands(self, cfg: RunConfig, sweep_dir: Path, port: int) -> list[list[str]]:
        """The command for each node (what --dry-run and --script-only print, what launch runs)."""
        worker = ["-m", "stackbench.trainer", *cfg.to_argv(), *self.bookkeeping(cfg, sweep_dir).to_argv()]
        # --tee: each rank's output also goes to its own file under <run>/ranks/, prefixed by local rank in the node log
        ranks = ["--tee=3", f"--log-dir={sweep_dir.resolve() / cfg.run_id / 'ranks'}"]
        return [[python_for(cfg.backend), "-m", "torch.distributed.run", *self.rendezvous(cfg, node, port), *ranks,
                 f"--nproc_per_node={cfg.gpus_per_node}", *worker] for node in range(cfg.nodes)]

    def script(self, cfg: RunConfig, sweep_dir: Path) -> str:
        """What `--script-only` prints: a shell script that runs the run without stackbench's
        supervision, with the environment its ranks get (secrets: export them yourself)."""
        cmds = self.commands(cfg, sweep_dir, 29500)
        env = self.env(env_for(cfg.backend))
        lines = [f"# {cfg.run_id}: on {host}\n{shlex.join(c)}" for host, c in zip(self.hosts(cfg.nodes), cmds)]
        return "\n".join(["#!/bin/bash", "# every node: this environment (secrets such as HF_TOKEN are not written "
                          "here: export them in the shell that runs it)",
                          *export_lines(env),
                          "# one command per node; start them all (node 0 hosts the rendezvous)", *lines])

    def secret_env(self) -> dict[str, str]:
        """The secrets every rank gets: this process's (HF_TOKEN, WANDB_API_KEY, cloud credentials)."""
        return secrets.present()

    def env(self, extra: dict[str, str] | None = None, *, cuda: bool | None = None) -> dict[str, str]:
        """Environment every rank gets beside the secrets, safe to write down: passthrough of this
        process's multi-node settings, defaults, options. cuda: whether the ranks have GPUs
        (default: whether this host has)."""
        env, _ = secrets.split({k: v for k, v in os.environ.items() if PASSTHROUGH.match(k) and ENV_NAME.fullmatch(k)})
        cuda = has_nvidia_driver() if cuda is None else cuda
        env.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("PYTHONUNBUFFERED", "1")
        if cuda:  # a timed-out NCCL collective aborts the process instead of hanging it
            env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        # ranks share the cores: oversubscribed BLAS threads distort step times
        env.setdefault("OMP_NUM_THREADS", "4" if cuda else str(max(1, (os.cpu_count() or 1) // 2)))
        env.update(self.options.env)
        env.update(extra or {})
        return env

    # --- running ---------------------------------------------------------------------------------

    def preflight(self, nodes: int, procs_per_node: int, sweep_dir: Path) -> dict | None:
        """Join + all-reduce across every rank of this node count; None when the launcher does it per job."""
        deadline = self.options.preflight_deadline_s
        log_dir = sweep_dir / f"preflight-n{nodes}x{procs_per_node}"
        out = log_dir / "preflight.json"
        out.unlink(missing_ok=True)
        hosts = self.hosts(nodes)
        port = free_port()
        argv = [[sys.executable, "-m", "stackbench.bench.launchers.preflight", f"--node-rank={node}",
                 f"--nnodes={nodes}", f"--nproc={procs_per_node}", f"--master={hosts[0]}:{port}",
                 f"--hosts={','.join(hosts)}", f"--deadline={deadline:g}"] + ([f"--out={out}"] if node == 0 else [])
                for node in range(nodes)]
        env = self.env()
        procs = start([self.wrap(h, a, env) for h, a in zip(hosts, argv)], env, log_dir)
        # joining has `deadline`, then the all-reduce has it again, plus interpreter and torch imports
        killed = supervise(procs, dataclasses.replace(self.options, deadline_s=2 * deadline + 60,
                                                      grace_s=deadline + 10), heartbeat=None)
        return outcomes.read_preflight(out, [p.log for p in procs], killed)

    def run_on_nodes(self, argv: list[str], nodes: int, procs_per_node: int, work_dir: Path,
                     deadline_s: float) -> tuple[list[Path], dict | None]:
        """argv once on every node ({node} in it becomes the node index), then the preflight;
        per-node logs and the preflight result (envcheck --nodes)."""
        env = self.env()
        cmds = [self.wrap(h, [a.replace("{node}", str(i)) for a in argv], env) for i, h in enumerate(self.hosts(nodes))]
        procs = start(cmds, env, work_dir)
        supervise(procs, dataclasses.replace(self.options, deadline_s=deadline_s, grace_s=deadline_s), heartbeat=None)
        return [p.log for p in procs], self.preflight(nodes, procs_per_node, work_dir)

    def launch(self, cfg: RunConfig, sweep_dir: Path) -> dict:
        """Run one config to completion or deadline; return its record (also written to sweep_dir).
        Every launcher's skeleton: a launcher says how a run starts (`begin`), is waited for (`wait`)
        and stopped on Ctrl-C (`stop`), and what its record says when the trainer wrote none (`outcome`)."""
        at = Attempt(cfg, sweep_dir, record.now())
        at.out.unlink(missing_ok=True)  # a re-run replaces an earlier failure; the sweep never re-runs an ok
        shutil.rmtree(at.run_dir / "ranks", ignore_errors=True)  # an earlier attempt's error files are not this one's
        launch, run = self.begin(at)
        try:
            ended = self.wait(at, run)
        except BaseException:  # Ctrl-C: stop this run only, record it, pass it on
            self.stop(run)
            record.write(at.out, outcomes.interrupted(cfg, launch, at.started))
            raise
        if at.out.exists():  # the trainer wrote its own record (ok, bad input, oom)
            return self.recorded(at, run)
        return self.outcome(at, launch, run, ended)

    def begin(self, at: Attempt) -> tuple[Launch, Any]:
        """Start the run: its bookkeeping, and what the launcher follows it by (here: one process per node)."""
        heartbeat = at.run_dir / "heartbeat"
        heartbeat.unlink(missing_ok=True)
        cmds = self.commands(at.cfg, at.sweep_dir, free_port())
        command = join_commands(cmds)
        cmds = [c + ["--command", command] for c in cmds]  # the record says how to reproduce it
        launch = self.bookkeeping(at.cfg, at.sweep_dir, command)
        env = self.env({"STACKBENCH_HEARTBEAT": str(heartbeat), "STACKBENCH_LAUNCHED_AT": f"{time.time():.3f}",
                        **env_for(at.cfg.backend)})
        return launch, start([self.wrap(h, c, env) for h, c in zip(self.hosts(at.cfg.nodes), cmds)], env, at.run_dir)

    def wait(self, at: Attempt, run: Any) -> Any:
        """Wait for the run to end; why it was stopped (here: killed), or None when it ended by itself."""
        return supervise(run, self.options, at.run_dir / "heartbeat")

    def stop(self, run: Any) -> None:
        """Stop this run only (Ctrl-C)."""
        kill(run)

    def recorded(self, at: Attempt, run: Any) -> dict:
        """The record the trainer wrote itself."""
        return record.read(at.out)

    def outcome(self, at: Attempt, launch: Launch, run: Any, ended: Any) -> dict:
        """The record of a run the trainer did not record (from its logs, exit codes, the ranks' errors), written."""
        status, error = outcomes.classify([p.log for p in run], ended, {p.node: p.popen.returncode for p in run},
                                          self.node_names(at.cfg.nodes), outcomes.rank_errors(at.run_dir))
        rec = record.new(status, at.cfg, launch, started_at=at.started, error=error)
        record.write(at.out, rec)
        return rec


@dataclass(frozen=True)
class Attempt:
    """One launch of a run: its config, the sweep's folder as the sweep names it, when it started."""

    cfg: RunConfig
    sweep_dir: Path
    started: str

    @property
    def run_dir(self) -> Path:
        return self.sweep_dir / self.cfg.run_id

    @property
    def out(self) -> Path:
        """Its record."""
        return record.path(self.sweep_dir, self.cfg.run_id)


def export_lines(env: dict[str, str]) -> list[str]:
    """A script's `export` lines for the rank environment (plain settings only: never secrets)."""
    return [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]


def join_commands(cmds: list[list[str]]) -> str:
    """One shell line that starts every node's command (what a record calls `command`)."""
    return " & \\\n".join(shlex.join(c) for c in cmds) + (" & wait" if len(cmds) > 1 else "")
