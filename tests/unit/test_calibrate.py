"""The step-time model's calibration (bench/calibrate.py): the fit recovers known coefficients."""

from __future__ import annotations

import pytest

from bench import calibrate as cal
from core import perf_model


def _run(i: int, key: str, tokens: float, bus: float, k: perf_model.StepCoefficients) -> cal.Run:
    step = perf_model.step_seconds(tokens * 1e6, bus, key, k)
    return cal.Run(f"r{i}", key.split()[0], int(key[-1]), 1, 1, 1, 1, 128, 1, key, tokens, tokens, 1e6, bus, {}, step, "")


def test_the_fit_recovers_known_coefficients():
    k = perf_model.StepCoefficients(flops_per_s=2e10, busbw_bytes_per_s=5e8, fixed_s={"sft ZeRO-0": 0.01, "sft ZeRO-3": 0.05})
    runs = [_run(i, key, tokens, bus, k) for i, (key, tokens, bus) in enumerate(
        [("sft ZeRO-0", 256, 0), ("sft ZeRO-0", 1024, 0), ("sft ZeRO-0", 256, 4e7), ("sft ZeRO-3", 512, 0),
         ("sft ZeRO-3", 512, 8e7), ("sft ZeRO-3", 2048, 8e7)])]
    got = cal.fit(runs)
    assert got.flops_per_s == pytest.approx(2e10) and got.busbw_bytes_per_s == pytest.approx(5e8)
    assert got.fixed_s == pytest.approx({"sft ZeRO-0": 0.01, "sft ZeRO-3": 0.05})
