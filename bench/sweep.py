"""Run a list of specs through a launcher, one record per run, never losing a sweep.

Resume: a run whose record says ok is not run again. Every other outcome is a record too, and
the sweep goes on. Ctrl-C marks the running run interrupted and leaves the others as they are.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.launchers import Launcher
from bench.spec import RunSpec
from trainer import record


def sweep_id_for(specs: list[RunSpec]) -> str:
    """The same matrix gives the same id, so running the same command again resumes it."""
    digest = hashlib.sha256(json.dumps([asdict(s) for s in specs], sort_keys=True).encode()).hexdigest()[:8]
    return f"sweep-{digest}"


def done(sweep_dir: Path, spec: RunSpec) -> dict | None:
    path = sweep_dir / f"{spec.run_id}.json"
    if path.exists():
        try:
            rec = record.read(path)
        except (OSError, json.JSONDecodeError):
            return None
        if rec.get("status") == "ok":
            return rec
    return None


def run_sweep(specs: list[RunSpec], launcher: Launcher, sweep_dir: Path, *, quiet: bool | None = None) -> list[dict]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps({"specs": [asdict(s) for s in specs]}, indent=1) + "\n")
    console = Console(stderr=True)
    quiet = not sys.stderr.isatty() if quiet is None else quiet
    records: list[dict] = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet)
    with progress:
        bar = progress.add_task("sweep", total=len(specs))
        for i, spec in enumerate(specs, 1):
            prior = done(sweep_dir, spec)
            if prior:
                records.append(prior)
                _say(progress, quiet, f"[{i}/{len(specs)}] {spec.run_id}: already ok, skipped (resume)")
                progress.advance(bar)
                continue
            progress.update(bar, description=f"{spec.run_id}")
            t0 = time.monotonic()
            rec = launcher.launch(spec, sweep_dir)
            records.append(rec)
            why = f": {rec['error']['kind']}: {rec['error']['message'].splitlines()[0]}" if rec.get("error") else ""
            _say(progress, quiet,
                 f"[{i}/{len(specs)}] {spec.run_id}: {rec['status']} in {time.monotonic() - t0:.0f} s{why}")
            progress.advance(bar)
    return records


def _say(progress, quiet: bool, line: str) -> None:
    if quiet:
        print(line, file=sys.stderr, flush=True)
    else:
        progress.console.print(line)
