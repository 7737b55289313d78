"""The short table `invoke bench` ends with: one row per run, units in the headers."""

from __future__ import annotations

from stackbench.core import record
from stackbench.core.config import OFFLOADS


def _fmt(value, spec: str = ".3g", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def knob_cell(name: str, value) -> str:
    """A knob's value in a table: a DeepSpeed config by its file name, overrides compact."""
    if name == "deepspeed" and value:
        return record.model_label(str(value))
    return "" if value in (None, "") else str(value)


def data_cell(r: dict) -> str:
    """Rows kept of rows read, and what was dropped or cut: nothing the data lost goes unsaid."""
    if r["data_rows"] is None:
        return "–"
    lost = [f"{r['data_dropped']} dropped"] if r["data_dropped"] else []
    lost += [f"{r['data_truncated']} cut"] if r["data_truncated"] else []
    return f"{r['data_kept']}/{r['data_rows']}" + (f" ({', '.join(lost)})" if lost else "")


def rows(records: list[dict]) -> list[dict[str, str]]:
    """Formatted cells per run, from the same flattening the report uses (core.record.to_row)."""
    out = []
    flat = [record.to_row(rec) for rec in records]
    # a column for each knob the sweep varies that the table does not show already
    varying = record.varying_knobs(flat, shown=("task", "backend", "zero_stage", "offload", "steps", "warmup_steps"))
    for rec, r in zip(records, flat):
        loss = (rec.get("metrics") or {}).get("loss") or {}
        offload = OFFLOADS[r["offload"]].short
        out.append({
            "run": rec["run_id"].rsplit("-", 1)[0],
            "status": r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error_kind'] or ''}",
            "task": r["task"] or "",
            "backend": r["backend"],
            "zero": f"{r['zero_stage']}{offload}",
            "ranks": str(r["world_size"] or ""),
            **{name: knob_cell(name, r[name]) for name in varying},
            "step s (p10-p90)": f"{_fmt(r['step_s'])} ({_fmt(r['step_p10_s'])}-{_fmt(r['step_p90_s'])})"
            if r["step_s"] is not None else "–",
            "predicted step s": _fmt(r["predicted_step_s"]),
            "tok/s": _fmt(r["tokens_per_s"], ".0f"),
            "tok/s @median step": _fmt(r["tokens_per_s_median_step"], ".0f"),
            "tok/s/dev": _fmt(r["tokens_per_s_per_device"], ".0f"),
            "samples/s": _fmt(r["samples_per_s"], ".2f"),
            "MFU": _fmt(r["mfu"], ".1%"),
            "peak GiB": _fmt(r["peak_gib"], ".2f"),
            "rows kept/read": data_cell(r),
            "loss first→last": f"{_fmt(loss.get('first'), '.4f')}→{_fmt(loss.get('last'), '.4f')}" if loss else "–",
        })
    return out


def print_table(records: list[dict], title: str = "") -> None:
    from rich.table import Table

    from stackbench.core.console import stdout_console

    table = Table(title=title, caption=f"{record.THROUGHPUT_CONVENTION} peak GiB: device allocator peak on GPU; on "
                                       "CPU host RSS above the pre-model baseline (max over ranks); MFU: none on CPU "
                                       "(no defined peak)")
    body = rows(records)
    for col in (body[0] if body else {"run": ""}):
        table.add_column(col, justify="left" if col in ("run", "status", "task", "backend") else "right",
                         no_wrap=col == "run")
    for row in body:
        style = None if row["status"] == "ok" else "red"
        table.add_row(*row.values(), style=style)
    stdout_console().print(table)


def print_autotune(records: list[dict], matrix_size: int) -> None:
    """What `--autotune` found: the fastest measured configuration per group, and what it cost."""
    from stackbench.bench.planning.autotune import fastest
    from stackbench.core.config import stage_label
    from stackbench.core.console import stdout_console

    console = stdout_console()
    measured = sum(r["status"] not in ("skipped",) for r in records)
    console.print(f"autotune: {measured} run(s) launched of the {matrix_size} in the matrix; "
                  f"{sum((r.get('error') or {}).get('kind') == 'predicted_slower' for r in records)} skipped as "
                  f"predicted slower, {sum((r.get('error') or {}).get('kind') == 'predicted_oom' for r in records)} as "
                  "unable to fit")
    for rec in fastest(records).values():
        c = rec["config"]
        console.print(f"fastest measured: {c['task']} {c['model']} {c['nodes']} node(s) x {c['gpus_per_node']}: "
                      f"{stage_label(c['zero_stage'], c['offload'])}, micro-batch {c['micro_batch']}: "
                      f"{rec['metrics']['tokens_per_s_per_device']:,.0f} tokens/s per device ({rec['run_id']})")
