"""Process supervision for launchers that start one process per node from here: each in its own
session (cleanup kills only this run's processes and every descendant), a deadline, a heartbeat
from rank 0, a grace period after one node fails."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.launchers.options import LaunchOptions


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
