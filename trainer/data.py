"""Datasets in the formats users already have, validated row by row, tokenized with loss masks.

Files: JSONL, a JSON array, CSV or Parquet. Rows: any layout trainer/layouts.py reads (messages,
ShareGPT, Alpaca, Dolly, ms-swift, TRL preference, text), turned into messages:
  sft  loss on every assistant turn (its content and the end-of-turn marker), nothing else.
  dpo  the same, plus the rejected final assistant turn.
  pt   assistant-only messages (plain text): loss on all tokens.

Every rank reads and tokenizes the whole file (sample sets for benchmarks are small) and takes
its own slice of each global batch, so the data a step sees does not depend on the ZeRO stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from core.errors import DataError
from trainer import layouts

IGNORE = -100  # label of a token that carries no loss (torch cross_entropy's ignore_index)
ROLES = ("system", "user", "assistant")
SAMPLES_DIR = Path(__file__).parent / "assets" / "samples"


@dataclass(frozen=True, slots=True)
class Row:
    messages: list[dict[str, str]]
    rejected: str | None
    where: str  # "file:line", for errors


@dataclass(slots=True)
class Sample:
    """One training sequence (DPO: one pair; `rejected_*` set)."""

    input_ids: list[int]
    labels: list[int]
    rejected_ids: list[int] | None = None
    rejected_labels: list[int] | None = None
    row: int = -1  # index of the row it came from in Dataset.source (-1: a packed block)


@dataclass(slots=True)
class Dataset:
    samples: list[Sample]
    path: str
    rows: int
    dropped_too_long: int = 0
    truncated: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    source: list[Row] = field(default_factory=list)  # the validated rows, for backends that tokenize themselves

    def summary(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "samples": len(self.samples),
                "dropped_too_long": self.dropped_too_long, "truncated": self.truncated}


def default_path(task: str) -> Path:
    return SAMPLES_DIR / f"{task}.jsonl"


# --- reading and validating -------------------------------------------------------------------

def _objects(path: Path):
    """(where, object) for every row: JSONL, a JSON array (Alpaca's release), CSV or Parquet (pandas);
    a byte-order mark and CRLF line ends are fine."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        try:
            frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        except ImportError as e:
            raise DataError(f"reading {suffix} needs {e.name or 'pyarrow'}", where=str(path),
                            fix="pip install pyarrow, or convert it to JSONL") from None
        for i, rec in enumerate(frame.to_dict("records")):
            yield f"{path}:row {i + 1}", {k: v for k, v in rec.items() if not (isinstance(v, float) and v != v)}
        return
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg})", where=f"{path}:{e.lineno}:{e.colno}",
                            fix="a JSON file holds one array of row objects") from None
        for i, obj in enumerate(items):
            yield f"{path}:[{i}]", obj
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg}, column {e.colno})", where=where,
                            fix="each line must be one complete JSON object (or the file one JSON array)") from None


def read_rows(path: str | Path, task: str, notes: list[str] | None = None) -> list[Row]:
    """Every row, validated; keys no layout uses are listed once in notes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset not found: {path}", fix="give an existing JSONL, JSON, CSV or Parquet file with --data")
    rows, unused, layouts = [], set(), set()
    for where, obj in _objects(path):
        row, layout, extra = parse_row_layout(obj, task, where)
        rows.append(row)
        unused |= extra
        layouts.add(layout)
    if not rows:
        raise DataError("the dataset has no rows", where=str(path), fix="add rows")
    if notes is not None:
        notes.append(f"{path.name}: layout {', '.join(sorted(layouts))}, {len(rows)} rows")
        if unused:
            notes.append(f"{path.name}: keys not used: {', '.join(sorted(unused))}")
    return rows


def parse_row(obj: Any, task: str, where: str) -> Row:
    return parse_row_layout(obj, task, where)[0]


def parse_row_layout(obj: Any, task: str, where: str) -> tuple[Row, str, set[str]]:
    """(the row, its layout, keys it does not use)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, found {type(obj).__name__}", where=where,
                        fix="each row is one object, e.g. {\"messages\": [...]}")
    try:
        layout, messages, rejected_in, unused = layouts.to_messages(obj, where)
    except DataError as e:
        raise DataError(e.what, where=e.where or where, fix=e.fix) from None
    if task != "pt" and all(m.get("role") == "assistant" for m in messages if isinstance(m, dict)):
        raise DataError(f"a {layout} row of plain text is continued pre-training data", where=where,
                        fix="use --task pt for it, or give conversations")
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
            raise DataError(f"continued pre-training rows hold assistant messages only (found {sorted(set(roles))})",
                            where=where, fix="use --task sft for conversations")
    elif "assistant" not in roles:
        raise DataError("no assistant turn to learn from", where=where)
    elif roles[0] == "assistant" or (roles[0] == "system" and roles[1:2] == ["assistant"]):
        raise DataError("the conversation starts with an assistant turn", where=where,
                        fix="begin with a user turn (after an optional system prompt)")
    rejected = rejected_in
    if task == "dpo":
        if rejected is None:
            raise DataError("DPO row without \"rejected_response\"", where=where,
                            fix="add the rejected final assistant turn, or use --task sft")
        if not isinstance(rejected, str) or not rejected.strip():
            raise DataError("\"rejected_response\" must be a non-empty string", where=where)
        if roles[-1] != "assistant":
            raise DataError("a DPO row must end with the chosen assistant turn", where=where)
    return Row(messages=messages, rejected=rejected if task == "dpo" else None, where=where), layout, unused


