"""Files stackbench writes under a results directory: atomic (a reader never sees half a file, a
failure never leaves one), with every credential's value redacted (core.secrets), and a directory
that cannot take them (read-only, full) is a clear error naming it, not a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from stackbench.core import secrets
from stackbench.core.errors import UserError

# Below this much free space a sweep does not start: each run writes logs and a record (about a
# MiB on CPU, tens of MiB with DeepSpeed's per-rank logs on 8-GPU nodes).
MIN_FREE_BYTES = 64 * 2**20


class ResultsUnwritable(UserError):
    """The directory cannot take a file: read-only, full, not ours."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unwritable(directory: Path, err: OSError, where: str) -> ResultsUnwritable:
    why = {errno.EROFS: "is on a read-only filesystem", errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
           errno.EACCES: "is not writable by this user", errno.EPERM: "is not writable by this user"}.get(
        err.errno, f"cannot be written ({err.strerror})")
    return ResultsUnwritable(f"cannot write in {directory}: it {why}", where=where,
                             fix=f"free space or point {where} at a writable directory (what is already there is kept)")


def write_atomic(path: str | Path, text: str, *, redact: bool = True, mode: int | None = None,
                 where: str = "--results") -> Path:
    """Write text (credentials redacted unless told) to a temp file beside path, then rename it
    over path; mode: the file's permissions (default: what the umask gives a new file)."""
    path = Path(path)
    text = secrets.redact(text) if redact else text
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)  # mkstemp's 0600 would hide reports
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _unwritable(path.parent, e, where) from None
    finally:
        if tmp:  # failed or interrupted (a second Ctrl-C in fsync): no temp file left
            Path(tmp).unlink(missing_ok=True)
    return path


def check_writable(directory: str | Path, min_free: int = MIN_FREE_BYTES, where: str = "--results") -> None:
    """Before work starts: the directory can be created, written to, and has room."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _unwritable(directory, e, where) from None
    free = shutil.disk_usage(directory).free
    if free < min_free:
        raise ResultsUnwritable(f"{directory} has {free / 2**20:.1f} MiB free; a sweep needs at least "
                                f"{min_free / 2**20:.0f} MiB for its logs and records", where=where,
                                fix=f"free space or point {where} at a directory with room")


def build_once(directory: Path, complete: str, build) -> bool:
    """Make `directory` once: build(tmp) fills a temporary directory beside it, renamed into place.
    Processes of one host wait for each other (an flock); a host sharing the filesystem (NFS: no
    flock across hosts) may finish first, and its directory is kept. `complete`: the file whose
    presence says a directory is whole. True when this process built it."""
    import fcntl

    if (directory / complete).exists():
        return False
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (directory / complete).exists():
            return False
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".tmp-"))
        try:
            build(tmp)
            if not (tmp / complete).exists():
                raise RuntimeError(f"building {directory} left no {complete} in {tmp}")
            try:
                os.rename(tmp, directory)
            except OSError:
                if not (directory / complete).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True
