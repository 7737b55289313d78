"""invoke report on constructed records (tables by hand, skipped files named, baseline regressions
beyond the runs' own spread) and invoke plan against DeepSpeed's estimators and hand counts."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from stackbench.bench.planning import plan
from stackbench.core import memory_model, record
from stackbench.core.config import Launch, RunConfig
from stackbench.report import load, render, tables
from tests.conftest import ROOT


def make_record(task="sft", stage=2, nodes=1, tps=1000.0, step=0.1, spread=0.01, status="ok", gpus=8, run=None,
                peak=40.0, predicted=38.0):
    cfg = RunConfig(task=task, model="qwen3-8b", zero_stage=stage, nodes=nodes, gpus_per_node=gpus, micro_batch=1,
                    seq_len=4096, dtype="bf16")
    metrics = None if status != "ok" else {
        "step_time_s": {"median": step, "p10": step * (1 - spread), "p90": step * (1 + spread), "cv": spread},
        "tokens_per_s": tps, "tokens_per_s_per_device": tps / (nodes * gpus), "samples_per_s": tps / 4096,
        "tflops_per_device": 400.0, "mfu": 0.4, "memory": {"max_allocated_gib": peak},
        "loss": {"first": 2.0, "last": 1.5}}
    error = None if status == "ok" else record.error("oom", "CUDA out of memory", rank=3, host="gpu-17")
    launch = Launch(run_id=run or f"{task}-z{stage}-n{nodes}", sweep_id="s", launcher="slurm", command="x")
    return record.new(status, cfg, launch, started_at="t", metrics=metrics, error=error,
                      resolved={"model": {"name": "Qwen3-8B", "params": 8_190_735_360}, "dtype": "bf16"},
                      prediction={"total_gib": predicted, "fits": True}, environment={})


@pytest.fixture
def results(tmp_path):
    d = tmp_path / "results" / "s"
    d.mkdir(parents=True)
    recs = [make_record(nodes=1, tps=8000), make_record(nodes=2, tps=14400), make_record(nodes=4, tps=25600),
            make_record(stage=3, nodes=1, tps=6000), make_record(stage=3, nodes=2, tps=12000),
            make_record(task="dpo", nodes=1, tps=3000), make_record(stage=0, nodes=1, status="oom")]
    for r in recs:
        record.write(d / f"{r['run_id']}.json", r)
    (d / "broken.json").write_text("{not json")
    bad = make_record(run="bad-status")
    bad["status"] = "finished"  # written by hand, not by the factory
    record.write(d / "bad-status.json", bad)
    (d / "sweep.json").write_text(json.dumps({"specs": []}))  # not a record: neither loaded nor "skipped"
    return tmp_path / "results"


def test_load_names_what_it_skipped(results):
    df, skipped = load.load(results)
    assert len(df) == 7 and set(df["status"]) == {"ok", "oom"}
    why = dict(skipped)
    assert any("not JSON" in w for w in why.values()) and any("status 'finished'" in w for w in why.values())
    assert len(skipped) == 2


def test_scaling_efficiency_and_best_by_hand(results):
    df, _ = load.load(results)
    sc = tables.scaling(df).set_index(["task", "zero_stage", "nodes"])["scaling_efficiency"]
    assert sc[("sft", 2, 2)] == pytest.approx(14400 / (8000 * 2))   # 0.9
    assert sc[("sft", 2, 4)] == pytest.approx(25600 / (8000 * 4))   # 0.8
    assert sc[("sft", 3, 2)] == pytest.approx(1.0)
    best = tables.best(df).set_index(["task", "nodes"])
    assert best.loc[("sft", 1), "zero_stage"] == 2 and best.loc[("sft", 2), "zero_stage"] == 2
    fails = tables.failures(df)
    assert list(fails["error_host"]) == ["gpu-17"] and list(fails["status"]) == ["oom"]
    mem = tables.memory(df)
    assert mem["prediction_error_pct"].iloc[0] == pytest.approx(100 * (38 - 40) / 40)


def test_baseline_flags_only_drops_beyond_the_spread():
    base = pd.DataFrame([record.to_row(make_record(nodes=1, tps=8000, spread=0.01)),
                         record.to_row(make_record(nodes=2, tps=16000, spread=0.05))])
    cur = pd.DataFrame([record.to_row(make_record(nodes=1, tps=7200, spread=0.01)),    # -10%, spread 2%: regression
                        record.to_row(make_record(nodes=2, tps=15500, spread=0.05))])  # -3%, spread 10%: noise
    verdicts = tables.compare(cur, base).set_index("nodes")
    assert verdicts.loc[1, "verdict"] == "REGRESSION" and verdicts.loc[1, "delta_pct"] == pytest.approx(-10)
    assert verdicts.loc[2, "verdict"] == "same"


def test_report_files(results, tmp_path):
    df, skipped = load.load(results)
    paths = render.write(df, skipped, tmp_path / "out", baseline=df)
    md, html = paths["md"].read_text(), paths["html"].read_text()
    assert "qwen3-8b / sft: tokens/s per device" in md and "Against the baseline" in md and "broken.json" in md
    assert html.count("data:image/png;base64,") >= 4 and "REGRESSION" not in html  # itself as baseline: no change
    assert len(pd.read_csv(paths["csv"])) == 7


def test_report_cli_errors_and_success(results, tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "invoke", "report", *a], capture_output=True, text=True, cwd=ROOT,
                              timeout=120)

    p = run("--results", str(tmp_path / "nothing"))
    assert p.returncode == 2 and "no results directory" in p.stderr and "Traceback" not in p.stderr
    p = run("--results", str(results), "--out", str(tmp_path / "rep"))
    assert p.returncode == 0 and (tmp_path / "rep" / "report.html").exists()
    # what was read and skipped on stderr; stdout names the files written
    assert f"read 7 records from 1 sweep folder: {results / 's'} (7)" in p.stderr and "skipped" in p.stderr
    assert "skipped" not in p.stdout and str(tmp_path / "rep" / "report.html") in p.stdout


def test_plan_uses_deepspeeds_model_state_figures_and_hand_counted_activations():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    rows = plan.plan(model="qwen3-8b", gpus_per_node=8, gpu_mem_gib=80, nodes=[1], task="sft", seq_len=4096,
                     micro_batch=1)
    by = {(r["zero_stage"], r["offload"]): r for r in rows}
    from stackbench.trainer import models

    shape = models.shape(models.resolve("qwen3-8b"))
    ds_gpu = estimate_zero3_model_states_mem_needs(shape.params, shape.largest_layer, 8, 1, cpu_offload=False)[1]
    assert by[(3, "none")]["model_states_gib"] * 2**30 == pytest.approx(ds_gpu, abs=1)
    # activations, Korthikanti eq. 2 with fused attention, bf16: 34 s b h L bytes; logits 2 s b V 4 bytes
    acts = 34 * 4096 * 1 * shape.hidden * shape.layers + 2 * 4096 * 1 * shape.vocab * 4
    assert by[(3, "none")]["activations_gib"] * 2**30 == pytest.approx(acts)
    assert not by[(0, "none")]["fits"] and by[(3, "none")]["fits"]  # 8B full fine-tune: 16 bytes/param do not fit
    assert rows[0]["fits"] and rows[-1]["fits"] is False  # ranked: what fits first
    assert plan.recommend(rows)[0].startswith("1 node(s): ZeRO-")
    cfg = RunConfig(model="qwen3-8b", zero_stage=3, gpus_per_node=8, micro_batch=1, seq_len=4096)
    assert memory_model.predict_for(shape, cfg, dtype="bf16", device_gib=None).fits is None


def test_v1_records_of_every_shape_flatten_to_their_own_rows():
    """/1 records kept three config shapes; the trainer's failure record ({"task", "trainer": ...})
    used to flatten to an empty model, stage, nodes and micro-batch and offload "none"."""
    from tests.support.rows import assert_row_filled

    trainer_failure = {"schema": "stackbench.result/1", "run_id": "sft-z3-offall-n2x8-mb4-s1024-0badc0de",
                       "sweep_id": "s", "status": "failed",
                       "error": record.error("bad_input", "data.jsonl:3: not valid JSON", rank=0, host="h"),
                       "command": "", "started_at": "t", "finished_at": "t", "metrics": None, "prediction": None,
                       "environment": None,
                       "config": {"task": "sft", "trainer": {"task": "sft", "model": "qwen3-8b", "zero_stage": 3,
                                                             "offload_optimizer": True, "offload_param": True,
                                                             "micro_batch": 4, "seq_len": 1024, "backend": "native",
                                                             "launcher": "slurm", "dtype": "auto"}}}
    row = assert_row_filled(record.as_current(trainer_failure), model="qwen3-8b", zero_stage=3,
                            offload="optimizer+params", micro_batch=4, seq_len=1024, launcher="slurm",
                            nodes=2, gpus_per_node=8)
    assert row["error_kind"] == "bad_input"
    df, skipped = load.load(ROOT / "results" / "reference")  # the committed /1 records: ok ones, written by the trainer
    # every reference run trained the embedded model or a shipped architecture (cpu-2core-moe-zero's)
    assert not skipped and len(df) >= 30 and df["model"].isin(["tiny", "dense-5m", "moe-8x"]).all()
    for path in sorted((ROOT / "results" / "reference").glob("*/*-*.json")):
        rec = json.loads(path.read_text())
        if rec.get("schema") == "stackbench.result/1":
            assert_row_filled(record.as_current(rec))


def test_rows_dropped_as_too_long_are_in_the_report_and_the_closing_table():
    from stackbench.bench import summary

    kept = make_record(run="a")
    kept["resolved"]["data"] = {"path": "/d/alpaca.json", "rows": 10, "samples": 10, "dropped_too_long": 0,
                                "truncated": 0}
    lost = make_record(stage=3, run="b")
    lost["resolved"]["data"] = {"path": "/d/alpaca.json", "rows": 10, "samples": 5, "dropped_too_long": 5,
                                "truncated": 0}
    lost["config"]["seq_len"] = 128
    df = pd.DataFrame([record.to_row(r) for r in (kept, lost)])
    table = tables.data(df)
    assert table[["seq_len", "rows", "kept", "dropped"]].values.tolist() == [[128, 10, 5, 5], [4096, 10, 10, 0]]
    titles = [title for title, _ in render.sections(df, [], None)]
    assert any(t.startswith("Data:") and "did not train as written" in t for t in titles)
    cells = [row["rows kept/read"] for row in summary.rows([kept, lost])]
    assert cells == ["10/10", "5/10 (5 dropped)"]
