"""A model by its hub id (issue 38): `--model org/tiny` read from a throwaway Hugging Face cache laid
out as huggingface_hub lays it out (refs, snapshots, blobs), offline, by the bench process and by
every rank; one short real run, whose record names the hub id, the snapshot, random init (no
weights in the snapshot) and the tokenizer that counted its tokens (the snapshot's own). Beside it,
in the same sweep, a model with a config and no tokenizer (an architecture, like a preset): its
tokens are counted with the embedded tokenizer, and the console, the record and the report say so."""

from __future__ import annotations

import pytest

from stackbench.core import record
from tests.support import hf_cache
from tests.support.cli import run_sb

pytestmark = pytest.mark.deepspeed


def test_a_hub_id_from_an_offline_cache_runs(tmp_path, capfd, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = hf_cache.add_model(cache, "org/tiny", hf_cache.tiny_files())  # config + tokenizer, no weights
    hf_cache.add_model(cache, "org/bare", hf_cache.tiny_files(tokenizer=False))  # an architecture: config only
    hf_cache.use(monkeypatch, cache)
    results = tmp_path / "results"
    code, out, err = run_sb(["bench", "--model", "org/tiny,org/bare", "--tasks", "sft", "--zero", "2", "--nodes", "1",
                             "--steps", "2", "--warmup", "1", "--no-preflight", "--results", str(results),
                             "--sweep", "hub"], capfd, monkeypatch)
    assert code == 0, (out + err)[-4000:]
    assert f"model org/tiny: {snapshot}" in err and "random init" in err
    assert "data: org/tiny: tokens counted with the org/tiny tokenizer" in err and "warning: org/tiny" not in err
    recs = {r["config"]["model"]: r for r in map(record.read, (results / "hub").glob("*.json")) if "schema" in r}
    rec, bare = recs["org/tiny"], recs["org/bare"]
    assert rec["status"] == "ok" and bare["status"] == "ok", (rec.get("error"), bare.get("error"))
    assert err.count("warning: org/bare: tokens are counted with stackbench's embedded tokenizer") == 1, err
    assert bare["resolved"]["tokenizer"]["fallback"] is True
    code, _, err = run_sb(["report", "--results", str(results)], capfd, monkeypatch)
    page = (results / "report" / "report.md").read_text()
    assert code == 0 and "Tokens of org/bare" in page and "embedded tokenizer" in page and "org/tiny (" not in page
    assert rec["config"]["model"] == "org/tiny"
    model = rec["resolved"]["model"]
    assert (model["name"], model["kind"], model["path"], model["weights"]) == ("org/tiny", "hub", str(snapshot), None)
    assert rec["resolved"]["tokenizer"] == {"name": "org/tiny", "source": str(snapshot), "fallback": False}
