"""Records -> one pandas row per run. Every file under the results directory that claims the
result schema is checked; what is skipped is listed with the reason (never silently dropped)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from trainer import record

# a run's configuration, for grouping and for matching against a baseline
KEY = ["model", "task", "backend", "zero_stage", "offload", "nodes", "gpus_per_node", "micro_batch", "seq_len", "dtype"]


def _offload(cfg: dict) -> str:
    if cfg.get("offload_param"):
        return "optimizer+params"
    if cfg.get("offload_optimizer"):
        return "optimizer"
    return (cfg.get("spec") or {}).get("offload", "none")


def row(rec: dict, path: str = "") -> dict:
    cfg = rec.get("config") or {}
    spec = cfg.get("spec") or {}
    m = rec.get("metrics") or {}
    mem = m.get("memory") or {}
    step = m.get("step_time_s") or {}
    pred = rec.get("prediction") or {}
    err = rec.get("error") or {}
    gpu_peak = mem.get("max_allocated_gib")
    # CPU: what the run added above its pre-model RSS (older records: the whole RSS, libraries included)
    host = mem.get("host_training_gib") if mem.get("host_training_gib") is not None else mem.get("host_rss_peak_gib")
    peak = gpu_peak if gpu_peak is not None else host
    model = cfg.get("model")
    out = {
        "run_id": rec.get("run_id"), "sweep_id": rec.get("sweep_id"), "status": rec.get("status"),
        "error_kind": err.get("kind"), "error": (err.get("message") or "").splitlines()[0][:200] if err else None,
        "error_host": err.get("host"), "error_rank": err.get("rank"),
        "model": model.get("name") if isinstance(model, dict) else (model or spec.get("model")),
        "params": model.get("params") if isinstance(model, dict) else None,
        "task": cfg.get("task") or spec.get("task"), "backend": cfg.get("backend", "native"),
        "zero_stage": cfg.get("zero_stage", spec.get("zero_stage")), "offload": _offload(cfg),
        "nodes": cfg.get("nodes", spec.get("nodes")), "gpus_per_node": cfg.get("gpus_per_node", spec.get("procs_per_node")),
        "world_size": cfg.get("world_size"), "micro_batch": cfg.get("micro_batch", spec.get("micro_batch")),
        "seq_len": cfg.get("seq_len", spec.get("seq_len")), "dtype": cfg.get("dtype", spec.get("dtype")),
        "launcher": cfg.get("launcher", spec.get("launcher")),
        "step_s": step.get("median"), "step_p10_s": step.get("p10"), "step_p90_s": step.get("p90"), "step_cv": step.get("cv"),
        "tokens_per_s": m.get("tokens_per_s"), "tokens_per_s_per_device": m.get("tokens_per_s_per_device"),
        "samples_per_s": m.get("samples_per_s"), "tflops_per_device": m.get("tflops_per_device"), "mfu": m.get("mfu"),
        "peak_gib": peak, "peak_source": "device" if gpu_peak is not None else (
            "host RSS above pre-model" if mem.get("host_training_gib") is not None else "host RSS" if peak is not None
            else None),
        "predicted_gib": pred.get("total_gib"), "fits": pred.get("fits"),
        "loss_first": (m.get("loss") or {}).get("first"), "loss_last": (m.get("loss") or {}).get("last"),
        "first_step_s": (m.get("startup_s") or {}).get("first_step_done"),
        "device": ((rec.get("environment") or {}).get("ranks") or [{}])[0].get("device") or "cpu",
        "finished_at": rec.get("finished_at"), "path": path,
    }
    if out["peak_gib"] and out["predicted_gib"]:
        out["prediction_error_pct"] = 100 * (out["predicted_gib"] - out["peak_gib"]) / out["peak_gib"]
    else:
        out["prediction_error_pct"] = None
    return out


def load(results: str | Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(one row per valid record, [(path, why skipped)])."""
    rows, skipped = [], []
    for path in sorted(Path(results).rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            skipped.append((str(path), f"not JSON: {e}"))
            continue
        if not isinstance(rec, dict) or "schema" not in rec or not str(rec.get("schema", "")).startswith("stackbench.result/"):
            continue  # sweep.json, preflight, envcheck reports, manifests: other files, not skipped records
        problems = record.validate(rec)
        if problems:
            skipped.append((str(path), "; ".join(problems)))
            continue
        rows.append(row(rec, str(path)))
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.drop_duplicates("run_id", keep="last")  # the same run copied into two folders counts once
    return df, skipped
