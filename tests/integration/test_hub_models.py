"""A model by its hub id (issue 38): `--model org/tiny` read from a throwaway Hugging Face cache laid
out as huggingface_hub lays it out (refs, snapshots, blobs), offline, by the bench process and by
every rank; one short real run, whose record names the hub id, the snapshot, random init (no
weights in the snapshot) and the tokenizer that counted its tokens (the snapshot's own)."""

from __future__ import annotations

import pytest

from core import record
from tests.support import hf_cache
from tests.support.cli import run_sb

pytestmark = pytest.mark.deepspeed


def test_a_hub_id_from_an_offline_cache_runs(tmp_path, capfd, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = hf_cache.add_model(cache, "org/tiny", hf_cache.tiny_files())  # config + tokenizer, no weights
    hf_cache.use(monkeypatch, cache)
    results = tmp_path / "results"
    code, out, err = run_sb(["bench", "--model", "org/tiny", "--tasks", "sft", "--zero", "2", "--nodes", "1",
                             "--steps", "2", "--warmup", "1", "--no-preflight", "--results", str(results),
                             "--sweep", "hub"], capfd, monkeypatch)
    assert code == 0, (out + err)[-4000:]
    assert f"model org/tiny: {snapshot}" in err and "random init" in err
    assert "data: org/tiny: tokens counted with the org/tiny tokenizer" in err and "warning: org/tiny" not in err
    (rec,) = [r for r in map(record.read, (results / "hub").glob("*.json")) if "schema" in r]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["config"]["model"] == "org/tiny"
    model = rec["resolved"]["model"]
    assert (model["name"], model["kind"], model["path"], model["weights"]) == ("org/tiny", "hub", str(snapshot), None)
    assert rec["resolved"]["tokenizer"] == {"name": "org/tiny", "source": str(snapshot), "fallback": False}
