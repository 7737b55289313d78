"""The step-time model's calibration (bench/planning/calibrate.py): the fit recovers known coefficients,
and replayed on the committed calibration sweep (results/reference/cpu-2core-calibration, runs of
at most one rank per core) it predicts each run it was not fitted to within 15% (median)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stackbench.bench.planning import calibrate as cal
from stackbench.core import perf_model
from tests.conftest import ROOT

SWEEP = ROOT / "results" / "reference" / "cpu-2core-calibration"


def _run(i: int, key: str, tokens: float, bus: float, k: perf_model.StepCoefficients) -> cal.Run:
    step = perf_model.step_seconds(tokens * 1e6, bus, key, k)
    return cal.Run(f"r{i}", key.split()[0], int(key[-1]), 1, 1, 1, 1, 128, 1, key, tokens, tokens, 1e6, bus, {}, step,
                   "")


def test_the_fit_recovers_known_coefficients():
    k = perf_model.StepCoefficients(flops_per_s=2e10, busbw_bytes_per_s=5e8,
                                    fixed_s={"sft ZeRO-0": 0.01, "sft ZeRO-3": 0.05})
    runs = [_run(i, key, tokens, bus, k) for i, (key, tokens, bus) in enumerate(
        [("sft ZeRO-0", 256, 0), ("sft ZeRO-0", 1024, 0), ("sft ZeRO-0", 256, 4e7), ("sft ZeRO-3", 512, 0),
         ("sft ZeRO-3", 512, 8e7), ("sft ZeRO-3", 2048, 8e7)])]
    got = cal.fit(runs)
    assert got.flops_per_s == pytest.approx(2e10) and got.busbw_bytes_per_s == pytest.approx(5e8)
    assert got.fixed_s == pytest.approx({"sft ZeRO-0": 0.01, "sft ZeRO-3": 0.05})


def test_the_committed_calibration_sweep_is_predicted_within_15_percent_left_out():
    out = cal.calibrate(str(SWEEP))
    assert not out["excluded"] and len(out["fitted_from"]) >= 16 and len(out["runs"]) == len(out["fitted_from"])
    assert out["left_out_error_pct"]["median"] <= 15, out["left_out_error_pct"]
    k = out["coefficients"]
    assert k["flops_per_s_per_rank"] > 0 and k["busbw_bytes_per_s"] > 0
    assert {p["nodes"] for p in out["predictions"]} == set(cal.PREDICT_NODES)
    assert all(0 < p["scaling_efficiency"] <= 1 for p in out["predictions"])


def test_plan_calibrate_prints_the_fit_and_every_run():
    p = subprocess.run([sys.executable, "-m", "tasks", "plan", "--calibrate", str(SWEEP), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["runs"] and out["left_out_error_pct"]["median"] is not None
    p = subprocess.run([sys.executable, "-m", "tasks", "plan", "--calibrate", str(ROOT / "results" / "nothing-here")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "error: --calibrate: no ok run records" in p.stderr and "Traceback" not in p.stderr
