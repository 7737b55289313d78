"""Predicted memory per device for a training config: pure arithmetic, no torch.

Model states (Ψ parameters, N data-parallel ranks, Adam, w bytes per 16-bit value), bytes per rank,
where DeepSpeed (0.16-0.19) puts each tensor for every offload_optimizer x offload_param choice.
Where DeepSpeed has an estimator we agree with it exactly (deepspeed/runtime/zero/stage_1_and_2.py
`estimate_zero2_model_states_mem_needs`, stage3.py `estimate_zero3_model_states_mem_needs`, both
without their 1.5x "additional buffer factor"); the rest is derived from the optimizers' __init__:
  ZeRO-1/2, no offload: 2Ψ (16-bit params) + 18Ψ/N (16-bit grads 2, fp32 grads 4, fp32 params 4,
          Adam 8); ZeRO-1 keeps full 16-bit gradients (2Ψ + 2Ψ + 16Ψ/N); ZeRO-0 shards nothing (20Ψ).
  ZeRO-1/2, offload_optimizer: 2Ψ on the device (the estimator's). Host (stage_1_and_2.py __init__,
          self.device = 'cpu'): the fp32 partition `single_partition_of_fp32_groups` 4, Adam m and v 8,
          the fp32 gradient partition it accumulates on the CPU 4, and `param_buffer_of_bit16_for_cpu_
          offload_groups` w: (16 + w)Ψ/N; pinned (offload_optimizer.pin_memory): the fp32 partition and
          the 16-bit buffer, (4 + w)Ψ/N.
  ZeRO-3, no offload: 4·largest_layer (one gathered layer's params and grads) + 18Ψ/N (the estimator's).
  ZeRO-3, offload_optimizer (stage3.py: self.device = 'cpu' for the fp32 partition, Adam, the fp32
          gradient buffers and `grad_partitions_flat_buffer`): 4·largest + wΨ/N (16-bit params) on the
          device (the estimator's); host (16 + w)Ψ/N, pinned with pin_memory: the gradient buffers (4 + w)Ψ/N.
  ZeRO-3, offload_param alone: DeepSpeed takes it and has no estimator for it. Only the 16-bit
          parameter partition moves (`_create_param_groups_fp16_flat_cpu_memory`, always pinned): wΨ/N
          on the host. The fp32 master partition, Adam's moments and the gradient partitions stay where
          self.device says, on the GPU: 4·largest + (w + 14)Ψ/N on the device, the no-offload figure
          less the parameters. (Offloading parameters without the optimizer saves 2 of 18 bytes.)
  ZeRO-3, both: 4·largest on the device (the estimator's); host (2w + 16)Ψ/N, pinned wΨ/N + the
          gradient buffers' (4 + w)Ψ/N with pin_memory.
  DeepSpeed 0.18+ pins by default (pin_memory: true); 0.16 did not. Pinned pages cannot be swapped
  and come out of the same RAM: they are counted in the host figure, and shown on their own.
  NVMe (ZeRO-Infinity, ZeRO-3 only; `device: nvme`): what goes to the drive leaves the host figure
  (nvme_gib) and pinned swap buffers take its place (nvme_share): for the optimizer, the fp32
  partition, Adam's moments and the fp32 gradients are swapped, the 16-bit gradient partition stays
  in RAM, and buffer_count buffers of the largest sub-group (min(sub_group_size, Ψ/N) fp32 values;
  swap_tensor/optimizer_utils.py) are pinned; for the parameters, up to max_in_cpu of the 16-bit
  partition stay in pinned RAM (stage3.py) and buffer_count x buffer_size values are pinned for the
  swaps (swap_tensor/partitioned_param_swapper.py).
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

from stackbench.core import perf_model
from stackbench.core.config import RunConfig
from stackbench.core.host import GIB


@dataclass(frozen=True, slots=True)
class MemoryPrediction:
    model_states_gib: float   # parameters, gradients, optimizer states on the device
    activations_gib: float
    logits_gib: float
    reference_gib: float      # DPO's frozen reference model
    buffers_gib: float        # DeepSpeed's fixed buffers (reduce buckets, ZeRO-3's kept parameters)
    total_gib: float
    host_gib: float           # what offload puts in CPU memory, per rank (pinned included)
    host_pinned_gib: float    # of which page-locked (pinned), per rank
    paper_model_states_gib: float  # the ZeRO paper's textbook figure, for comparison
    fits: bool | None         # the device: None when its memory is unknown; on a CPU (one pool) host included
    host_fits: bool | None = None  # the host's RAM per node for every rank's host share: None when unknown
    nvme_gib: float = 0.0     # what ZeRO-Infinity keeps on NVMe, per rank

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Placement:
    """Model-state bytes per rank, by where DeepSpeed keeps them (see the module doc)."""

    device: float
    host: float = 0.0
    pinned: float = 0.0  # of host: page-locked


def model_states_bytes(params: int, largest_layer: int, ranks: int, stage: int, offload_optimizer: bool,
                       offload_param: bool, value_bytes: int = 2, pin_memory: bool = True) -> Placement:
    """Parameters + gradients + Adam states per rank, on the device and on the host (the module doc)."""
    p, n, w = params, ranks, value_bytes
    grad_buffers = (4 + w) * p / n if pin_memory else 0.0  # pinned gradient / fp32 buffers of optimizer offload
    if stage == 3:
        gather = 2 * w * largest_layer  # a gathered layer's params and grads
        states = (2 * w + 14) * p / n  # 16-bit params and grads, then fp32 params, fp32 grads' share, Adam m and v
        if offload_optimizer and offload_param:
            return Placement(gather, (2 * w + 16) * p / n, w * p / n + grad_buffers)
        if offload_optimizer:
            return Placement(gather + w * p / n, (w + 16) * p / n, grad_buffers)
        if offload_param:  # only the 16-bit partition moves (always pinned); the optimizer stays on the device
            return Placement(gather + states - w * p / n, w * p / n, w * p / n)
        return Placement(gather + states)
    optim = 16 * p  # fp32 grads 4, fp32 params 4, Adam m and v 8
    grads = w * p / (n if stage >= 2 else 1)
    if offload_optimizer:
        return Placement(w * p + (grads if stage == 1 else 0), (16 + w) * p / n, grad_buffers)
    return Placement(w * p + grads + optim / (n if stage >= 1 else 1))


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
    pin_memory: bool = True  # offload_optimizer.pin_memory: DeepSpeed 0.18+'s default (0.16's: false)
    sub_group_size: float = 1e9
    optimizer_nvme: bool = False  # offload_optimizer.device == "nvme"
    optimizer_buffer_count: int = 4  # offload_optimizer.buffer_count
    param_nvme: bool = False  # offload_param.device == "nvme"
    param_buffer_count: int = 5  # offload_param.buffer_count
    param_buffer_size: float = 1e8  # offload_param.buffer_size (values)
    param_max_in_cpu: float = 1e9  # offload_param.max_in_cpu (values kept in RAM)

    @classmethod
    def of(cls, zero_optimization: dict | None, hidden: int | None = None) -> "ZeroKnobs":
        """From a DeepSpeed config's zero_optimization; an "auto" value is what the Hugging Face
        Trainer fills in (transformers/integrations/deepspeed.py: hidden^2 for the reduce bucket,
        0.9 hidden^2 for the prefetch bucket), else DeepSpeed's default."""
        z, out = zero_optimization or {}, {}
        auto = {"reduce_bucket_size": 1.0, "stage3_prefetch_bucket_size": 0.9}
        opt = z.get("offload_optimizer") if isinstance(z.get("offload_optimizer"), dict) else {}
        par = z.get("offload_param") if isinstance(z.get("offload_param"), dict) else {}
        nested = {"pin_memory": opt.get("pin_memory"), "optimizer_buffer_count": opt.get("buffer_count"),
                  "param_buffer_count": par.get("buffer_count"), "param_buffer_size": par.get("buffer_size"),
                  "param_max_in_cpu": par.get("max_in_cpu")}
        out.update({k: v for k, v in nested.items() if isinstance(v, (bool, int, float))})
        out["optimizer_nvme"], out["param_nvme"] = opt.get("device") == "nvme", par.get("device") == "nvme"
        for f in fields(cls):
            if f.name in nested or f.name.endswith("_nvme"):
                continue
            v = z.get(f.name)
            if v == "auto" and f.name in auto and hidden:
                out[f.name] = auto[f.name] * hidden * hidden
            elif isinstance(v, (bool, int, float)) and not isinstance(v, str):
                out[f.name] = v
        return cls(**out)


