"""`./sb report` over 10,000 records: scan, load, verdict, tables, plots and files (report.main.report,
less the process start). Target: at most 3 s on the 2-core reference machine; the benchmark
records it (`pytest tests/benchmarks/test_report_speed.py --benchmark-only`), `invoke test` runs
it once. Where the time went (cProfile) and what was done about it: report/load.py reads the
environment's credentials once per load (not once per record); report/render.py computes the
configuration labels and the per-configuration figures once for every table; the rest is
JSON parsing, core.record.to_row, matplotlib and the CSV/JSON writers."""

import itertools

import pandas as pd
import pytest

from stackbench.core import files, record
from stackbench.report import main
from tests.unit.test_report_and_plan import make_record


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    combos = itertools.product(["sft", "dpo", "pt"], [0, 1, 2, 3], [1, 2, 4, 8, 16], range(167))
    # record.write as the trainer writes, less its fsync: a throwaway folder needs no durability, and
    # 10,000 fsyncs were most of this fixture's time (the benchmark itself reads the files)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files.os, "fsync", lambda fd: None)
        for i, (task, stage, nodes, rep) in enumerate(itertools.islice(combos, 10_000)):
            rec = make_record(task=task, stage=stage, nodes=nodes, tps=1000.0 * nodes * (0.9 + rep / 1000),
                              run=f"{task}-z{stage}-n{nodes}-r{rep}", status="oom" if rep % 97 == 0 else "ok")
            record.write(d / f"r{i}.json", rec)
    return d


def test_report_over_10000_records(benchmark, ten_thousand, tmp_path):
    out = tmp_path / "out"
    assert benchmark.pedantic(main.report, kwargs={"results": str(ten_thousand), "out": str(out)},
                              rounds=3, iterations=1) == 0
    assert len(pd.read_csv(out / "runs.csv")) == 10_000
