"""Who is running what in a results directory: one `invoke bench` per sweep, and each run claimed
atomically before it starts, so no run is ever executed twice. Different sweeps in one results
directory run side by side.

The sweep lock is an flock on <sweep>/sweep.lock (the kernel releases it when its holder dies,
however it dies, so there is nothing stale to judge); the file says who holds it (pid, host,
since) for the message the second process prints. A run claim is <run_id>.claim, created
atomically (a hard link: O_EXCL's create, with its content already in it) while the sweep lock
is held; one that is already there was left by a holder of
the lock that is gone (a crash, a host that went down) and is taken over, with a note, unless
its holder is a live process on this host.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from stackbench.core.errors import UserError

HOST = socket.gethostname()


class Busy(UserError):
    """Another live process holds the lock."""


def _me(what: str) -> bytes:
    return json.dumps({"pid": os.getpid(), "host": HOST, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "what": what}).encode()


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _alive_here(holder: dict) -> bool:
    """A live process on this host other than this one (a container restarted with the same pid
    finds its own pid in what it left: that is not a live holder)."""
    pid = holder.get("pid")
    if holder.get("host") != HOST or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_exclusive(path: Path, body: bytes) -> None:
    """Create path holding body, or FileExistsError: written beside it, then hard-linked into
    place (link is O_EXCL's atomic create, and a reader never sees the file empty)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(body)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class SweepLock:
    def __init__(self, sweep_dir: Path):
        self.path, self.what, self.fd = Path(sweep_dir) / "sweep.lock", f"sweep {Path(sweep_dir).name}", None

    def __enter__(self) -> "SweepLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = _read(self.path)
            raise Busy(f"{self.what} is already being run by pid {other.get('pid', '?')} on {other.get('host', '?')} "
                       f"(since {other.get('since', '?')})", where=str(self.path),
                       fix="wait for it to finish (its records appear as its runs end), or give this one another "
                           "--sweep") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _me(self.what), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # the file stays (unlinking a lock file races the next locker)
            os.close(self.fd)  # and the flock goes with it
            self.fd = None


class RunClaim:
    def __init__(self, sweep_dir: Path, run_id: str):
        self.path, self.what, self.held = Path(sweep_dir) / f"{run_id}.claim", f"run {run_id}", False

    def acquire(self) -> dict | None:
        """Take it (None), or say who holds it ({pid, host, since}) when that is a live process here."""
        for _ in range(2):
            try:
                _create_exclusive(self.path, _me(self.what))
            except FileExistsError:
                other = _read(self.path)
                if _alive_here(other):
                    return other
                print(f"note: {self.path} was left by pid {other.get('pid', '?')} on {other.get('host', '?')}, "
                      "which no longer holds the sweep: taken over", file=sys.stderr)
                self.path.unlink(missing_ok=True)
                continue
            self.held = True
            return None
        return _read(self.path) or {"pid": "?", "host": "?"}

    def release(self) -> None:
        if self.held and _read(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False
