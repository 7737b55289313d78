"""Run a list of run configs through a launcher, one record per run, never losing a sweep.

Resume: a run whose record says ok is not run again. Every other outcome is a record too, and
the sweep goes on. Ctrl-C marks the running run interrupted and leaves the others as they are.
Before the first run of each node count, a preflight (join + all-reduce, seconds) checks every
host; when it fails, that node count's runs are recorded failed with the host named, and the
sweep goes on with the others. Runs the memory model says cannot fit are recorded skipped. Each
run is claimed before it starts (bench.claims): one another live process is running is left to
it, and not in the records returned.
Before each run the step-time model, fitted to the sweep's ok runs so far, predicts its step time
(bench.autotune.Predictor): the record keeps it as prediction.step_time_s. With an autotuner the
order is its choice, and what it leaves out is recorded skipped with its reason.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from stackbench.bench import claims
from stackbench.bench.launchers import Launcher
from stackbench.bench.launchers.outcomes import preflight_failed
from stackbench.bench.planning.autotune import Autotuner, Predictor
from stackbench.bench.planning.fit import FitCheck
from stackbench.core import files, record
from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError


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
    from stackbench.trainer import ds_source

    try:
        now = ds_source.load(source["ref"]).sha256
    except Exception:  # noqa: BLE001 - gone or unreadable: the run's own launch says why
        return True
    if now != source["sha256"]:
        print(f"note: {source['ref']} changed since {rec['run_id']} ran: running it again", file=sys.stderr)
        return True
    return False


def _schedule(configs: list[RunConfig], tuner: Autotuner | None, records: list[dict]):
    """(config to run or None, [(config, error kind, why) to record skipped]) until the sweep is done."""
    if tuner is None:
        yield from ((cfg, []) for cfg in configs)
        return
    while True:
        decision = tuner.next(records)
        yield decision.cfg, decision.skip
        if decision.cfg is None:
            return


def run_sweep(configs: list[RunConfig], launcher: Launcher, sweep_dir: Path, *, quiet: bool | None = None,
              fit: FitCheck | None = None, tuner: Autotuner | None = None) -> list[dict]:
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
        predictor = tuner.predictor if tuner else Predictor()
        i = 0
        if tuner is not None:  # a resumed autotune starts from what is measured: never re-decided, never overwritten
            for cfg in configs:
                prior = done(sweep_dir, cfg)
                if prior:
                    i += 1
                    records.append(prior)
                    _say(progress, quiet, f"[{i}/{len(configs)}] {cfg.run_id}: already ok, skipped (resume)")
                    progress.advance(bar)
        for cfg, skips in _schedule(configs, tuner, records):
            for other, kind, why in skips:
                i += 1
                records.append(_skipped(other, kind, why, sweep_dir, launcher, predictor, records))
                _say(progress, quiet, f"[{i}/{len(configs)}] {other.run_id}: skipped: {why}")
                progress.advance(bar)
            if cfg is None:
                break
            i += 1
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
            predicted = predictor.step_seconds(cfg, records)
            t0 = time.monotonic()
            try:
                rec, pf = _not_runnable(cfg, sweep_dir, launcher, fit, preflights,
                                        lambda line: _say(progress, quiet, line))
                rec = rec or launcher.launch(cfg, sweep_dir)
            finally:
                claim.release()
            if dead:
                rec["excluded_hosts"] = sorted(dead)
            if pf and pf.get("ok") and rec["status"] == "ok":  # the links this run's nodes measured, beside it
                rec["preflight"] = {"backend": pf.get("backend"), "spans_nodes": pf.get("spans_nodes"),
                                    "collectives": pf.get("collectives") or {"all_reduce": pf.get("allreduce")}}
            if dead or predicted[0] is not None or rec.get("preflight"):
                _with_step_prediction(rec, *predicted)
                record.write(record.path(sweep_dir, cfg.run_id), rec)
            newly = _exclude_dead(rec, launcher) - dead
            if newly:
                dead |= newly
                _say(progress, quiet, f"{', '.join(sorted(newly))} found dead ({rec['error']['kind']}): "
                                      "left out of the rest of this sweep")
            records.append(rec)
            why = f": {rec['error']['kind']}: {rec['error']['message'].splitlines()[0]}" if rec.get("error") else ""
            _say(progress, quiet,
                 f"[{i}/{len(configs)}] {cfg.run_id}: {rec['status']} in {time.monotonic() - t0:.0f} s{why}")
            progress.advance(bar)
    return records


def _with_step_prediction(rec: dict, step_s: float | None, fitted_on: int) -> None:
    """The step time predicted before the run started, beside the memory prediction."""
    if step_s is None:
        return
    rec["prediction"] = {**(rec.get("prediction") or {}), "step_time_s": step_s,
                         "step_time_fitted_on": f"{fitted_on} ok runs of this sweep before it "
                                                "(bench/planning/calibrate.py)"}


def _skipped(cfg: RunConfig, kind: str, why: str, sweep_dir: Path, launcher: Launcher, predictor: Predictor,
             records: list[dict]) -> dict:
    rec = record.new("skipped", cfg, launcher.bookkeeping(cfg, sweep_dir), started_at=record.now(),
                     error=record.error(kind, why))
    _with_step_prediction(rec, *predictor.step_seconds(cfg, records))
    record.write(record.path(sweep_dir, cfg.run_id), rec)
    return rec


def _not_runnable(cfg: RunConfig, sweep_dir: Path, launcher: Launcher, fit: FitCheck | None,
                  preflights: dict, say) -> tuple[dict | None, dict | None]:
    """(a skipped or failed record when the run must not start (cannot fit; its nodes failed the
    preflight), the preflight of its nodes)."""
    started = record.now()
    launch = launcher.bookkeeping(cfg, sweep_dir)
    if fit is not None:
        prediction, why = fit.why_not(cfg)
        if why:
            rec = record.new("skipped", cfg, launch, started_at=started, prediction=prediction,
                             error=record.error("predicted_oom", why))
            record.write(record.path(sweep_dir, cfg.run_id), rec)
            return rec, None
    try:
        hosts = tuple(launcher.hosts(cfg.nodes))
    except ConfigError as e:  # hosts found dead earlier in the sweep leave too few (the plan had enough)
        rec = record.new("failed", cfg, launch, started_at=started, error=record.error("preflight", e.what))
        record.write(record.path(sweep_dir, cfg.run_id), rec)
        return rec, None
    key = (cfg.nodes, cfg.gpus_per_node, hosts)  # a host left out changes the nodes checked
    if launcher.options.preflight and key not in preflights:
        pf = preflights[key] = launcher.preflight(cfg.nodes, cfg.gpus_per_node, sweep_dir)
        if pf is not None:
            say(f"preflight {cfg.nodes} node(s) x {cfg.gpus_per_node}: " + (
                f"ok, {len(pf.get('joined_hosts', []))} nodes joined in {pf.get('join_s', 0):.1f} s; " + _busbw(pf)
                if pf["ok"] else f"FAILED: {pf['message']}"))
    pf = preflights.get(key)
    if pf is not None and not pf["ok"]:
        return preflight_failed(cfg, launch, pf, started), pf
    return None, pf


def _busbw(pf: dict) -> str:
    """The preflight's bus bandwidths, as nccl-tests prints them."""
    found = pf.get("collectives") or {"all_reduce": pf.get("allreduce") or {}}
    size = (found.get("all_reduce") or {}).get("bytes", 0) / 2**20
    return (f"busbw at {size:.0f} MiB ({pf.get('backend')}, "
            f"{'across nodes' if pf.get('spans_nodes') else 'one node'}): "
            + ", ".join(f"{op} {c['busbw_gbps']:.2f} GB/s" if "busbw_gbps" in c else f"{op}: {c.get('error')}"
                        for op, c in found.items()))


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
