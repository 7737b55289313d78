"""Stopping a process tree: the launchers' cleanup, and a node's own watchdog (trainer/liveness.py)."""

from __future__ import annotations

import os
import signal


def kill_trees(pids: list[int], grace_s: float = 0) -> None:
    """Stop each process, its group and every descendant, nothing else: the trees are listed
    first (torchrun puts each worker in a session of its own, and a worker whose torchrun died is
    no longer anyone's child), then SIGTERM and grace_s to exit when grace_s > 0, then SIGKILL."""
    import psutil

    victims: list[psutil.Process] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            victims += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass

    def signal_all(sig: int) -> None:
        for pid in pids:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for v in victims:
            try:
                v.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    descendants = [v for v in victims if v.pid not in pids]  # the roots are reaped by their parent, not here
    if grace_s > 0:
        signal_all(signal.SIGTERM)
        psutil.wait_procs(descendants, timeout=grace_s)
    signal_all(signal.SIGKILL)
    psutil.wait_procs(descendants, timeout=10)
