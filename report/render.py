"""Write the report: report.md (renders on GitHub: pipe tables, plots as PNG files beside it),
report.html (one file, a small stylesheet, plots embedded as base64 PNG, a script that marks when
every image has loaded), runs.csv and runs.json (every figure at full precision, for machines).

The page reads top down: what to do (the verdict), how far the figures carry (caveats), the
throughput and scaling plots, then tables for people: no index column, units in the headers,
values rounded to what their spread supports, ZeRO stage and offload written one way
(core.config.stage_label), the best cell in bold, one row per configuration."""

from __future__ import annotations

import base64
import html
import io
import re
import time
from pathlib import Path

import pandas as pd

from stackbench.core import files
from stackbench.core.record import THROUGHPUT_CONVENTION
from stackbench.report import plots, tables, verdict
from stackbench.report.numbers import MISSING, count, pct, rounded, text


class Figures(tuple):
    """Names of plots (report.plots.FIGURES) to show at this place of the report."""


LEAD_FIGURES = ("throughput", "scaling")  # right after the verdict; the others close the report


def _nodes_header(n) -> str:
    return f"{int(n)} node" + ("s" if int(n) != 1 else "")


# --- the tables, for people ------------------------------------------------------------------------

def throughput_matrices(df: pd.DataFrame, confs: pd.DataFrame | None = None) -> list[tuple[str, pd.DataFrame]]:
    """Per model and task: configuration x node count, tokens/s per device; the best of each node
    count in bold; a configuration that did not run ok shows its status (confs:
    tables.configurations(df) when the caller has it)."""
    labelled = df if "configuration" in df else df.assign(configuration=tables.config_label(df))
    confs = tables.configurations(labelled) if confs is None else confs
    out = []
    for (model, task), runs in labelled.groupby(["model", "task"], dropna=False, sort=True):
        measured = confs[(confs["model"] == model) & (confs["task"] == task)]
        fastest = measured.groupby("nodes")["tokens_per_s_per_device"].max()
        first = measured.drop_duplicates(["configuration", "nodes"])  # configurations(): one row per pair
        cells = {(r["configuration"], r["nodes"]): r for r in first.to_dict("records")}
        # what each configuration and node count shows when nothing ran ok: its statuses, once each
        outcomes = runs.drop_duplicates(["configuration", "nodes", "status", "error_kind"])
        statuses: dict = {}
        for conf, n, st, k in zip(outcomes["configuration"], outcomes["nodes"], outcomes["status"],
                                  outcomes["error_kind"]):
            statuses.setdefault((conf, n), set()).add(SKIP_CELL.get(k, st))
        nodes = sorted(runs["nodes"].dropna().unique())
        rows = {}
        for conf in sorted(runs["configuration"].unique()):
            row = {"configuration": conf}
            for n in nodes:
                r = cells.get((conf, n))
                if r is not None:
                    best = r["tokens_per_s_per_device"] == fastest[n]
                    cell = rounded(r["tokens_per_s_per_device"], r["spread"]) + (
                        f" (×{int(r['runs'])})" if r["runs"] > 1 else "")
                    row[_nodes_header(n)] = f"**{cell}**" if best else cell
                else:
                    row[_nodes_header(n)] = ", ".join(sorted(statuses.get((conf, n), ()))) or MISSING
            rows[conf] = row
        out.append((f"{model} / {task}: tokens/s per device by configuration and node count (best in bold; ×N: "
                    "median of N runs)", pd.DataFrame(list(rows.values()))))
    return out


SKIP_CELL = {"predicted_oom": "skipped: cannot fit", "predicted_slower": "skipped: predicted slower",
             "stopped_direction": "skipped: larger than one that did not fit"}


def configurations_table(df: pd.DataFrame, confs: pd.DataFrame | None = None) -> pd.DataFrame:
    confs = tables.configurations(df) if confs is None else confs
    if confs.empty:
        return confs
    with_mfu = confs["mfu"].notna().any()
    rows = []
    for r in confs.to_dict("records"):
        world = r["world_size"] if r["world_size"] == r["world_size"] else None
        rows.append({
            "model": r["model"], "task": r["task"], "configuration": r["configuration"],
            "nodes": count(r["nodes"]), "ranks": count(world), "runs": count(r["runs"]),
            "tokens/s per device": rounded(r["tokens_per_s_per_device"], r["spread"]),
            "spread (%)": pct(r["spread"]),
            "median step (s)": rounded(r["step_s"], r["spread"]),
            "tokens/s per device at the median step": rounded(r["tokens_per_s_median_step"] / world, r["spread"])
            if world and r["tokens_per_s_median_step"] == r["tokens_per_s_median_step"] else MISSING,
            "peak memory per rank (GiB)": rounded(r["peak_gib"]),
            **({"MFU (%)": pct(r["mfu"], 1)} if with_mfu else {}),
        })
    return pd.DataFrame(rows)


