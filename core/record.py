"""The result record, schema `stackbench.result/2`: one JSON file per run, built by one factory
for every outcome, written atomically, flattened for tables by one `to_row()`.

    schema, method_version, run_id, sweep_id, status, error {kind, message, rank, host, log},
    command, started_at, finished_at,
    config       every knob of the run (core.config.RunConfig.to_dict(): RunConfig.from_dict reads it back)
    launch       the bookkeeping a record keeps: launcher, collective_timeout_s
    resolved     what the config became on the machine (model shape, dtype, world size, DeepSpeed
                 config, data summary, MoE leaves, backend setup); {} when the run never started
    metrics, prediction, environment, and per-writer extras (trainer_argv, slurm_job_id, preflight)

Statuses and the error kinds each may carry: ok (none), oom (oom), failed (bad_input, crash,
preflight, node_lost: a host that vanished mid-run or that Slurm declared failed), timeout (timeout,
queue_timeout: a batch job that never started), skipped (predicted_oom), interrupted (interrupted).

/1 records (before the run config was one class) are read through `upgrade_v1`, so reports and
baselines keep working with them; to_row reads /2 only.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from stackbench.core import files, secrets
from stackbench.core.config import OFFLOADS, TYPES, Launch, RunConfig

SCHEMA = "stackbench.result/2"
SCHEMA_V1 = "stackbench.result/1"
# Bump when what a metric means changes, so old and new figures are never compared blindly.
METHOD_VERSION = 1
KINDS = {"ok": (None,), "oom": ("oom",), "failed": ("bad_input", "crash", "preflight", "node_lost"),
         "timeout": ("timeout", "queue_timeout"),
         "skipped": ("predicted_oom", "predicted_slower", "stopped_direction"), "interrupted": ("interrupted",)}
STATUSES = tuple(KINDS)
REQUIRED = ("schema", "run_id", "sweep_id", "status", "error", "command", "started_at", "finished_at",
            "config", "launch", "resolved", "metrics", "prediction", "environment")


# What a run on one device cannot show, said in its record (trainer/run.py) and the report's caveats.
ONE_DEVICE = ("ZeRO 1-3 on one device partition nothing and the collectives have a world of one: such a run shows "
              "the stage's bookkeeping cost, not its memory saving or its communication")

# How throughput is ranked and compared everywhere (the bench's table, the report's best-configuration
# and backends tables, baselines): said in their captions and the README.
THROUGHPUT_CONVENTION = ("tokens/s = real (non-padding) tokens of the measured steps / their total time (warm-up "
                         "excluded): the rate a long run gets, slow steps included; rankings and comparisons use it. "
                         "Beside it: the median step time and tokens/s at the median step (a typical step, slow ones "
                         "left out), which can order two close configurations the other way.")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def error(kind: str, message: str, *, rank: int | None = None, host: str | None = None,
          log: str | None = None) -> dict:
    return {"kind": kind, "message": message, "rank": rank, "host": host, "log": log}


def new(status: str, cfg: RunConfig, launch: Launch, *, started_at: str, error: dict | None = None,
        resolved: dict | None = None, metrics: dict | None = None, prediction: dict | None = None,
        environment: dict | None = None, **extra: Any) -> dict:
    """The record of one run, whatever its outcome; every writer (trainer, launchers, sweep, Slurm)
    calls this, so every record carries the full run config."""
    rec = {"schema": SCHEMA, "method_version": METHOD_VERSION, "run_id": launch.run_id or cfg.run_id,
           "sweep_id": launch.sweep_id, "status": status, "error": error, "command": launch.command,
           "started_at": started_at, "finished_at": now(), "config": cfg.to_dict(), "launch": launch.recorded(),
           "resolved": resolved or {}, "metrics": metrics, "prediction": prediction, "environment": environment,
           **extra}
    problems = validate(rec)
    if problems:
        raise ValueError(f"stackbench bug: an invalid record for {rec['run_id']}: {'; '.join(problems)}")
    return rec


def validate(rec: dict) -> list[str]:
    """Problems with a record (empty when it is well-formed)."""
    problems = [f"missing field {k!r}" for k in REQUIRED if k not in rec]
    if rec.get("schema") != SCHEMA:
        problems.append(f"schema is {rec.get('schema')!r}, expected {SCHEMA!r}")
    status = rec.get("status")
    if status not in STATUSES:
        problems.append(f"status {status!r} is not one of {STATUSES}")
        return problems
    kind = (rec.get("error") or {}).get("kind")
    if kind not in KINDS[status]:
        problems.append(f"status {status} with error kind {kind!r} (expected {' or '.join(map(str, KINDS[status]))})")
    if status == "ok" and not rec.get("metrics"):
        problems.append("status ok without metrics")
    if not isinstance(rec.get("config"), dict) or "task" not in rec["config"]:
        problems.append("config is not a run config")
    return problems


def write(path: str | Path, obj: dict, *, where: str = "--results") -> Path:
    """Write JSON atomically, every credential's value redacted before it is serialised (core.files)."""
    text = json.dumps(secrets.redact_obj(obj), indent=2, sort_keys=False, default=str) + "\n"
    return files.write_atomic(path, text, where=where)


