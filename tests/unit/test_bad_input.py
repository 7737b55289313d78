"""Every bad input a new user met on a real cluster, found before anything is launched or queued:
exit 2, one error naming what and where with the fix, no traceback, and no run started (the sweep
is run for real, not dry: its results folder stays empty). One table, run through `./sb`'s own
program in this process (one import of the stack for all rows); one row also as a real process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.support.cli import run_sb

SAMPLES = ROOT / "trainer" / "assets" / "samples"


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _ds(tmp_path, name: str, zero: dict, **top) -> str:
    return _write(tmp_path, name, json.dumps({"train_micro_batch_size_per_gpu": "auto", "zero_optimization": zero,
                                              **top}))


def _unknown_model(tmp_path) -> str:
    return _write(tmp_path, "not-a-model/config.json", json.dumps({"model_type": "no_such_architecture",
                                                                   "hidden_size": 64}))[: -len("/config.json")]


# id -> (bench arguments from tmp_path, what the one error must name)
CASES = {
    "missing data file": (lambda t: ["--data", "/data/missing.jsonl"], ["--data", "/data/missing.jsonl"]),
    "ms-swift #N sampling": (lambda t: ["--data", f"{SAMPLES}/sft.jsonl#500"], ["'#500'", "plain path"]),
    "a misspelled zero key": (lambda t: ["--deepspeed", _ds(t, "a.json", {"stage": 3,
                                                                         "stage3_prefetch_bucket_sizes": 5e7})],
                              ["a.json", "stage3_prefetch_bucket_sizes", "stage3_prefetch_bucket_size"]),
    "offload_optimiser": (lambda t: ["--deepspeed", _ds(t, "b.json", {"stage": 3, "offload_optimiser": {
                              "device": "cpu"}})], ["b.json", "offload_optimiser", "offload_optimizer"]),
    "a misspelled top-level section": (lambda t: ["--deepspeed", _write(t, "c.json", json.dumps(
                                           {"train_micro_batch_size_per_gpu": "auto",
                                            "zero_optimisation": {"stage": 2}}))],
                                       ["c.json", "zero_optimisation", "zero_optimization"]),
    "parallelism blocks": (lambda t: ["--deepspeed", str(ROOT / "tests/support/ds_configs/refused_tp_pp_blocks.json")],
                           ["refused_tp_pp_blocks.json", "_parallel"]),
    "a model list with one unknown": (lambda t: ["--model", "tiny,/no/such/model"], ["/no/such/model", "--model"]),
    "a model list with one unbuildable": (lambda t: ["--model", f"tiny,{_unknown_model(t)}"], ["not-a-model"]),
    "a command after --": (lambda t: ["--", "swift", "sft", "--model", "Qwen/Qwen3-8B"], ["after '--'", "swift sft"]),
    "a knob by its field name": (lambda t: ["--zero-stage", "3"], ["--zero-stage", "did you mean --zero?"]),
    "a wrong list value": (lambda t: ["--micro-batch", "1,2,x"], ["--micro-batch", "'1,2,x'"]),
}
if importlib.util.find_spec("tensorboard") is None:  # the monitor's package missing here, as on the ranks
    CASES["a monitor without its package"] = (
        lambda t: ["--deepspeed", str(ROOT / "tests/support/ds_configs/refused_tensorboard_monitor.json")],
        ["refused_tensorboard_monitor.json", "tensorboard"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_before_anything_runs_naming_what_and_where(case, tmp_path, capfd, monkeypatch):
    args, named = CASES[case]
    results = tmp_path / "results"
    code, out, err = run_sb(["bench", "--tasks", "sft", "--nodes", "1", "--results", str(results), *args(tmp_path)],
                            capfd, monkeypatch)
    assert code == 2, (code, out[-1500:], err[-1500:])
    assert "Traceback" not in err + out and err.count("error:") == 1, err
    error = err[err.index("error:"):]
    assert "fix:" in error and all(word in error for word in named), error
    assert not results.exists() or not any(results.rglob("*.json")), "a run was started"


def test_a_real_process_exits_2_without_a_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tasks", "bench", "--tasks", "sft", "--results", str(tmp_path),
                        "--data", "/data/missing.jsonl"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "dataset not found" in p.stderr, p.stderr
    assert p.stdout == "" and not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("argv, named", [
    (["--micro-batch", "1,2,4", "--nodes", "1", "--zero", "3", "--json"], None),  # bench's list syntax works here
    (["--task", "sft"], "did you mean --tasks?"),
    (["--micro-batch", "0"], "--micro-batch"),
    (["--host-mem", "lots"], "--host-mem"),
])
def test_plan_reads_flags_as_bench_does(argv, named, capfd, monkeypatch):
    code, out, err = run_sb(["plan", *argv], capfd, monkeypatch)
    if named is None:
        rows = json.loads(out)  # stdout is the JSON and nothing else; the header went to stderr
        assert code == 0 and {r["micro_batch"] for r in rows} == {1, 2, 4} and "plan:" in err
    else:
        assert code == 2 and named in err and "Traceback" not in err, err
