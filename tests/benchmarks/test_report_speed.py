"""invoke report over 10,000 records (target: at most 3 s for load + tables + plots + files).
`invoke benchmark` records it; `invoke test` runs it once."""

import itertools

import pytest

from report import load, render
from tests.unit.test_report_and_plan import make_record
from core import record


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    combos = itertools.product(["sft", "dpo", "pt"], [0, 1, 2, 3], [1, 2, 4, 8, 16], range(167))
    for i, (task, stage, nodes, rep) in enumerate(itertools.islice(combos, 10_000)):
        rec = make_record(task=task, stage=stage, nodes=nodes, tps=1000.0 * nodes * (0.9 + rep / 1000),
                          run=f"{task}-z{stage}-n{nodes}-r{rep}", status="oom" if rep % 97 == 0 else "ok")
        record.write(d / f"r{i}.json", rec)
    return d


def test_report_over_10000_records(benchmark, ten_thousand, tmp_path):
    def run():
        df, skipped = load.load(ten_thousand)
        render.write(df, skipped, tmp_path / "out")
        return len(df)

    assert benchmark.pedantic(run, rounds=3, iterations=1) == 10_000
