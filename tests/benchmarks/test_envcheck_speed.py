"""envcheck's wall time against ds_report's, measured the same way: a fresh interpreter running
the full local check, as a user types it (`python -m stackbench.envcheck --json` vs `ds_report`).
Target: envcheck at most 1 s. `invoke benchmark` records both (results/benchmarks/harness.json);
`invoke test` runs each once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _wall(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)


def test_envcheck_full_local_check(benchmark):
    p = benchmark.pedantic(_wall, args=([sys.executable, "-m", "stackbench.envcheck", "--json"],),
                           rounds=5, warmup_rounds=1)
    # what was timed is a finished check: a report, its exit code, no check that crashed
    report = json.loads(p.stdout)
    assert report["schema"] == "stackbench.envcheck/1" and p.returncode == report["exit_code"], p.stderr[-2000:]
    assert not [c for c in report["checks"] if c["area"] == "internal"], "a check raised instead of reporting"
    assert report["summary"]["ok"] >= 10


@pytest.mark.deepspeed
def test_ds_report_for_comparison(benchmark):
    ds_report = shutil.which("ds_report") or str(ROOT / ".venv/bin/ds_report")
    p = benchmark.pedantic(_wall, args=([ds_report],), rounds=5, warmup_rounds=1)
    assert p.returncode == 0 and "DeepSpeed general environment info" in p.stdout, p.stderr[-2000:]
