"""Records -> one pandas row per run (core.record.to_row, for every status and both schemas).
Every file under the results directory that claims the result schema is checked; what is skipped
is listed with the reason (never silently dropped).

The committed reference sweeps (results/reference/) are someone else's runs: a scan of a results
folder leaves its reference/ folder out, and says so (Scan.left_out); they are read when named
(--results results/reference, or a sweep inside it)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from stackbench.core import record, secrets

# a run's configuration, for grouping and for matching against a baseline
KEY = ["model", "task", "backend", "zero_stage", "offload", "nodes", "gpus_per_node", "micro_batch", "seq_len", "dtype"]
# <results>/reference/: the committed reference sweeps, read only when named
REFERENCE = "reference"


@dataclass(frozen=True)
class Scan:
    """The record candidates under a results folder, and what the scan left out."""

    root: Path
    files: list[Path] = field(default_factory=list)
    """every *.json under root, sorted, except under left_out"""
    left_out: Path | None = None
    """root/reference/ when it is there: the committed reference sweeps, not the user's runs"""
    left_out_folders: int = 0
    """how many folders of *.json files lie under left_out (its sweeps)"""


def scan(results: str | Path) -> Scan:
    """The JSON files under results, its reference/ folder left out (read when results is it or inside it)."""
    root = Path(results)
    depth = len(root.parts)  # rglob's paths start with root's parts
    files, reference = [], []
    for path in sorted(root.rglob("*.json"), key=lambda p: p.parts):  # Path's own order, computed once per path
        parts = path.parts
        (reference if len(parts) > depth + 1 and parts[depth] == REFERENCE else files).append(path)
    return Scan(root, files, root / REFERENCE if reference else None, len({p.parent for p in reference}))


def _credentials() -> dict[str, str]:
    """The environment's secrets, read once per load (not once per record: thousands of records)."""
    return {k: v for k, v in secrets.present().items() if secrets.is_credential(k, v)}


def load(results: str | Path | Scan) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(one row per valid record, [(path, why skipped)]) from a results folder (scan()'s files) or a Scan."""
    found = results if isinstance(results, Scan) else scan(results)
    credentials = _credentials()
    rows, skipped = [], []
    for path in found.files:
        name = os.fspath(path)
        try:
            with open(name, encoding="utf-8") as f:
                rec = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            skipped.append((name, f"not JSON: {e}"))
            continue
        if not isinstance(rec, dict) or not str(rec.get("schema", "")).startswith("stackbench.result/"):
            continue  # sweep.json, preflight, envcheck reports, manifests: other files, not skipped records
        if rec["schema"] not in (record.SCHEMA, record.SCHEMA_V1):
            skipped.append((name, f"schema {rec['schema']}: written by a newer stackbench"))
            continue
        rec = record.as_current(rec)
        if credentials:  # a record from elsewhere may hold one: not in the report (no credential set: nothing to find)
            rec = secrets.redact_obj(rec, credentials)
        problems = record.validate(rec)
        if problems:
            skipped.append((name, "; ".join(problems)))
            continue
        rows.append(record.to_row(rec, name))
    df = pd.DataFrame(rows)
    if not df.empty:
        # the same record copied into two folders counts once (one config in two sweeps, e.g. two launchers, twice)
        df = df.drop_duplicates(["sweep_id", "run_id"], keep="last")
    return df, skipped