def path(directory: str | Path, run_id: str) -> Path:
    """Where a run's record lives: <directory>/<run_id>.json (the sweep's folder, the trainer's --out)."""
    return Path(directory) / f"{run_id}.json"


def read(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


# --- records written before the run config was one class --------------------------------------------

RESOLVED_V1 = ("model", "dtype", "world_size", "global_batch", "moe_leaf_modules", "data", "deepspeed", "backend_setup")


def _argv_knobs(argv: list[str]) -> dict[str, Any]:
    """The knobs a /1 record's trainer argv set (its flags were TrainConfig's: --offload-optimizer ...)."""
    types = {f.name: TYPES[str(f.type)] for f in dataclasses.fields(RunConfig)}
    types.update(offload_optimizer=bool, offload_param=bool)
    out: dict[str, Any] = {}
    for i, token in enumerate(argv):
        name = token[2:].replace("-", "_") if token.startswith("--") else ""
        if name in types and types[name] is bool:
            out[name] = True
        elif name.startswith("no_") and types.get(name[3:]) is bool:
            out[name[3:]] = False
        elif name in types and i + 1 < len(argv):
            out[name] = types[name](argv[i + 1])
    return out


def upgrade_v1(rec: dict) -> dict:
    """A /1 record in the /2 shape. /1 had three config shapes: the trainer's ok record (flat,
    knobs mixed with what they resolved to: the model a dict, the dtype resolved, data a summary;
    the knobs as asked are its trainer_argv), a launcher's ({"spec": RunSpec fields, ...}) and the
    trainer's failure record ({"task", "trainer": TrainConfig fields}). Knobs it does not say keep
    their defaults."""
    cfg = dict(rec.get("config") or {})
    resolved: dict[str, Any] = {}
    if isinstance(cfg.get("model"), dict):
        resolved = {k: cfg.pop(k) for k in RESOLVED_V1 if k in cfg}
        model = resolved["model"]
        kind = model.get("kind")
        cfg["model"] = ("tiny" if kind == "tiny" else model.get("path") if kind == "dir" and model.get("path")
                        else str(model.get("name") or "").lower())
    known = {**(cfg.get("trainer") or {}), **(cfg.get("spec") or {}), **cfg,
             **_argv_knobs(rec.get("trainer_argv") or [])}
    if "procs_per_node" in known:
        known["gpus_per_node"] = known["procs_per_node"]
    topology = re.search(r"-n(\d+)x(\d+)-", str(rec.get("run_id", "")))
    if topology and "nodes" not in known:  # the trainer's failure record kept no topology; its id did
        known["nodes"], known["gpus_per_node"] = int(topology.group(1)), int(topology.group(2))
    flags = (bool(known.get("offload_optimizer") or known.get("offload_param")), bool(known.get("offload_param")))
    known["offload"] = (cfg.get("spec") or {}).get("offload") or next(
        name for name, o in OFFLOADS.items() if (o.optimizer, o.params) == flags)
    config = {k: known[k] if known.get(k) is not None else v for k, v in RunConfig().to_dict().items()}
    launch = {"launcher": known.get("launcher") or "local",
              "collective_timeout_s": known.get("collective_timeout_s") or Launch().collective_timeout_s}
    error_ = rec.get("error")
    if rec.get("status") == "skipped" and not error_:
        error_ = error("predicted_oom", "")
    return {**rec, "schema": SCHEMA, "upgraded_from": SCHEMA_V1, "config": config, "launch": launch,
            "resolved": resolved, "error": error_}


def as_current(rec: dict) -> dict:
    """A record of any schema this version reads, in the current shape."""
    return upgrade_v1(rec) if rec.get("schema") == SCHEMA_V1 else rec


# --- one row per record ------------------------------------------------------------------------------

def model_label(ref: str) -> str:
    """How tables name a model: the reference as given ('tiny', 'qwen3-8b', a hub id 'Qwen/Qwen3-8B'), a
    directory by its name."""
    return Path(ref).name if ref.startswith(("/", ".", "~")) or ("/" in ref and Path(ref).is_dir()) else ref


def to_row(rec: dict, path: str = "") -> dict:
    """The flat row the report and bench's closing table read; the same columns for every status."""
    rec = as_current(rec)
    cfg, res = rec.get("config") or {}, rec.get("resolved") or {}
    m, err, pred = rec.get("metrics") or {}, rec.get("error") or {}, rec.get("prediction") or {}
    mem, step, data = m.get("memory") or {}, m.get("step_time_s") or {}, res.get("data") or {}
    gpu_peak = mem.get("max_allocated_gib")
    # CPU: what the run added above its pre-model RSS (older records: the whole RSS, libraries included)
    host = mem.get("host_training_gib") if mem.get("host_training_gib") is not None else mem.get("host_rss_peak_gib")
    peak = gpu_peak if gpu_peak is not None else host
    nodes, gpus = cfg.get("nodes"), cfg.get("gpus_per_node")
    out = {
        "run_id": rec.get("run_id"), "sweep_id": rec.get("sweep_id"), "status": rec.get("status"),
        "error_kind": err.get("kind"), "error": (err.get("message") or "").splitlines()[0][:200] if err else None,
        "error_host": err.get("host"), "error_rank": err.get("rank"),
        "model": model_label(str(cfg.get("model", ""))), "params": (res.get("model") or {}).get("params"),
        "task": cfg.get("task"), "backend": cfg.get("backend"), "zero_stage": cfg.get("zero_stage"),
        "offload": cfg.get("offload") if cfg.get("offload") in OFFLOADS else "none",
        "nodes": nodes, "gpus_per_node": gpus,
        "world_size": res.get("world_size") or (nodes * gpus if nodes and gpus else None),
        "micro_batch": cfg.get("micro_batch"), "seq_len": cfg.get("seq_len"),
        "dtype": res.get("dtype") or cfg.get("dtype"), "launcher": (rec.get("launch") or {}).get("launcher"),
        "step_s": step.get("median"), "step_p10_s": step.get("p10"), "step_p90_s": step.get("p90"),
        "step_cv": step.get("cv"),
        "tokens_per_s": m.get("tokens_per_s"), "tokens_per_s_per_device": m.get("tokens_per_s_per_device"),
        "tokens_per_s_median_step": _at_median_step(m),
        "samples_per_s": m.get("samples_per_s"), "tflops_per_device": m.get("tflops_per_device"), "mfu": m.get("mfu"),
        "peak_gib": peak, "peak_source": "device" if gpu_peak is not None else (
            "host RSS above pre-model" if mem.get("host_training_gib") is not None else "host RSS" if peak is not None
            else None),
        "predicted_gib": pred.get("total_gib"), "fits": pred.get("fits"),
        "predicted_step_s": pred.get("step_time_s"),
        "loss_first": (m.get("loss") or {}).get("first"), "loss_last": (m.get("loss") or {}).get("last"),
        "first_step_s": (m.get("startup_s") or {}).get("first_step_done"),
        # what the run's data kept (trainer/data/dataset.py): rows read, samples kept, dropped as too long, truncated
        "data_path": data.get("path"), "data_rows": data.get("rows"), "data_kept": data.get("samples"),
        "data_dropped": data.get("dropped_too_long"), "data_truncated": data.get("truncated"),
        # which tokenizer counted the tokens, and whether stackbench's embedded one stood in (None: older records)
        "tokenizer_used": (res.get("tokenizer") or {}).get("name"),
        "tokenizer_fallback": (res.get("tokenizer") or {}).get("fallback"),
        "device": ((rec.get("environment") or {}).get("ranks") or [{}])[0].get("device") or "cpu",
        # how many distinct hosts the ranks ran on, and the cores of one (CPU runs): emulated nodes share a host
        "hosts": len(set((rec.get("environment") or {}).get("hosts") or [])) or None,
        "host_cpus": (((rec.get("environment") or {}).get("devices") or {}).get("cpus")),
        "finished_at": rec.get("finished_at"), "path": path,
    }
    if out["peak_gib"] and out["predicted_gib"]:
        out["prediction_error_pct"] = 100 * (out["predicted_gib"] - out["peak_gib"]) / out["peak_gib"]
    else:
        out["prediction_error_pct"] = None
    out["step_prediction_error_pct"] = (100 * (out["predicted_step_s"] - out["step_s"]) / out["step_s"]
                                        if out["predicted_step_s"] and out["step_s"] else None)
    for f in dataclasses.fields(RunConfig):  # every other knob, under its name: any of them may vary in a sweep
        out.setdefault(f.name, cfg.get(f.name, f.default))
    return out


def ranks_per_core(row: dict) -> float | None:
    """On a CPU run, ranks per core of a host (to_row's world_size, hosts, host_cpus): above 1, the
    ranks wait for each other's CPU time and measure the host being shared. None on a GPU or unknown."""
    world, hosts, cpus = row.get("world_size"), row.get("hosts"), row.get("host_cpus")
    if row.get("device") != "cpu" or not world or not cpus or cpus != cpus or world != world:
        return None
    return world / (hosts if hosts and hosts == hosts else 1) / cpus


def _at_median_step(m: dict) -> float | None:
    """tokens/s at the median step (THROUGHPUT_CONVENTION's other figure): the real tokens of a mean
    step over the median step time, i.e. tokens_per_s x mean step / median step."""
    times, median = m.get("step_times_s") or [], (m.get("step_time_s") or {}).get("median")
    if not times or not median or m.get("tokens_per_s") is None:
        return None
    return m["tokens_per_s"] * (sum(times) / len(times)) / median


# knobs that are the table's own columns, or that say how long a run was measured rather than what
# it ran; every other knob that varies among records gets a column of its own (varying_knobs)
SHOWN_KNOBS = ("model", "task", "backend", "zero_stage", "offload", "nodes", "gpus_per_node", "micro_batch", "seq_len",
               "dtype", "steps", "warmup_steps")


def varying_knobs(rows, shown: tuple[str, ...] = SHOWN_KNOBS) -> list[str]:
    """The knobs beside `shown` (a table's own columns) that take more than one value among these
    rows (dicts, or a DataFrame's columns), in config order."""
    def key(v: Any) -> Any:  # NaN (a missing cell) is absent; 1 and 1.0 and True stay apart, as in JSON
        if v is None or (isinstance(v, float) and v != v):
            return None
        return (type(v).__name__, v) if isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True,
                                                                                              default=str)

    def distinct(column) -> Any:  # a DataFrame's column: its distinct values first (thousands of rows, few values)
        try:
            return column.drop_duplicates()
        except TypeError:  # lists or dicts: unhashable
            return column

    def varies(name: str) -> bool:
        values = ((distinct(rows[name]) if name in rows else ()) if hasattr(rows, "columns")
                  else (r.get(name) for r in rows))
        seen = set()
        for v in values:
            seen.add(key(v))
            if len(seen) > 1:
                return True
        return False

    return [f.name for f in dataclasses.fields(RunConfig) if f.name not in shown and varies(f.name)]
