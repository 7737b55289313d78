"""What a new user meets first: -h is help on every task, tables in a pipe keep every digit, plots
tick at the node counts measured, a wrong flag value is one line naming the flag, and the
throughput convention is stated where throughput is ranked."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import tasks
from stackbench.bench import summary
from stackbench.bench.planning.main import main as plan_cli
from stackbench.bench.planning.plan import plan as make_plan
from stackbench.core import record
from stackbench.report import plots, render, tables
from tests.conftest import ROOT
from tests.unit.test_report_and_plan import make_record


def _flags():
    ns = tasks.program.namespace
    return [(name, arg.names) for name in ns.task_names for arg in ns[name].get_arguments()]


def test_no_task_flag_takes_h_and_every_short_flag_is_a_letter():
    flags = _flags()
    assert len(flags) > 50  # bench's knobs and options are among them
    for task_name, names in flags:
        shorts = [n for n in names if len(n) == 1]
        assert "h" not in shorts, f"{task_name}: {names} takes -h, which is help"
        assert all(n.isalpha() for n in shorts), f"{task_name}: {names}"
        assert all(n and n != "-" for n in names), f"{task_name}: {names}"


@pytest.mark.parametrize("task_name", ["bench", "envcheck", "plan"])
def test_dash_h_shows_the_tasks_help(task_name):
    p = subprocess.run([sys.executable, "-m", "tasks", task_name, "-h"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("Usage: ./sb [--core-opts] " + task_name), p.stderr
    assert "--dry-run" in p.stdout if task_name == "bench" else "--json" in p.stdout


@pytest.mark.parametrize("flag, value, valid", [
    ("--zero", "5", "0, 1, 2, 3"), ("--tasks", "sft,rlhf", "sft, dpo, pt"),
    ("--offload", "optimiser", "none, optimizer, optimizer+params, params"),
    ("--backend", "megatron", "native, hf, swift"),
])
def test_an_invalid_flag_value_is_one_error_naming_the_flag_and_what_is_valid(flag, value, valid):
    p = subprocess.run([sys.executable, "-m", "tasks", "bench", flag, value, "--dry-run"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    bad = value.split(",")[-1]
    assert p.returncode == 2, out
    assert out.count("error:") == 1 and f"error: {flag}: " in out and bad in out.splitlines()[0], out
    assert f"fix: use one of {valid}" in out and "left out" not in out and "matrix is empty" not in out
    assert "Traceback" not in out


def test_tables_in_a_pipe_keep_every_value_whole(capsys):
    """Under pytest stdout is not a terminal, as in `| cat` or a CI log: rich would cut at 80 columns."""
    rows = make_plan(model="qwen3-235b-a22b", gpus_per_node=8, gpu_mem_gib=80, nodes=[1, 64, 512], task="dpo",
                     seq_len=32768, micro_batch=4, device="H200", grad_checkpointing=False)
    plan_cli(model="qwen3-235b-a22b", gpus_per_node="8", gpu_mem="80", nodes="1,64,512", tasks="dpo", seq_len="32768",
             micro_batch="4", device="H200")
    out = capsys.readouterr().out
    assert "…" not in out
    for r in rows:
        assert f"{r['predicted_gib']:.1f}" in out and f"{r['host_gib_per_rank']:.1f}" in out
    recs = [make_record(run="sft-z3-n4x8-mb1-s4096-with-a-long-suffix-0123456789abcdef", stage=3, nodes=4,
                        tps=123456.7)]
    summary.print_table(recs, title="a sweep with a long title that goes on past eighty columns")
    out = capsys.readouterr().out
    assert "…" not in out and "sft-z3-n4x8-mb1-s4096-with-a-long-suffix-0123456789abcdef".rsplit("-", 1)[0] in out
    assert "123457" in out and record.THROUGHPUT_CONVENTION.split(":")[0] in out


def _frame(nodes: list[int]) -> pd.DataFrame:
    return pd.DataFrame([record.to_row(make_record(nodes=n, stage=s, tps=1000.0 * n, run=f"r{s}-{n}"))
                         for n in nodes for s in (2, 3)])


@pytest.mark.parametrize("nodes, scale", [([1, 2, 4, 8], "log"), ([1, 2], "linear"), ([2, 3, 5], "linear")])
def test_node_axes_tick_at_the_node_counts_measured(nodes, scale):
    df = _frame(nodes)
    for make in (plots.throughput_vs_nodes, plots.scaling_efficiency):
        fig = make(df)
        for ax in fig.axes:
            assert ax.get_xscale() == scale
            assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in nodes]
            assert list(ax.get_xticks()) == nodes
            assert "(" in ax.get_xlabel() and "(" in ax.get_ylabel()  # units in both


def test_the_throughput_convention_is_stated_and_the_other_shown_beside():
    df = _frame([1, 2])
    summary_text = dict(render.sections(df, [], None))["Summary"]
    assert record.THROUGHPUT_CONVENTION in summary_text
    # ZeRO-3 has the slower median step but more tokens/s over the whole measured time: it ranks first
    close = pd.DataFrame([record.to_row(make_record(stage=2, tps=1000.0, step=0.10, run="a")),
                          record.to_row(make_record(stage=3, tps=1100.0, step=0.12, run="b"))])
    best = tables.best(close)
    assert {"tokens_per_s_per_device", "step_s"} <= set(best.columns)
    assert best["zero_stage"].tolist() == [3] and best["step_s"].tolist() == [0.12]
    assert "median step" in (ROOT / "docs" / "measurement.md").read_text()
    assert "tokens_per_s_median_step" in record.to_row(make_record())
