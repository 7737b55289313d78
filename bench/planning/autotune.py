"""What to run next: the step-time model (bench/planning/calibrate.py), fitted to the ok runs of the sweep so
far, predicts each run before it starts (`Predictor`, the record's prediction.step_time_s), and
`invoke bench --autotune` uses it to measure only what is worth measuring (`Autotuner`).

The autotuner's search, per group (the runs that differ only in ZeRO stage, offload and
micro-batch: one model, task, node count, sequence length ...):
  1. a (task, stage, offload) nothing has measured yet goes first, at its largest micro-batch
     (a larger micro-batch amortizes the step's fixed cost); the fit needs one run of each;
  2. then the candidate with the highest predicted tokens/s per device, refitting after every run;
  3. what the memory model says cannot fit (bench/planning/fit.py) is skipped with its reason before it can be
     a seed, and a direction stops: the micro-batches above one that ran out of memory or cannot
     fit are skipped (`stopped_direction`) naming it;
  4. a candidate predicted at least MARGIN slower than the best measured in its group is skipped
     with the prediction and the run it lost to; the group is done when nothing else is left.
The runs the model has not seen are never skipped on its word: only configurations whose fixed
cost was measured, and whose speed the model predicts from a measured run of the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from stackbench.bench.planning import calibrate
from stackbench.core.config import RunConfig

# Skip a candidate predicted this much slower than the best measured: the calibration's left-out
# error on this machine's CPU sweep has a median of 8.5% (results/reference/cpu-2core-calibration),
# so twice that keeps a configuration the model under-predicts by a typical error.
MARGIN = 0.17
TUNED = ("zero_stage", "offload", "micro_batch")  # what the autotuner chooses; everything else is a group
SHAPE = ("model", "task", "seq_len", "data", "data_format", "padding", "packing", "too_long", "dtype", "attn_impl",
         "grad_checkpointing", "backend")


def group_of(cfg: RunConfig) -> tuple:
    return tuple((f.name, getattr(cfg, f.name)) for f in fields(cfg) if f.name not in TUNED)


def _direction(cfg: RunConfig) -> tuple:
    return group_of(cfg), cfg.zero_stage, cfg.offload


def _shape(cfg: dict | RunConfig) -> tuple:
    """What a measured run must share with a candidate to predict it (tokens fed and FLOPs per token)."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k: getattr(cfg, k))
    return tuple(get(k) for k in SHAPE)


class Predictor:
    """Step time of a run before it starts, fitted to the sweep's ok runs so far of the same shape
    (model, task, sequence, data, dtype, attention, backend: one FLOP/s and one fixed cost per stage
    cannot be shared across them), without the runs whose ranks outnumber their host's cores (they
    measure contention; bench/planning/calibrate.py leaves them out too). None: nothing to predict from."""

    def __init__(self) -> None:
        self._fits: dict[tuple, tuple] = {}

    def fit(self, records: list[dict], shape: tuple):
        ok = [r for r in records if r.get("status") == "ok" and (r.get("metrics") or {}).get("step_times_s")
              and _shape(r["config"]) == shape]
        ids = tuple(sorted(r["run_id"] for r in ok))
        if self._fits.get(shape, (None,))[0] != ids:
            runs = [run for r in ok if (run := _readable(r)) and not run.crowded]
            try:
                k = calibrate.fit(runs) if runs else None
            except (ValueError, np.linalg.LinAlgError):  # a record's NaN: no prediction, never a stopped sweep
                k = None
            self._fits[shape] = (ids, k, runs)
        return self._fits[shape][1], self._fits[shape][2]

    def _run(self, cfg: RunConfig, records: list[dict]):
        k, runs = self.fit(records, _shape(cfg))
        key = calibrate.key_of(cfg.task, cfg.zero_stage, cfg.offload)
        if k is None or not runs or key not in k.fixed_s or not math.isfinite(k.flops_per_s):
            return None, None, len(runs)
        return calibrate.run_for(cfg, runs[0]), k, len(runs)

    def step_seconds(self, cfg: RunConfig, records: list[dict]) -> tuple[float | None, int]:
        """(predicted seconds per step or None, how many runs the fit used)."""
        run, k, n = self._run(cfg, records)
        return (calibrate.predict(run, k), n) if run else (None, n)

    def tokens_per_s_per_device(self, cfg: RunConfig, records: list[dict]) -> float | None:
        run, k, _ = self._run(cfg, records)
        return run.real_tokens / calibrate.predict(run, k) if run else None


