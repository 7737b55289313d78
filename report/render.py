"""Write the report: report.md (tables, plots as PNG files beside it), report.html (one file,
plots embedded as base64 PNG, a script that marks when every image has loaded), runs.csv."""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import pandas as pd

from core import files
from core.record import THROUGHPUT_CONVENTION
from report import plots, tables


def _md(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return df.to_markdown(floatfmt=floatfmt) + "\n" if not df.empty else "_none_\n"


def sections(df: pd.DataFrame, skipped: list, baseline: pd.DataFrame | None) -> list[tuple[str, pd.DataFrame | str]]:
    out: list[tuple[str, pd.DataFrame | str]] = []
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    out.append(("Summary", f"{len(df)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                (f"; {len(skipped)} files skipped" if skipped else "") + f". {THROUGHPUT_CONVENTION}"))
    for (model, task), m in tables.matrix(df).items():
        out.append((f"{model} / {task}: tokens/s per device (ZeRO stage x nodes)", m))
    sc = tables.scaling(df)
    if not sc.empty and sc["nodes"].nunique() > 1:
        out.append(("Scaling efficiency vs the smallest node count (median over repeated runs)",
                    sc[["model", "task", "zero_stage", "offload", "nodes", "runs", "tokens_per_s", "scaling_efficiency"]]
                    .sort_values(["model", "task", "zero_stage", "offload", "nodes"])))
    out.append(("Best configuration per node count", tables.best(df)))
    side = tables.backends(df)
    if not side.empty:
        out.append(("Backends side by side: tokens/s per device and the ratio to native", side))
    out.append(("Memory: predicted vs measured (per rank)", tables.memory(df)))
    kept = tables.data(df)
    if not kept.empty:
        lost = int((kept["dropped"].fillna(0) + kept["truncated"].fillna(0)).sum())
        out.append(("Data: rows read, kept, dropped as longer than seq_len, truncated"
                    + (" (some rows did not train as written)" if lost else ""), kept))
    out.append(("Failures and their causes", tables.failures(df)))
    if baseline is not None:
        out.append(("Against the baseline", tables.compare(df, baseline)))
    if skipped:
        out.append(("Skipped files", pd.DataFrame(skipped, columns=["path", "why"])))
    return out


def write(df: pd.DataFrame, skipped: list, out: Path, baseline: pd.DataFrame | None = None) -> dict[str, Path]:
    files.check_writable(out, min_free=0, where="--out")
    parts = sections(df, skipped, baseline)
    figures = {}
    for name, make in plots.FIGURES.items():
        fig = make(df) if not df.empty else None
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        import matplotlib.pyplot as plt

        plt.close(fig)
        figures[name] = buf.getvalue()
        (out / f"{name}.png").write_bytes(figures[name])
    stamp = time.strftime("%Y-%m-%d %H:%M")
    md = [f"# stackbench report ({stamp})\n"]
    for title, body in parts:
        md.append(f"\n## {title}\n\n" + (body + "\n" if isinstance(body, str) else _md(body)))
    md.append("\n## Plots\n\n" + "".join(f"![{n}]({n}.png)\n" for n in figures))
    files.write_atomic(out / "report.md", "".join(md), where="--out")
    files.write_atomic(out / "runs.csv", df.to_csv(index=False), where="--out")
    files.write_atomic(out / "report.html", _html(parts, figures, stamp), where="--out")
    return {"md": out / "report.md", "html": out / "report.html", "csv": out / "runs.csv"}


def _html(parts, figures: dict[str, bytes], stamp: str) -> str:
    body = []
    for title, content in parts:
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(f"<p>{html.escape(content)}</p>" if isinstance(content, str) else
                    (content.to_html(float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, classes="t")
                     if not content.empty else "<p><em>none</em></p>"))
    imgs = "".join(f'<figure><img alt="{n}" src="data:image/png;base64,{base64.b64encode(b).decode()}">'
                   f"<figcaption>{n}</figcaption></figure>" for n, b in figures.items())
    # a headless browser (the test) reads data-images from <body>: "loaded/total"
    script = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
              "document.body.dataset.images=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;});</script>")
    style = ("<style>body{font-family:sans-serif;margin:2em}table.t{border-collapse:collapse;font-size:12px}"
             "table.t td,table.t th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "figure{display:inline-block;margin:1em}</style>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>stackbench report</title>{style}</head>"
            f"<body><h1>stackbench report ({stamp})</h1>{''.join(body)}<h2>Plots</h2>{imgs}{script}</body></html>\n")
