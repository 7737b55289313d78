"""Validated rows (trainer/rows.py) -> tokenized samples with loss masks, once per dataset and
settings, in an on-disk cache every rank memory-maps; then the ranks' micro-batches.

  sft  loss on every assistant turn (trainer/chat.py says exactly which tokens).
  dpo  the final assistant turn, chosen and rejected: a sample is a pair of sequences.
  pt   plain text: loss on every token, each document ending with the EOS token.

The cache (STACKBENCH_CACHE/data/<key>/) is keyed by the file's content, the tokenizer's files
and chat template, the task, seq_len, the too-long policy, the format and the source of the code
that makes samples (this module, rows, layouts, chat):
the bench process fills it before anything is launched (bench/datacheck.py), resumed sweeps and
later runs reuse it, and a rank that finds it missing (another host, no shared home) builds it
once per host under a lock. A rank reads only the samples its own steps take (numpy memmap:
no pyarrow or datasets on the ranks).

Packing (--packing): pt concatenates documents and cuts the stream into seq_len blocks (attention
crosses document boundaries, as pre-training does). sft and dpo keep the unpacked run's samples
in each micro-batch and lay them into as few seq_len rows as they fit, position ids restarting
per sample and attention kept within each sample: the same samples, the same loss, less padding.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from stackbench.core import files
from stackbench.core.errors import DataError
from stackbench.trainer.data import rows as rows_mod
from stackbench.trainer.data.chat import Template, learned_mask
from stackbench.trainer.data.rows import Row, default_path, read_rows

IGNORE = -100  # label of a token that carries no loss (torch cross_entropy's ignore_index)
FORMAT = 3     # bump when what the cache holds, or how it is made, changes
KEEP_SHARE = 0.95  # the seq-len advice: the length that keeps this share of rows
PARALLEL_ROWS = 20_000  # from this many rows, tokenizing uses every core


@dataclass(frozen=True, slots=True)
class Spec:
    """What decides the tokenized samples."""

    path: str
    task: str
    seq_len: int
    too_long: str
    data_format: str = "auto"

    @classmethod
    def of(cls, cfg) -> "Spec":
        stream = cfg.task == "pt" and cfg.packing  # documents are cut into blocks, never dropped
        return cls(path=str(Path(cfg.data or default_path(cfg.task)).resolve()), task=cfg.task,
                   seq_len=0 if stream else cfg.seq_len, too_long="keep" if stream else cfg.too_long,
                   data_format=cfg.data_format)


@dataclass(slots=True)
class Sample:
    """One training sequence (DPO: one pair; `rejected_*` set). Lists of ints."""

    input_ids: list[int]
    labels: list[int]
    rejected_ids: list[int] | None = None
    rejected_labels: list[int] | None = None
    row: int = -1  # the row it came from (-1: a pre-training block)


# --- the cache ---------------------------------------------------------------------------------

def cache_root() -> Path:
    from stackbench.trainer.embedded import cache_root as root

    return root() / "data"


def _digest_memo(path: Path) -> str:
    """The file's sha256, remembered by (size, mtime): a 1M-row file is hashed once, not per rank."""
    st = path.stat()
    memo = cache_root() / "digests" / (hashlib.sha256(str(path).encode()).hexdigest()[:24] + ".json")
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        saved = json.loads(memo.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = rows_mod.file_digest(path)
    files.write_atomic(memo, json.dumps({**stamp, "sha256": digest}), redact=False, where="STACKBENCH_CACHE")
    return digest


def tokenizer_digest(tokenizer) -> str:
    """The tokenizer's files (vocabulary, merges, special tokens) and its chat template."""
    h = hashlib.sha256((tokenizer.chat_template or "").encode())
    source = Path(getattr(tokenizer, "name_or_path", "") or "")
    for f in sorted(source.glob("*")) if source.is_dir() else []:
        if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "added_tokens", "vocab", "merges"))
                            or f.suffix == ".jinja"):
            h.update(f.name.encode() + f.read_bytes())
    h.update(json.dumps(sorted(map(str, tokenizer.all_special_tokens))).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """The source of everything that turns a file into samples: a change to it is a new cache entry."""
    from stackbench.trainer.data import chat, layouts

    h = hashlib.sha256()
    for module in (rows_mod, layouts, chat, sys.modules[__name__]):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def cache_dir(spec: Spec, tokenizer) -> Path:
    content = {"format": FORMAT, "code": code_digest(), "file": _digest_memo(Path(spec.path)), "tokenizer": tokenizer_digest(tokenizer),
               "task": spec.task, "seq_len": spec.seq_len, "too_long": spec.too_long, "data_format": spec.data_format}
    key = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / f"{Path(spec.path).stem[:40]}-{spec.task}-{key}"


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
    parts = _tokenize_parts(items, tokenizer, spec)
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
    meta = {"format": FORMAT, "path": spec.path, "sha256": _digest_memo(path), "task": spec.task,
            "seq_len": spec.seq_len, "too_long": spec.too_long, "data_format": spec.data_format,
            "layouts": layouts, "unused_keys": sorted(set().union(*(p.unused for p in parts))),
            "rows": len(items), "dropped_too_long": sum(p.dropped for p in parts),
            "truncated": sum(p.truncated for p in parts), "longest_tokens": int(lengths.max()),
            "longest_row": items[int(lengths.argmax())][0].removeprefix(spec.path),
            "seq_len_keep": int(np.ceil(np.quantile(lengths, KEEP_SHARE))),
            "tokens": int(ids.size), "learned_tokens": int(learned.sum()),
            "tokenize_s": round(time.perf_counter() - began, 3)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


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


def _tokenize_parts(items: list, tokenizer, spec: Spec) -> list[_Part]:
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
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
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


# --- tokenizing ---------------------------------------------------------------------------------

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


# --- what a run needs ----------------------------------------------------------------------------

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


# --- batching ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Batch:
    input_ids: Any       # LongTensor [R, T]; DPO unpacked: chosen rows then rejected rows
    attention_mask: Any  # LongTensor [R, T] (1: a real token), or a float [R, 1, T, T] mask when packed
    labels: Any          # LongTensor [R, T], IGNORE where no loss
    real_tokens: int     # non-padding tokens fed
    padded_tokens: int   # R * T
    sequences: int       # samples (DPO: pairs)
    position_ids: Any = None  # LongTensor [R, T] when packed: restarting at 0 per sample
    sequence_ids: Any = None  # LongTensor [R, T] when packed: the sequence each token belongs to (-1: padding);
                              # DPO: chosen k is sequence k, rejected k is sequence B + k


def collate(samples: list[Sample], pad_id: int, seq_len: int, padding: str) -> Batch:
    import torch

    seqs = [(s.input_ids, s.labels) for s in samples]
    if samples and samples[0].rejected_ids is not None:
        seqs += [(s.rejected_ids, s.rejected_labels) for s in samples]
    width = seq_len if padding == "fixed" else max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (i, l) in enumerate(seqs):  # right padding
        ids[row, : len(i)] = torch.tensor(i)
        labels[row, : len(l)] = torch.tensor(l)
        mask[row, : len(i)] = 1
    return Batch(ids, mask, labels, real_tokens=int(mask.sum()), padded_tokens=ids.numel(), sequences=len(samples))


def collate_packed(samples: list[Sample], pad_id: int, seq_len: int, padding: str, dtype=None,
                   varlen: bool = False) -> Batch:
    """The samples' sequences laid into as few rows of seq_len as they fit (first fit, in order),
    each with its own position ids and an attention mask that keeps it apart from the others
    (varlen: no mask; flash-attention's variable-length path finds the samples from the position ids)."""
    import torch

    seqs = [(s.input_ids, s.labels) for s in samples]
    if samples and samples[0].rejected_ids is not None:
        seqs += [(s.rejected_ids, s.rejected_labels) for s in samples]
    rows: list[list[int]] = []  # sequence indices per row
    room: list[int] = []
    for k, (i, _) in enumerate(seqs):
        r = next((r for r, free in enumerate(room) if free >= len(i)), None)
        if r is None:
            rows.append([]), room.append(seq_len)
            r = len(rows) - 1
        rows[r].append(k)
        room[r] -= len(i)
    width = seq_len if padding == "fixed" else max(seq_len - free for free in room)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    sequence = torch.full(shape, -1, dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for k in members:
            i, l = seqs[k]
            n = len(i)
            ids[r, at:at + n], labels[r, at:at + n] = torch.tensor(i), torch.tensor(l)
            labels[r, at] = IGNORE  # predicted by the previous sample's last token; unpacked, nothing predicts it
            positions[r, at:at + n], sequence[r, at:at + n] = torch.arange(n), k
            at += n
    real = int((sequence >= 0).sum())
    common = dict(real_tokens=real, padded_tokens=ids.numel(), sequences=len(samples), position_ids=positions,
                  sequence_ids=sequence)
    if varlen:
        return Batch(ids, None, labels, **common)
    dtype = dtype or torch.float32
    same = (sequence[:, :, None] == sequence[:, None, :]) & (sequence[:, :, None] >= 0)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    keep = same & causal
    keep |= torch.eye(width, dtype=torch.bool)  # a padding position attends to itself: no row of -inf (NaN)
    mask = torch.zeros((len(rows), 1, width, width), dtype=dtype).masked_fill(~keep[:, None], torch.finfo(dtype).min)
    return Batch(ids, mask, labels, **common)


def micro_batches(ds: Dataset, *, rank: int, world: int, micro_batch: int, grad_accum: int,
                  pad_id: int, seq_len: int, padding: str, packed: bool = False, dtype=None,
                  varlen: bool = False) -> Iterator[Batch]:
    """Endless micro-batches for this rank: global batch k is samples [k*G, (k+1)*G) (cycling);
    within it, micro-step m of rank r takes its own contiguous slice. Only those samples are read."""
    n, gb, step = len(ds), micro_batch * world * grad_accum, 0
    while True:
        base = step * gb
        for m in range(grad_accum):
            first = base + (m * world + rank) * micro_batch
            samples = [ds.sample((first + j) % n) for j in range(micro_batch)]
            yield (collate_packed(samples, pad_id, seq_len, padding, dtype, varlen) if packed
                   else collate(samples, pad_id, seq_len, padding))
        step += 1


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