def nvme_share(states: Placement, params: int, ranks: int, value_bytes: int, knobs: ZeroKnobs,
               offload_optimizer: bool, offload_param: bool) -> tuple[Placement, float]:
    """ZeRO-3's host figures when offload goes to NVMe (the module doc): (the placement with the host
    share that stays in RAM, bytes on the drive), per rank."""
    part, w = params / ranks, value_bytes
    host, pinned, drive = states.host, states.pinned, 0.0
    if offload_optimizer and knobs.optimizer_nvme:
        swapped = 16 * part  # fp32 partition 4, Adam m and v 8, fp32 gradients 4
        buffers = knobs.optimizer_buffer_count * min(knobs.sub_group_size, part) * 4
        host, pinned, drive = host - swapped + buffers, max(0.0, pinned - 4 * part) + buffers, drive + swapped
    if offload_param and knobs.param_nvme:
        in_ram = min(part, knobs.param_max_in_cpu) * w
        buffers = knobs.param_buffer_count * knobs.param_buffer_size * w
        host = host - w * part + in_ram + buffers
        pinned = pinned - w * part + in_ram + buffers
        drive += w * part - in_ram
    return Placement(states.device, host, pinned), drive


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
            knobs: ZeroKnobs | None = None, touched_only: bool = False, host_node_gib: float | None = None,
            ranks_per_node: int = 1, one_pool: bool = False) -> MemoryPrediction:
    """device_gib: what one rank may use of its device; host_node_gib: what the ranks of one node may
    use of its RAM (None: unknown); one_pool: the device is the host's RAM (a CPU run), so the host
    share is counted once, against device_gib."""
    value_bytes = 2 if mixed_precision else 4
    knobs = knobs or ZeroKnobs()
    states = model_states_bytes(params, largest_layer, ranks, stage, offload_optimizer, offload_param, value_bytes,
                                knobs.pin_memory)
    drive = 0.0
    if stage == 3 and (knobs.optimizer_nvme or knobs.param_nvme):
        states, drive = nvme_share(states, params, ranks, value_bytes, knobs, offload_optimizer, offload_param)
    dev, host = states.device, states.host
    buffers = buffer_bytes(stage, params, largest_layer, ranks, knobs, value_bytes, touched_only)
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
    fits = None if device_gib is None else total + (host if one_pool else 0) <= device_gib * GIB
    if one_pool or not host:
        host_fits = True  # nothing offloaded, or counted with the device above
    else:
        host_fits = None if host_node_gib is None else host * ranks_per_node <= host_node_gib * GIB
    paper = paper_model_states_bytes(params, ranks, stage)
    return MemoryPrediction(model_states_gib=dev / GIB, activations_gib=acts / GIB, logits_gib=logits / GIB,
                            reference_gib=ref / GIB, buffers_gib=buffers / GIB, total_gib=total / GIB,
                            host_gib=host / GIB, host_pinned_gib=states.pinned / GIB,
                            paper_model_states_gib=paper / GIB, fits=fits,
                            host_fits=host_fits, nvme_gib=drive / GIB)