def scaling_table(df: pd.DataFrame) -> pd.DataFrame:
    """Each configuration at each node count above its smallest, against that smallest."""
    sc = tables.scaling(df)
    if sc.empty or sc["nodes"].nunique() < 2:
        return pd.DataFrame()
    sc = sc.assign(configuration=tables.config_label(sc))
    group = ["model", "task", "configuration"]
    smallest = sc.loc[sc.groupby(group)["nodes"].idxmin(), group + ["nodes", "tokens_per_s"]]
    sc = sc.merge(smallest.rename(columns={"nodes": "base_nodes", "tokens_per_s": "base_tokens_per_s"}), on=group)
    above = sc[sc["nodes"] != sc["base_nodes"]].sort_values(["model", "task", "configuration", "nodes"])
    return pd.DataFrame([{"model": r.model, "task": r.task, "configuration": r.configuration,
                          "from → to nodes": f"{int(r.base_nodes)} → {int(r.nodes)}", "runs": count(r.runs),
                          "tokens/s (all devices) at the smallest": rounded(r.base_tokens_per_s),
                          "tokens/s (all devices)": rounded(r.tokens_per_s),
                          "scaling efficiency (%)": pct(r.scaling_efficiency)} for r in above.itertuples()])


def best_table(df: pd.DataFrame, confs: pd.DataFrame | None = None) -> pd.DataFrame:
    best = tables.best(df, confs)
    if best.empty:
        return pd.DataFrame()
    return pd.DataFrame([{"model": r["model"], "task": r["task"], "nodes": count(r["nodes"]),
                          "configuration": r["configuration"],
                          "tokens/s per device": rounded(r["tokens_per_s_per_device"], r["spread"]),
                          "median step (s)": rounded(r["step_s"], r["spread"]), "runs": count(r["runs"]),
                          "example run": r["example"]} for _, r in best.iterrows()])


def backends_table(df: pd.DataFrame) -> pd.DataFrame:
    side = tables.backends(df)
    if side.empty:
        return side
    side = side.assign(configuration=tables.config_label(side))
    out = {}
    for col in ["model", "task", "configuration", "nodes", *side.columns]:
        values = side[col]
        if col in ("model", "task", "configuration"):
            out[col] = values.map(text)
        elif col == "nodes":
            out[col] = values.map(count)
        elif col.endswith("/ native"):
            out[f"{col} (ratio)"] = values.map(lambda v: MISSING if v != v else f"{v:.2f}")
        elif col.endswith(": median step s"):
            out[col.replace(": median step s", ": median step (s)")] = values.map(rounded)
        elif col in ("native", "hf", "swift"):
            out[f"{col}: tokens/s per device"] = values.map(rounded)
    return pd.DataFrame(out)


def memory_table(df: pd.DataFrame) -> pd.DataFrame:
    mem = tables.memory(df)
    if mem.empty:
        return pd.DataFrame()
    return pd.DataFrame([{"model": r["model"], "task": r["task"], "configuration": conf,
                          "ranks": count(r["world_size"]), "micro-batch": count(r["micro_batch"]),
                          "seq len (tokens)": count(r["seq_len"]), "runs": count(r["runs"]),
                          "predicted (GiB)": rounded(r["predicted_gib"]), "measured (GiB)": rounded(r["peak_gib"]),
                          "measured as": r["peak_source"], "error (%)": rounded(r["prediction_error_pct"])}
                         for (_, r), conf in zip(mem.iterrows(), tables.config_label(mem))])


def step_time_table(df: pd.DataFrame) -> pd.DataFrame:
    steps = tables.step_time(df)
    if steps.empty:
        return pd.DataFrame()
    return pd.DataFrame([{"model": r["model"], "task": r["task"], "configuration": conf,
                          "ranks": count(r["world_size"]),
                          "micro-batch": count(r["micro_batch"]), "seq len (tokens)": count(r["seq_len"]),
                          "runs": count(r["runs"]), "predicted (s)": rounded(r["predicted_step_s"]),
                          "measured median (s)": rounded(r["step_s"]),
                          "error (%)": rounded(r["step_prediction_error_pct"])}
                         for (_, r), conf in zip(steps.iterrows(), tables.config_label(steps))])


