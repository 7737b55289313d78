"""Predicted memory per device for a training config: pure arithmetic, no torch.

Model states (Ψ parameters, N data-parallel ranks, Adam), bytes per rank, exactly as DeepSpeed's
own estimators count them (deepspeed/runtime/zero/stage_1_and_2.py
`estimate_zero2_model_states_mem_needs`; stage3.py `estimate_zero3_model_states_mem_needs`):
  ZeRO-2: 2Ψ (16-bit params) + 18Ψ/N (16-bit grads 2, fp32 grads 4, fp32 params 4, Adam 8);
          optimizer offload: 2Ψ on the device, the 16Ψ/N optimizer share on the host.
  ZeRO-3: 4·largest_layer (one gathered layer) + 18Ψ/N (16-bit params 2 + 16-bit grads 2 + 14);
          optimizer offload (gradients move too): 4·largest + 2Ψ/N; parameter offload too: 4·largest.
  ZeRO-1 keeps full 16-bit gradients (2Ψ + 2Ψ + 16Ψ/N); ZeRO-0 shards nothing (20Ψ).
  Host figures are per rank without DeepSpeed's 1.5x buffer factor.
The ZeRO paper's textbook figures sit beside them (arXiv 1910.02054, K = 12 for Adam): ZeRO-1
4Ψ + 12Ψ/N, ZeRO-2 2Ψ + 14Ψ/N, ZeRO-3 16Ψ/N, no ZeRO 16Ψ.
fp32 training (CPU here): the 16-bit params and grads become 4 bytes each.

Activations per layer (Korthikanti et al., arXiv 2205.05198, eq. 2, 16-bit): s·b·h·(34 + 5·a·s/h)
bytes. A fused attention kernel (sdpa / flash) never stores the a·s² score matrix, so the 5as/h
term is dropped for them. Full recomputation keeps only each layer's input: 2·s·b·h. fp32 doubles
everything. Logits: s·b·V in fp32 (the loss upcasts) plus their gradient. DPO feeds chosen and
rejected (2b sequences) and adds the frozen reference model's 16-bit weights (partitioned under
ZeRO-3) and its forward's logits.
DeepSpeed's fixed buffers (ZeroKnobs; deepspeed/runtime/zero/stage_1_and_2.py setup_buckets,
stage3.py __init__, DeepSpeed 0.16-0.19), beyond the model states, sized by its config, not the model:
  ZeRO-1/2 with contiguous_gradients (default on): reduce_bucket_size elements (default 5e8) in the
          gradients' dtype while gradients are reduced, twice with overlap_comm (double buffering).
  ZeRO-3: one reduce bucket of reduce_bucket_size for the whole run (contiguous_gradients), and the
          gathered parameters DeepSpeed keeps for their next use: every parameter while the model's
          are within stage3_max_live_parameters and stage3_max_reuse_distance (1e9 each by default:
          a model under 1e9 parameters stays gathered from forward to backward), else the prefetch
          bucket beyond the layer being computed.
  ZeRO-0: the engine flattens gradients into buckets of up to 5e8 elements to all-reduce them.
A GPU's allocator counts a buffer whole; a CPU's RSS only the pages written, at most the model's
size of a bucket (touched_only). tests/integration/test_memory_buffers.py checks these sizes
against the tensors DeepSpeed allocates.
This is a first model: `invoke report` puts it next to the measured peaks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from core import perf_model
from core.config import RunConfig
from core.host import GIB


@dataclass(frozen=True, slots=True)
class MemoryPrediction:
    model_states_gib: float   # parameters, gradients, optimizer states on the device
    activations_gib: float
    logits_gib: float
    reference_gib: float      # DPO's frozen reference model
    buffers_gib: float        # DeepSpeed's fixed buffers (reduce buckets, ZeRO-3's kept parameters)
    total_gib: float
    host_gib: float           # what offload moves to CPU memory (per rank)
    paper_model_states_gib: float  # the ZeRO paper's textbook figure, for comparison
    fits: bool | None         # None when the device memory is unknown

    def to_dict(self) -> dict:
        return asdict(self)


def model_states_bytes(params: int, largest_layer: int, ranks: int, stage: int, offload_optimizer: bool,
                       offload_param: bool, value_bytes: int = 2) -> tuple[float, float]:
    """(device bytes, host bytes) per rank for parameters + gradients + Adam states (see the module doc)."""
    p, n, w = params, ranks, value_bytes
    if stage == 3:
        gather = 2 * w * largest_layer  # a gathered layer's params and grads
        optim = 14 * p  # fp32 params, grads' fp32 partition share, Adam m and v
        if offload_param:
            return gather, (2 * w * p + optim) / n
        if offload_optimizer:  # gradients go to the host with the optimizer
            return gather + w * p / n, (w * p + optim) / n
        return gather + (2 * w * p + optim) / n, 0.0
    optim = 16 * p  # fp32 grads 4, fp32 params 4, Adam m and v 8
    grads = w * p / (n if stage >= 2 else 1)
    if offload_optimizer:
        return w * p + (grads if stage == 1 else 0), optim / n
    return w * p + grads + optim / (n if stage >= 1 else 1), 0.0


ALLREDUCE_BUCKET = 5e8  # deepspeed/runtime/engine.py MEMORY_OPT_ALLREDUCE_SIZE, ZeRO-0's gradient buckets


@dataclass(frozen=True)
class ZeroKnobs:
    """The zero_optimization keys that size DeepSpeed's fixed buffers, at DeepSpeed's defaults
    (deepspeed/runtime/zero/config.py)."""

    reduce_bucket_size: float = 5e8
    contiguous_gradients: bool = True
    overlap_comm: bool | None = None  # None: DeepSpeed's default, on at ZeRO-3 only
    stage3_max_live_parameters: float = 1e9
    stage3_max_reuse_distance: float = 1e9
    stage3_prefetch_bucket_size: float = 5e7

    @classmethod
    def of(cls, zero_optimization: dict | None, hidden: int | None = None) -> "ZeroKnobs":
        """From a DeepSpeed config's zero_optimization; an "auto" value is what the Hugging Face
        Trainer fills in (transformers/integrations/deepspeed.py: hidden^2 for the reduce bucket,
        0.9 hidden^2 for the prefetch bucket), else DeepSpeed's default."""
        z, out = zero_optimization or {}, {}
        auto = {"reduce_bucket_size": 1.0, "stage3_prefetch_bucket_size": 0.9}
        for f in fields(cls):
            v = z.get(f.name)
            if v == "auto" and f.name in auto and hidden:
                out[f.name] = auto[f.name] * hidden * hidden
            elif isinstance(v, (bool, int, float)) and not isinstance(v, str):
                out[f.name] = v
        return cls(**out)


