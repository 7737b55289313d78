"""The performance model, part 1: what ZeRO communicates per optimizer step, collective by
collective, as DeepSpeed implements it (0.16-0.19, checked against its comms logger by
tests/integration/test_comm_volumes.py), and how long that takes at a bus bandwidth.

Sizes are in DeepSpeed's comms-logger convention (deepspeed/comm/utils.py get_msg_size_from_args:
the tensor handed to the call): an all-reduce and a reduce-scatter count their whole input, an
all-gather one rank's shard. Per optimizer step of `ga` micro-batches, with Psi trainable
parameters, N data-parallel ranks, g bytes per gradient element as communicated and p bytes per
parameter element:

  stage 0  all_reduce      g*Psi          once, at the accumulation boundary (engine.allreduce_gradients)
  stage 1  all_reduce      g*Psi          once, at the boundary: DeepSpeed all-reduces each gradient
                                          bucket (use_multi_rank_bucket_allreduce) where the ZeRO paper
                                          (arXiv 1910.02054, sec. 7) reduce-scatters, so a rank receives
                                          every gradient, not only its partition's
           all_gather      p*Psi/N        each rank's updated partition to every rank (all_gather_dp_groups)
  stage 2  all_reduce      g*Psi*ga       the same buckets, but reduced in every backward as they fill
                                          (partition_gradients): gradient accumulation multiplies it
           all_gather      p*Psi/N        once, after the optimizer step
  stage 3  reduce_scatter  g*Psi*ga       every backward's gradients (reduce_scatter_tensor)
           all_gather      every use of a parameter gathers it when none is kept between uses
                                          (stage3_max_reuse_distance or stage3_max_live_parameters 0, no
                                          persistent parameters): forward, and again in backward, per
                                          micro-batch; a tied embedding is used twice (input and lm_head):
                                          p*(Psi + tied)*2*ga/N. DeepSpeed's parameter cache (both knobs
                                          1e9 by default) keeps gathered parameters for their next use, so
                                          the real figure lies between once per step (p*Psi/N) and that

Scalars (one number: the loss, overflow flags, gradient norms; 8 bytes at most) are left out. The paper's
communication volume, for comparison: 2*Psi per step at stages 0-2 (all-reduce = reduce-scatter
+ all-gather), 3*Psi at stage 3.

Time (nccl-tests, doc/PERFORMANCE.md): bus bandwidth busbw is the rate that makes every
collective comparable to a point-to-point link. For a buffer of S bytes, t = S/algbw and
  all_reduce:      busbw = algbw * 2(N-1)/N   -> t = S * 2(N-1)/N / busbw
  reduce_scatter:  busbw = algbw * (N-1)/N    -> t = S * (N-1)/N / busbw      (S: the whole input)
  all_gather:      busbw = algbw * (N-1)/N    -> t = N*shard * (N-1)/N / busbw = shard*(N-1) / busbw
"""

from __future__ import annotations

from dataclasses import dataclass

OPS = ("all_reduce", "all_gather", "reduce_scatter")
# DeepSpeed's comms-logger names -> ours
LOGGED_AS = {"all_reduce": "all_reduce", "inference_all_reduce": "all_reduce", "all_gather_into_tensor": "all_gather",
             "all_gather": "all_gather", "allgather_fn": "all_gather", "reduce_scatter_tensor": "reduce_scatter",
             "reduce_scatter": "reduce_scatter", "reduce_scatter_fn": "reduce_scatter"}
SCALAR_BYTES = 8  # a message of one number (a loss, an overflow flag, a norm): bookkeeping, not model traffic


@dataclass(frozen=True)
class Volume:
    """Bytes one collective type moves per optimizer step (comms-logger convention): exact when
    low == high, else the range DeepSpeed's parameter cache leaves open."""

    op: str
    low: float
    high: float

    @property
    def exact(self) -> bool:
        return self.low == self.high


def zero_volumes(stage: int, params: int, ranks: int, grad_accum: int, *, grad_bytes: int, param_bytes: int,
                 tied_embedding: int = 0, keeps_params: bool = True) -> dict[str, Volume]:
    """{op: Volume} per optimizer step for one engine (the table in the module docstring).
    tied_embedding: the embedding's parameter count when lm_head shares it, else 0; keeps_params:
    whether DeepSpeed's ZeRO-3 parameter cache may keep a gathered parameter for its next use."""
    if ranks <= 1:
        return {}  # a world of one: DeepSpeed communicates nothing that the model counts
    g, p, ga = grad_bytes * params, param_bytes * params, grad_accum
    if stage == 0:
        return {"all_reduce": Volume("all_reduce", g, g)}
    if stage in (1, 2):
        reduced = g * (ga if stage == 2 else 1)
        return {"all_reduce": Volume("all_reduce", reduced, reduced),
                "all_gather": Volume("all_gather", p / ranks, p / ranks)}
    if stage == 3:
        every_use = param_bytes * (params + tied_embedding) * 2 * ga / ranks
        return {"reduce_scatter": Volume("reduce_scatter", g * ga, g * ga),
                "all_gather": Volume("all_gather", p / ranks if keeps_params else every_use, every_use)}
    raise ValueError(f"ZeRO stage {stage}")


