"""A rank's micro-batches: padded rows, or (--packing, sft and dpo) the unpacked run's samples
of each micro-batch laid into as few seq_len rows as they fit, position ids restarting per sample
and attention kept within each sample: the same samples, the same loss, less padding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stackbench.trainer.data.dataset import IGNORE, Dataset, Sample


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
    for row, (i, targets) in enumerate(seqs):  # right padding
        ids[row, : len(i)] = torch.tensor(i)
        labels[row, : len(targets)] = torch.tensor(targets)
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
            i, targets = seqs[k]
            n = len(i)
            ids[r, at:at + n], labels[r, at:at + n] = torch.tensor(i), torch.tensor(targets)
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