def _readable(rec: dict) -> calibrate.Run | None:
    """The model's view of a record; None for one without what it needs (a backend's record without
    FLOPs per token, an older schema): left out of the fit, not a reason to stop a sweep."""
    try:
        return calibrate.run_of(rec)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


@dataclass
class Decision:
    cfg: RunConfig | None        # the run to measure next; None: nothing left worth measuring
    skip: list[tuple[RunConfig, str, str]]  # (config, error kind, why) to record as skipped now


class Autotuner:
    def __init__(self, configs: list[RunConfig], predictor: Predictor | None = None, fit=None) -> None:
        """fit: bench.fit.FitCheck; what it says cannot fit is skipped before it is ever a seed."""
        self.todo = list(configs)
        self.predictor = predictor or Predictor()
        self.fit = fit

    def next(self, records: list[dict]) -> Decision:
        done = {r["run_id"] for r in records}
        self.todo = [c for c in self.todo if c.run_id not in done]
        skip = self._stopped_directions(records)
        if self.fit is not None:
            stopped = {c.run_id for c, _, _ in skip}
            skip += [(c, "predicted_oom", why) for c in self.todo if c.run_id not in stopped
                     for _, why in [self.fit.why_not(c)] if why]
        skipped = {c.run_id for c, _, _ in skip}
        left = [c for c in self.todo if c.run_id not in skipped]
        unseen = [c for c in left if self.predictor.step_seconds(c, records)[0] is None]
        if unseen:  # seed: the largest micro-batch of a configuration the model has not measured
            pick = max(unseen, key=lambda c: (c.micro_batch, -c.zero_stage))
            return self._done(Decision(pick, skip))
        best = self._best_measured(records)
        speed = {c.run_id: self.predictor.tokens_per_s_per_device(c, records) for c in left}
        ranked = []
        for c in left:
            lead = best.get(group_of(c))
            if lead and speed[c.run_id] < lead[0] * (1 - MARGIN):
                skip.append((c, "predicted_slower",
                             f"predicted {speed[c.run_id]:,.0f} tokens/s per device, "
                             f"{100 * (1 - speed[c.run_id] / lead[0]):.0f}% below {lead[1]} measured at {lead[0]:,.0f} "
                             f"(the autotuner skips what is predicted more than {MARGIN:.0%} slower)"))
            else:
                ranked.append(c)
        pick = max(ranked, key=lambda c: speed[c.run_id]) if ranked else None
        return self._done(Decision(pick, skip))

    def _done(self, d: Decision) -> Decision:
        gone = {c.run_id for c, _, _ in d.skip} | ({d.cfg.run_id} if d.cfg else set())
        self.todo = [c for c in self.todo if c.run_id not in gone]
        return d

    def _stopped_directions(self, records: list[dict]) -> list[tuple[RunConfig, str, str]]:
        """Micro-batches above one that ran out of memory or cannot fit, in the same group, stage and offload."""
        limit: dict[tuple, tuple[int, str]] = {}
        for r in records:
            kind = (r.get("error") or {}).get("kind")
            if r.get("status") == "oom" or kind == "predicted_oom":
                cfg = RunConfig.from_dict(r["config"])
                why = "ran out of memory" if r.get("status") == "oom" else "cannot fit (the memory model)"
                d = _direction(cfg)
                if d not in limit or cfg.micro_batch < limit[d][0]:
                    limit[d] = (cfg.micro_batch, f"micro-batch {cfg.micro_batch} {why} ({r['run_id']})")
        out = []
        for c in self.todo:
            stop = limit.get(_direction(c))
            if stop and c.micro_batch > stop[0]:
                out.append((c, "stopped_direction", f"larger than {stop[1]}: the autotuner stops this direction there"))
        return out

    @staticmethod
    def _best_measured(records: list[dict]) -> dict[tuple, tuple[float, str]]:
        return {g: (r["metrics"]["tokens_per_s_per_device"], r["run_id"]) for g, r in fastest(records).items()}


def fastest(records: list[dict]) -> dict[tuple, dict]:
    """The fastest ok record per group (tokens/s per device, the throughput convention)."""
    out: dict[tuple, dict] = {}
    for r in records:
        if r.get("status") == "ok":
            g = group_of(RunConfig.from_dict(r["config"]))
            if r["metrics"]["tokens_per_s_per_device"] > out.get(g, {"metrics": {"tokens_per_s_per_device": 0}})[
                    "metrics"]["tokens_per_s_per_device"]:
                out[g] = r
    return out