def reference_volumes(ref_stage: int, params: int, ranks: int, grad_accum: int, *, param_bytes: int,
                      tied_embedding: int = 0, keeps_params: bool = True) -> dict[str, Volume]:
    """DPO's frozen reference engine: at ZeRO-3 its forward gathers every parameter it uses, per
    micro-batch (a tied embedding twice), or once per step when the cache keeps them; no gradients."""
    if ref_stage != 3 or ranks <= 1:
        return {}
    every_use = param_bytes * (params + tied_embedding) * grad_accum / ranks
    return {"all_gather": Volume("all_gather", param_bytes * params / ranks if keeps_params else every_use, every_use)}


def keeps_params(zero_optimization: dict, params: int | None = None) -> bool:
    """Whether DeepSpeed's ZeRO-3 may keep a gathered parameter for its next use (its defaults: yes),
    and, given the model's size, whether its parameters fit under the cache's limits (live parameters
    and reuse distance, 1e9 each by default). The memory model's buffers use the same rule."""
    z = zero_optimization or {}
    no_cache = z.get("stage3_max_reuse_distance", 1e9) == 0 or z.get("stage3_max_live_parameters", 1e9) == 0
    if no_cache and z.get("stage3_param_persistence_threshold", 1e5) == 0:
        return False
    # a model's parameters stay gathered from forward to backward while they fit under both limits
    limits = [z.get(k, 1e9) for k in ("stage3_max_live_parameters", "stage3_max_reuse_distance")]
    return params is None or all(not isinstance(v, (int, float)) or params <= v for v in limits)


def bus_bytes(op: str, size: float, ranks: int) -> float:
    """What a collective of `size` bytes (comms-logger convention) puts on the bus, by nccl-tests'
    definitions: divide by the bus bandwidth for its time."""
    n = ranks
    if n <= 1:
        return 0.0
    if op == "all_reduce":
        return size * 2 * (n - 1) / n
    if op == "reduce_scatter":
        return size * (n - 1) / n
    if op == "all_gather":
        return size * (n - 1)  # size is one rank's shard
    raise ValueError(f"unknown collective {op!r}")


def comm_seconds(volumes: dict[str, Volume], ranks: int, busbw_bytes_per_s: float, *, high: bool = True) -> float:
    """Seconds the step's collectives take at this bus bandwidth, none of it hidden by overlap."""
    return sum(bus_bytes(v.op, v.high if high else v.low, ranks) for v in volumes.values()) / busbw_bytes_per_s


def logged_volumes(comms_per_step: dict) -> dict[str, float]:
    """A record's metrics.comms_per_step (DeepSpeed's comms logger) as {op: bytes per step}, scalars left out."""
    out: dict[str, float] = {}
    for name, entry in comms_per_step.items():
        op = LOGGED_AS.get(name)
        if op is None:
            continue
        total = sum(float(size) * calls for size, calls in entry["sizes"].items() if float(size) > SCALAR_BYTES)
        if total:
            out[op] = out.get(op, 0.0) + total
    return out


def step_bus_bytes(world: int, *, stage: int, task: str, ref_stage: int, params: int, grad_accum: int,
                   dtype_bytes: int, tied: int, keeps: bool) -> float:
    """Bus bytes of one optimizer step's collectives (the policy's, and DPO's reference engine's):
    exact volumes have low == high; with DeepSpeed's cache kept, ZeRO-3's floor (once per step)."""
    vols = list(zero_volumes(stage, params, world, grad_accum, grad_bytes=dtype_bytes, param_bytes=dtype_bytes,
                             tied_embedding=tied, keeps_params=keeps).values())
    if task == "dpo":
        vols += reference_volumes(ref_stage, params, world, grad_accum, param_bytes=dtype_bytes,
                                  tied_embedding=tied, keeps_params=keeps).values()
    return sum(bus_bytes(v.op, v.low, world) for v in vols)


# --- step time ----------------------------------------------------------------------------------------
# step time = compute + communication not hidden + offload + a fixed per-step cost, for one rank:
#   compute = FLOPs of the step (tokens fed x model FLOPs per token) / achieved FLOP/s
#   communication = bus bytes of the step's collectives / bus bandwidth: within a node when the run has
#                   one, across nodes otherwise (a ring or tree spanning nodes runs at its slowest
#                   link). No overlap: what is fitted is the exposed part; gloo on a CPU overlaps nothing
#   offload = ZeRO-Offload (arXiv 2101.06840, sec. 4): per step a rank's gradient partition goes to the
#             host and its updated parameter partition comes back over PCIe, and the host's Adam
#             updates the partition; parameter offload (ZeRO-3) also brings the partition's parameters
#             from the host for every micro-batch's forward and backward (offload_seconds)
#   fixed = per task and stage: the optimizer step, ZeRO's hooks and bookkeeping, the launch of
#           each collective, DPO's reference engine
# bench/planning/calibrate.py fits the coefficients to measured runs; `invoke plan` without measurements uses
# nominal ones (NOMINAL_* below, stated on its output).