# --- tokenizing --------------------------------------------------------------------------------

def render_with_spans(tokenizer, messages: list[dict], last_only: bool) -> tuple[str, list[tuple[int, int]]]:
    """The chat-template text and the character spans that carry loss (assistant turns).

    A turn's span runs from the end of the generation prompt before it to the end of the turn
    (so the end-of-turn marker is learned too). It relies on the template rendering a
    conversation's prefix as a prefix of the text, which ChatML-style templates do.
    """
    render = lambda msgs, gen=False: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    text = render(messages)
    spans = []
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for i in turns[-1:] if last_only else turns:
        start, upto = len(render(messages[:i], True)), render(messages[: i + 1])
        if not text.startswith(upto) or not upto.startswith(text[:start]):
            raise DataError("the tokenizer's chat template does not render a conversation's beginning as a prefix "
                            "of the whole, so assistant turns cannot be located",
                            where="tokenizer chat_template", fix="use a ChatML-style template")
        spans.append((start, len(upto)))
    return text, spans


def encode_with_labels(tokenizer, text: str, spans: list[tuple[int, int]] | None) -> tuple[list[int], list[int]]:
    """Token ids and labels: a token is learned when it starts inside a span (all tokens if spans is None)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    if spans is None:
        return ids, list(ids)
    labels = [t if any(a <= s < b for a, b in spans) else IGNORE for t, (s, _) in zip(ids, enc["offset_mapping"])]
    return ids, labels


def _fit(ids: list[int], labels: list[int], seq_len: int, too_long: str) -> tuple[list[int], list[int]] | None:
    if len(ids) <= seq_len:
        return ids, labels
    if too_long == "drop":
        return None
    ids, labels = ids[:seq_len], labels[:seq_len]
    return (ids, labels) if any(l != IGNORE for l in labels) else None


def tokenize(rows: list[Row], tokenizer, task: str, seq_len: int, too_long: str, packing: bool, path: str) -> Dataset:
    ds = Dataset(samples=[], path=path, rows=len(rows), source=rows)
    if task == "pt":
        eos = tokenizer.eos_token_id
        docs = [tokenizer("\n\n".join(m["content"] for m in r.messages), add_special_tokens=False)["input_ids"] + [eos]
                for r in rows]
        if packing:  # one stream cut into seq_len blocks; attention crosses document boundaries
            stream = [t for d in docs for t in d]
            ds.samples = [Sample(stream[i:i + seq_len], stream[i:i + seq_len])
                          for i in range(0, len(stream) - seq_len + 1, seq_len)]
            return ds
        pairs = [(d, list(d)) for d in docs]
    else:
        pairs = []
        for r in rows:
            text, spans = render_with_spans(tokenizer, r.messages, last_only=task == "dpo")
            pairs.append(encode_with_labels(tokenizer, text, spans))
    for i, (ids, labels) in enumerate(pairs):
        fitted = _fit(ids, labels, seq_len, too_long)
        sample = None
        if fitted:
            sample = Sample(*fitted, row=i)
            if task == "dpo":
                r = rows[i]
                rej_msgs = r.messages[:-1] + [{"role": "assistant", "content": r.rejected}]
                text, spans = render_with_spans(tokenizer, rej_msgs, last_only=True)
                rej = _fit(*encode_with_labels(tokenizer, text, spans), seq_len, too_long)
                if rej:
                    sample.rejected_ids, sample.rejected_labels = rej
                else:
                    sample = None
        if sample is None:
            ds.dropped_too_long += 1
        else:
            ds.truncated += len(sample.input_ids) < len(ids)
            ds.samples.append(sample)
    return ds


def load(path: str, tokenizer, task: str, seq_len: int, too_long: str, packing: bool) -> Dataset:
    path = path or str(default_path(task))
    return tokenize(read_rows(path, task), tokenizer, task, seq_len, too_long, packing, path)


# --- batching ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Batch:
    input_ids: Any       # LongTensor [B, T]; DPO: chosen rows then rejected rows, [2B, T]
    attention_mask: Any  # LongTensor [B, T]
    labels: Any          # LongTensor [B, T], IGNORE where no loss
    real_tokens: int     # non-padding tokens fed
    padded_tokens: int   # B * T
    sequences: int       # samples (DPO: pairs)


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


def check_enough(ds: Dataset, needed: int, repeat: bool, why: str) -> None:
    if len(ds.samples) >= needed or (repeat and ds.samples):
        return
    dropped = f" ({ds.dropped_too_long} dropped as longer than --seq-len)" if ds.dropped_too_long else ""
    raise DataError(f"{len(ds.samples)} usable samples{dropped}, but {why} need {needed}", where=ds.path,
                    fix="add rows, lower --steps / --micro-batch / --grad-accum, or pass --repeat-data")


def micro_batches(ds: Dataset, *, rank: int, world: int, micro_batch: int, grad_accum: int,
                  pad_id: int, seq_len: int, padding: str) -> Iterator[Batch]:
    """Endless micro-batches for this rank: global batch k is samples [k*G, (k+1)*G) (cycling);
    within it, micro-step m of rank r takes its own contiguous slice."""
    n, gb, step = len(ds.samples), micro_batch * world * grad_accum, 0
    while True:
        base = step * gb
        for m in range(grad_accum):
            first = base + (m * world + rank) * micro_batch
            yield collate([ds.samples[(first + j) % n] for j in range(micro_batch)], pad_id, seq_len, padding)
        step += 1
