"""The result record, schema `stackbench.result/1`: one JSON file per run, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA = "stackbench.result/1"
STATUSES = ("ok", "oom", "failed", "timeout", "skipped", "interrupted")
# Bump when what a metric means changes, so old and new figures are never compared blindly.
METHOD_VERSION = 1
REQUIRED = ("schema", "run_id", "sweep_id", "status", "error", "command", "started_at", "finished_at",
            "config", "metrics", "prediction", "environment")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new(run_id: str, sweep_id: str, status: str, *, config: dict, command: str, started_at: str,
        metrics: dict | None = None, error: dict | None = None, prediction: dict | None = None,
        environment: dict | None = None, **extra: Any) -> dict:
    assert status in STATUSES, status
    return {"schema": SCHEMA, "method_version": METHOD_VERSION, "run_id": run_id, "sweep_id": sweep_id,
            "status": status, "error": error, "command": command, "started_at": started_at,
            "finished_at": now(), "config": config, "metrics": metrics, "prediction": prediction,
            "environment": environment, **extra}


def error(kind: str, message: str, *, rank: int | None = None, host: str | None = None,
          log: str | None = None) -> dict:
    return {"kind": kind, "message": message, "rank": rank, "host": host, "log": log}


def validate(rec: dict) -> list[str]:
    """Problems with a record (empty when it is well-formed)."""
    problems = [f"missing field {k!r}" for k in REQUIRED if k not in rec]
    if rec.get("schema") != SCHEMA:
        problems.append(f"schema is {rec.get('schema')!r}, expected {SCHEMA!r}")
    if rec.get("status") not in STATUSES:
        problems.append(f"status {rec.get('status')!r} is not one of {STATUSES}")
    if rec.get("status") == "ok" and not rec.get("metrics"):
        problems.append("status ok without metrics")
    return problems


def write(path: str | Path, rec: dict) -> Path:
    """Write-to-temp-then-rename: a reader never sees half a record, a crash never leaves one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(rec, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_and_return(path: str | Path, rec: dict) -> dict:
    write(path, rec)
    return rec


def read(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
