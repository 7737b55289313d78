"""`./sb report` reads the user's runs: in a checkout-like folder with the committed reference
sweeps under results/reference/ and one sweep of the user's, the default reads the user's sweep
only, says on stderr what it read and what it left out (and how to read it), and writes beside
the records read; naming the reference folder, or a sweep inside it, reads it."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from stackbench.core import record
from tests.conftest import ROOT
from tests.support.cli import run_sb
from tests.unit.test_report_and_plan import make_record

REFERENCE_SWEEP = "cpu-2core-nodes-1-2"  # a committed sweep: the embedded default over 1 and 2 emulated nodes


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """tmp_path laid out as a checkout: results/reference/<sweep>/ (a copy of a committed one) and
    the user's results/mine/ (three runs); the working directory, as ./sb makes it."""
    shutil.copytree(ROOT / "results" / "reference" / REFERENCE_SWEEP,
                    tmp_path / "results" / "reference" / REFERENCE_SWEEP)
    mine = tmp_path / "results" / "mine"
    for rec in (make_record(stage=2, nodes=1, tps=8000), make_record(stage=3, nodes=1, tps=6000),
                make_record(stage=2, nodes=2, tps=15000)):
        record.write(mine / f"{rec['run_id']}.json", rec)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def reference_runs() -> int:
    return sum(1 for _ in (ROOT / "results" / "reference" / REFERENCE_SWEEP).glob("*-*-*.json"))


def test_the_default_report_reads_the_users_runs_and_leaves_the_reference_sweeps_out(checkout, capfd):
    code, out, err = run_sb(["report"], capfd)
    assert code == 0, err
    runs = pd.read_csv(checkout / "results" / "report" / "runs.csv")  # beside the records read
    assert sorted(runs["run_id"]) == ["sft-z2-n1", "sft-z2-n2", "sft-z3-n1"]
    assert set(runs["model"]) == {"qwen3-8b"} and not runs["path"].str.contains("reference").any()
    assert "read 3 records from 1 sweep folder: results/mine (3)" in err
    assert "left out results/reference/" in err and "--results results/reference reads them" in err
    assert "results/report/report.html" in out and "reference" not in out  # stdout: the files written
    md = (checkout / "results" / "report" / "report.md").read_text()
    assert "3 runs: 3 ok" in md and "dense-5m" not in md and "tiny" not in md


def test_naming_the_reference_folder_or_a_sweep_in_it_reads_it(checkout, capfd):
    n = reference_runs()
    for folder in ("results/reference", f"results/reference/{REFERENCE_SWEEP}"):
        code, out, err = run_sb(["report", "--results", folder, "--out", "rep"], capfd)
        assert code == 0, err
        runs = pd.read_csv(checkout / "rep" / "runs.csv")
        assert len(runs) == n and runs["path"].str.contains(REFERENCE_SWEEP).all()
        assert f"read {n} records from 1 sweep folder: results/reference/{REFERENCE_SWEEP} ({n})" in err
        assert "left out" not in err


def test_a_checkout_with_only_the_reference_sweeps_says_how_to_read_them(checkout, capfd):
    shutil.rmtree(checkout / "results" / "mine")
    code, out, err = run_sb(["report"], capfd)
    assert code == 2 and "Traceback" not in err
    assert "no result records under results outside results/reference/" in err
    assert "--results results/reference reads the committed reference sweeps" in err
    assert not (checkout / "results" / "report").exists()
