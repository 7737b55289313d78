"""Files stackbench writes under a results directory: atomic (a reader never sees half a file, a
failure never leaves one), never holding a secret's value (core.secrets.redact), and a directory
that cannot take them (read-only, full) is a clear error naming it, not a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from core import secrets
from core.errors import UserError

# Below this much free space a sweep does not start: each run writes logs and a record (about a
# MiB on CPU, tens of MiB with DeepSpeed's per-rank logs on 8-GPU nodes).
MIN_FREE_BYTES = 64 * 2**20


class ResultsUnwritable(UserError):
    """The results directory cannot take a file: read-only, full, not ours."""

    kind = "bad_input"


def _unwritable(path: Path, err: OSError) -> ResultsUnwritable:
    why = {errno.EROFS: "is on a read-only filesystem", errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
           errno.EACCES: "is not writable by this user", errno.EPERM: "is not writable by this user"}.get(
        err.errno, f"cannot be written ({err.strerror})")
    return ResultsUnwritable(f"cannot write {path}: the results directory {why}", where="--results",
                             fix="free space or point --results at a writable directory (what is already there "
                                 "is kept)")


def write_atomic(path: str | Path, text: str, *, mode: int | None = None) -> Path:
    """Write text (secrets redacted) to a temp file beside path, then rename it over path."""
    path = Path(path)
    text = secrets.redact(text)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise _unwritable(path.parent, e) from None
    return path


def check_writable(directory: str | Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Before a sweep starts: the directory can be created, written to, and has room."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _unwritable(directory, e) from None
    free = shutil.disk_usage(directory).free
    if free < min_free:
        raise ResultsUnwritable(f"{directory} has {free / 2**20:.1f} MiB free; a sweep needs at least "
                                f"{min_free / 2**20:.0f} MiB for its logs and records", where="--results",
                                fix="free space or point --results at a directory with room")
