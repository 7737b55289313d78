"""A file's items -> token ids and loss masks, fitted to seq_len (tokenize_parts), for dataset.py
to save. Big files are shared among forked workers, which inherit what they need (the items, the
loaded tokenizer, the spec) through this module's global _WORKER."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from stackbench.core.errors import DataError
from stackbench.trainer.data import rows as rows_mod
from stackbench.trainer.data.cache import Spec
from stackbench.trainer.data.chat import Template, learned_mask
from stackbench.trainer.data.rows import Row

PARALLEL_ROWS = 20_000  # from this many rows, tokenizing uses every core


@dataclass(slots=True)
class _Part:
    """One share of the file, tokenized and fitted to seq_len (what a worker sends back)."""

    ids: Any          # int32: the kept sequences' tokens, one after another
    learned: Any      # uint8: 1 where a token carries loss
    seq_lengths: Any  # int64: per kept sequence
    rows: Any         # int64: per kept sample, its row's index in the file
    lengths: Any      # int64: per row read, its longest sequence before fitting
    dropped: int
    truncated: int
    layouts: dict[str, int]
    unused: set[str]


def tokenize_parts(items: list, tokenizer, spec: Spec) -> list[_Part]:
    """The file's rows parsed, validated, tokenized and fitted: in this process for small files;
    from PARALLEL_ROWS rows on, by forked workers (one per core) that share the loaded tokenizer
    and the items (fork needs no import of the caller's main module; the tokenizers' own threads
    are off in the children, the processes are the parallelism)."""
    workers = min(len(os.sched_getaffinity(0)), 8)
    if len(items) < PARALLEL_ROWS or workers < 2:
        return [_tokenize_part(items, 0, len(items), tokenizer, spec)]
    import concurrent.futures
    import multiprocessing

    chunk = -(-len(items) // (workers * 4))
    bounds = [(a, min(a + chunk, len(items))) for a in range(0, len(items), chunk)]
    _WORKER.update(items=items, tokenizer=tokenizer, spec=spec)
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                    initializer=_worker_init) as pool:
            return list(pool.map(_worker_part, *zip(*bounds)))
    finally:
        _WORKER.clear()


_WORKER: dict[str, Any] = {}  # what forked workers inherit: the items, the tokenizer, the spec


def _worker_init() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _worker_part(start: int, end: int) -> _Part:
    return _tokenize_part(_WORKER["items"], start, end, _WORKER["tokenizer"], _WORKER["spec"])


def _tokenize_part(items: list, start: int, end: int, tokenizer, spec: Spec) -> _Part:
    import numpy as np

    rows, layouts, unused = [], {}, set()
    for where, item in items[start:end]:
        row, layout, extra = rows_mod.parse_item(where, item, spec.task, spec.data_format)
        rows.append(row)
        layouts[layout] = layouts.get(layout, 0) + 1
        unused |= extra
    encoded = _encode_chunk(rows, tokenizer, spec.task)
    ids, learned, seq_lengths, kept = [], [], [], []
    dropped = truncated = 0
    for r, seqs in enumerate(encoded):
        fitted = [_fit(i, m, spec.seq_len, spec.too_long) for i, m in seqs]
        if any(f is None for f in fitted):
            dropped += 1
            continue
        truncated += any(len(f[0]) < len(s[0]) for f, s in zip(fitted, seqs))
        for i, m in fitted:
            ids.append(i)
            learned.append(m)
            seq_lengths.append(len(i))
        kept.append(start + r)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return _Part(ids=cat(ids, np.int32), learned=cat(learned, np.uint8),
                 seq_lengths=np.asarray(seq_lengths, dtype=np.int64), rows=np.asarray(kept, dtype=np.int64),
                 lengths=np.asarray([max(len(i) for i, _ in seqs) for seqs in encoded], dtype=np.int64),
                 dropped=dropped, truncated=truncated, layouts=layouts, unused=unused)


def _fit(ids, mask, seq_len: int, too_long: str):
    if too_long == "keep" or len(ids) <= seq_len:
        return ids, mask
    if too_long == "drop":
        return None
    ids, mask = ids[:seq_len], mask[:seq_len]
    return (ids, mask) if mask.any() else None


def _encode_chunk(rows: list[Row], tokenizer, task: str) -> list[list[tuple[Any, Any]]]:
    import numpy as np

    if task == "pt":
        eos = tokenizer.eos_token_id
        texts = ["\n\n".join(m["content"] for m in r.messages) for r in rows]
        out = []
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids = np.asarray(ids + [eos], dtype=np.int64)
            out.append([(ids, np.ones(len(ids), dtype=bool))])
        return out
    template = Template(tokenizer)
    last_only = task == "dpo"
    conversations = []  # (row index, messages)
    for i, r in enumerate(rows):
        conversations.append((i, r.messages))
        if task == "dpo":
            conversations.append((i, r.messages[:-1] + [{"role": "assistant", "content": r.rejected}]))
    if template.has_generation:
        encoded = [template.encode(m, rows[i].where, last_only) for i, m in conversations]
        seqs = [(np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)) for ids, mask in encoded]
    else:
        rendered = [template.spans(m, rows[i].where, last_only) for i, m in conversations]
        enc = tokenizer([t for t, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
        seqs = [(np.asarray(ids, dtype=np.int64), learned_mask(offsets, spans))
                for ids, offsets, (_, spans) in zip(enc["input_ids"], enc["offset_mapping"], rendered)]
    for (i, _), (_, mask) in zip(conversations, seqs):
        if not mask.any():
            raise DataError("no token of the assistant turns is learned", where=rows[i].where,
                            fix="check the model's chat template renders the assistant content")
    width = 2 if task == "dpo" else 1
    return [seqs[k:k + width] for k in range(0, len(seqs), width)]
