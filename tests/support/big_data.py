"""A large SFT file for the data benchmarks: the shipped sample rows, cycled, each user turn made
distinct by its row number (so no two rows are the same text)."""

from __future__ import annotations

import json
from pathlib import Path

from stackbench.trainer.data.rows import default_path


def write_sft(path: Path, rows: int) -> Path:
    if path.exists() and sum(1 for _ in path.open()) == rows:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    base = [json.loads(line) for line in default_path("sft").read_text(encoding="utf-8").splitlines()]
    base = [r for r in base if "messages" in r]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in range(rows):
            row = json.loads(json.dumps(base[i % len(base)]))
            for m in row["messages"]:
                if m["role"] == "user":
                    m["content"] = f"{m['content']} (#{i})"
                    break
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.rename(path)
    return path
