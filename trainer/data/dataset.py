"""Validated rows (rows.py) -> tokenized samples with loss masks, once per dataset and settings,
in the on-disk cache (cache.py says where) every rank memory-maps.

  sft  loss on every assistant turn (chat.py says exactly which tokens).
  dpo  the final assistant turn, chosen and rejected: a sample is a pair of sequences.
  pt   plain text: loss on every token, each document ending with the EOS token.

The bench process fills the cache before anything is launched (bench/datacheck.py), resumed
sweeps and later runs reuse it, and a rank that finds it missing (another host, no shared home)
builds it once per host under a lock. A rank reads only the samples its own steps take (numpy
memmap: no pyarrow or datasets on the ranks).

Packing (--packing) for pt: PackedStream concatenates the documents and cuts the stream into
seq_len blocks (attention crosses document boundaries, as pre-training does). sft and dpo pack
in the micro-batch (batches.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackbench.core import files
from stackbench.core.errors import DataError
from stackbench.trainer.data import rows as rows_mod
from stackbench.trainer.data.cache import FORMAT, Spec, cache_dir, digest_memo
from stackbench.trainer.data.rows import Row, read_rows
from stackbench.trainer.data.tokenize import tokenize_parts

IGNORE = -100  # label of a token that carries no loss (torch cross_entropy's ignore_index)
KEEP_SHARE = 0.95  # the seq-len advice: the length that keeps this share of rows


@dataclass(slots=True)
class Sample:
    """One training sequence (DPO: one pair; `rejected_*` set). Lists of ints."""

    input_ids: list[int]
    labels: list[int]
    rejected_ids: list[int] | None = None
    rejected_labels: list[int] | None = None
    row: int = -1  # the row it came from (-1: a pre-training block)


class Dataset:
    """The tokenized samples of one dataset, memory-mapped. Sequence j is tokens[starts[j]:starts[j+1]];
    sample i is sequence i (sft, pt) or the pair 2i, 2i+1 (dpo: chosen, rejected)."""

    def __init__(self, directory: Path, path: str) -> None:
        import numpy as np

        self.dir = directory
        meta = json.loads((directory / "meta.json").read_text())
        # the cache is keyed by content: the same file under another name says its own name
        self.meta: dict[str, Any] = {**meta, "path": path, "longest_row": path + meta["longest_row"]}
        self.tokens = np.load(directory / "tokens.npy", mmap_mode="r")
        self.learned = np.load(directory / "learned.npy", mmap_mode="r")
        self.starts = np.load(directory / "starts.npy")
        self.sample_rows = np.load(directory / "rows.npy")
        self.per_sample = 2 if self.meta["task"] == "dpo" else 1
        self.cache_hit = True

    def __len__(self) -> int:
        return len(self.sample_rows)

    @property
    def path(self) -> str:
        return self.meta["path"]

    def _sequence(self, j: int) -> tuple[list[int], list[int]]:
        import numpy as np

        a, b = int(self.starts[j]), int(self.starts[j + 1])
        ids = np.asarray(self.tokens[a:b], dtype=np.int64)
        return ids.tolist(), np.where(self.learned[a:b], ids, IGNORE).tolist()

    def sample(self, i: int) -> Sample:
        ids, labels = self._sequence(self.per_sample * i)
        s = Sample(ids, labels, row=int(self.sample_rows[i]))
        if self.per_sample == 2:
            s.rejected_ids, s.rejected_labels = self._sequence(2 * i + 1)
        return s

    def source_rows(self) -> list[Row]:
        """The validated rows, for backends that tokenize themselves (ms-swift)."""
        return read_rows(self.path, self.meta["task"], self.meta["data_format"])[0]

    def summary(self) -> dict[str, Any]:
        """What the record keeps: rows read, kept, dropped, truncated, and where they came from."""
        m = self.meta
        return {"path": m["path"], "sha256": m["sha256"], "format": m["data_format"], "layouts": m["layouts"],
                "rows": m["rows"], "samples": len(self), "dropped_too_long": m["dropped_too_long"],
                "truncated": m["truncated"], "longest_tokens": m["longest_tokens"],
                f"seq_len_keeping_{round(KEEP_SHARE * 100)}pct": m["seq_len_keep"], "unused_keys": m["unused_keys"],
                "tokens": m["tokens"], "learned_tokens": m["learned_tokens"], "too_long": m["too_long"],
                "seq_len": m["seq_len"], "cache": {"dir": str(self.dir), "hit": self.cache_hit,
                                                   "tokenize_s": m["tokenize_s"]}}


def prepare(spec: Spec, tokenizer) -> Dataset:
    """The spec's tokenized dataset: from the cache, or tokenized now (once per host: a lock)."""
    rows_mod.check_file(spec.path)  # a missing file is the user's mistake, named, before its digest is taken
    directory = cache_dir(spec, tokenizer)
    built = files.build_once(directory, "meta.json", lambda tmp: _build(spec, tokenizer, tmp))
    ds = Dataset(directory, spec.path)
    ds.cache_hit = not built
    return ds