def buffer_bytes(stage: int, params: int, largest_layer: int, ranks: int, knobs: ZeroKnobs, value_bytes: int,
                 touched_only: bool = False) -> float:
    """DeepSpeed's fixed buffers per rank (see the module doc); touched_only: what a CPU's RSS shows."""
    def bucket(size: float) -> float:
        return (min(size, params) if touched_only else size) * value_bytes

    overlap = knobs.overlap_comm if knobs.overlap_comm is not None else stage == 3
    if stage == 0:  # flattened copies of the gradients, at most a bucket: allocated at their size on a GPU too
        return min(ALLREDUCE_BUCKET, params) * value_bytes if ranks > 1 else 0.0
    if stage in (1, 2):
        return (2 if overlap else 1) * bucket(knobs.reduce_bucket_size) if knobs.contiguous_gradients else 0.0
    ipg = bucket(knobs.reduce_bucket_size) if knobs.contiguous_gradients else 0.0
    kept_all = perf_model.keeps_params({"stage3_max_live_parameters": knobs.stage3_max_live_parameters,
                                        "stage3_max_reuse_distance": knobs.stage3_max_reuse_distance}, params)
    kept = params if kept_all else min(params, largest_layer + knobs.stage3_prefetch_bucket_size)
    return ipg + max(0.0, kept - largest_layer) * value_bytes  # the layer being computed is in the model states


