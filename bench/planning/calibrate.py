"""`invoke plan --calibrate DIR`: fit the step-time model (core/perf_model.py) to the ok runs of a
sweep, say how well it predicts each of them, and predict what was not run.

Fitted by linear least squares over the runs (their median step times), coefficients kept >= 0:
  achieved FLOP/s per rank   from every run: step FLOPs (tokens fed per rank x model FLOPs per token)
  bus bandwidth              from the multi-rank runs: the bus bytes of their collectives (the
                             communication model, nccl-tests' conventions)
  fixed seconds per step     per task and ZeRO stage, from that task and stage's runs
Runs with more ranks on a host than it has cores are left out, and said: they measure the host
being shared, not compute or communication. Each run is also predicted by a fit that left it out
(leave-one-out), which is the error to trust; the in-sample error is shown beside it.

Inputs per run come from its record: the tokens fed (padded_tokens_per_s x the mean step time),
the model's parameters and tied embedding (resolved.model), the dtype, the DeepSpeed config's
ZeRO-3 cache settings. What ZeRO-3 gathers depends on DeepSpeed's parameter cache; the model takes
once per step when the parameters fit under stage3_max_live_parameters (1e9 by default), and
every use otherwise."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stackbench.core import perf_model, record
from stackbench.core.config import stage_label
from stackbench.core.errors import ConfigError

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
PREDICT_NODES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Run:
    run_id: str
    task: str
    stage: int
    nodes: int
    gpus_per_node: int
    world: int
    micro_batch: int
    seq_len: int
    grad_accum: int
    key: str                 # "sft ZeRO-2", "sft ZeRO-3 +opt offload": which fixed cost applies
    tokens_fed: float        # per rank per step (padded)
    real_tokens: float       # per rank per step
    flops_per_token: float
    bus: float               # bus bytes per step
    volume_args: dict        # what the communication model needs, to predict other world sizes
    measured_s: float        # median step time
    crowded: str             # why it cannot calibrate (ranks outnumber cores), or ""


def run_of(rec: dict) -> Run:
    cfg, res, m = rec["config"], rec["resolved"], rec["metrics"]
    model, world = res["model"], res["world_size"]
    zero = (res.get("deepspeed") or {}).get("zero_optimization") or {}
    keeps = perf_model.keeps_params(zero, model["params"])
    args = dict(stage=cfg["zero_stage"], task=cfg["task"], ref_stage=res.get("ref_zero_stage") or 0,
                params=model["params"], grad_accum=cfg["grad_accum"], dtype_bytes=DTYPE_BYTES.get(res["dtype"], 4),
                tied=model["embedding"] if model.get("lm_head") == 0 else 0, keeps=keeps)
    times = m["step_times_s"]
    mean_step = sum(times) / len(times)
    row = record.to_row(rec)
    crowded = (f"{world} ranks on {row['hosts']} host(s) of {row['host_cpus']} cores"
               if (record.ranks_per_core(row) or 0) > 1 else "")
    return Run(rec["run_id"], cfg["task"], cfg["zero_stage"], cfg["nodes"], cfg["gpus_per_node"], world,
               cfg["micro_batch"], cfg["seq_len"], cfg["grad_accum"],
               key_of(cfg["task"], cfg["zero_stage"], cfg.get("offload")),
               m["padded_tokens_per_s"] * mean_step / world, m["tokens_per_s"] * mean_step / world,
               m["flops_per_token"], perf_model.step_bus_bytes(world, **args), args, m["step_time_s"]["median"],
               crowded)


def run_for(cfg, like: Run) -> Run:
    """A run not measured yet, as the model sees it: `like` (a measured run of the same model, task,
    sequence length and data) scaled to cfg's micro-batch and accumulation, at cfg's stage and world."""
    scale = cfg.micro_batch * cfg.grad_accum / (like.micro_batch * like.grad_accum)
    args = {**like.volume_args, "stage": cfg.zero_stage, "grad_accum": cfg.grad_accum,
            "ref_stage": cfg.ref_zero_stage if cfg.task == "dpo" else 0}
    world = cfg.nodes * cfg.gpus_per_node
    return Run(cfg.run_id, cfg.task, cfg.zero_stage, cfg.nodes, cfg.gpus_per_node, world, cfg.micro_batch, cfg.seq_len,
               cfg.grad_accum, key_of(cfg.task, cfg.zero_stage, cfg.offload), like.tokens_fed * scale,
               like.real_tokens * scale, like.flops_per_token, perf_model.step_bus_bytes(world, **args), args,
               float("nan"), "")


def key_of(task: str, stage: int, offload: str | None) -> str:
    """Which fixed per-step cost applies: "sft ZeRO-2", "sft ZeRO-3 +opt offload"."""
    return f"{task} {stage_label(stage, offload or 'none')}"


def _design(runs: list[Run], keys: list[str]) -> np.ndarray:
    return np.array([[r.tokens_fed * r.flops_per_token, r.bus] + [float(r.key == k) for k in keys] for r in runs])


def fit(runs: list[Run]) -> perf_model.StepCoefficients:
    """Least squares with every coefficient >= 0 (an active set: a negative one is dropped, then refit)."""
    keys = sorted({r.key for r in runs})
    a, y = _design(runs, keys), np.array([r.measured_s for r in runs])
    free = [j for j in range(a.shape[1]) if a[:, j].any()]
    while True:
        coef = np.zeros(a.shape[1])
        coef[free] = np.linalg.lstsq(a[:, free], y, rcond=None)[0]
        negative = [j for j in free if coef[j] < 0]
        if not negative:
            break
        free.remove(min(negative, key=lambda j: coef[j]))
    return perf_model.StepCoefficients(flops_per_s=1 / coef[0] if coef[0] > 0 else float("inf"),
                                       busbw_bytes_per_s=1 / coef[1] if coef[1] > 0 else None,
                                       fixed_s={k: float(coef[2 + i]) for i, k in enumerate(keys)})


def predict(run: Run, k: perf_model.StepCoefficients, world: int | None = None) -> float:
    bus = run.bus if world is None else perf_model.step_bus_bytes(world, **run.volume_args)
    nodes = run.nodes if world is None else max(1, world // run.gpus_per_node)
    return perf_model.step_seconds(run.tokens_fed * run.flops_per_token, bus, run.key, k, nodes=nodes)


def calibrate(results: str) -> dict:
    """{coefficients, runs (measured vs predicted, in-sample and left out), excluded, predictions}."""
    path = Path(results)
    read = (record.read(p) for p in sorted(path.glob("*.json")) if path.is_dir())
    recs = [record.as_current(r) for r in read if str(r.get("schema", "")).startswith("stackbench.result/")]
    recs = [r for r in recs if r.get("status") == "ok" and (r.get("metrics") or {}).get("step_times_s")]
    if not path.is_dir() or not recs:
        raise ConfigError(f"no ok run records in {results}", where="--calibrate",
                          fix="point at a sweep's folder (results/<sweep>) with ok runs")
    runs = [run_of(r) for r in recs]
    used, excluded = [r for r in runs if not r.crowded], [r for r in runs if r.crowded]
    if len({r.key for r in used}) + 2 > len(used):
        raise ConfigError(f"{len(used)} usable runs in {results} cannot fit "
                          f"{len({r.key for r in used}) + 2} coefficients",
                          where="--calibrate", fix="calibrate on a sweep with more runs per task and stage "
                                                   "(two micro-batch sizes, one and two nodes)")
    k = fit(used)
    rows = []
    for i, r in enumerate(used):
        held_out = fit(used[:i] + used[i + 1:])
        if r.key not in held_out.fixed_s:
            continue  # the only run of its task and stage: nothing left to predict it from
        inside, out = predict(r, k), predict(r, held_out)
        rows.append({"run_id": r.run_id, "task": r.task, "zero_stage": r.stage, "nodes": r.nodes,
                     "gpus_per_node": r.gpus_per_node, "micro_batch": r.micro_batch, "seq_len": r.seq_len,
                     "measured_s": r.measured_s, "predicted_s": inside, "error_pct": 100 * (inside / r.measured_s - 1),
                     "left_out_predicted_s": out, "left_out_error_pct": 100 * (out / r.measured_s - 1),
                     "measured_tokens_per_s_per_device": r.real_tokens / r.measured_s,
                     "predicted_tokens_per_s_per_device": r.real_tokens / inside})
    errors = [abs(r["left_out_error_pct"]) for r in rows]
    return {"coefficients": {"flops_per_s_per_rank": k.flops_per_s, "busbw_bytes_per_s": k.busbw_bytes_per_s,
                             "fixed_s": k.fixed_s},
            "fitted_from": [r.run_id for r in used],
            "excluded": [{"run_id": r.run_id, "why": r.crowded} for r in excluded],
            "runs": rows,
            "preflight_busbw_gbps": _preflight_busbw(recs),
            "left_out_error_pct": {"median": statistics.median(errors) if errors else None,
                                   "worst": max(errors) if errors else None},
            "predictions": _predictions(used, k)}


def _preflight_busbw(recs: list[dict]) -> dict:
    """{"N node(s)": {collective: best busbw GB/s}} from the preflights the runs carry (bench/launchers/preflight.py),
    beside the fitted figure: the links as a collective benchmark sees them."""
    out: dict[str, dict] = {}
    for r in recs:
        for op, c in ((r.get("preflight") or {}).get("collectives") or {}).items():
            if (c or {}).get("busbw_gbps"):
                key = f"{r['config']['nodes']} node(s) x {r['config']['gpus_per_node']}"
                out.setdefault(key, {})[op] = max(out.get(key, {}).get(op, 0.0), c["busbw_gbps"])
    return out


def _predictions(runs: list[Run], k: perf_model.StepCoefficients) -> list[dict]:
    """For each task and stage, from its smallest measured run: node counts up to 512 at its GPUs per node."""
    out = []
    by_key: dict[str, Run] = {}
    for r in sorted(runs, key=lambda r: (r.world, r.micro_batch)):
        by_key.setdefault(r.key, r)
    for key, r in sorted(by_key.items()):
        base = None
        for nodes in PREDICT_NODES:
            step = predict(r, k, nodes * r.gpus_per_node)
            per_device = r.real_tokens / step
            base = base or per_device
            out.append({"key": key, "task": r.task, "zero_stage": r.stage, "nodes": nodes,
                        "gpus_per_node": r.gpus_per_node, "micro_batch": r.micro_batch, "seq_len": r.seq_len,
                        "predicted_step_s": step, "predicted_tokens_per_s_per_device": per_device,
                        "scaling_efficiency": per_device / base})
    return out