def load(cfg, tokenizer) -> "Dataset | PackedStream":
    ds = prepare(Spec.of(cfg), tokenizer)
    return PackedStream(ds, cfg.seq_len) if cfg.task == "pt" and cfg.packing else ds


def _build(spec: Spec, tokenizer, tmp: Path) -> None:
    """Tokenize the spec's file into tmp (the cache entry, before it is renamed into place)."""
    import numpy as np

    began = time.perf_counter()
    path = rows_mod.check_file(spec.path)
    items = rows_mod.items(path)
    if not items:
        raise DataError("the dataset has no rows", where=str(path), fix="add rows")
    parts = tokenize_parts(items, tokenizer, spec)
    ids = np.concatenate([p.ids for p in parts])
    learned = np.concatenate([p.learned for p in parts])
    lengths = np.concatenate([p.lengths for p in parts])
    starts = np.concatenate([[0], np.cumsum(np.concatenate([p.seq_lengths for p in parts]))]).astype(np.int64)
    layouts: dict[str, int] = {}
    for p in parts:
        for k, v in p.layouts.items():
            layouts[k] = layouts.get(k, 0) + v
    np.save(tmp / "tokens.npy", ids)
    np.save(tmp / "learned.npy", learned)
    np.save(tmp / "starts.npy", starts)
    np.save(tmp / "rows.npy", np.concatenate([p.rows for p in parts]))
    meta = {"format": FORMAT, "path": spec.path, "sha256": digest_memo(path), "task": spec.task,
            "seq_len": spec.seq_len, "too_long": spec.too_long, "data_format": spec.data_format,
            "layouts": layouts, "unused_keys": sorted(set().union(*(p.unused for p in parts))),
            "rows": len(items), "dropped_too_long": sum(p.dropped for p in parts),
            "truncated": sum(p.truncated for p in parts), "longest_tokens": int(lengths.max()),
            "longest_row": items[int(lengths.argmax())][0].removeprefix(spec.path),
            "seq_len_keep": int(np.ceil(np.quantile(lengths, KEEP_SHARE))),
            "tokens": int(ids.size), "learned_tokens": int(learned.sum()),
            "tokenize_s": round(time.perf_counter() - began, 3)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


class PackedStream:
    """--packing for pt: block i is tokens[i*seq_len:(i+1)*seq_len] of the documents' stream."""

    def __init__(self, ds: Dataset, seq_len: int) -> None:
        self.base, self.seq_len = ds, seq_len
        self.meta = ds.meta
        self.cache_hit = ds.cache_hit

    def __len__(self) -> int:
        return len(self.base.tokens) // self.seq_len

    @property
    def path(self) -> str:
        return self.base.path

    def sample(self, i: int) -> Sample:
        import numpy as np

        ids = np.asarray(self.base.tokens[i * self.seq_len:(i + 1) * self.seq_len], dtype=np.int64).tolist()
        return Sample(ids, list(ids))

    def source_rows(self) -> list[Row]:
        return self.base.source_rows()

    def summary(self) -> dict[str, Any]:
        return {**self.base.summary(), "samples": len(self), "packed_blocks": len(self)}
