"""The user's own data through the real bench (issue 18): a bad file in a 4-run matrix stops the
bench in seconds with exit 2, before any torchrun starts or any Slurm job is queued (on the real
test cluster); rows dropped as too long are said on the console and kept in the record; packed and
unpacked SFT train the same samples to the same losses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from stackbench.core import record
from tests.conftest import ROOT

QA = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}]


def _bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.jsonl"
    good = json.dumps({"messages": QA, "rejected_response": "5."})
    path.write_text(f"{good}\n{good}\n" + '{"messages": [{"role": "user", "content": "q"}\n' + f"{good}\n")
    return path


class Watch:
    """Every process whose command line runs torch.distributed.run, seen while the bench runs."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for p in psutil.process_iter(["cmdline"]):
                line = " ".join(p.info["cmdline"] or [])
                if "torch.distributed.run" in line or "torchrun" in line or re.search(r"\bsbatch\b", line):
                    self.seen.append(line)
            time.sleep(0.05)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _bench(args: list[str], env=None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "tasks", "bench", *args], capture_output=True, text=True, cwd=ROOT,
                       env=env or dict(os.environ), timeout=timeout)
    return p, time.monotonic() - began


@pytest.mark.deepspeed
def test_a_bad_file_stops_a_local_4_run_matrix_before_any_launch(tmp_path):
    bad = _bad_file(tmp_path)
    args = ["--tasks", "sft,dpo", "--zero", "2,3", "--nodes", "1", "--data", str(bad), "--results", str(tmp_path)]
    with Watch() as watch:
        p, took = _bench(args)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out[-3000:]
    assert f"{bad}:3" in out and "not valid JSON" in out and "fix:" in out and "Traceback" not in out
    assert took < 10, f"the bad file took {took:.1f} s to find"
    assert not watch.seen, watch.seen
    assert not [d for d in tmp_path.iterdir() if d.is_dir()]  # no sweep folder, no run started
    p, _ = _bench(["--dry-run", *args])  # the plan too: a bad file is not a plan "to run"
    assert p.returncode == 2 and f"{bad}:3" in p.stdout + p.stderr and "to run" not in p.stdout


def _next_job_id(env) -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, env=env, check=True).stdout
    return int(re.search(r"NEXT_JOB_ID\s*=\s*(\d+)", out).group(1))


@pytest.mark.slurm
def test_a_bad_file_queues_no_slurm_job(slurm_cluster, tmp_path):
    env = dict(os.environ, **slurm_cluster.env)
    bad = _bad_file(tmp_path)
    before = _next_job_id(env)
    args = ["--launcher", "slurm", "--tasks", "sft,dpo", "--zero", "2,3", "--nodes", "1", "--gpus-per-node", "1",
            "--data", f"sft={bad},dpo={bad}", "--results", str(tmp_path)]
    with Watch() as watch:
        p, took = _bench(args, env=env)
        dry, _ = _bench(["--dry-run", *args], env=env)
    assert p.returncode == 2 and dry.returncode == 2, (p.stdout + p.stderr)[-3000:]
    assert f"{bad}:3" in p.stdout + p.stderr and took < 10, took
    assert _next_job_id(env) == before, "a job was submitted"
    assert not watch.seen, watch.seen


@pytest.mark.deepspeed
def test_dropped_rows_are_said_and_recorded_and_packing_trains_the_same(tmp_path):
    """Alpaca rows (a JSON array with a BOM), some longer than --seq-len: the console and the record
    say how many were dropped; --axis packing=false,true: the same losses (fp32) and both tokens/s."""
    short = [{"instruction": f"Add {i} and {i}.", "input": "", "output": f"{i} + {i} = {2 * i}."} for i in range(14)]
    long = [{"instruction": "Tell a long story.", "input": "", "output": "Once upon a time " * 60}] * 2
    path = tmp_path / "alpaca_data.json"
    path.write_text("\ufeff" + json.dumps(short[:7] + long + short[7:], indent=1), encoding="utf-8")
    p, _ = _bench(["--tasks", "sft", "--zero", "2", "--nodes", "1", "--gpus-per-node", "1", "--micro-batch", "6",
                   "--seq-len", "192", "--steps", "3", "--warmup", "0", "--repeat-data", "--axis", "packing=false,true",
                   "--data", str(path), "--results", str(tmp_path), "--sweep", "own"], timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert "16 rows read, 14 kept, 2 dropped as longer" in out and "14/16 (2 dropped)" in out, out[-3000:]
    recs = {r["config"]["packing"]: r for r in map(record.read, (tmp_path / "own").glob("*.json")) if "schema" in r}
    assert set(recs) == {False, True}
    for rec in recs.values():
        d = rec["resolved"]["data"]
        assert (d["rows"], d["samples"], d["dropped_too_long"], d["truncated"]) == (16, 14, 2, 0)
        assert d["layouts"] == {"alpaca": 16} and d["longest_tokens"] > 192
    unpacked, packed = (recs[k]["metrics"] for k in (False, True))
    for a, b in zip(unpacked["loss"]["per_step"], packed["loss"]["per_step"]):
        assert abs(a - b) < 1e-4, (unpacked["loss"], packed["loss"])
    assert packed["tokens_per_s"] > 0 and unpacked["tokens_per_s"] > 0
    def fill(m):  # real tokens of those fed
        return m["tokens_per_s"] / m["padded_tokens_per_s"]

    assert fill(packed) > 1.5 * fill(unpacked)  # six short samples in one row, not six rows of padding
