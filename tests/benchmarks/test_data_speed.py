"""The data path at size (issue 18).

Cold: tokenizing an SFT file into the cache (parse, validate, chat template, loss masks, fit to
seq_len; every core) against a reference doing the minimum the same output needs: render every
row with the chat template, then one batched `tokenizer(..., return_offsets_mapping=True)` call
(target: at least 0.8x its rows/s).

Warm: a rank's time to its first step with a large file against a 100-row file, the cache filled
(target: at most 1.2x): the rank maps the cache and reads only the samples its steps take.

`invoke benchmark` measures them (STACKBENCH_DATA_ROWS rows, 100,000 there, STACKBENCH_DATA_ROUNDS
rounds, default 3; the 1,000,000-row
figures are in results/reference/cpu-2core-data/); `invoke test` runs each once at 25,000 rows (the
CI budget: the same paths, a quarter of the tokenizing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stackbench.core.config import RunConfig
from tests.conftest import ROOT
from tests.support.big_data import write_sft

ROWS = int(os.environ.get("STACKBENCH_DATA_ROWS", "25000"))
ROUNDS = int(os.environ.get("STACKBENCH_DATA_ROUNDS", "3"))


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return write_sft(ROOT / ".cache" / f"bench-sft-{ROWS}.jsonl", ROWS)


def test_cold_tokenize_stackbench(benchmark, big, tokenizer, tmp_path, monkeypatch):
    from stackbench.trainer.data import dataset

    rounds = iter(range(10**6))

    def fresh_cache():  # every round cold: a cache directory of its own
        monkeypatch.setenv("STACKBENCH_CACHE", str(tmp_path / f"cache{next(rounds)}"))
        return (), {}

    benchmark.group = f"cold tokenize, {ROWS} SFT rows"
    ds = benchmark.pedantic(lambda: dataset.load(RunConfig(task="sft", data=str(big), seq_len=512), tokenizer),
                            setup=fresh_cache, rounds=ROUNDS, warmup_rounds=0)
    assert not ds.cache_hit and ds.meta["rows"] == ROWS and len(ds) == ROWS
    benchmark.extra_info["rows_per_s"] = ROWS / ds.meta["tokenize_s"]


def test_cold_tokenize_reference(benchmark, big, tokenizer):
    def reference():
        texts = [tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False)
                 for line in big.open(encoding="utf-8")]
        return tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)

    benchmark.group = f"cold tokenize, {ROWS} SFT rows"
    enc = benchmark.pedantic(reference, rounds=ROUNDS, warmup_rounds=0)
    assert len(enc["input_ids"]) == ROWS


def _first_step(path: Path, out: Path) -> dict:
    """One rank, one step on the file, its cache already filled: the record's start-up marks."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "stackbench.trainer", "--data", str(path), "--seq-len", "512",
                        "--steps", "1", "--warmup-steps", "0", "--gpus-per-node", "1", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (rec,) = [json.loads(f.read_text()) for f in out.glob("*.json")]
    assert rec["resolved"]["data"]["cache"]["hit"] is True  # nothing tokenized by the rank
    return rec


@pytest.mark.deepspeed
def test_first_step_with_a_big_file(benchmark, big, tokenizer, tmp_path):
    from stackbench.trainer.data import dataset

    small = write_sft(tmp_path / "small.jsonl", 100)
    for path in (big, small):  # what the bench process does before launching
        dataset.load(RunConfig(task="sft", data=str(path), seq_len=512), tokenizer)
    marks = {}

    def both():
        for name, path in (("big", big), ("small", small)):
            out = tmp_path / f"{name}-{len(marks)}"
            marks[name] = _first_step(path, out)["metrics"]["startup_s"]
        return marks

    benchmark.group = f"first step, {ROWS} rows vs 100, warm cache"
    benchmark.pedantic(both, rounds=ROUNDS, warmup_rounds=1)  # the first launch pays cold imports
    for key in ("input_ready", "first_step_done"):
        benchmark.extra_info[f"{key}_big_s"] = marks["big"][key]
        benchmark.extra_info[f"{key}_small_s"] = marks["small"][key]
    benchmark.extra_info["first_step_ratio"] = marks["big"]["first_step_done"] / marks["small"]["first_step_done"]
    print(benchmark.extra_info)
