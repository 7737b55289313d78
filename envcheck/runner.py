"""Run every check (concurrently: the slow probes are subprocesses and NVML, not CPU work), then
render a table for people or JSON for machines, and decide the exit code.

JSON schema `stackbench.envcheck/1`: {schema, host, started_at, duration_s, summary {ok, warn,
fail, skip}, exit_code, fingerprint, checks [{area, name, status, value, detail, fix, link}]}.
Exit codes: 0 no failure (warnings allowed), 1 warnings with --strict, 2 any failure.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable

from stackbench.envcheck import abi, drift, environment, gpus, system, toolchain, versions
from stackbench.envcheck.check import SEVERITY, Check

SCHEMA = "stackbench.envcheck/1"
AREAS = ("versions", "compat", "abi", "gpu", "toolchain", "system", "environment", "drift")


def all_checks(lock: str | None = None) -> list[Callable[[], list[Check]]]:
    return [*versions.CHECKS, *abi.CHECKS, *gpus.CHECKS, *toolchain.CHECKS, *system.CHECKS, *environment.CHECKS,
            partial(drift.check_drift, lock)]


def _safe(fn: Callable[[], list[Check]]) -> list[Check]:
    """A probe that raises is reported as a failed check of that probe, never a traceback."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        name = getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", "check"))
        return [Check("internal", name, "fail", "", f"the check itself raised {type(e).__name__}: {e}",
                      "report this as a stackbench bug")]


def run(lock: str | None = None, checks: list[Callable[[], list[Check]]] | None = None) -> dict:
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    fns = checks if checks is not None else all_checks(lock)
    with ThreadPoolExecutor(max_workers=max(1, len(fns))) as pool:
        results = [c for group in pool.map(_safe, fns) for c in group]
    results.sort(key=lambda c: AREAS.index(c.area) if c.area in AREAS else len(AREAS))
    summary = {s: sum(c.status == s for c in results) for s in ("ok", "warn", "fail", "skip")}
    from stackbench.core.fingerprint import fingerprint

    return {"schema": SCHEMA, "host": socket.gethostname(), "started_at": started,
            "duration_s": round(time.perf_counter() - t0, 3), "summary": summary,
            "fingerprint": fingerprint(with_devices=False),
            "checks": [c.to_dict() for c in results]}


def exit_code(report: dict, strict: bool = False) -> int:
    worst = max((SEVERITY[c["status"]] for c in report["checks"]), default=0)
    return 2 if worst == 2 else 1 if worst == 1 and strict else 0


def emit(report: dict, *, strict: bool = False, as_json: bool = False, out: str = "") -> int:
    """Decide the exit code, write the report to `out` if given, print JSON or the table."""
    import json

    report["exit_code"] = exit_code(report, strict)
    if out:
        from stackbench.core import record

        record.write(out, report, where="--out")
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return report["exit_code"]


def print_table(report: dict) -> None:
    from rich.table import Table

    from stackbench.core.console import stdout_console

    style = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    table = Table(title=f"envcheck on {report['host']}: " + ", ".join(f"{n} {s}" for s, n in report["summary"].items())
                  + f" ({report['duration_s']:.2f} s)", show_lines=False)
    for col in ("area", "check", "status", "value", "detail / fix"):
        table.add_column(col, overflow="fold")
    last = None
    for c in report["checks"]:
        detail = c["detail"] + (f"\n[bold]fix:[/] {c['fix']}" if c["fix"] and c["status"] in ("warn", "fail") else "")
        if c["link"] and c["status"] in ("warn", "fail"):
            detail += f"\n{c['link']}"
        table.add_row(c["area"] if c["area"] != last else "", c["name"], f"[{style[c['status']]}]{c['status']}[/]",
                      c["value"], detail)
        last = c["area"]
    stdout_console().print(table)
