"""What to do, and what to keep in mind, written from the records themselves.

verdict(): per model and task, the configuration to use at each node count (by the stated
throughput convention, core.record.THROUGHPUT_CONVENTION), what the next best costs and whether
the runs' spread can tell them apart, what does not fit, what failed and why.
caveats(): what the records say about how far their figures carry: nodes emulated on a shared
host, ranks outnumbering cores, CPU runs, one device, wide spreads, tokens counted with the embedded
tokenizer instead of the model's own, data that did not train as written, configurations skipped
on the memory model's word.
"""

from __future__ import annotations

import pandas as pd

from stackbench.core import record
from stackbench.core.config import stage_label
from stackbench.report import tables
from stackbench.report.numbers import rounded

WIDE_SPREAD = 0.10  # a configuration whose figures move this much between steps or runs is called out


def _nodes(n) -> str:
    return f"{int(n)} node" + ("s" if int(n) != 1 else "")


def _first_line(text, limit: int = 140) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def verdict(df: pd.DataFrame, confs: pd.DataFrame | None = None) -> list[str]:
    """One paragraph per model and task: use X at each node count, with the numbers (confs:
    tables.configurations(df) when the caller has it)."""
    if df.empty:
        return []
    df = df if "configuration" in df else df.assign(configuration=tables.config_label(df))
    confs = tables.configurations(df) if confs is None else confs
    out = []
    for (model, task), runs in df.groupby(["model", "task"], dropna=False, sort=True):
        said = []
        measured = confs[(confs["model"] == model) & (confs["task"] == task)]
        for nodes, at in measured.groupby("nodes", sort=True):
            at = at.sort_values("tokens_per_s_per_device", ascending=False)
            best = at.iloc[0]
            ranks = f" ({int(best['world_size'])} ranks)" if pd.notna(best["world_size"]) else ""
            repeated = f", median of {int(best['runs'])} runs" if best["runs"] > 1 else ""
            sentence = (f"At {_nodes(nodes)}{ranks} use {best['configuration']}: "
                        f"{rounded(best['tokens_per_s_per_device'], best['spread'])} tokens/s per device{repeated}")
            if len(at) == 1:
                sentence += " (the only configuration measured there)."
            else:
                second = at.iloc[1]
                cost = 100 * (1 - second["tokens_per_s_per_device"] / best["tokens_per_s_per_device"])
                noise = 100 * max(tables.NOISE_FLOOR, *(v for v in (best["spread"], second["spread"]) if pd.notna(v)))
                sentence += f"; the next best, {second['configuration']}, is {cost:.1f}% slower"
                sentence += (f", within the runs' spread of {noise:.0f}%: not distinguishable." if cost <= noise
                             else ".")
            said.append(sentence)
        unfit = runs[(runs["status"] == "oom") | runs["error_kind"].isin(["predicted_oom", "stopped_direction"])
                     ].drop_duplicates(["configuration", "nodes"])
        if not unfit.empty:
            said.append("Does not fit: " + "; ".join(
                f"{r.configuration} at {_nodes(r.nodes)} ("
                + ("out of memory" + (f" on {r.error_host}" if isinstance(r.error_host, str) and r.error_host else "")
                   if r.status == "oom" else f"not run: {_first_line(r.error, 90)}") + ")"
                for r in unfit.itertuples()) + ".")
        failed = runs[runs["status"].isin(["failed", "timeout", "interrupted"])].drop_duplicates(
            ["configuration", "nodes"])
        if not failed.empty:
            said.append("Failed: " + "; ".join(
                f"{r.configuration} at {_nodes(r.nodes)} ({r.status}, {r.error_kind}: {_first_line(r.error)})"
                for r in failed.itertuples()) + ".")
        if not said:
            said.append("No run measured.")
        out.append(f"**{model} / {task}.** " + " ".join(said))
    return out


