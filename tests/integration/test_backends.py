"""--backend hf: transformers' Trainer (SFT) and TRL's DPOTrainer (DPO) fed the same DeepSpeed
config, weights and batches as the native loop, timed by stackbench. A backend that is fast but computes something else must not
win: the fp32 losses must agree with native's."""

import pytest

from bench.launchers import LaunchOptions
from bench.launchers.local import LocalLauncher
from bench.spec import expand
from bench.sweep import run_sweep
from report import load, tables

pytestmark = pytest.mark.deepspeed


def test_hf_trainer_matches_native_losses_and_is_measured_the_same_way(tmp_path):
    specs, _ = expand(tasks=["sft", "dpo"], zero_stages=[2, 3], backends=["native", "hf"], steps=5, warmup_steps=1)
    records = run_sweep(specs, LocalLauncher(LaunchOptions(deadline_s=400, preflight=False)), tmp_path / "s", quiet=True)
    by = {(r["config"]["task"], r["config"]["backend"], r["config"]["zero_stage"]): r for r in records}
    for key, rec in by.items():
        assert rec["status"] == "ok", (key, rec.get("error"))
    for task, stage in [("sft", 2), ("sft", 3), ("dpo", 2), ("dpo", 3)]:
        native, hf = by[(task, "native", stage)]["metrics"], by[(task, "hf", stage)]["metrics"]
        assert hf["loss"]["per_step"] == pytest.approx(native["loss"]["per_step"], rel=1e-5)  # fp32, same batches
        if task == "dpo":  # TRL's DPOTrainer against the native sigmoid DPO with its frozen reference
            assert hf["loss"]["per_step"][0] == pytest.approx(0.693147, abs=1e-5)
            assert hf["reward_accuracy"]["per_step"] == pytest.approx(native["reward_accuracy"]["per_step"])
        assert hf["tokens_per_s"] / hf["padded_tokens_per_s"] == pytest.approx(
            native["tokens_per_s"] / native["padded_tokens_per_s"])  # the same tokens were fed
        assert len(hf["step_times_s"]) == 5 and hf["step_time_s"]["median"] > 0
    setup = by[("sft", "hf", 2)]["config"]["backend_setup"]
    assert "use_configured_state" in setup["accelerate_state"] and "TrainerCallback" in setup["timing"]
    df, _ = load.load(tmp_path / "s")
    side = tables.backends(df)
    assert "hf / native" in side.columns and len(side) == 4 and (side["hf / native"] > 0).all()
