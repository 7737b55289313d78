"""envcheck's wall time against ds_report's, measured the same way: a fresh interpreter running
the full local check, as a user types it (`python -m envcheck --json` vs `ds_report`).
Target: envcheck at most 1 s. `invoke benchmark` records both (results/benchmarks/harness.json);
`invoke test` runs each once."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _wall(argv: list[str]) -> None:
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=120)


def test_envcheck_full_local_check(benchmark):
    benchmark.pedantic(_wall, args=([sys.executable, "-m", "envcheck", "--json"],), rounds=5, warmup_rounds=1)


@pytest.mark.deepspeed
def test_ds_report_for_comparison(benchmark):
    ds_report = shutil.which("ds_report") or str(ROOT / ".venv/bin/ds_report")
    benchmark.pedantic(_wall, args=([ds_report],), rounds=5, warmup_rounds=1)
