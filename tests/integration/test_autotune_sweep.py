"""`invoke bench --autotune` for real, short: SFT on the embedded model, ZeRO 0 and 3 x micro-batch
1 and 4 on one rank (4 configurations). Every configuration ends as a record, launched or skipped
with the autotuner's reason; what was launched after the first runs carries the step time the
model predicted before it started; the report shows predicted vs measured step time.
(Whether it finds the full matrix's fastest is checked on real measurements in tests/unit/test_autotune.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.deepspeed


def test_autotune_measures_what_is_worth_it_and_says_why_not_the_rest(tmp_path):
    argv = [sys.executable, "-m", "tasks", "bench", "--autotune", "--tasks", "sft", "--zero", "0,3", "--micro-batch",
            "1,4", "--nodes", "1", "--gpus-per-node", "1", "--steps", "2", "--warmup", "1", "--no-preflight",
            "--results", str(tmp_path), "--sweep", "auto"]
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    recs = [json.loads(f.read_text()) for f in sorted((tmp_path / "auto").glob("sft-*.json"))]
    assert len(recs) == 4
    launched = [r for r in recs if r["status"] == "ok"]
    skipped = [r for r in recs if r["status"] == "skipped"]
    assert len(launched) + len(skipped) == 4 and len(launched) >= 2
    assert {(r["config"]["zero_stage"], r["config"]["micro_batch"]) for r in launched} >= {(0, 4), (3, 4)}  # seeds
    for r in skipped:
        assert r["error"]["kind"] == "predicted_slower" and "below" in r["error"]["message"]
        assert r["prediction"]["step_time_s"] > 0
    for r in launched:
        later = r["config"]["micro_batch"] != 4
        assert ("step_time_s" in (r["prediction"] or {})) == later  # predicted once the fit had runs to go on
    assert f"autotune: {len(launched)} run(s) launched of the 4 in the matrix" in p.stdout
    assert "fastest measured: sft tiny 1 node(s) x 1" in p.stdout
