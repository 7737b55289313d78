"""Aggregations people act on: per model and task, ZeRO stage x nodes; scaling efficiency against
the smallest node count; the best configuration per node count; failures with their causes;
predicted against measured memory; a baseline comparison that flags regressions larger than the
runs' own spread."""

from __future__ import annotations

import pandas as pd

from stackbench.core.config import stage_label
from stackbench.core.record import varying_knobs
from stackbench.report.load import KEY


def keys(*frames: pd.DataFrame) -> list[str]:
    """KEY plus every other knob that varies in these frames: what tells configurations apart."""
    return KEY + varying_knobs(pd.concat([f for f in frames if not f.empty] or [pd.DataFrame()]))


def _hashable(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Group-by-able: a list or dict knob value (none today) as its text. Only a column of Python
    objects can hold one: a numeric or string column is left as it is (thousands of rows)."""
    return df.assign(**{c: df[c].map(lambda v: v if isinstance(v, (str, int, float, bool)) or v is None else str(v))
                        for c in cols if c in df and df[c].dtype == object})

GROUP = ["model", "task", "backend", "offload", "gpus_per_node", "micro_batch", "seq_len", "dtype"]
# below this, differences are run-to-run noise even on a quiet machine: never called a difference
NOISE_FLOOR = 0.02
# what a configuration's label leaves out: the table's own axes, and how long a run was measured
_LABEL_SHOWN = ("model", "task", "zero_stage", "offload", "nodes", "steps", "warmup_steps")


def ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if not df.empty else df


def label(df: pd.DataFrame) -> pd.Series:
    """'ZeRO-3 +opt offload' per row (core.config.stage_label), once per distinct configuration:
    reports over thousands of runs."""
    labels = {pair: stage_label(*pair) for pair in set(zip(df["zero_stage"], df["offload"]))}
    return pd.Series([labels[pair] for pair in zip(df["zero_stage"], df["offload"])], index=df.index, dtype=object)


def run_spread(runs: pd.DataFrame) -> pd.Series:
    """Each run's own spread: (p90 - p10) / median of its step times."""
    return (runs["step_p90_s"] - runs["step_p10_s"]) / runs["step_s"]


def config_label(df: pd.DataFrame) -> pd.Series:
    """'ZeRO-2', 'ZeRO-3 +opt offload micro_batch=4': the stage, and every other knob that varies
    among the rows of the same model and task (model, task and nodes are the tables' own axes);
    a knob left at nothing (no --ds, no --deepspeed) is not written."""
    out = label(df)
    if df.empty:
        return out
    def part(name: str, v) -> str:
        return "" if v is None or (isinstance(v, float) and v != v) or v == "" else f" {name}={v}"

    for _, g in df.groupby(["model", "task"], dropna=False, sort=False):
        for name in varying_knobs(g, shown=_LABEL_SHOWN):
            out.loc[g.index] = out.loc[g.index] + g[name].map(lambda v, name=name: part(name, v))
    return out


def configurations(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and node count over its ok runs: how many runs, the median
    tokens/s per device (core.record.THROUGHPUT_CONVENTION), its spread (the largest of each run's
    own and of the range between runs, relative to the median), the median step time and the
    tokens/s at it, the largest peak memory, the median MFU."""
    cols = ["configuration", "runs", "tokens_per_s_per_device", "spread", "step_s", "tokens_per_s_median_step",
            "tokens_per_s", "world_size", "peak_gib", "mfu", "example"]
    if df.empty or ok(df).dropna(subset=["tokens_per_s_per_device"]).empty:
        return pd.DataFrame(columns=KEY + cols)
    # labelled among every run, failed ones included: the same configuration reads the same in every table
    labelled = df if "configuration" in df else df.assign(configuration=config_label(df))
    runs = ok(labelled).dropna(subset=["tokens_per_s_per_device"])
    conf = keys(runs)
    runs = _hashable(runs, conf).assign(spread=run_spread(runs))
    agg = (runs.groupby(conf + ["configuration"], dropna=False)
           .agg(runs=("run_id", "size"), tokens_per_s_per_device=("tokens_per_s_per_device", "median"),
                low=("tokens_per_s_per_device", "min"), high=("tokens_per_s_per_device", "max"),
                spread=("spread", "max"), step_s=("step_s", "median"),
                tokens_per_s_median_step=("tokens_per_s_median_step", "median"),
                tokens_per_s=("tokens_per_s", "median"),
                world_size=("world_size", "first"), peak_gib=("peak_gib", "max"), mfu=("mfu", "median"),
                example=("run_id", "first"))
           .reset_index())
    between = (agg["high"] - agg["low"]) / agg["tokens_per_s_per_device"]
    agg["spread"] = pd.concat([agg["spread"], between], axis=1).max(axis=1)
    return agg.drop(columns=["low", "high"]).sort_values(["model", "task", "nodes", "tokens_per_s_per_device"],
                                                         ascending=[True, True, True, False])


def scaling(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and node count: median tokens/s and its ratio to (tokens/s at the smallest
    node count N0) x N / N0; repeated runs of a configuration are reduced by their median."""
    runs = ok(df)
    if runs.empty:
        return pd.DataFrame(columns=GROUP + ["zero_stage", "nodes", "runs", "tokens_per_s", "scaling_efficiency"])
    keys = GROUP + ["zero_stage", *varying_knobs(runs)]
    runs = _hashable(runs, keys)
    agg = (runs.groupby(keys + ["nodes"], dropna=False)["tokens_per_s"].agg(["median", "size"]).reset_index()
           .rename(columns={"median": "tokens_per_s", "size": "runs"}))
    base = agg.loc[agg.groupby(keys, dropna=False)["nodes"].idxmin(), keys + ["nodes", "tokens_per_s"]]
    base = base.rename(columns={"nodes": "base_nodes", "tokens_per_s": "base_tokens_per_s"})
    agg = agg.merge(base, on=keys, how="left")
    agg["scaling_efficiency"] = agg["tokens_per_s"] / (agg["base_tokens_per_s"] * agg["nodes"] / agg["base_nodes"])
    return agg.drop(columns=["base_nodes", "base_tokens_per_s"])


def best(df: pd.DataFrame, confs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The fastest ok configuration (median tokens/s per device, core.record.THROUGHPUT_CONVENTION)
    per model, task and node count, a row of configurations() (its median step time beside; confs:
    configurations(df) when the caller has it)."""
    confs = configurations(df) if confs is None else confs  # already fastest first within each model, task and nodes
    return confs.groupby(["model", "task", "nodes"], sort=True).head(1).sort_values(["model", "task", "nodes"])


def data(df: pd.DataFrame) -> pd.DataFrame:
    """What each dataset kept at each seq-len: rows read, kept, dropped as too long, truncated."""
    cols = ["data_path", "task", "seq_len", "too_long", "data_rows", "data_kept", "data_dropped", "data_truncated"]
    runs = df.dropna(subset=["data_rows"]) if "data_rows" in df else df.iloc[0:0]
    if runs.empty:
        return pd.DataFrame(columns=cols + ["runs"])
    return (runs.groupby(cols[:4], dropna=False)
            .agg(rows=("data_rows", "max"), kept=("data_kept", "min"), dropped=("data_dropped", "max"),
                 truncated=("data_truncated", "max"), runs=("run_id", "size")).reset_index()
            .rename(columns={"data_path": "file"}))


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """Failed runs grouped by cause: status, kind, host and message, with a count and an example."""
    bad = df[df["status"] != "ok"] if not df.empty else df
    if bad.empty:
        return pd.DataFrame(columns=["status", "error_kind", "error_host", "error", "runs", "example"])
    return (bad.fillna({"error_kind": "", "error_host": "", "error": ""})
            .groupby(["status", "error_kind", "error_host", "error"])
            .agg(runs=("run_id", "size"), example=("run_id", "first"), rank=("error_rank", "first")).reset_index()
            .sort_values("runs", ascending=False))


def predicted_vs_measured(df: pd.DataFrame, predicted: str, measured: str, error: str,
                          extra_keys: tuple = ()) -> pd.DataFrame:
    """A model's prediction next to the measurement per configuration (medians over its runs), with
    the error in percent."""
    runs = df.dropna(subset=[measured, predicted])
    keys = ["model", "task", "zero_stage", "offload", "world_size", "micro_batch", "seq_len", *extra_keys]
    if runs.empty:
        return pd.DataFrame(columns=keys + ["runs", predicted, measured, error])
    return (runs.groupby(keys, dropna=False)
            .agg(runs=("run_id", "size"), **{predicted: (predicted, "median"), measured: (measured, "median"),
                                            error: (error, "median")}).reset_index())


def memory(df: pd.DataFrame) -> pd.DataFrame:
    """The memory model's prediction against the measured peak (bench/planning/fit.py, core/memory_model.py)."""
    return predicted_vs_measured(df, "predicted_gib", "peak_gib", "prediction_error_pct", ("peak_source",))


def step_time(df: pd.DataFrame) -> pd.DataFrame:
    """The step-time model's prediction, made before each run from the sweep's earlier ones, against
    the measured median step."""
    return predicted_vs_measured(df, "predicted_step_s", "step_s", "step_prediction_error_pct")


def compare(current: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Configurations matched between the two (median over repeated runs); a regression is a drop
    larger than either side's own spread ((p90 - p10) / median of its step times), and at least 2%."""
    cur, base = ok(current), ok(baseline)
    key = keys(cur, base)  # matched on every knob that varies on either side
    cols = key + ["tokens_per_s_per_device", "baseline", "delta_pct", "noise_pct", "verdict"]
    if cur.empty or base.empty:
        return pd.DataFrame(columns=cols)

    def reduce(runs: pd.DataFrame) -> pd.DataFrame:
        return (_hashable(runs, key).assign(spread=run_spread(runs)).groupby(key, dropna=False)
                .agg(tokens_per_s_per_device=("tokens_per_s_per_device", "median"), spread=("spread", "max"))
                .reset_index())

    merged = reduce(cur).merge(reduce(base), on=key, suffixes=("", "_base"))
    merged["baseline"] = merged["tokens_per_s_per_device_base"]
    merged["delta_pct"] = 100 * (merged["tokens_per_s_per_device"] / merged["baseline"] - 1)
    merged["noise_pct"] = 100 * merged[["spread", "spread_base"]].max(axis=1).clip(lower=NOISE_FLOOR)
    merged["verdict"] = "same"
    merged.loc[merged["delta_pct"] < -merged["noise_pct"], "verdict"] = "REGRESSION"
    merged.loc[merged["delta_pct"] > merged["noise_pct"], "verdict"] = "faster"
    return merged[cols]


def backends(df: pd.DataFrame) -> pd.DataFrame:
    """Backends side by side per configuration: tokens/s per device (core.record.THROUGHPUT_CONVENTION)
    and the ratio to native, each backend's median step time beside."""
    runs = ok(df)
    if runs.empty or runs["backend"].nunique() < 2:
        return pd.DataFrame()
    conf = [k for k in keys(runs) if k != "backend"]
    runs = _hashable(runs, conf)
    wide = runs.pivot_table(index=conf, columns="backend", values="tokens_per_s_per_device", aggfunc="median")
    if "native" in wide:
        for b in [c for c in wide.columns if c != "native"]:
            wide[f"{b} / native"] = wide[b] / wide["native"]
    steps = runs.pivot_table(index=conf, columns="backend", values="step_s", aggfunc="median")
    return wide.join(steps.rename(columns=lambda b: f"{b}: median step s")).reset_index()
