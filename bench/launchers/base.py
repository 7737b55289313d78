"""The launcher contract: `launch(spec, sweep_dir) -> record`. A failure is a record, not an exception.

Launchers that start one process per node from here (local, torchrun over ssh) share `launch` and
`preflight`: a process group per node process (cleanup kills only this run's processes), a
deadline, a heartbeat from rank 0, a grace period after one node fails, and a classified failure
record when the trainer could not write its own. A launcher says how to run a command on node i
(`wrap`), which host node i is (`hosts`) and how torchrun meets (`rendezvous`). Slurm overrides
`launch` and does its preflight inside the job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from bench import preflight as preflight_mod
from bench.backends import env_for, python_for
from bench.launchers.failures import classify
from bench.spec import RunSpec
from trainer import record

# Settings users tune multi-node jobs with; passed to every rank on every host.
PASSTHROUGH = re.compile(r"^(NCCL_|TORCH_NCCL_|GLOO_|UCX_|FI_|TORCH_DISTRIBUTED_DEBUG$|CUDA_VISIBLE_DEVICES$|"
                         r"PYTORCH_CUDA_ALLOC_CONF$|OMP_NUM_THREADS$|HF_|TRANSFORMERS_OFFLINE$|TORCH_EXTENSIONS_DIR$)")


@dataclass(kw_only=True)
class LaunchOptions:
    deadline_s: float = 900.0
    """Wall-clock limit for one run, start-up included."""
    heartbeat_s: float = 300.0
    """Kill the run when rank 0 has not finished a step for this long (after its first step)."""
    grace_s: float = 30.0
    """After one node's process fails, how long the others get to exit by themselves."""
    collective_timeout_s: int = 300
    """A collective that waits longer fails the run (torch's default is 30 minutes)."""
    preflight: bool = True
    preflight_deadline_s: float = 30.0
    """Seconds for every node to join the preflight and for its all-reduce."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every rank (NCCL_*, ...), on top of the passthrough of this one."""


