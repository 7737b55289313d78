"""Process supervision for launchers that start one process per node from here: each in its own
session (cleanup kills only this run's processes and every descendant), a deadline, a heartbeat
from rank 0, a grace period after one node fails."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stackbench.bench.launchers.options import LaunchOptions
from stackbench.core.proctree import kill_trees


@dataclass
class NodeCommand:
    """What runs for one node: its argv and, for ssh, what goes on its standard input (the
    environment, secrets included: never on a command line). That input then stays open: the
    far side stops the command when it closes (bench/launchers/remote.py)."""

    argv: list[str]
    stdin: bytes | None = None


@dataclass
class Proc:
    node: int
    popen: subprocess.Popen
    log: Path


def start(cmds: list[NodeCommand], env: dict[str, str], log_dir: Path) -> list[Proc]:
    """Start each node's command in a session of its own, output to <log_dir>/node<i>.log;
    env on top of this process's environment (which holds the secrets, for local nodes)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for node, cmd in enumerate(cmds):
        log = log_dir / f"node{node}.log"
        with log.open("w") as fh:
            fh.write("$ " + shlex.join(cmd.argv) + "\n")
            fh.flush()
            popen = subprocess.Popen(cmd.argv, stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL if cmd.stdin is None else subprocess.PIPE,
                                     env=dict(os.environ, **env), start_new_session=True)
        if cmd.stdin is not None:
            try:
                popen.stdin.write(cmd.stdin)
                popen.stdin.flush()
            except BrokenPipeError:  # it already exited (ssh could not connect): its log says why
                pass
        procs.append(Proc(node, popen, log))
    return procs


def kill(procs: list[Proc]) -> None:
    """Kill every node's process tree at once, then reap the node processes."""
    kill_trees([p.popen.pid for p in procs if p.popen.poll() is None])
    for p in procs:
        try:
            p.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        close_input(p)


def close_input(p: Proc) -> None:
    if p.popen.stdin:
        try:
            p.popen.stdin.close()
        except OSError:
            pass


def supervise(procs: list[Proc], opts: LaunchOptions, heartbeat: Path | None) -> str | None:
    """Wait for every node; returns None when all exited, else why they were killed."""
    start_t, failed_at = time.monotonic(), None
    while True:
        codes = [p.popen.poll() for p in procs]
        if all(c is not None for c in codes):
            for p in procs:
                close_input(p)
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
