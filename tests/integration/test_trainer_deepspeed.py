"""Real DeepSpeed on CPU (gloo, fp32, the embedded tiny model), launched through the local launcher.

One session-scoped sweep (the README's default: SFT + DPO x ZeRO 0-3 on 2 ranks, plus SFT with
optimizer offload) feeds most assertions, so CI pays for each run once.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.local import LocalLauncher
from stackbench.bench.matrix import expand
from stackbench.bench.sweep import run_sweep
from stackbench.core import record
from stackbench.core.config import RunConfig
from tests.conftest import ROOT, write_jsonl
from tests.support.rows import assert_row_filled

pytestmark = pytest.mark.deepspeed
STEPS, WARMUP = 8, 2


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    specs, invalid = expand(task=["sft", "dpo"], zero_stage=[0, 1, 2, 3], steps=STEPS, warmup_steps=WARMUP)
    assert not invalid and len(specs) == 8
    specs.append(RunConfig(task="sft", model="tiny", zero_stage=2, offload="optimizer", steps=STEPS,
                         warmup_steps=WARMUP))
    # DPO's frozen reference partitioned (ZeRO-3) under a ZeRO-2 policy: the same math as the default replica
    specs.append(RunConfig(task="dpo", model="tiny", zero_stage=2, dpo_ref_zero_stage="3", steps=STEPS,
                         warmup_steps=WARMUP))
    sweep_dir = tmp_path_factory.mktemp("results") / "sweep-test"
    records = run_sweep(specs, LocalLauncher(LaunchOptions(deadline_s=600)), sweep_dir, quiet=True)
    return {(r["config"]["task"], r["config"]["zero_stage"],
             r["config"]["offload"] != "none" or r["config"]["dpo_ref_zero_stage"] != "auto"): r
            for r in records}, sweep_dir


def test_default_sweep_writes_ok_records_with_real_metrics(sweep):
    records, sweep_dir = sweep
    assert len(records) == 10
    for key, rec in records.items():
        assert rec["status"] == "ok", f"{key}: {rec.get('error')}"
        assert record.validate(rec) == []
        assert (sweep_dir / f"{rec['run_id']}.json").exists()
        m = rec["metrics"]
        assert len(m["step_times_s"]) == STEPS  # warm-up excluded
        assert 0 < m["step_time_s"]["p10"] <= m["step_time_s"]["median"] <= m["step_time_s"]["p90"]
        assert 0 < m["tokens_per_s"] < m["padded_tokens_per_s"]  # padding counted apart
        assert m["mfu"] is None and m["hfu"] is None  # CPU: no defined peak, never a guess
        assert m["memory"]["max_allocated_gib"] is None  # torch's CUDA counters read 0 on CPU: not reported
        assert m["memory"]["host_rss_peak_gib"] > 0.1
        assert len(m["memory_per_rank"]) == 2
        assert rec["resolved"]["world_size"] == 2 and rec["resolved"]["dtype"] == "fp32"
        assert "torch.distributed.run" in rec["command"] and rec["run_id"] in rec["command"]
        assert rec["environment"]["packages"]["deepspeed"] and len(rec["environment"]["ranks"]) == 2
        assert rec["prediction"]["total_gib"] > 0


def test_sft_fp32_losses_agree_across_zero_stages_and_offload(sweep):
    records, _ = sweep
    base = records[("sft", 0, False)]["metrics"]["loss"]["per_step"]
    assert base[-1] < base[0]  # it learns
    for key in [("sft", 1, False), ("sft", 2, False), ("sft", 3, False), ("sft", 2, True)]:
        other = records[key]["metrics"]["loss"]["per_step"]
        for step, (a, b) in enumerate(zip(base[:5], other[:5])):
            assert abs(a - b) / abs(a) < 1e-4, f"{key} step {step}: {b} vs ZeRO-0 {a}"


def test_dpo_reference_stage_changes_where_it_lives_not_the_losses(sweep):
    records, _ = sweep
    default, partitioned = records[("dpo", 2, False)], records[("dpo", 2, True)]
    assert default["resolved"]["ref_zero_stage"] == 0 and partitioned["resolved"]["ref_zero_stage"] == 3
    assert partitioned["metrics"]["loss"]["per_step"] == pytest.approx(default["metrics"]["loss"]["per_step"], rel=1e-5)
    assert partitioned["prediction"]["reference_gib"] < default["prediction"]["reference_gib"]  # 1/N of the weights


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_dpo_starts_at_ln2_and_learns(sweep, stage):
    m = sweep[0][("dpo", stage, False)]["metrics"]
    losses, acc = m["loss"]["per_step"], m["reward_accuracy"]["per_step"]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 0
    assert acc[0] == 0.0  # equal rewards are not "chosen > rejected"
    n = len(losses) // 2
    assert sum(losses[n:]) / (len(losses) - n) < math.log(2) - 0.05
    assert sum(acc[n:]) / (len(acc) - n) > 0.6
    assert m["reward_margin"]["last"] > 0


def test_a_resumed_sweep_skips_what_is_done(sweep):
    records, sweep_dir = sweep
    spec = RunConfig(task="sft", model="tiny", zero_stage=0, steps=STEPS, warmup_steps=WARMUP)
    before = (sweep_dir / f"{spec.run_id}.json").read_text()
    again = run_sweep([spec], LocalLauncher(), sweep_dir, quiet=True)
    assert again[0]["run_id"] == spec.run_id and (sweep_dir / f"{spec.run_id}.json").read_text() == before


def _trainer(args, tmp_path, preexec_fn=None, **env):
    return subprocess.run([sys.executable, "-m", "stackbench.trainer", "--out", str(tmp_path), "--run-id", "r", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, **env),
                          preexec_fn=preexec_fn)


def test_corrupted_dataset_line_fails_fast_with_file_and_line(tmp_path):
    src = (ROOT / "trainer/assets/samples/sft.jsonl").read_text().splitlines()
    bad = write_jsonl(tmp_path / "bad.jsonl", src[:5] + ['{"messages": [{"role": "user", "content": "cut'] + src[5:])
    p = _trainer(["--data", str(bad)], tmp_path)
    assert p.returncode == 2
    assert f"{bad}:6: not valid JSON" in p.stderr and "Traceback" not in p.stderr
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["kind"] == "bad_input" and f"{bad}:6" in rec["error"]["message"]
    # the record says what the run was, so the failure lands in its own row of the report
    assert_row_filled(rec, model="tiny", task="sft", zero_stage=2, offload="none", nodes=1, gpus_per_node=1)
    assert rec["config"]["data"] == str(bad)


def test_out_of_memory_is_recorded_as_oom_by_the_trainer(tmp_path):
    """A real allocation failure: the address space capped at 5 GiB, a 1.7B model in fp32 (6.8 GB)."""
    import resource

    limit = 5 * 2**30
    p = _trainer(["--model", "qwen3-1.7b", "--zero-stage", "0", "--steps", "1", "--warmup-steps", "0", "--seq-len",
                  "64", "--micro-batch", "1"], tmp_path, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS,
                                                                                                (limit, limit)))
    assert p.returncode == 3 and "out of memory" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["status"] == "oom" and "DefaultCPUAllocator" in rec["error"]["message"]
    assert_row_filled(rec, model="qwen3-1.7b", task="sft", zero_stage=0, micro_batch=1, seq_len=64)


@pytest.mark.parametrize("args, expect", [
    (["--model", "/nonexistent/model"], "neither a preset nor an existing directory"),
    (["--zero-stage", "4"], "--zero-stage 4 is not a valid value"),
    (["--zero-stage", "2", "--offload", "optimizer+params"], "parameter offload needs ZeRO-3"),
    (["--micro-batch", "0"], "--micro-batch 0 is below the minimum of 1"),
    (["--steps", "500"], "need 1004"),  # 502 steps x global batch 2: more than the 108 samples
    (["--backend", "swift", "--task", "pt", "--packing"], "--packing with --backend swift"),
    (["--backend", "swift"], "ms-swift is not installed"),  # this environment has none: said before any collective
])
def test_bad_settings_exit_2_with_a_message(tmp_path, args, expect):
    p = _trainer(args, tmp_path)
    assert p.returncode == 2 and expect in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_without_a_launcher_the_trainer_runs_as_a_world_of_one(tmp_path):
    p = _trainer(["--steps", "1", "--warmup-steps", "0", "--zero-stage", "0"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]  # DeepSpeed alone would look for MPI
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["status"] == "ok" and rec["resolved"]["world_size"] == 1 and rec["metrics"]["tokens_per_s"] > 0


def test_moe_under_zero3_registers_its_leaf_modules(tmp_path):
    """A tiny Qwen3-MoE architecture (config only: random init) trains under ZeRO-3 on 2 ranks."""
    model_dir = tmp_path / "tiny-moe"
    model_dir.mkdir()
    cfg = json.loads((ROOT / "trainer/assets/tiny-qwen3/config.json").read_text())
    cfg.update(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", num_experts=8, num_experts_per_tok=2,
               moe_intermediate_size=128, decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True)
    (model_dir / "config.json").write_text(json.dumps(cfg))
    spec = RunConfig(task="sft", model=str(model_dir), zero_stage=3, steps=3, warmup_steps=1)
    rec = LocalLauncher(LaunchOptions(deadline_s=300)).launch(spec, tmp_path / "sweep")
    assert rec["status"] == "ok", rec.get("error")
    (leaf,) = rec["resolved"]["moe_leaf_modules"]
    assert leaf["name"] == "Qwen3MoeSparseMoeBlock" and "structure" in leaf["found_by"]
    assert leaf["instances"] == 4  # one per layer
    assert {k: rec["resolved"]["model"]["moe"][k] for k in ("experts", "top_k")} == {"experts": 8, "top_k": 2}
    assert rec["resolved"]["model"]["active"] < rec["resolved"]["model"]["params"]


def test_every_field_a_fresh_record_has_is_documented(sweep):
    """docs/record.md is generated from core/record_doc.py: a field the trainer or the sweep adds
    without a row there fails here, on records made now (the unit test reads the committed ones)."""
    from stackbench.core import record_doc

    records, _ = sweep
    missing = {p: rec["run_id"] for rec in records.values() for p in record_doc.undocumented(rec)}
    assert not missing, f"fields no row of core/record_doc.py FIELDS explains: {missing}"
