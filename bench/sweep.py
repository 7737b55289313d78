"""Run a list of run configs through a launcher, one record per run, never losing a sweep.

Resume: a run whose record says ok is not run again. Every other outcome is a record too, and
the sweep goes on. Ctrl-C marks the running run interrupted and leaves the others as they are.
Before the first run of each node count, a preflight (join + all-reduce, seconds) checks every
host; when it fails, that node count's runs are recorded failed with the host named, and the
sweep goes on with the others. Runs the memory model says cannot fit are recorded skipped. Each run is claimed before it starts
(bench.claims): one another live process is running is left to it, and not in the records returned.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench import claims
from bench.fit import FitCheck
from bench.launchers import Launcher
from bench.launchers.outcomes import preflight_failed
from core import files, record
from core.config import RunConfig
from core.errors import ConfigError


def done(sweep_dir: Path, cfg: RunConfig) -> dict | None:
    path = record.path(sweep_dir, cfg.run_id)
    if path.exists():
        try:
            rec = record.read(path)
        except (OSError, json.JSONDecodeError):
            return None
        if rec.get("status") == "ok" and not _config_file_changed(rec):
            return rec
    return None


def _config_file_changed(rec: dict) -> bool:
    """An ok run whose --deepspeed file was edited since is not done: its id hashes the path."""
    source = ((rec.get("resolved") or {}).get("deepspeed_from") or {}).get("source") or {}
    if source.get("kind") not in ("file", "accelerate") or not source.get("sha256"):
        return False
    from trainer import ds_source

    try:
        now = ds_source.load(source["ref"]).sha256
    except Exception:  # noqa: BLE001 - gone or unreadable: the run's own launch says why
        return True
    if now != source["sha256"]:
        print(f"note: {source['ref']} changed since {rec['run_id']} ran: running it again", file=sys.stderr)
        return True
    return False


def run_sweep(configs: list[RunConfig], launcher: Launcher, sweep_dir: Path, *, quiet: bool | None = None,
              fit: FitCheck | None = None) -> list[dict]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    files.write_atomic(sweep_dir / "sweep.json",
                       json.dumps({"launcher": launcher.name, "runs": [c.to_dict() for c in configs]}, indent=1) + "\n")
    console = Console(stderr=True)
    quiet = not sys.stderr.isatty() if quiet is None else quiet
    records: list[dict] = []
    preflights: dict[tuple, dict | None] = {}
    dead: set[str] = set()  # hosts a run found dead: left out of every later run
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet)
    with progress:
        bar = progress.add_task("sweep", total=len(configs))
        for i, cfg in enumerate(configs, 1):
            prior = done(sweep_dir, cfg)
            if prior:
                records.append(prior)
                _say(progress, quiet, f"[{i}/{len(configs)}] {cfg.run_id}: already ok, skipped (resume)")
                progress.advance(bar)
                continue
            progress.update(bar, description=f"{cfg.run_id}")
            claim = claims.RunClaim(sweep_dir, cfg.run_id)
            other = claim.acquire()
            if other is not None:
                _say(progress, quiet, f"[{i}/{len(configs)}] {cfg.run_id}: being run by pid {other.get('pid')} on "
                                      f"{other.get('host')}, left to it")
                progress.advance(bar)
                continue
            t0 = time.monotonic()
            try:
                rec = _not_runnable(cfg, sweep_dir, launcher, fit, preflights, lambda line: _say(progress, quiet, line))
                rec = rec or launcher.launch(cfg, sweep_dir)
            finally:
                claim.release()
            if dead:
                rec["excluded_hosts"] = sorted(dead)
                record.write(record.path(sweep_dir, cfg.run_id), rec)
            newly = _exclude_dead(rec, launcher) - dead
            if newly:
                dead |= newly
                _say(progress, quiet, f"{', '.join(sorted(newly))} found dead ({rec['error']['kind']}): left out of the "
                                      "rest of this sweep")
            records.append(rec)
            why = f": {rec['error']['kind']}: {rec['error']['message'].splitlines()[0]}" if rec.get("error") else ""
            _say(progress, quiet,
                 f"[{i}/{len(configs)}] {cfg.run_id}: {rec['status']} in {time.monotonic() - t0:.0f} s{why}")
            progress.advance(bar)
    return records


def _not_runnable(cfg: RunConfig, sweep_dir: Path, launcher: Launcher, fit: FitCheck | None,
                  preflights: dict, say) -> dict | None:
    """A skipped or failed record when the run must not start (cannot fit; its nodes failed the preflight)."""
    started = record.now()
    launch = launcher.bookkeeping(cfg, sweep_dir)
    if fit is not None:
        prediction, why = fit.why_not(cfg)
        if why:
            rec = record.new("skipped", cfg, launch, started_at=started, prediction=prediction,
                             error=record.error("predicted_oom", why))
            record.write(record.path(sweep_dir, cfg.run_id), rec)
            return rec
    try:
        hosts = tuple(launcher.hosts(cfg.nodes))
    except ConfigError as e:  # hosts found dead earlier in the sweep leave too few (the plan had enough)
        rec = record.new("failed", cfg, launch, started_at=started, error=record.error("preflight", e.what))
        record.write(record.path(sweep_dir, cfg.run_id), rec)
        return rec
    key = (cfg.nodes, cfg.gpus_per_node, hosts)  # a host left out changes the nodes checked
    if launcher.options.preflight and key not in preflights:
        pf = preflights[key] = launcher.preflight(cfg.nodes, cfg.gpus_per_node, sweep_dir)
        if pf is not None:
            ar = pf.get("allreduce") or {}
            say(f"preflight {cfg.nodes} node(s) x {cfg.gpus_per_node}: " + (
                f"ok, {len(pf.get('joined_hosts', []))} nodes joined in {pf.get('join_s', 0):.1f} s, all-reduce "
                f"{ar.get('bytes', 0) / 2**20:.0f} MiB busbw {ar.get('busbw_gbps', 0):.2f} GB/s ({pf.get('backend')})"
                if pf["ok"] else f"FAILED: {pf['message']}"))
    pf = preflights.get(key)
    if pf is not None and not pf["ok"]:
        return preflight_failed(cfg, launch, pf, started)
    return None


def _exclude_dead(rec: dict, launcher: Launcher) -> set[str]:
    """The hosts a failed run names as dead (a preflight that did not join, a node lost mid-run),
    as far as the launcher can leave them out."""
    error = rec.get("error") or {}
    if rec.get("status") != "failed" or error.get("kind") not in ("preflight", "node_lost") or not error.get("host"):
        return set()
    return launcher.exclude({h.strip() for h in str(error["host"]).split(",") if h.strip()})


def _say(progress, quiet: bool, line: str) -> None:
    if quiet:
        print(line, file=sys.stderr, flush=True)
    else:
        progress.console.print(line)
