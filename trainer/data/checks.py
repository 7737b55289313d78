"""What a run is told about its data: enough samples or the fix that applies, too many rows
dropped as longer than --seq-len, and one line of what tokenizing kept, dropped and cut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stackbench.core.errors import DataError
from stackbench.trainer.data.dataset import KEEP_SHARE, Dataset


def seq_len_advice(meta: dict[str, Any]) -> str:
    """What to do about rows longer than seq_len, with the seq-len that keeps KEEP_SHARE of them."""
    return (f"raise --seq-len (--seq-len {meta['seq_len_keep']} keeps {round(KEEP_SHARE * 100)}% of rows) or pass "
            "--too-long truncate")


def check_enough(ds: Dataset, needed: int, repeat: bool, why: str) -> None:
    """Enough samples for the run, or an error that says which fix applies."""
    m, have = ds.meta, len(ds)
    if have >= needed or (repeat and have):
        return
    longer = (f"; {m['dropped_too_long']} of {m['rows']} rows are longer than --seq-len {m['seq_len']} (the longest: "
              f"{m['longest_tokens']} tokens, {m['longest_row']})") if m["dropped_too_long"] else ""
    fixes = []
    if m["dropped_too_long"]:
        fixes.append(seq_len_advice(m))
    if not repeat and have:
        fixes.append("pass --repeat-data")
    fixes.append("add rows, or lower --steps / --micro-batch / --grad-accum")
    raise DataError(f"{have} usable samples{longer}, but {why} need {needed}", where=m["path"], fix="; ".join(fixes))


def drop_problem(ds: Dataset, max_drop: float) -> str | None:
    """Why a run that would drop more than max_drop of its rows is refused (None: it is not)."""
    m = ds.meta
    share = m["dropped_too_long"] / m["rows"]
    if share <= max_drop:
        return None
    return (f"{m['dropped_too_long']} of {m['rows']} rows ({share:.0%}) are longer than --seq-len {m['seq_len']}, "
            f"more than --max-drop {max_drop:g} allows")


def drop_line(ds: Dataset) -> str:
    """One line: what tokenizing the file at this seq-len keeps, drops and cuts."""
    m = ds.meta
    line = (f"{Path(m['path']).name} ({m['task']}, seq-len {m['seq_len']}): {m['rows']} rows read, {len(ds)} kept")
    if m["dropped_too_long"]:
        line += (f", {m['dropped_too_long']} dropped as longer (longest {m['longest_tokens']} tokens, "
                 f"{m['longest_row']}; {seq_len_advice(m)})")
    if m["truncated"]:
        line += f", {m['truncated']} truncated to {m['seq_len']} tokens"
    return line