def data_table(df: pd.DataFrame) -> pd.DataFrame:
    kept = tables.data(df)
    if kept.empty:
        return kept
    return pd.DataFrame([{"file": r["file"], "task": r["task"], "seq len (tokens)": count(r["seq_len"]),
                          "rows too long are": r["too_long"], "rows read": count(r["rows"]), "kept": count(r["kept"]),
                          "dropped": count(r["dropped"]), "truncated": count(r["truncated"]), "runs": count(r["runs"])}
                         for _, r in kept.iterrows()])


def failures_table(df: pd.DataFrame) -> pd.DataFrame:
    fails = tables.failures(df)
    if fails.empty:
        return pd.DataFrame()
    return pd.DataFrame([{"status": r["status"], "kind": r["error_kind"], "host": r["error_host"] or MISSING,
                          "rank": count(r["rank"]), "runs": count(r["runs"]), "cause": r["error"] or MISSING,
                          "example run": r["example"]} for _, r in fails.iterrows()])


def baseline_table(df: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    cmp = tables.compare(df, baseline)
    if cmp.empty:
        return pd.DataFrame()
    shown = [c for c in cmp.columns if c not in ("tokens_per_s_per_device", "baseline", "delta_pct", "noise_pct",
                                                 "verdict", "zero_stage", "offload")]
    return pd.DataFrame([{**{c: text(r[c]) for c in shown}, "configuration": conf,
                          "tokens/s per device": rounded(r["tokens_per_s_per_device"]),
                          "baseline": rounded(r["baseline"]), "change (%)": f"{r['delta_pct']:+.1f}",
                          "noise (%)": f"{r['noise_pct']:.0f}", "verdict": r["verdict"]}
                         for (_, r), conf in zip(cmp.iterrows(), tables.config_label(cmp))])


# --- the report --------------------------------------------------------------------------------------

def sections(df: pd.DataFrame, skipped: list, baseline: pd.DataFrame | None,
             figures: tuple[str, ...] = ()) -> list[tuple[str, object]]:
    """(title, content): content is a paragraph (str), bullets (list), a table (DataFrame of
    strings) or Figures; in the order the report shows them."""
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    # every table names a configuration the same way, and reads the same per-configuration figures:
    # both computed once here (thousands of runs)
    labelled = df.assign(configuration=tables.config_label(df)) if not df.empty else df
    confs = tables.configurations(labelled)
    out: list[tuple[str, object]] = [
        ("Summary", f"{len(df)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
         (f"; {len(skipped)} files skipped" if skipped else "") + f". {THROUGHPUT_CONVENTION}"),
        ("Verdict", verdict.verdict(labelled, confs) or ["No run to judge."]),
    ]
    caveats = verdict.caveats(labelled, confs)
    if caveats:
        out.append(("Caveats", caveats))
    lead = Figures(n for n in LEAD_FIGURES if n in figures)
    if lead:
        out.append(("Throughput and scaling", lead))
    out += throughput_matrices(labelled, confs)
    out.append(("Every configuration (one row per configuration and node count)", configurations_table(df, confs)))
    sc = scaling_table(df)
    if not sc.empty:
        out.append(("Scaling efficiency against each configuration's smallest node count", sc))
    out.append(("Best configuration per node count", best_table(df, confs)))
    side = backends_table(df)
    if not side.empty:
        out.append(("Backends side by side: tokens/s per device and the ratio to native", side))
    out.append(("Memory: predicted vs measured (per rank)", memory_table(df)))
    steps = step_time_table(df)
    if not steps.empty:
        out.append(("Step time: predicted before each run (the step-time model fitted to the sweep's earlier runs) "
                    "vs measured", steps))
    kept = data_table(df)
    if not kept.empty:
        lost = any(r not in ("0", MISSING) for r in list(kept["dropped"]) + list(kept["truncated"]))
        out.append(("Data: rows read, kept, dropped as longer than seq_len, truncated"
                    + (" (some rows did not train as written)" if lost else ""), kept))
    out.append(("Failures and their causes", failures_table(df)))
    if baseline is not None:
        out.append(("Against the baseline", baseline_table(df, baseline)))
    if skipped:
        out.append(("Skipped files", pd.DataFrame(skipped, columns=["path", "why"])))
    more = Figures(n for n in figures if n not in LEAD_FIGURES)
    if more:
        out.append(("More plots", more))
    return out


def _figures(df: pd.DataFrame, out: Path) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    made = {}
    for name, make in plots.FIGURES.items():
        fig = make(df) if not df.empty else None
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        made[name] = buf.getvalue()
        (out / f"{name}.png").write_bytes(made[name])
    return made


def write(df: pd.DataFrame, skipped: list, out: Path, baseline: pd.DataFrame | None = None) -> dict[str, Path]:
    files.check_writable(out, min_free=0, where="--out")
    figures = _figures(df, out)
    parts = sections(df, skipped, baseline, tuple(figures))
    stamp = time.strftime("%Y-%m-%d %H:%M")
    files.write_atomic(out / "report.md", _markdown(parts, stamp), where="--out")
    files.write_atomic(out / "runs.csv", df.to_csv(index=False), where="--out")
    files.write_atomic(out / "runs.json", df.to_json(orient="records", indent=1, double_precision=15) + "\n",
                       where="--out")
    files.write_atomic(out / "report.html", _html(parts, figures, stamp), where="--out")
    return {"md": out / "report.md", "html": out / "report.html", "csv": out / "runs.csv", "json": out / "runs.json"}


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    cells = df.astype(str).apply(lambda col: col.str.replace("|", "\\|", regex=False))  # a | would split a cell
    align = ["right" if cells[c].map(lambda v: bool(_NUMERIC.match(v))).all() else "left" for c in cells.columns]
    return cells.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def _markdown(parts, stamp: str) -> str:
    md = [f"# stackbench report\n\n_generated {stamp}_\n"]
    for title, body in parts:
        md.append(f"\n## {title}\n\n")
        if isinstance(body, Figures):
            md.append("".join(f"![{n}]({n}.png)\n" for n in body))
        elif isinstance(body, list):
            md.append("".join(f"- {line}\n" if title == "Caveats" else f"{line}\n\n" for line in body))
        elif isinstance(body, str):
            md.append(body + "\n")
        else:
            md.append(_md_table(body))
    return "".join(md)


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_NUMERIC = re.compile(r"^[\s*+\-–0-9.,%()×→]+$")  # a cell of figures: right-aligned


def _strong(text: str) -> str:
    """Escaped for HTML, Markdown's **bold** as <strong>."""
    return _BOLD.sub(r"<strong>\1</strong>", html.escape(text))

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;max-width:1180px;margin:2em auto;\
padding:0 1.2em}
h1{font-size:1.6em;margin-bottom:.1em} .stamp{color:#666;margin-top:0}
h2{font-size:1.15em;margin-top:2em;padding-bottom:.2em;border-bottom:1px solid #ddd}
.verdict p{font-size:1.05em;margin:.5em 0} .caveats li{margin:.3em 0;color:#5a4500}
table{border-collapse:collapse;font-size:13px;margin:.4em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:3px 8px;vertical-align:top}
th{background:#f4f5f7;text-align:left;font-weight:600}
td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{text-align:left;white-space:normal}
figure{display:inline-block;margin:.4em 1em .4em 0} img{max-width:100%;height:auto}
@media print{body{max-width:none;margin:0;font-size:11px} h2{break-after:avoid}
 table,figure{break-inside:avoid;display:table} a{color:inherit}}
"""


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for row in df.astype(str).itertuples(index=False):
        cells = []
        for v in row:
            cls = "" if _NUMERIC.match(v) else ' class="text"'
            cells.append(f"<td{cls}>{_strong(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html(parts, figures: dict[str, bytes], stamp: str) -> str:
    body = []
    for title, content in parts:
        body.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(content, Figures):
            body.append("".join(f'<figure><img alt="{n}" src="data:image/png;base64,'
                                f'{base64.b64encode(figures[n]).decode()}"><figcaption>{n}</figcaption></figure>'
                                for n in content))
        elif isinstance(content, list):
            items = [_strong(line) for line in content]
            body.append('<ul class="caveats">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if title == "Caveats"
                        else '<div class="verdict">' + "".join(f"<p>{i}</p>" for i in items) + "</div>")
        elif isinstance(content, str):
            body.append(f"<p>{html.escape(content)}</p>")
        else:
            body.append(_html_table(content))
    # a headless browser (the test) reads data-images from <body>: "loaded/total"
    script = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
              "document.body.dataset.images=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;});</script>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>stackbench report</title><style>{STYLE}</style></head>"
            f"<body><h1>stackbench report</h1><p class='stamp'>generated {stamp}</p>{''.join(body)}{script}"
            "</body></html>\n")

