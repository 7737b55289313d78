"""Drift: what is installed against the lock of the image this claims to be. A lock is a pip
requirements file (name==version with --hash lines) or the directory `invoke build` resolves
(docker/locks/<profile>/: wheels.txt, sdists.txt, overrides.txt, git.txt; overrides win). An
image built from one carries its path in STACKBENCH_LOCK and its hash in STACKBENCH_LOCK_HASH."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from stackbench.core.lockfile import lock_hash, normalize, read_lock
from stackbench.envcheck.check import Check, area

ok, warn, fail, skip = area("drift")


def installed() -> dict[str, str]:
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def differences(pins: dict[str, str], have: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(package, locked, installed or None) for every pin that does not hold."""
    out = []
    for name, want in sorted(pins.items()):
        got = have.get(name)
        if got is None or got.split("+")[0] != want.split("+")[0] or ("+" in want and got != want):
            out.append((name, want, got))
    return out


def left_out() -> dict[str, str]:
    """{distribution: why} for locked pieces the image was built without (`invoke build --no-flash-attn`
    sets STACKBENCH_LEFT_OUT): reported as such, not as drift."""
    import json

    try:
        value = json.loads(os.environ.get("STACKBENCH_LEFT_OUT") or "{}")
    except ValueError:
        return {}
    return {normalize(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def check_drift(lock: str | None = None) -> list[Check]:
    lock = lock or os.environ.get("STACKBENCH_LOCK")
    if not lock:
        return [skip("lock", "", "no lock given (--lock FILE), and STACKBENCH_LOCK is unset: not a stackbench image")]
    if not Path(lock).exists():
        return [fail("lock", lock, "the lock does not exist", "pass the lock the image was built from")]
    out = []
    claimed = os.environ.get("STACKBENCH_LOCK_HASH")
    actual = lock_hash(lock)
    if claimed and claimed != actual[: len(claimed)]:
        out.append(fail("lock hash", actual[:12], f"the image claims lock {claimed[:12]}, the file is {actual[:12]}",
                        "the lock was edited after the build: rebuild, or pass the original lock"))
    pins, gaps, have = read_lock(lock), left_out(), installed()
    out += [warn("left out at build", name, f"locked {pins[name]}, not installed: {why}",
                 "rebuild without the flag that left it out to have it")
            for name, why in gaps.items() if name in pins and name not in have]
    pins = {name: v for name, v in pins.items() if name not in gaps}
    diffs = differences(pins, have)
    if not diffs:
        return out + [ok("installed vs lock", f"{len(pins)} pins hold", lock)]
    listed = "; ".join(f"{n}: locked {w}, installed {g or 'missing'}" for n, w, g in diffs)
    return out + [fail("installed vs lock", f"{len(diffs)} differ", listed,
                       "reinstall from the lock (pip install --require-hashes -r LOCK) or rebuild the image")]


CHECKS = [check_drift]
