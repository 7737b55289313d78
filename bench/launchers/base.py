"""The launcher contract: `launch(spec, sweep_dir) -> record`. A failure is a record, not an exception.

Shared machinery for launchers that start local processes: a process group per launch (so
cleanup kills only this run's processes), a deadline, a heartbeat from rank 0, and turning exit
codes and logs into a classified failure record when the trainer could not write its own.
"""

from __future__ import annotations

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

from bench.spec import RunSpec
from trainer import record


@dataclass(kw_only=True)
class LaunchOptions:
    deadline_s: float = 900.0
    """Wall-clock limit for one run, start-up included."""
    heartbeat_s: float = 300.0
    """Kill the run when rank 0 has not finished a step for this long (after its first step)."""
    grace_s: float = 30.0
    """After one node's process fails, how long the others get to exit by themselves."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every rank (NCCL_*, ...)."""


class Launcher(ABC):
    name = "base"

    def __init__(self, options: LaunchOptions | None = None):
        self.options = options or LaunchOptions()

    @abstractmethod
    def commands(self, spec: RunSpec, sweep_dir: Path, port: int) -> list[list[str]]:
        """The command for each node (what --dry-run prints)."""

    @abstractmethod
    def launch(self, spec: RunSpec, sweep_dir: Path) -> dict:
        """Run one spec to completion or deadline; return its record (also written to sweep_dir)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainer_argv(spec: RunSpec, sweep_dir: Path, sweep_id: str) -> list[str]:
    return ["-m", "trainer", *spec.trainer_config(out=str(sweep_dir), sweep_id=sweep_id).to_argv()]


def join_commands(cmds: list[list[str]]) -> str:
    """One shell line that starts every node's command (what a record calls `command`)."""
    return " & \\\n".join(shlex.join(c) for c in cmds) + (" & wait" if len(cmds) > 1 else "")


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env.setdefault("DS_ACCELERATOR", "cpu" if not _has_cuda() else "cuda")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # one BLAS thread per rank: ranks share the cores, oversubscription distorts step times
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // 2)) if not _has_cuda() else "4")
    return env


def _has_cuda() -> bool:
    return Path("/dev/nvidiactl").exists()


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
        fh = log.open("w")
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        procs.append(Proc(node, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                                 start_new_session=True), log))  # own process group
    return procs


def kill(procs: list[Proc]) -> None:
    """Kill each launch's own process group (torchrun and its ranks), nothing else."""
    for p in procs:
        if p.popen.poll() is None:
            try:
                os.killpg(p.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def supervise(procs: list[Proc], opts: LaunchOptions, heartbeat: Path) -> str | None:
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
        if heartbeat.exists() and time.time() - heartbeat.stat().st_mtime > opts.heartbeat_s:
            kill(procs)
            return f"no step finished for {opts.heartbeat_s:.0f} s (heartbeat {heartbeat})"
        if any(c not in (None, 0) for c in codes):
            failed_at = failed_at or now
            if now - failed_at > opts.grace_s:
                kill(procs)
                return None
        time.sleep(0.2)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_RANK_FAIL = re.compile(r"rank\s*:\s*(\d+).*?\n\s*exitcode\s*:\s*(-?\d+)", re.S)
_OOM = re.compile(r"out of memory|OutOfMemoryError", re.I)
_EXCEPTION = re.compile(r"^(?:\[rank(\d+)\]: )?([\w.]+(?:Error|Exception|Interrupt)): (.*)$", re.M)
_PREFIX = re.compile(r"^\[([^:\]]+):(\d+)\] error: (.*)$", re.M)


def classify(procs: list[Proc], killed_because: str | None) -> tuple[str, dict]:
    """(status, error) for a run whose trainer wrote no record, from exit codes and logs."""
    logs = {p.node: p.log.read_text(errors="replace") if p.log.exists() else "" for p in procs}
    log_paths = ", ".join(str(p.log) for p in procs)
    if killed_because:
        lasts = "\n".join(f"--- node {n} ---\n{tail(p.log, 8)}" for n, p in zip(logs, procs))
        return "timeout", record.error("timeout", f"{killed_because}; last lines:\n{lasts}", log=log_paths)
    for node, text in logs.items():
        m = _PREFIX.search(text)  # the trainer's own "[host:rank] error: ..." line
        if m:
            kind = "oom" if _OOM.search(m.group(3)) else "crash"
            return ("oom" if kind == "oom" else "failed"), record.error(
                kind, m.group(3), rank=int(m.group(2)), host=m.group(1), log=str(procs[node].log))
    for node, text in logs.items():
        if _OOM.search(text):
            return "oom", record.error("oom", "out of memory (see log)", log=str(procs[node].log))
        for rank, code in _RANK_FAIL.findall(text):
            code = int(code)
            how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            if code == -9:
                how += " (SIGKILL: the kernel's OOM killer, or someone killed it)"
            raised = [m for m in _EXCEPTION.findall(text) if not m[0] or m[0] == rank]
            if raised:
                how += f": {raised[-1][1]}: {raised[-1][2]}"
            return "failed", record.error("crash", f"rank {rank} {how}", rank=int(rank), host=socket.gethostname(),
                                          log=str(procs[node].log))
    codes = {p.node: p.popen.returncode for p in procs}
    return "failed", record.error("crash", f"exit codes by node {codes}; last lines:\n{tail(procs[0].log)}",
                                  log=log_paths)


def python() -> str:
    return sys.executable
