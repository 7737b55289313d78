"""Records -> one pandas row per run (core.record.to_row, for every status and both schemas).
Every file under the results directory that claims the result schema is checked; what is skipped
is listed with the reason (never silently dropped)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from core import record, secrets

# a run's configuration, for grouping and for matching against a baseline
KEY = ["model", "task", "backend", "zero_stage", "offload", "nodes", "gpus_per_node", "micro_batch", "seq_len", "dtype"]


def load(results: str | Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(one row per valid record, [(path, why skipped)])."""
    rows, skipped = [], []
    for path in sorted(Path(results).rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            skipped.append((str(path), f"not JSON: {e}"))
            continue
        if not isinstance(rec, dict) or not str(rec.get("schema", "")).startswith("stackbench.result/"):
            continue  # sweep.json, preflight, envcheck reports, manifests: other files, not skipped records
        if rec["schema"] not in (record.SCHEMA, record.SCHEMA_V1):
            skipped.append((str(path), f"schema {rec['schema']}: written by a newer stackbench"))
            continue
        rec = secrets.redact_obj(record.as_current(rec))  # a record from elsewhere may hold one: not in the report
        problems = record.validate(rec)
        if problems:
            skipped.append((str(path), "; ".join(problems)))
            continue
        rows.append(record.to_row(rec, str(path)))
    df = pd.DataFrame(rows)
    if not df.empty:
        # the same record copied into two folders counts once (one config in two sweeps, e.g. two launchers, twice)
        df = df.drop_duplicates(["sweep_id", "run_id"], keep="last")
    return df, skipped