def predict_for(shape, cfg: RunConfig, *, dtype: str, device_gib: float | None, zero_optimization: dict | None = None,
                device_type: str = "cuda", host_node_gib: float | None = None) -> MemoryPrediction:
    """`predict` for a model shape (trainer.models.ModelShape) and a run config, in the resolved
    dtype: the one call the trainer's record, bench's fit check and the planner share.
    zero_optimization: the run's DeepSpeed config section (its buffer sizes); device_type "cpu":
    count the buffer pages a CPU's RSS shows, and the offloaded states in the same pool as the device's;
    host_node_gib: a GPU node's RAM for its ranks' offloaded states."""
    return predict(params=shape.params, largest_layer=shape.largest_layer, layers=shape.layers, hidden=shape.hidden,
                   heads=shape.heads, vocab=shape.vocab, task=cfg.task, stage=cfg.zero_stage, ranks=cfg.world_size,
                   micro_batch=cfg.micro_batch, seq_len=cfg.seq_len, offload_optimizer=cfg.offload_optimizer,
                   offload_param=cfg.offload_param, mixed_precision=dtype != "fp32",
                   fused_attention=cfg.attn_impl != "eager", recompute=cfg.grad_checkpointing, device_gib=device_gib,
                   ref_stage=cfg.ref_zero_stage, knobs=ZeroKnobs.of(zero_optimization, shape.hidden),
                   touched_only=device_type == "cpu", host_node_gib=host_node_gib, ranks_per_node=cfg.gpus_per_node,
                   one_pool=device_type == "cpu")