class Launcher(ABC):
    name = "base"

    def __init__(self, options: LaunchOptions | None = None):
        self.options = options or LaunchOptions()

    # --- what a launcher must say ----------------------------------------------------------------

    @abstractmethod
    def hosts(self, nodes: int) -> list[str]:
        """The host of each node (named when one does not join)."""

    @abstractmethod
    def rendezvous(self, spec: RunSpec, node: int, port: int) -> list[str]:
        """torchrun's flags for node `node` to meet the others."""

    def node_names(self, nodes: int) -> list[str]:
        """The host each node's failures are reported against."""
        return self.hosts(nodes)

    def wrap(self, node_host: str, argv: list[str], env: dict[str, str]) -> list[str]:
        """How to run argv on that host (ssh for a remote one); env is already in the process env."""
        return argv

    # --- commands --------------------------------------------------------------------------------

    def commands(self, spec: RunSpec, sweep_dir: Path, port: int) -> list[list[str]]:
        """The command for each node (what --dry-run and --script-only print, what launch runs)."""
        worker = trainer_argv(spec, sweep_dir, sweep_dir.name, self.name, self.options.collective_timeout_s)
        # --tee: each rank's output also goes to its own file under <run>/ranks/, prefixed by local rank in the node log
        ranks = ["--tee=3", f"--log-dir={sweep_dir.resolve() / spec.run_id / 'ranks'}"]
        return [[python_for(spec.backend), "-m", "torch.distributed.run", *self.rendezvous(spec, node, port), *ranks,
                 f"--nproc_per_node={spec.procs_per_node}", *worker] for node in range(spec.nodes)]

    def script(self, spec: RunSpec, sweep_dir: Path) -> str:
        """What `--script-only` prints: a shell script that runs the spec without stackbench's supervision."""
        cmds = self.commands(spec, sweep_dir, 29500)
        lines = [f"# {spec.run_id}: on {host}\n{shlex.join(c)}" for host, c in zip(self.hosts(spec.nodes), cmds)]
        return "#!/bin/bash\n# one command per node; start them all (node 0 hosts the rendezvous)\n" + "\n".join(lines)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment every rank gets: passthrough of this process's multi-node settings, defaults, options."""
        env = {k: v for k, v in os.environ.items() if PASSTHROUGH.match(k)}
        cuda = has_cuda()
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
        argv = [[sys.executable, "-m", "bench.preflight", f"--node-rank={node}", f"--nnodes={nodes}",
                 f"--nproc={procs_per_node}", f"--master={hosts[0]}:{port}", f"--hosts={','.join(hosts)}",
                 f"--deadline={deadline:g}"] + ([f"--out={out}"] if node == 0 else []) for node in range(nodes)]
        env = self.env()
        procs = start([self.wrap(h, a, env) for h, a in zip(hosts, argv)], env, log_dir)
        # joining has `deadline`, then the all-reduce has it again, plus interpreter and torch imports
        killed = supervise(procs, dataclasses.replace(self.options, deadline_s=2 * deadline + 60, grace_s=deadline + 10),
                           heartbeat=None)
        return read_preflight(out, [p.log for p in procs], killed)

    def run_on_nodes(self, argv: list[str], nodes: int, procs_per_node: int, work_dir: Path,
                     deadline_s: float) -> tuple[list[Path], dict | None]:
        """argv once on every node ({node} in it becomes the node index), then the preflight;
        per-node logs and the preflight result (envcheck --nodes)."""
        env = self.env()
        cmds = [self.wrap(h, [a.replace("{node}", str(i)) for a in argv], env) for i, h in enumerate(self.hosts(nodes))]
        procs = start(cmds, env, work_dir)
        supervise(procs, dataclasses.replace(self.options, deadline_s=deadline_s, grace_s=deadline_s), heartbeat=None)
        return [p.log for p in procs], self.preflight(nodes, procs_per_node, work_dir)

    def launch(self, spec: RunSpec, sweep_dir: Path) -> dict:
        """Run one spec to completion or deadline; return its record (also written to sweep_dir)."""
        started = record.now()
        out = sweep_dir / f"{spec.run_id}.json"
        out.unlink(missing_ok=True)  # a re-run replaces an earlier failure; the sweep never re-runs an ok
        run_dir = sweep_dir / spec.run_id
        heartbeat = run_dir / "heartbeat"
        heartbeat.unlink(missing_ok=True)
        cmds = self.commands(spec, sweep_dir, free_port())
        command = join_commands(cmds)
        cmds = [c + ["--command", command] for c in cmds]  # the record says how to reproduce it
        env = self.env({"STACKBENCH_HEARTBEAT": str(heartbeat), "STACKBENCH_LAUNCHED_AT": f"{time.time():.3f}",
                        **env_for(spec.backend)})
        procs = start([self.wrap(h, c, env) for h, c in zip(self.hosts(spec.nodes), cmds)], env, run_dir)
        try:
            killed_because = supervise(procs, self.options, heartbeat)
        except BaseException:  # Ctrl-C: stop this run's processes only, record it, pass it on
            kill(procs)
            record.write(out, interrupted(spec, sweep_dir, command, started))
            raise
        if out.exists():  # the trainer wrote its own record (ok, bad input, oom)
            return record.read(out)
        status, error = classify([p.log for p in procs], killed_because,
                                 {p.node: p.popen.returncode for p in procs}, self.node_names(spec.nodes))
        rec = record.new(spec.run_id, sweep_dir.name, status, config=spec_config(spec), command=command,
                         started_at=started, error=error)
        record.write(out, rec)
        return rec


# --- helpers shared by launchers ----------------------------------------------------------------

def has_cuda() -> bool:
    return Path("/dev/nvidiactl").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def trainer_argv(spec: RunSpec, sweep_dir: Path, sweep_id: str, launcher: str, collective_timeout_s: int = 300) -> list[str]:
    cfg = dataclasses.replace(spec.trainer_config(out=str(sweep_dir.resolve()), sweep_id=sweep_id),
                              launcher=launcher, collective_timeout_s=collective_timeout_s)
    return ["-m", "trainer", *cfg.to_argv()]


def join_commands(cmds: list[list[str]]) -> str:
    """One shell line that starts every node's command (what a record calls `command`)."""
    return " & \\\n".join(shlex.join(c) for c in cmds) + (" & wait" if len(cmds) > 1 else "")


