"""The user's own DeepSpeed config through `invoke bench`, real DeepSpeed on CPU: a Hugging Face
Trainer style JSON with "auto" values and CPU offload, an accelerate YAML with a ZeRO-3 block and
an ms-swift name in one sweep; a plain JSON with explicit batch sizes across 1 and 2 nodes; a
user's bf16 JSON with two --ds values for one key; attention x gradient checkpointing as axes.
Every check reads what the built engine reports (resolved.engine), not only what was asked.
Four bench launches, eleven short runs; the report over all of them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackbench.core import record
from tests.conftest import ROOT

pytestmark = pytest.mark.deepspeed

CONFIGS = ROOT / "tests" / "support" / "ds_configs"
SHORT = ["--tasks", "sft", "--steps", "2", "--warmup", "1", "--nodes", "1"]


def _bench(results: Path, sweep: str, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "tasks", "bench", "--results", str(results), "--sweep", sweep, "--no-preflight",
            *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, env=dict(os.environ))


def _records(sweep_dir: Path) -> list[dict]:
    return [r for r in map(record.read, sorted(sweep_dir.glob("*.json"))) if "schema" in r]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    results = tmp_path_factory.mktemp("user-ds")
    out = {
        "sources": _bench(results, "sources", *SHORT, "--deepspeed",
                          f"{CONFIGS / 'hf_zero3_offload_auto.json'},{CONFIGS / 'accelerate_zero3.yaml'},zero2"),
        "nodes": _bench(results, "nodes", *SHORT[:-1], "1,2", "--gpus-per-node", "1", "--deepspeed",
                        str(CONFIGS / "plain_zero2_explicit.json")),
        "bf16": _bench(results, "bf16", *SHORT, "--deepspeed", str(CONFIGS / "bf16_zero2.json"),
                       "--ds", "zero_optimization.reduce_bucket_size=1000000",
                       "--ds", "zero_optimization.reduce_bucket_size=2000000"),
        "axes": _bench(results, "axes", *SHORT, "--gpus-per-node", "1", "--zero", "2",
                       "--axis", "attn_impl=sdpa,eager", "--axis", "grad_checkpointing=true,false"),
    }
    report = subprocess.run([sys.executable, "-m", "tasks", "report", "--results", str(results), "--out",
                             str(results / "report")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    for name, p in out.items():
        assert p.returncode == 0, f"{name}: {p.stdout[-3000:]}{p.stderr[-3000:]}"
    assert report.returncode == 0, report.stderr[-3000:]
    return results, out


def _by(records: list[dict], key) -> dict:
    return {key(r): r for r in records}


def test_an_hf_auto_json_an_accelerate_yaml_and_an_ms_swift_name_run_as_they_say(sweeps):
    results, out = sweeps
    recs = _by(_records(results / "sources"), lambda r: Path(r["config"]["deepspeed"]).name)
    assert set(recs) == {"hf_zero3_offload_auto.json", "accelerate_zero3.yaml", "zero2"}
    for rec in recs.values():
        assert rec["status"] == "ok", rec["error"]
        assert "auto" not in str(rec["resolved"]["deepspeed"])  # every auto filled
    hf = recs["hf_zero3_offload_auto.json"]
    engine, ds = hf["resolved"]["engine"], hf["resolved"]["deepspeed"]
    hidden = hf["resolved"]["model"]["hidden"]
    assert engine["zero_stage"] == 3 and engine["offload_optimizer"] == "cpu"
    assert engine["optimizer"] == "DeepSpeedCPUAdam"
    assert engine["reduce_bucket_size"] == hidden * hidden  # transformers' rule for the hidden-size autos
    assert ds["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * hidden * hidden)
    assert ds["zero_optimization"]["stage3_param_persistence_threshold"] == 10 * hidden
    assert engine["overlap_comm"] is True and engine["betas"] == [0.9, 0.95]  # the file's overlap, the knobs' betas
    assert hf["config"]["zero_stage"] == 3 and hf["config"]["offload"] == "optimizer"  # the knobs follow the file
    source = hf["resolved"]["deepspeed_from"]["source"]
    assert source["kind"] == "file" and len(source["sha256"]) == 64
    yaml_rec = recs["accelerate_zero3.yaml"]
    assert yaml_rec["resolved"]["engine"]["zero_stage"] == 3
    assert yaml_rec["resolved"]["engine"]["offload_param"] == "none"
    assert yaml_rec["resolved"]["deepspeed_from"]["source"]["kind"] == "accelerate"
    # said, not silently dropped
    assert any("num_processes" in n for n in yaml_rec["resolved"]["deepspeed_from"]["notes"])
    swift = recs["zero2"]
    assert swift["resolved"]["engine"]["zero_stage"] == 2
    assert swift["resolved"]["deepspeed_from"]["source"]["kind"] == "swift"
    assert "optimizer" in {c["key"] for c in swift["resolved"]["deepspeed_from"]["changed"]}  # ms-swift's has none
    assert "--deepspeed" in out["sources"].stderr and "sets zero_stage=3" in out["sources"].stderr  # said: stderr


def test_a_plain_json_keeps_micro_batch_and_accumulation_across_node_counts(sweeps):
    results, out = sweeps
    recs = _by(_records(results / "nodes"), lambda r: r["config"]["nodes"])
    assert set(recs) == {1, 2}
    for nodes, rec in recs.items():
        assert rec["status"] == "ok", rec["error"]
        engine = rec["resolved"]["engine"]
        assert (engine["micro_batch"], engine["grad_accum"], engine["train_batch_size"]) == (2, 2, 4 * nodes)
        assert engine["gradient_clipping"] == 0.2 and engine["lr"] == pytest.approx(3e-5)
        assert engine["betas"] == [0.9, 0.999] and engine["weight_decay"] == pytest.approx(0.01)
        changed = {c["key"]: c for c in rec["resolved"]["deepspeed_from"]["changed"]}
        assert ("train_batch_size" in changed) == (nodes == 2)  # the file's 4 fits one rank; said where replaced
    assert "train_batch_size 4 -> 8" in out["nodes"].stderr


def test_a_bf16_json_runs_on_cpu_and_two_ds_values_are_two_runs(sweeps):
    results, out = sweeps
    recs = _records(results / "bf16")
    assert len(recs) == 2 and len({r["run_id"] for r in recs}) == 2
    sizes = set()
    for rec in recs:
        assert rec["status"] == "ok", rec["error"]
        engine = rec["resolved"]["engine"]
        assert engine["bf16"] is True and engine["zero_stage"] == 2 and rec["config"]["dtype"] == "bf16"
        assert rec["resolved"]["deepspeed_from"]["overrides"]["zero_optimization.reduce_bucket_size"] == \
            engine["reduce_bucket_size"]
        sizes.add(engine["reduce_bucket_size"])
    assert sizes == {1000000, 2000000}
    assert "bf16 on a CPU runs, but slowly" in out["bf16"].stderr
    csv = (results / "report" / "runs.csv").read_text().splitlines()[0].split(",")
    assert "ds" in csv and "deepspeed" in csv


def test_attention_and_gradient_checkpointing_as_axes_are_four_runs_with_columns(sweeps):
    results, out = sweeps
    recs = _records(results / "axes")
    assert {(r["config"]["attn_impl"], r["config"]["grad_checkpointing"]) for r in recs} == \
        {("sdpa", True), ("sdpa", False), ("eager", True), ("eager", False)}
    assert all(r["status"] == "ok" for r in recs), [r["error"] for r in recs]
    header = next(line for line in out["axes"].stdout.splitlines() if "run" in line and "status" in line)
    assert "attn_impl" in header and "grad_checkpointing" in header  # the closing table shows what varied
    report = (results / "report" / "report.md").read_text()
    assert "attn_impl" in report and "grad_checkpointing" in report


def test_a_config_that_contradicts_a_flag_stops_before_anything_runs(tmp_path):
    t0 = time.monotonic()
    p = _bench(tmp_path, "clash", *SHORT, "--deepspeed", "zero3", "--zero", "2")
    assert p.returncode == 2 and "--zero 2 but zero3 says zero_optimization.stage = 3" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "clash").exists()  # nothing launched, nothing written
    assert time.monotonic() - t0 < 60
