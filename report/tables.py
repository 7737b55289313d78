"""Aggregations people act on: per model and task, ZeRO stage x nodes; scaling efficiency against
the smallest node count; the best configuration per node count; failures with their causes;
predicted against measured memory; a baseline comparison that flags regressions larger than the
runs' own spread."""

from __future__ import annotations

import pandas as pd

from report.load import KEY

GROUP = ["model", "task", "backend", "offload", "gpus_per_node", "micro_batch", "seq_len", "dtype"]


def ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if not df.empty else df


def scaling(df: pd.DataFrame) -> pd.DataFrame:
    """tokens/s at N nodes over (tokens/s at the smallest N0 x N/N0), per configuration and ZeRO stage."""
    runs = ok(df).copy()
    if runs.empty:
        return runs.assign(scaling_efficiency=[])
    keys = GROUP + ["zero_stage"]
    base = runs.loc[runs.groupby(keys, dropna=False)["nodes"].idxmin(), keys + ["nodes", "tokens_per_s"]]
    base = base.rename(columns={"nodes": "base_nodes", "tokens_per_s": "base_tokens_per_s"})
    runs = runs.merge(base, on=keys, how="left")
    runs["scaling_efficiency"] = runs["tokens_per_s"] / (runs["base_tokens_per_s"] * runs["nodes"] / runs["base_nodes"])
    return runs


def matrix(df: pd.DataFrame, value: str = "tokens_per_s_per_device") -> dict[tuple, pd.DataFrame]:
    """(model, task) -> ZeRO stage (rows) x nodes (columns) of `value`, status where not ok."""
    out = {}
    for (model, task), g in df.groupby(["model", "task"], dropna=False):
        cell = g.apply(lambda r: f"{r[value]:.4g}" if r["status"] == "ok" and pd.notna(r[value]) else r["status"], axis=1)
        g = g.assign(cell=cell, stage=g["zero_stage"].astype(str) + g["offload"].map(
            {"none": "", "optimizer": " +opt offload", "optimizer+params": " +opt+param offload"}).fillna(""))
        out[(model, task)] = g.pivot_table(index="stage", columns="nodes", values="cell", aggfunc="first")
    return out


def best(df: pd.DataFrame) -> pd.DataFrame:
    """The fastest ok configuration (tokens/s per device) per model, task and node count."""
    runs = ok(df).dropna(subset=["tokens_per_s_per_device"])
    if runs.empty:
        return runs
    idx = runs.groupby(["model", "task", "nodes"])["tokens_per_s_per_device"].idxmax()
    cols = ["model", "task", "nodes", "zero_stage", "offload", "micro_batch", "seq_len", "tokens_per_s_per_device",
            "mfu", "peak_gib", "run_id"]
    return runs.loc[idx, cols].sort_values(["model", "task", "nodes"])


def failures(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["run_id", "status", "error_kind", "error_host", "error_rank", "error"]
    return df[df["status"] != "ok"][cols] if not df.empty else df


def memory(df: pd.DataFrame) -> pd.DataFrame:
    """Predicted next to measured for every run that has both, with the error in percent."""
    runs = df.dropna(subset=["peak_gib", "predicted_gib"])
    cols = ["run_id", "task", "zero_stage", "offload", "world_size", "predicted_gib", "peak_gib", "peak_source",
            "prediction_error_pct"]
    return runs[cols]


def compare(current: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Runs matched by configuration; a regression is a drop larger than either run's own spread
    ((p90 - p10) / median of its step times), and at least 2%."""
    cur, base = ok(current), ok(baseline)
    if cur.empty or base.empty:
        return pd.DataFrame(columns=KEY + ["tokens_per_s_per_device", "baseline", "delta_pct", "noise_pct", "verdict"])
    merged = cur.merge(base, on=KEY, suffixes=("", "_base"))

    def spread(prefix: str) -> pd.Series:
        return (merged[f"step_p90_s{prefix}"] - merged[f"step_p10_s{prefix}"]) / merged[f"step_s{prefix}"]

    merged["delta_pct"] = 100 * (merged["tokens_per_s_per_device"] / merged["tokens_per_s_per_device_base"] - 1)
    merged["noise_pct"] = 100 * pd.concat([spread(""), spread("_base")], axis=1).max(axis=1).clip(lower=0.02)
    merged["verdict"] = "same"
    merged.loc[merged["delta_pct"] < -merged["noise_pct"], "verdict"] = "REGRESSION"
    merged.loc[merged["delta_pct"] > merged["noise_pct"], "verdict"] = "faster"
    return merged[KEY + ["tokens_per_s_per_device", "tokens_per_s_per_device_base", "delta_pct", "noise_pct",
                         "verdict"]].rename(columns={"tokens_per_s_per_device_base": "baseline"})
