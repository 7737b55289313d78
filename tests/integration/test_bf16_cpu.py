"""The bf16 path on a CPU, before any GPU runs it: SFT and DPO under ZeRO-2 and ZeRO-3, 2 ranks,
the embedded model in bf16, against fp32 (the session's short native runs, tests/conftest.py). The
bf16 DeepSpeed config, the model built in bf16, the DPO reference engine, the memory model's bf16
byte counts and the records all run here.

Tolerance: bf16 keeps 8 bits of mantissa (a relative rounding step of 2^-8 = 0.4%); a few steps of
training accumulate it, so losses after 2 and more steps must agree with fp32's to 3% (relative),
and bf16 ZeRO-2 with bf16 ZeRO-3 (the same arithmetic, partitioned differently) to 1%. DPO's first
loss is ln 2 in any dtype (the policy equals its reference), so only later steps are compared."""

from __future__ import annotations

import math

import pytest

from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.local import LocalLauncher
from stackbench.bench.sweep import run_sweep
from stackbench.core import memory_model
from stackbench.core.config import RunConfig
from stackbench.trainer import models
from tests.conftest import SHORT_STEPS, SHORT_WARMUP

pytestmark = pytest.mark.deepspeed

STEPS, WARMUP = SHORT_STEPS, SHORT_WARMUP  # 3, 1: per_step holds every step, warm-up included: 4 losses
VS_FP32, ACROSS_STAGES = 0.03, 0.01


@pytest.fixture(scope="module")
def runs(tmp_path_factory, short_native):
    """bf16 at ZeRO 2 and 3 launched here; fp32 at ZeRO-2 is the session's short native run of the
    same spec (conftest.short_native: the dtype left to the host, fp32 on a CPU)."""
    specs = [RunConfig(task=task, model="tiny", zero_stage=stage, dtype="bf16", gpus_per_node=2, steps=STEPS,
                       warmup_steps=WARMUP)
             for task in ("sft", "dpo") for stage in (2, 3)]
    records = run_sweep(specs, LocalLauncher(LaunchOptions(deadline_s=400, preflight=False)),
                        tmp_path_factory.mktemp("bf16") / "s", quiet=True)
    out = {(r["config"]["task"], r["config"]["zero_stage"], r["config"]["dtype"]): r for r in records}
    native, _ = short_native
    for task in ("sft", "dpo"):
        fp32 = native[(task, 2)]
        assert fp32["resolved"]["dtype"] == "fp32" and fp32["config"]["gpus_per_node"] == 2, fp32["resolved"]
        assert (fp32["config"]["steps"], fp32["config"]["warmup_steps"]) == (STEPS, WARMUP)
        out[(task, 2, "fp32")] = fp32
    return out


def _losses(rec: dict) -> list[float]:
    return rec["metrics"]["loss"]["per_step"]


def test_bf16_runs_are_ok_and_say_bf16_everywhere(runs):
    for (task, stage, dtype), rec in runs.items():
        assert rec["status"] == "ok", ((task, stage, dtype), rec.get("error"))
        if dtype == "bf16":
            assert rec["config"]["dtype"] == "bf16" and rec["resolved"]["dtype"] == "bf16"
            engine = rec["resolved"]["engine"]
            assert engine["bf16"] is True and engine["param_dtype"] == "bfloat16", engine
            assert rec["resolved"]["deepspeed"]["bf16"]["enabled"] is True


def test_bf16_losses_follow_fp32_within_the_stated_tolerance(runs):
    for task in ("sft", "dpo"):
        fp32, z2, z3 = (_losses(runs[(task, s, d)]) for s, d in ((2, "fp32"), (2, "bf16"), (3, "bf16")))
        assert len(fp32) == len(z2) == len(z3) == STEPS + WARMUP
        if task == "dpo":
            assert z2[0] == pytest.approx(math.log(2), abs=1e-3) and z3[0] == pytest.approx(math.log(2), abs=1e-3)
        for step in range(2, STEPS + WARMUP):  # the loss after 2 and more optimizer steps
            assert z2[step] == pytest.approx(fp32[step], rel=VS_FP32), (task, step, z2, fp32)
            assert z3[step] == pytest.approx(z2[step], rel=ACROSS_STAGES), (task, step, z2, z3)
        assert fp32[-1] < fp32[0] and z2[-1] < z2[0]  # both trained


def test_the_memory_prediction_counts_bf16_bytes(runs):
    shape = models.shape(models.resolve("tiny"))
    for (task, stage, dtype), rec in runs.items():
        cfg = RunConfig.from_dict(rec["config"])
        zero = rec["resolved"]["deepspeed"]["zero_optimization"]
        expected = memory_model.predict_for(shape, cfg, dtype=dtype, device_gib=None, zero_optimization=zero,
                                            device_type="cpu")
        assert rec["prediction"]["total_gib"] == pytest.approx(expected.total_gib)
        assert rec["prediction"]["model_states_gib"] == pytest.approx(expected.model_states_gib)
    # 16-bit parameters and gradients: less than fp32's 4 bytes each, the fp32 master copy and Adam unchanged
    for task in ("sft", "dpo"):
        bf16, fp32 = runs[(task, 2, "bf16")]["prediction"], runs[(task, 2, "fp32")]["prediction"]
        params = shape.params
        # ZeRO-2, 2 ranks: 16-bit params (w) + grads (w / 2) + 16 bytes / 2; w = 2 vs 4
        assert (fp32["model_states_gib"] - bf16["model_states_gib"]) * 2**30 == pytest.approx(params * (2 + 1))