def caveats(df: pd.DataFrame, confs: pd.DataFrame | None = None) -> list[str]:
    """The caveats the records call for, each once, with the runs it concerns (confs:
    tables.configurations(df) when the caller has it)."""
    if df.empty:
        return []
    out = []
    ran = df[df["world_size"].notna()]
    for nodes, g in ran.groupby("nodes", sort=True):
        hosts = g["hosts"].dropna()
        if hosts.empty:
            continue
        n_hosts, ranks = int(hosts.max()), int(g["world_size"].max())
        cpus = g["host_cpus"].dropna()
        crowded = any((record.ranks_per_core(r) or 0) > 1
                      for r in g[["device", "world_size", "hosts", "host_cpus"]].to_dict("records"))
        emulated = nodes > n_hosts
        if emulated or crowded:
            where = f"{ranks} ranks on {n_hosts} host{'s' if n_hosts != 1 else ''}" + (
                f" of {int(cpus.min())} cores" if not cpus.empty else "")
            why = ["nodes were emulated on a shared host (no network crossed)" if emulated else "",
                   "ranks outnumber cores, so they wait for each other's CPU time" if crowded else ""]
            out.append(f"The {int(nodes)}-node runs were {where}: " + "; ".join(w for w in why if w) +
                       ". Their throughput measures the host being shared, not the cluster: across node counts it is "
                       "not comparable, and the scaling efficiencies here are the host's, not the network's.")
    cpu = ran[ran["device"] == "cpu"]
    if not cpu.empty:
        out.append(f"{len(cpu)} run{'s' if len(cpu) != 1 else ''} on CPU: no MFU (a CPU has no defined peak here); "
                   "memory is host RSS above the pre-model baseline (max over ranks), not a device allocator's peak; "
                   "the figures rank configurations on this host and say nothing about a GPU's.")
    single = ran[(ran["world_size"] == 1) & (ran["zero_stage"] > 0)]
    if not single.empty:
        out.append(f"{record.ONE_DEVICE[0].upper()}{record.ONE_DEVICE[1:]} ({len(single)} "
                   f"run{'s' if len(single) != 1 else ''}).")
    confs = tables.configurations(df) if confs is None else confs
    wide = confs[confs["spread"] > WIDE_SPREAD]
    if not wide.empty:
        worst = wide.sort_values("spread").iloc[-1]
        out.append(f"{len(wide)} configuration{'s' if len(wide) != 1 else ''} moved more than {100 * WIDE_SPREAD:.0f}% "
                   f"between steps or runs (largest: {100 * worst['spread']:.0f}% for {worst['model']} / "
                   f"{worst['task']} {worst['configuration']} at {_nodes(worst['nodes'])}): differences smaller than "
                   "their spread are called not distinguishable.")
    embedded = df[df["tokenizer_fallback"].eq(True)] if "tokenizer_fallback" in df else df.iloc[0:0]
    if not embedded.empty:
        per_model = embedded["model"].value_counts().sort_index()
        names = ", ".join(f"{model} ({n} run{'s' if n != 1 else ''})" for model, n in per_model.items())
        out.append(f"Tokens of {names} were counted with stackbench's embedded tokenizer, not the model's own: their "
                   "tokens/s, tokens per step and rows dropped or truncated are not the model's (the embedded one "
                   "splits text differently). Give the model's tokenizer with --tokenizer PATH|hub-id, or put the "
                   "model's tokenizer in the local Hugging Face cache (HF_HOME), and run again.")
    data = tables.data(df)
    lost = data[(data["dropped"].fillna(0) > 0) | (data["truncated"].fillna(0) > 0)] if not data.empty else data
    for r in lost.itertuples():
        out.append(f"{r.file} ({r.task}, seq_len {r.seq_len}): {int(r.dropped or 0)} of {int(r.rows)} rows dropped as "
                   f"longer than seq_len, {int(r.truncated or 0)} truncated: those runs did not train on the data as "
                   "written.")
    slower = df[df["error_kind"] == "predicted_slower"]
    if not slower.empty:
        out.append(f"{len(slower)} configuration{'s were' if len(slower) != 1 else ' was'} not measured: the autotuner "
                   "predicted them clearly slower than the best it measured (the step-time model's word, each "
                   "record says by how much); run the sweep without --autotune to measure them.")
    skipped = df[df["error_kind"] == "predicted_oom"]
    if not skipped.empty:
        names = sorted({f"{stage_label(r.zero_stage, r.offload)} at {_nodes(r.nodes)}" for r in skipped.itertuples()})
        out.append(f"{len(skipped)} configuration{'s were' if len(skipped) != 1 else ' was'} skipped as unable to "
                   f"fit, on the memory model's prediction, not a measurement ({', '.join(names[:6])}"
                   f"{', ...' if len(names) > 6 else ''}); --run-anyway measures them.")
    return out
