"""Figures (matplotlib, Agg): each function takes the runs table and returns a Figure, or None
when the data cannot show it (one node count: no scaling to draw)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from stackbench.report import tables  # noqa: E402


def _finish(fig, ax, layout: bool = True, **labels):
    """Titles and axis labels, a small legend, a tight layout: every figure ends the same way
    (layout=False: a figure of several axes lays itself out once, after its last one)."""
    ax.set(**labels)
    ax.legend(fontsize=7)
    if layout:
        fig.tight_layout()
    return fig


def _node_axis(ax, nodes) -> None:
    """Ticks at the node counts measured, as integers; a log2 axis when the counts double
    (1, 2, 4, 8 ... spaced evenly), else a linear one."""
    counts = sorted({int(n) for n in nodes})
    doubling = len(counts) >= 3 and all(b == 2 * a for a, b in zip(counts, counts[1:]))
    if doubling:
        ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("nodes (count)")


def throughput_vs_nodes(df: pd.DataFrame):
    runs = tables.ok(df)
    if runs.empty or runs["nodes"].nunique() < 2:
        return None
    tasks = sorted(runs["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for label, g in runs[runs["task"] == task].assign(label=tables.label).groupby("label"):
            g = g.groupby("nodes")["tokens_per_s"].max()
            ax.plot(g.index, g.values, marker="o", label=label)
        _node_axis(ax, runs["nodes"])
        _finish(fig, ax, layout=False, title=f"{task}: throughput", ylabel="throughput (tokens/s, all devices)")
    fig.tight_layout()
    return fig


def scaling_efficiency(df: pd.DataFrame):
    runs = tables.scaling(df)
    if runs.empty or runs["nodes"].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (task, label), g in runs.assign(label=tables.label).groupby(["task", "label"]):
        g = g.groupby("nodes")["scaling_efficiency"].mean()
        ax.plot(g.index, 100 * g.values, marker="o", label=f"{task} {label}")
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    _node_axis(ax, runs["nodes"])
    return _finish(fig, ax, title="scaling efficiency vs the smallest node count", ylabel="scaling efficiency (%)")


def memory_vs_prediction(df: pd.DataFrame):
    runs = df.dropna(subset=["peak_gib", "predicted_gib"])
    if runs.empty:
        return None
    labels = runs["task"] + " " + tables.label(runs) + " n" + runs["nodes"].astype(str)
    g = runs.assign(label=labels).groupby("label")[["peak_gib", "predicted_gib"]].median().head(40)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(g)), 3.8))
    x = range(len(g))
    ax.bar([i - 0.2 for i in x], g["peak_gib"], 0.4, label="measured peak")
    ax.bar([i + 0.2 for i in x], g["predicted_gib"], 0.4, label="predicted (memory model)")
    ax.set_xticks(list(x), g.index, rotation=60, ha="right", fontsize=7)
    return _finish(fig, ax, title="peak memory per rank: measured vs predicted", xlabel="configuration",
                   ylabel="peak memory per rank (GiB)")


def task_cost(df: pd.DataFrame):
    runs = tables.ok(df)
    if runs.empty or runs["task"].nunique() < 2:
        return None
    g = runs.groupby(["zero_stage", "task"])["tokens_per_s_per_device"].mean().unstack("task")
    ax = g.plot.bar(figsize=(5.5, 3.6), rot=0)
    ax.set(title="cost by task: tokens/s per device", xlabel="ZeRO stage",
           ylabel="throughput (tokens/s per device)")
    ax.figure.tight_layout()
    return ax.figure


def step_spread(df: pd.DataFrame):
    runs = tables.ok(df).dropna(subset=["step_s"]).head(60)
    if runs.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 0.22 * len(runs)), 3.6))
    x = range(len(runs))
    low, high = runs["step_s"] - runs["step_p10_s"], runs["step_p90_s"] - runs["step_s"]
    ax.errorbar(list(x), runs["step_s"], yerr=[low, high], fmt="o", ms=3, capsize=2)
    ax.set_xticks(list(x), [r.rsplit("-", 1)[0] for r in runs["run_id"]], rotation=75, ha="right", fontsize=6)
    ax.set(title="step time: median with p10-p90", xlabel="run", ylabel="step time (s)")
    fig.tight_layout()
    return fig


FIGURES = {"throughput": throughput_vs_nodes, "scaling": scaling_efficiency, "memory": memory_vs_prediction,
           "task_cost": task_cost, "step_spread": step_spread}


def calibration(fitted: dict):
    """`invoke plan --calibrate`: predicted tokens/s per device and scaling efficiency against node
    count, one line per task and stage (from its smallest measured run), the measured runs of the
    same micro-batch marked. None when there is nothing predicted."""
    pred = pd.DataFrame(fitted["predictions"])
    if pred.empty:
        return None
    runs = pd.DataFrame(fitted["runs"])
    fig, (speed, scaling) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, line in pred.groupby("key"):  # task and stage, offload included ("sft ZeRO-3 +opt offload")
        task, stage = line["task"].iloc[0], line["zero_stage"].iloc[0]
        drawn = speed.plot(line["nodes"], line["predicted_tokens_per_s_per_device"], label=label)[0]
        scaling.plot(line["nodes"], 100 * line["scaling_efficiency"], color=drawn.get_color(), label=label)
        mb = line["micro_batch"].iloc[0]
        seen = runs[(runs["task"] == task) & (runs["zero_stage"] == stage) & (runs["micro_batch"] == mb)] \
            if not runs.empty else runs
        if not seen.empty:
            speed.scatter(seen["nodes"], seen["measured_tokens_per_s_per_device"], color=drawn.get_color(), marker="o",
                          s=22, zorder=3)
    for ax in (speed, scaling):
        _node_axis(ax, pred["nodes"])
    speed.set_yscale("log")
    _finish(fig, speed, title="tokens/s per device: predicted (lines), measured (dots)",
            ylabel="tokens/s per device (log)")
    _finish(fig, scaling, title="scaling efficiency vs 1 node (predicted)",
            ylabel="scaling efficiency (%)")
    return fig
