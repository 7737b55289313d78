"""The short table `invoke bench` ends with: one row per run, units in the headers."""

from __future__ import annotations


def _fmt(value, spec: str = ".3g", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def rows(records: list[dict]) -> list[dict[str, str]]:
    out = []
    for r in records:
        cfg, m = r.get("config") or {}, r.get("metrics") or {}
        mem = m.get("memory") or {}
        step = m.get("step_time_s") or {}
        loss = m.get("loss") or {}
        peak = mem.get("max_allocated_gib") if mem.get("max_allocated_gib") is not None else mem.get("host_rss_peak_gib")
        offload = "+".join(k for k, v in (("opt", cfg.get("offload_optimizer")), ("param", cfg.get("offload_param"))) if v)
        out.append({
            "run": r["run_id"].rsplit("-", 1)[0],
            "status": r["status"] if r["status"] == "ok" else f"{r['status']}: {(r.get('error') or {}).get('kind', '')}",
            "task": cfg.get("task", ""),
            "zero": f"{cfg.get('zero_stage', '')}{'+' + offload if offload else ''}",
            "ranks": str(cfg.get("world_size", "")),
            "step s (p10-p90)": f"{_fmt(step.get('median'))} ({_fmt(step.get('p10'))}-{_fmt(step.get('p90'))})"
            if step else "–",
            "tok/s": _fmt(m.get("tokens_per_s"), ".0f"),
            "tok/s/dev": _fmt(m.get("tokens_per_s_per_device"), ".0f"),
            "samples/s": _fmt(m.get("samples_per_s"), ".2f"),
            "MFU": _fmt(m.get("mfu"), ".1%"),
            "peak GiB": _fmt(peak, ".2f"),
            "loss first→last": f"{_fmt(loss.get('first'), '.4f')}→{_fmt(loss.get('last'), '.4f')}" if loss else "–",
        })
    return out


def print_table(records: list[dict], title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption="peak GiB: device allocator peak on GPU, host RSS peak on CPU (max over "
                                       "ranks); MFU: none on CPU (no defined peak)")
    body = rows(records)
    for col in (body[0] if body else {"run": ""}):
        table.add_column(col, justify="left" if col in ("run", "status", "task") else "right", no_wrap=col == "run")
    for row in body:
        style = None if row["status"] == "ok" else "red"
        table.add_row(*row.values(), style=style)
    Console(width=200).print(table)