@dataclass(frozen=True)
class StepCoefficients:
    """Fitted from measured runs (bench/planning/calibrate.py says which), or nominal (`nominal`)."""

    flops_per_s: float               # achieved per rank
    busbw_bytes_per_s: float | None  # within a node (emulated nodes: the only one); None: nothing to fit it from
    fixed_s: dict                    # "task zero-stage" -> seconds per step
    inter_busbw_bytes_per_s: float | None = None  # across nodes; None: as within
    pcie_bytes_per_s: float | None = None          # host <-> device, for offload
    cpu_adam_params_per_s: float | None = None     # parameters the host's Adam updates per second, per rank

    def busbw(self, nodes: int) -> float | None:
        return self.inter_busbw_bytes_per_s if nodes > 1 and self.inter_busbw_bytes_per_s else self.busbw_bytes_per_s


# Nominal figures for planning before anything is measured; each is a flag of `invoke plan`.
NOMINAL_MFU = 0.40            # dense bf16 fine-tuning on H100 commonly reaches 35-45% MFU
NOMINAL_BUSBW_INTRA = 360e9   # NVLink 4 (900 GB/s per GPU): nccl-tests all_reduce busbw on 8 x H100, large messages
NOMINAL_BUSBW_INTER = 45e9    # one 400 Gb/s NIC per GPU at ~90%: a ring's bound across nodes
                              # (NCCL's tree/SHARP do better)
NOMINAL_PCIE = 40e9           # PCIe Gen5 x16 host <-> device, achieved
NOMINAL_CPU_ADAM = 1e9 / 8    # DeepSpeed's CPU Adam, ~1e9 parameters/s per node shared by its 8 ranks


def nominal(peak_flops: float, *, mfu: float = NOMINAL_MFU, busbw_intra: float = NOMINAL_BUSBW_INTRA,
            busbw_inter: float = NOMINAL_BUSBW_INTER) -> StepCoefficients:
    """Coefficients from a device's peak and link rates, no fixed cost: an estimate to rank with."""
    return StepCoefficients(flops_per_s=peak_flops * mfu, busbw_bytes_per_s=busbw_intra, fixed_s={},
                            inter_busbw_bytes_per_s=busbw_inter, pcie_bytes_per_s=NOMINAL_PCIE,
                            cpu_adam_params_per_s=NOMINAL_CPU_ADAM)


def offload_seconds(offload_optimizer: bool, offload_param: bool, params: int, ranks: int, grad_accum: int,
                    value_bytes: int, k: StepCoefficients, stage: int = 3) -> float:
    """Seconds one step spends moving a rank's partition over PCIe and in the host's Adam, for every
    offload choice (so any offload predicts a longer step than none). Per step, w bytes a value:
      optimizer offload: each backward's reduced gradient partition goes down (ZeRO-2/3: every
        micro-batch; ZeRO-1: once, at the boundary), the host's Adam updates the partition, and the
        updated 16-bit partition comes back up: w·Ψ/N·(ga or 1) + w·Ψ/N, and Ψ/N host-Adam updates;
      parameter offload (ZeRO-3): every micro-batch's forward and backward bring the 16-bit partition
        up from the host before the all-gather: 2·ga·w·Ψ/N; without optimizer offload the optimizer
        step on the device writes the updated partition back down: + w·Ψ/N."""
    if not (offload_optimizer or offload_param) or not k.pcie_bytes_per_s:
        return 0.0
    part = value_bytes * params / ranks
    moved = 0.0
    if offload_optimizer:
        moved += part * (grad_accum if stage >= 2 else 1) + part
    if offload_param:
        moved += 2 * grad_accum * part + (0 if offload_optimizer else part)
    adam = params / ranks / k.cpu_adam_params_per_s if offload_optimizer and k.cpu_adam_params_per_s else 0.0
    return moved / k.pcie_bytes_per_s + adam


def step_seconds(compute_flops: float, bus: float, key: str, k: StepCoefficients, *, nodes: int = 1,
                 offload_s: float = 0.0) -> float:
    """Predicted seconds of one optimizer step on one rank."""
    busbw = k.busbw(nodes)
    comm = bus / busbw if bus and busbw else 0.0
    return compute_flops / k.flops_per_s + comm + offload_s + k.fixed_s.get(key, 0.0)