def paper_model_states_bytes(params: int, ranks: int, stage: int) -> float:
    """ZeRO paper, K = 12: stage 0 16Ψ, 1: 4Ψ + 12Ψ/N, 2: 2Ψ + 14Ψ/N, 3: 16Ψ/N."""
    p, n = params, ranks
    return {0: 16 * p, 1: 4 * p + 12 * p / n, 2: 2 * p + 14 * p / n, 3: 16 * p / n}[stage]


def activation_bytes(seq_len: int, micro_batch: int, hidden: int, heads: int, layers: int,
                     fused_attention: bool, recompute: bool, bytes_per_value: int = 2) -> float:
    s, b, h, a = seq_len, micro_batch, hidden, heads
    if recompute:
        per_layer = 2 * s * b * h
    else:
        per_layer = s * b * h * (34 + (0 if fused_attention else 5 * a * s / h))
    return per_layer * layers * bytes_per_value / 2


def logits_bytes(seq_len: int, micro_batch: int, vocab: int) -> float:
    """fp32 logits and their gradient."""
    return 2 * seq_len * micro_batch * vocab * 4


def predict(*, params: int, largest_layer: int, layers: int, hidden: int, heads: int, vocab: int,
            task: str, stage: int, ranks: int, micro_batch: int, seq_len: int, offload_optimizer: bool = False,
            offload_param: bool = False, mixed_precision: bool = True, fused_attention: bool = True,
            recompute: bool = False, device_gib: float | None = None, ref_stage: int | None = None,
            knobs: ZeroKnobs | None = None, touched_only: bool = False) -> MemoryPrediction:
    value_bytes = 2 if mixed_precision else 4
    dev, host = model_states_bytes(params, largest_layer, ranks, stage, offload_optimizer, offload_param,
                                   value_bytes)
    buffers = buffer_bytes(stage, params, largest_layer, ranks, knobs or ZeroKnobs(), value_bytes, touched_only)
    seqs = micro_batch * (2 if task == "dpo" else 1)
    acts = activation_bytes(seq_len, seqs, hidden, heads, layers, fused_attention, recompute, value_bytes)
    logits = logits_bytes(seq_len, seqs, vocab)
    ref = 0.0
    if task == "dpo":
        ref_weights = value_bytes * params
        ref_stage = (3 if stage == 3 else 0) if ref_stage is None else ref_stage
        ref = (ref_weights / ranks + 2 * largest_layer if ref_stage == 3 else ref_weights)
        ref += logits / 2  # its forward's logits, no gradient
    total = dev + buffers + acts + logits + ref
    fits = None if device_gib is None else total <= device_gib * GIB
    paper = paper_model_states_bytes(params, ranks, stage)
    return MemoryPrediction(model_states_gib=dev / GIB, activations_gib=acts / GIB, logits_gib=logits / GIB,
                            reference_gib=ref / GIB, buffers_gib=buffers / GIB, total_gib=total / GIB, host_gib=host / GIB,
                            paper_model_states_gib=paper / GIB, fits=fits)


def predict_for(shape, cfg: RunConfig, *, dtype: str, device_gib: float | None, zero_optimization: dict | None = None,
                device_type: str = "cuda") -> MemoryPrediction:
    """`predict` for a model shape (trainer.models.ModelShape) and a run config, in the resolved
    dtype: the one call the trainer's record, bench's fit check and the planner share.
    zero_optimization: the run's DeepSpeed config section (its buffer sizes); device_type "cpu":
    count the buffer pages a CPU's RSS shows."""
    return predict(params=shape.params, largest_layer=shape.largest_layer, layers=shape.layers, hidden=shape.hidden,
                   heads=shape.heads, vocab=shape.vocab, task=cfg.task, stage=cfg.zero_stage, ranks=cfg.world_size,
                   micro_batch=cfg.micro_batch, seq_len=cfg.seq_len, offload_optimizer=cfg.offload_optimizer,
                   offload_param=cfg.offload_param, mixed_precision=dtype != "fp32",
                   fused_attention=cfg.attn_impl != "eager", recompute=cfg.grad_checkpointing, device_gib=device_gib,
                   ref_stage=cfg.ref_zero_stage, knobs=ZeroKnobs.of(zero_optimization, shape.hidden),
                   touched_only=device_type == "cpu")
