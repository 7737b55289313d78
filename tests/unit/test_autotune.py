"""The autotuner (bench/planning/autotune.py) replayed on the committed calibration sweep: its 32 measured
runs (SFT and DPO x ZeRO 0-3 x 1 and 2 nodes x micro-batch 1 and 4, results/reference/cpu-2core-calibration)
stand in for the launches, so the search is checked on real measurements without running them again."""

from __future__ import annotations

from pathlib import Path

from stackbench.bench.planning.autotune import Autotuner, fastest
from stackbench.core import record
from stackbench.core.config import Launch, RunConfig
from tests.conftest import ROOT

SWEEP = ROOT / "results" / "reference" / "cpu-2core-calibration"


def _records(folder: Path) -> list[dict]:
    read = (record.read(p) for p in sorted(folder.glob("*.json")))
    return [record.as_current(r) for r in read if str(r.get("schema", "")).startswith("stackbench.result/")]


def _spread(rec: dict) -> float:
    s = rec["metrics"]["step_time_s"]
    return (s["p90"] - s["p10"]) / s["median"]


def replay(full: list[dict]) -> list[dict]:
    """The autotuner's sweep with each launch answered by the committed record of that run."""
    measured = {r["run_id"]: r for r in full}
    tuner, seen = Autotuner([RunConfig.from_dict(r["config"]) for r in full]), []
    while True:
        decision = tuner.next(seen)
        for cfg, kind, why in decision.skip:
            assert why and cfg.run_id not in {r["run_id"] for r in seen}
            seen.append({"run_id": cfg.run_id, "status": "skipped", "error": {"kind": kind, "message": why},
                         "config": cfg.to_dict()})
        if decision.cfg is None:
            return seen
        seen.append(measured[decision.cfg.run_id])


def test_autotune_finds_the_fastest_of_the_full_matrix_in_fewer_runs():
    full = _records(SWEEP)
    assert len(full) == 32
    seen = replay(full)
    assert sorted(r["run_id"] for r in seen) == sorted(r["run_id"] for r in full)  # each run measured or skipped once
    launched = [r for r in seen if r["status"] == "ok"]
    assert len(launched) < len(full) * 0.75
    best, found = fastest(full), fastest(seen)
    assert set(found) == set(best)  # every group (task x node count) has a measured best
    for group, b in best.items():
        f = found[group]
        rate, top = f["metrics"]["tokens_per_s_per_device"], b["metrics"]["tokens_per_s_per_device"]
        assert rate >= top * (1 - max(_spread(b), _spread(f))), (b["run_id"], f["run_id"])
    slower = [r for r in seen if r["status"] == "skipped"]
    assert slower and all(r["error"]["kind"] == "predicted_slower" and "below" in r["error"]["message"] for r in slower)


def test_a_direction_stops_at_the_first_micro_batch_that_does_not_fit():
    full = [r for r in _records(SWEEP) if r["config"]["task"] == "sft" and r["config"]["nodes"] == 1]
    configs = [RunConfig.from_dict(r["config"]) for r in full]
    configs += [c.replace(micro_batch=8) for c in configs if c.micro_batch == 4]
    first = Autotuner(configs).next([])
    assert first.cfg.micro_batch == 8 and not first.skip  # the largest first: it amortizes the fixed cost
    z0_mb4 = next(c for c in configs if c.zero_stage == 0 and c.micro_batch == 4)
    z1_mb1 = next(c for c in configs if c.zero_stage == 1 and c.micro_batch == 1)
    launch = Launch(launcher="local", out="/tmp")
    oom = record.new("oom", z0_mb4, launch, started_at=record.now(), error=record.error("oom", "CUDA out of memory"))
    unfit = record.new("skipped", z1_mb1, launch, started_at=record.now(),
                       error=record.error("predicted_oom", "predicted 90 GiB > 80 GiB"))
    decision = Autotuner(configs).next([oom, unfit])
    stops = {(c.zero_stage, c.micro_batch): why for c, kind, why in decision.skip if kind == "stopped_direction"}
    assert set(stops) == {(0, 8), (1, 4), (1, 8)}
    assert "larger than micro-batch 4 ran out of memory" in stops[(0, 8)]
    assert "larger than micro-batch 1 cannot fit (the memory model)" in stops[(1, 4)]
    assert decision.cfg.zero_stage in (2, 3) and decision.cfg.micro_batch == 8  # the other directions go on


def test_what_the_memory_model_says_cannot_fit_is_never_a_seed():
    full = [r for r in _records(SWEEP) if r["config"]["task"] == "sft" and r["config"]["nodes"] == 1]
    configs = [RunConfig.from_dict(r["config"]) for r in full]

    class Fit:  # the memory model's word, as bench.fit.FitCheck gives it: micro-batch 4 does not fit at ZeRO 0-1
        def why_not(self, cfg):
            return {}, ("predicted 90 GiB > 80 GiB" if cfg.micro_batch == 4 and cfg.zero_stage < 2 else None)

    first = Autotuner(configs, fit=Fit()).next([])
    assert (first.cfg.micro_batch, first.cfg.zero_stage) in {(4, 2), (4, 3)}
    unfit = {(c.zero_stage, c.micro_batch) for c, kind, why in first.skip if kind == "predicted_oom"}
    assert unfit == {(0, 4), (1, 4)}
