"""A lock: a pip requirements file (name==version with --hash lines) or the directory `invoke
build` resolves (docker/locks/<profile>/: wheels.txt, sdists.txt, overrides.txt, git.txt;
overrides win). Read by the image build (what to install) and by envcheck (what should be there)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


LOCK_PARTS = ("wheels.txt", "sdists.txt", "overrides.txt", "git.txt")


def read_lock(path: str | Path) -> dict[str, str]:
    """name -> version; a lock directory merges its parts, overrides last (they win)."""
    path = Path(path)
    if path.is_dir():
        pins: dict[str, str] = {}
        for part in LOCK_PARTS[:3]:
            if (path / part).exists():
                pins.update(read_lock(path / part))
        return pins
    pins = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def lock_hash(path: str | Path) -> str:
    """sha256 of a lock file, or of a lock directory's parts in a fixed order."""
    path = Path(path)
    if not path.is_dir():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for part in LOCK_PARTS:
        f = path / part
        h.update(part.encode() + b"\0" + (f.read_bytes() if f.exists() else b"") + b"\0")
    return h.hexdigest()