def spec_config(spec: RunSpec) -> dict:
    """The config block of a record the trainer did not write itself."""
    return {"spec": dataclasses.asdict(spec), "task": spec.task, "backend": spec.backend, "zero_stage": spec.zero_stage,
            "nodes": spec.nodes, "gpus_per_node": spec.procs_per_node, "world_size": spec.world_size,
            "launcher": spec.launcher}


def interrupted(spec: RunSpec, sweep_dir: Path, command: str, started: str) -> dict:
    return record.new(spec.run_id, sweep_dir.name, "interrupted", config=spec_config(spec), command=command,
                      started_at=started, error=record.error("interrupted", "stopped by the user (Ctrl-C)"))


def preflight_failed(spec: RunSpec, sweep_dir: Path, result: dict, command: str, started: str, **extra) -> dict:
    """The record of a run that did not start because its nodes failed the preflight (host named)."""
    host = (result.get("missing_hosts") or [result.get("host")])[0]
    error = record.error("preflight", result.get("message", "preflight failed"), host=host,
                         log=str(sweep_dir / spec.run_id))
    return record.write_and_return(sweep_dir / f"{spec.run_id}.json", record.new(
        spec.run_id, sweep_dir.name, "failed", config=spec_config(spec), command=command, started_at=started,
        error=error, preflight=result, **extra))


def read_preflight(out: Path, logs: list[Path], killed_because: str | None) -> dict:
    """Node 0's JSON, else the first failure a node printed, else why it was stopped."""
    if out.exists():
        return json.loads(out.read_text())
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if line.startswith(preflight_mod.PREFIX):
                result = json.loads(line[len(preflight_mod.PREFIX):])
                if not result.get("ok"):
                    return result
    why = killed_because or "the preflight exited without a result"
    return {"ok": False, "error": "preflight", "message": f"{why}; logs: {', '.join(str(p) for p in logs)}"}


@dataclass
class Proc:
    node: int
    popen: subprocess.Popen
    log: Path


def start(cmds: list[list[str]], env: dict[str, str], log_dir: Path) -> list[Proc]:
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for node, cmd in enumerate(cmds):
        log = log_dir / f"node{node}.log"
        with log.open("w") as fh:
            fh.write("$ " + shlex.join(cmd) + "\n")
            fh.flush()
            procs.append(Proc(node, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                     env=dict(os.environ, **env), start_new_session=True), log))
    return procs


def kill(procs: list[Proc]) -> None:
    """Kill each node process, its group and every descendant, nothing else. torchrun puts each
    worker in a session of its own, so killing torchrun's group alone would leave the ranks running."""
    import psutil

    victims: list[psutil.Process] = []
    for p in procs:
        if p.popen.poll() is None:
            try:
                root = psutil.Process(p.popen.pid)
                victims += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
            try:
                os.killpg(p.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for v in victims:
        try:
            v.kill()
        except psutil.NoSuchProcess:
            pass
    roots = {p.popen.pid for p in procs}
    psutil.wait_procs([v for v in victims if v.pid not in roots], timeout=10)  # roots are reaped by Popen below
    for p in procs:
        try:
            p.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def supervise(procs: list[Proc], opts: LaunchOptions, heartbeat: Path | None) -> str | None:
    """Wait for every node; returns None when all exited, else why they were killed."""
    start_t, failed_at = time.monotonic(), None
    while True:
        codes = [p.popen.poll() for p in procs]
        if all(c is not None for c in codes):
            return None
        now = time.monotonic()
        if now - start_t > opts.deadline_s:
            kill(procs)
            return f"deadline of {opts.deadline_s:.0f} s passed"
        if heartbeat and heartbeat.exists() and time.time() - heartbeat.stat().st_mtime > opts.heartbeat_s:
            kill(procs)
            return f"no step finished for {opts.heartbeat_s:.0f} s (heartbeat {heartbeat})"
        if any(c not in (None, 0) for c in codes):
            failed_at = failed_at or now
            if now - failed_at > opts.grace_s:
                kill(procs)
                return None
        time.sleep(0.2)
