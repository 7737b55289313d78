"""core/record.py: records written atomically, validated, and refused by the factory when invalid."""

import json

import pytest

from stackbench.core import record
from stackbench.core.config import Launch, RunConfig


def test_records_are_written_atomically_and_validated(tmp_path):
    cfg, launch = RunConfig(), Launch(command="c")
    rec = record.new("ok", cfg, launch, started_at=record.now(), metrics={"x": 1})
    path = record.write(tmp_path / "r.json", rec)
    assert json.loads(path.read_text()) == rec and record.validate(rec) == []
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind
    assert RunConfig.from_dict(rec["config"]) == cfg and rec["run_id"] == cfg.run_id
    assert "status ok without metrics" in record.validate(dict(rec, metrics=None))
    assert any("schema" in p for p in record.validate(dict(rec, schema="other/9")))
    with pytest.raises(ValueError, match="error kind"):  # the factory refuses what validate refuses
        record.new("failed", cfg, launch, started_at="t", error=record.error("predicted_oom", "x"))
