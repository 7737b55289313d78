"""Who is running what in a results directory: one `invoke bench` per sweep (a lock that names its
pid and host), and each run claimed atomically (O_CREAT | O_EXCL, which NFS honours too) before it
starts, so no run is ever executed twice. Different sweeps in one results directory run side by
side. A claim left by a process that died on this host is taken over; one from another host is
named, with how to clear it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from core.errors import UserError

HOST = socket.gethostname()


class Busy(UserError):
    """Another live process holds the claim."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Claim:
    """A file that exists while its holder works: {pid, host, since, what}."""

    def __init__(self, path: Path, what: str):
        self.path, self.what, self.held = Path(path), what, False

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def try_acquire(self) -> dict | None:
        """Take it (None), or say who holds it (their {pid, host, since, what})."""
        body = json.dumps({"pid": os.getpid(), "host": HOST, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "what": self.what}).encode()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self.holder()
                if other.get("host") == HOST and isinstance(other.get("pid"), int) and not _alive(other["pid"]):
                    print(f"note: {self.path} was left by pid {other['pid']}, which is gone: taken over",
                          file=sys.stderr)
                    self.path.unlink(missing_ok=True)
                    continue
                return other or {"pid": "?", "host": "?", "since": "?"}
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            self.held = True
            return None
        return self.holder()

    def release(self) -> None:
        if self.held and self.holder().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "Claim":
        other = self.try_acquire()
        if other is not None:
            raise Busy(f"{self.what} is already being run by pid {other.get('pid')} on {other.get('host')} "
                       f"(since {other.get('since')})", where=str(self.path),
                       fix="wait for it to finish, or use another --sweep; if that process is gone (another host "
                           f"crashed), delete {self.path}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def sweep_lock(sweep_dir: Path) -> Claim:
    return Claim(sweep_dir / "sweep.lock", f"sweep {sweep_dir.name}")


def run_claim(sweep_dir: Path, run_id: str) -> Claim:
    return Claim(sweep_dir / f"{run_id}.claim", f"run {run_id}")
