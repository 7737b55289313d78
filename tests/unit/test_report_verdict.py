"""The report people act on, from constructed records: the verdict names the configuration to use
with its numbers, caveats appear where the records call for them and only there, and the tables
carry no index column, units in their headers and figures rounded to their spread."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from stackbench.core import record
from stackbench.report import load, numbers, render, verdict
from tests.unit.test_report_and_plan import make_record


def _row(rec: dict, *, hosts: list[str], cpus: int | None = None, device: str | None = None) -> dict:
    rec["environment"] = {"hosts": hosts, "devices": {"type": "cpu" if device is None else "cuda", "cpus": cpus},
                          "ranks": [{"rank": 0, "host": hosts[0], "device": device}]}
    return record.to_row(rec)


H100 = "NVIDIA H100 80GB HBM3"


def _gpu_frame() -> pd.DataFrame:
    """qwen3-8b SFT on 8-GPU nodes: ZeRO-2 clearly ahead at 1 node, ZeRO-2 and ZeRO-3 within 1% at 2
    nodes (spread 5%), ZeRO-0 out of memory, one ZeRO-3 run failed on a host."""
    hosts = lambda n: [f"gpu-{i}" for i in range(n)]  # noqa: E731
    recs = [(make_record(stage=2, nodes=1, tps=8000, spread=0.01, run="a"), 1),
            (make_record(stage=3, nodes=1, tps=6000, spread=0.01, run="b"), 1),
            (make_record(stage=2, nodes=2, tps=16000, spread=0.05, run="c"), 2),
            (make_record(stage=3, nodes=2, tps=15900, spread=0.05, run="d"), 2),
            (make_record(stage=0, nodes=1, status="oom", run="e"), 1)]
    failed = make_record(stage=3, nodes=4, run="f")
    failed.update(status="failed", metrics=None,
                  error=record.error("node_lost", "gpu-3 stopped answering (no liveness beat for 10 s)", host="gpu-3"))
    recs.append((failed, 4))
    return pd.DataFrame([_row(r, hosts=hosts(n), device=H100) for r, n in recs])


def test_the_verdict_names_the_configuration_to_use_with_its_numbers():
    (text,) = verdict.verdict(_gpu_frame())
    assert text.startswith("**qwen3-8b / sft.**")
    # 1 node: ZeRO-2 1,000 tokens/s per device (8000 / 8 GPUs), ZeRO-3 25% slower, beyond a 2% spread
    assert "At 1 node (8 ranks) use ZeRO-2: 1,000 tokens/s per device; the next best, ZeRO-3, is 25.0% slower." in text
    # 2 nodes: 0.6% apart with 10% spread: said, but not claimed
    assert re.search(r"At 2 nodes \(16 ranks\) use ZeRO-2: [\d,]+ tokens/s per device; the next best, ZeRO-3, is 0\.6% "
                     r"slower, within the runs' spread of 10%: not distinguishable\.", text), text
    assert "Does not fit: ZeRO-0 at 1 node (out of memory on gpu-17)." in text
    assert "Failed: ZeRO-3 at 4 nodes (failed, node_lost: gpu-3 stopped answering" in text


def test_the_oversubscription_caveat_for_emulated_nodes_and_not_for_a_cluster():
    emulated = pd.DataFrame([_row(make_record(nodes=n, gpus=2, run=f"e{n}"), hosts=["vm"], cpus=2) for n in (1, 2)])
    said = " ".join(verdict.caveats(emulated))
    assert "The 2-node runs were 4 ranks on 1 host of 2 cores" in said and "not comparable" in said
    assert "The 1-node runs" not in said  # 2 ranks on 2 cores, one host: nothing to say
    assert "2 runs on CPU: no MFU" in said
    cluster = pd.DataFrame([_row(make_record(nodes=n, gpus=8, run=f"c{n}"), hosts=[f"gpu-{i}" for i in range(n)],
                                 device=H100) for n in (1, 2)])
    assert not any("ranks on" in c or "on CPU" in c for c in verdict.caveats(cluster))
    crowded_cluster = pd.DataFrame([_row(make_record(nodes=2, gpus=4, run="s"), hosts=["sbnode0", "sbnode1"], cpus=2)])
    (said,) = [c for c in verdict.caveats(crowded_cluster) if "ranks on" in c]
    assert "8 ranks on 2 hosts of 2 cores" in said and "emulated" not in said  # distinct hosts, but crowded


def test_tables_have_no_index_column_and_units_in_their_headers(tmp_path):
    df = _gpu_frame()
    paths = render.write(df, [], tmp_path)
    md = paths["md"].read_text()
    headers = [line for line, nxt in zip(md.splitlines(), md.splitlines()[1:]) if line.startswith("|")
               and re.match(r"^\|[:\- |]+\|$", nxt)]
    assert len(headers) >= 5
    for header in headers:
        first = header.split("|")[1].strip()
        assert first, f"an index column: {header}"
    html = paths["html"].read_text()
    assert "<th></th>" not in html and "<tbody><tr><th" not in html
    assert "tokens/s per device" in md and "peak memory per rank (GiB)" in md and "median step (s)" in md
    assert "**1,000**" in md and "<strong>1,000</strong>" in html  # the best cell marked
    assert md.index("## Verdict") < md.index("## Throughput and scaling") < md.index("## Every configuration")
    assert paths["json"].exists() and len(pd.read_json(paths["json"])) == len(df)  # full precision for machines


def test_figures_are_rounded_to_what_their_spread_supports():
    assert numbers.rounded(354.04, 0.13) == "350" and numbers.rounded(354.04, 0.005) == "354.0"
    assert numbers.rounded(354.04) == "354" and numbers.rounded(25612.0, 0.01) == "25,600"
    assert numbers.rounded(0.20043, 0.05) == "0.200" and numbers.rounded(float("nan")) == "–"


def test_a_knob_that_varies_only_among_failed_runs_labels_every_table_the_same():
    """micro_batch 4 ran, micro_batch 8 ran out of memory: the measured row is 'micro_batch=4' in the
    matrix, the verdict and the best-configuration table alike, and shows its number."""
    ran, oom = make_record(stage=2, tps=8000, run="mb4"), make_record(stage=2, status="oom", run="mb8")
    ran["config"]["micro_batch"], oom["config"]["micro_batch"] = 4, 8
    df = pd.DataFrame([_row(ran, hosts=["gpu-0"], device=H100), _row(oom, hosts=["gpu-0"], device=H100)])
    (_, matrix), = render.throughput_matrices(df)
    cells = dict(zip(matrix["configuration"], matrix["1 node"]))
    assert cells == {"ZeRO-2 micro_batch=4": "**1,000**", "ZeRO-2 micro_batch=8": "oom"}
    (text,) = verdict.verdict(df)
    assert "use ZeRO-2 micro_batch=4: 1,000 tokens/s" in text and "Does not fit: ZeRO-2 micro_batch=8" in text
    assert render.best_table(df)["configuration"].tolist() == ["ZeRO-2 micro_batch=4"]


def test_step_time_predicted_before_a_run_sits_beside_the_measured_one_and_autotune_skips_are_said():
    hosts = ["gpu-0"]
    predicted = make_record(stage=2, nodes=1, step=0.5, run="p")
    predicted["prediction"]["step_time_s"] = 0.55
    slower = make_record(stage=3, nodes=1, run="s")
    slower.update(status="skipped", metrics=None,
                  error=record.error("predicted_slower",
                                     "predicted 600 tokens/s per device, 40% below p measured at 1,000"))
    df = pd.DataFrame([_row(predicted, hosts=hosts, device=H100), _row(slower, hosts=hosts, device=H100)])
    assert df.loc[0, "step_prediction_error_pct"] == pytest.approx(10.0)
    table = render.step_time_table(df)
    assert list(table["predicted (s)"]) == ["0.550"] and list(table["measured median (s)"]) == ["0.500"]
    assert float(table["error (%)"][0]) == pytest.approx(10)
    matrix = dict(render.throughput_matrices(df))
    (cells,) = matrix.values()
    assert "skipped: predicted slower" in cells.to_string()
    assert any("not measured: the autotuner predicted them clearly slower" in c for c in verdict.caveats(df))
    assert not any("unable to fit" in c for c in verdict.caveats(df))  # a predicted-slower skip is not a memory skip


def _tokenized(rec: dict, fallback: bool | None, model: str = "qwen3-8b") -> dict:
    """rec with resolved.tokenizer as the trainer records it (None: an older record, without it)."""
    rec["config"]["model"] = model
    if fallback is not None:
        rec["resolved"]["tokenizer"] = {"name": "stackbench-embedded" if fallback else f"Qwen/{model}",
                                        "source": "embedded" if fallback else "hf-cache", "fallback": fallback}
    return rec


def test_tokens_counted_with_the_embedded_tokenizer_are_a_caveat_naming_the_models_and_the_fix(tmp_path):
    recs = [_tokenized(make_record(stage=2, run="a"), True), _tokenized(make_record(stage=3, run="b"), True),
            _tokenized(make_record(stage=2, run="c"), False, model="qwen3-0.6b"),
            _tokenized(make_record(stage=2, run="d"), None, model="qwen3-1.7b")]
    df = pd.DataFrame([record.to_row(r) for r in recs])
    assert df["tokenizer_fallback"].tolist()[:3] == [True, True, False] and pd.isna(df["tokenizer_fallback"][3])
    (said,) = [c for c in verdict.caveats(df) if "embedded tokenizer" in c]
    assert said.startswith("Tokens of qwen3-8b (2 runs) were counted with stackbench's embedded tokenizer, not the "
                           "model's own: their tokens/s, tokens per step and rows dropped or truncated are not the "
                           "model's")
    assert "--tokenizer PATH|hub-id" in said and "local Hugging Face cache" in said
    assert "qwen3-0.6b" not in said and "qwen3-1.7b" not in said  # its own tokenizer; an older record: nothing known
    for r in recs:  # and in the written report, through load
        record.write(tmp_path / "s" / f"{r['run_id']}.json", r)
    loaded, _ = load.load(tmp_path)
    md = render.write(loaded, [], tmp_path / "report")["md"].read_text()
    assert "- Tokens of qwen3-8b (2 runs) were counted with stackbench's embedded tokenizer" in md


def test_no_tokenizer_caveat_without_a_fallback_or_for_older_records():
    own = pd.DataFrame([record.to_row(_tokenized(make_record(run="a"), False))])
    older = pd.DataFrame([record.to_row(_tokenized(make_record(run="b"), None))])
    flat = pd.DataFrame([record.to_row(make_record(run="c"))])  # a frame without the columns at all
    for df in (own, older, flat):
        assert not any("tokenizer" in c for c in verdict.caveats(df))
