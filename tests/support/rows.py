"""What every record must flatten to, whoever wrote it: the columns the report groups by."""

from __future__ import annotations

from stackbench.core import record

FILLED = ("model", "task", "backend", "zero_stage", "offload", "nodes", "gpus_per_node", "micro_batch", "seq_len",
          "world_size", "launcher")


def assert_row_filled(rec: dict, **expected) -> dict:
    """The record's row has every grouping column filled, and the values given."""
    assert record.validate(rec) == [], record.validate(rec)
    row = record.to_row(rec)
    empty = [k for k in FILLED if row[k] in (None, "")]
    assert not empty, f"{rec['status']} record {rec['run_id']}: {empty} empty in its row"
    for key, want in expected.items():
        assert row[key] == want, f"{key}: {row[key]!r} != {want!r}"
    return row
