"""A dataset file -> validated rows in one form (messages + the DPO rejected answer).

Files: JSONL, a JSON array (Alpaca's release), CSV or Parquet (pandas); a byte-order mark and CRLF
line ends are fine. Rows: any layout trainer/data/layouts.py reads, detected per row or forced for the
whole file (--data-format). Every error names file:line (or row), the field and the fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackbench.core.errors import DataError
from stackbench.trainer.data import layouts

ROLES = ("system", "user", "assistant")
SAMPLES_DIR = Path(__file__).parent.parent / "assets" / "samples"


@dataclass(frozen=True, slots=True)
class Row:
    messages: list[dict[str, str]]
    rejected: str | None
    where: str  # "file:line", for errors


@dataclass(slots=True)
class FileSummary:
    """What reading a file found, said once per file (console, record)."""

    path: str
    rows: int = 0
    layouts: dict[str, int] = field(default_factory=dict)
    unused_keys: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        name = Path(self.path).name
        out = [f"{name}: {self.rows} rows, layout " + ", ".join(f"{k} ({v})" for k, v in sorted(self.layouts.items()))]
        if self.unused_keys:
            out.append(f"{name}: keys not used (no layout reads them): {', '.join(self.unused_keys)}")
        return out


def default_path(task: str) -> Path:
    return SAMPLES_DIR / f"{task}.jsonl"


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def items(path: Path) -> list[tuple[str, Any]]:
    """(where, item) for every row of the file: for JSONL the line's text, parsed by parse_item
    (so workers can parse their share), else the row object."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        try:
            frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        except ImportError as e:
            raise DataError(f"reading {suffix} needs {e.name or 'pyarrow'}", where=str(path),
                            fix="pip install pyarrow, or convert it to JSONL") from None
        return [(f"{path}:row {i + 1}", {k: v for k, v in rec.items() if not (isinstance(v, float) and v != v)})
                for i, rec in enumerate(frame.to_dict("records"))]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text (byte {e.start})", where=str(path),
                        fix="save the file as UTF-8 (iconv -f GBK -t UTF-8, or your editor's 'save as')") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg})", where=f"{path}:{e.lineno}:{e.colno}",
                            fix="a JSON file holds one array of row objects") from None
        return [(f"{path}:[{i}]", obj) for i, obj in enumerate(rows)]
    return [(f"{path}:{n}", line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def parse_item(where: str, item: Any, task: str, data_format: str = "auto") -> tuple[Row, str, set[str]]:
    """One item of items(): (the row, its layout, keys it does not use)."""
    if isinstance(item, str):
        try:
            item = json.loads(item)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg}, column {e.colno})", where=where,
                            fix="each line must be one complete JSON object (or the file one JSON array)") from None
    return parse_row_layout(item, task, where, data_format)


def read_rows(path: str | Path, task: str, data_format: str = "auto") -> tuple[list[Row], FileSummary]:
    """Every row, validated, and what the file holds."""
    path = check_file(path)
    rows, unused, summary = [], set(), FileSummary(str(path))
    for where, item in items(path):
        row, layout, extra = parse_item(where, item, task, data_format)
        rows.append(row)
        unused |= extra
        summary.layouts[layout] = summary.layouts.get(layout, 0) + 1
    if not rows:
        raise DataError("the dataset has no rows", where=str(path), fix="add rows")
    summary.rows, summary.unused_keys = len(rows), sorted(unused)
    return rows, summary


def check_file(path: str | Path) -> Path:
    """The data file, or one error naming it: missing, a folder, or ms-swift's `file#N` sampling."""
    path = Path(path)
    base, hash_, count = str(path).rpartition("#") if "#" in path.name else ("", "", "")
    if hash_ and count.isdigit() and not path.exists():
        raise DataError(f"{path.name}: ms-swift's '#{count}' (sample {count} rows) is not read here", where="--data",
                        fix=f"give the plain path ({Path(base).name}): a run uses the rows its steps x global batch "
                            f"need, in order; --steps sets how many, --repeat-data cycles a short file")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a dataset file", where="--data",
                        fix="give one JSONL, JSON, CSV or Parquet file (a task each: --data sft=a.jsonl,dpo=b.jsonl)")
    if not path.is_file():
        raise DataError(f"dataset not found: {path}", where="--data",
                        fix="give an existing JSONL, JSON, CSV or Parquet file with --data")
    return path


def parse_row(obj: Any, task: str, where: str) -> Row:
    return parse_row_layout(obj, task, where)[0]


def parse_row_layout(obj: Any, task: str, where: str, data_format: str = "auto") -> tuple[Row, str, set[str]]:
    """(the row, its layout, keys it does not use)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, found {type(obj).__name__}", where=where,
                        fix="each row is one object, e.g. {\"messages\": [...]}")
    try:
        layout, messages, rejected, unused = layouts.to_messages(obj, where, data_format)
    except DataError as e:
        raise DataError(e.what, where=e.where or where, fix=e.fix) from None
    if task != "pt" and isinstance(messages, list) and messages and \
            all(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        raise DataError(f"a {layout} row of plain text is continued pre-training data", where=where,
                        fix="use --tasks pt for it, or give conversations")
    _check_messages(messages, task, where)
    if task == "dpo":
        if rejected is None:
            raise DataError("a DPO row needs a rejected answer (\"rejected_response\", or \"chosen\"/\"rejected\")",
                            where=where, fix="add the rejected final assistant turn, or use --tasks sft")
        if not isinstance(rejected, str) or not rejected.strip():
            raise DataError("the rejected answer must be a non-empty string", where=where)
        if messages[-1]["role"] != "assistant":
            raise DataError("a DPO row must end with the chosen assistant turn", where=where)
    return Row(messages=messages, rejected=rejected if task == "dpo" else None, where=where), layout, unused


def _check_messages(messages: Any, task: str, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError("\"messages\" must be a non-empty list", where=where)
    for i, m in enumerate(messages):
        at = f"{where}: messages[{i}]"
        if not isinstance(m, dict) or "role" not in m:
            raise DataError("message has no \"role\"", where=at, fix=f"give one of {', '.join(ROLES)}")
        if m["role"] not in ROLES:
            raise DataError(f"unknown role {m['role']!r}", where=at, fix=f"use one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise DataError("\"content\" must be a string", where=at)
        if m["role"] == "assistant" and not m["content"].strip():
            raise DataError("empty assistant turn", where=at, fix="remove the row or give the answer text")
    roles = [m["role"] for m in messages]
    if task == "pt":
        if set(roles) != {"assistant"}:
            raise DataError(f"continued pre-training rows hold plain text only (found {sorted(set(roles))})",
                            where=where, fix="use --tasks sft for conversations")
    elif "assistant" not in roles:
        raise DataError("no assistant turn to learn from", where=where)
    elif roles[0] == "assistant" or (roles[0] == "system" and roles[1:2] == ["assistant"]):
        raise DataError("the conversation starts with an assistant turn", where=where,
                        fix="begin with a user turn (after an optional system prompt)")
