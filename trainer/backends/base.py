"""The backend contract: `train(ctx) -> Result`. A backend trains with what the context gives
(the run config, the DeepSpeed config, the model reference and weights, this rank's micro-batches)
and measures through `ctx.meter`, around each optimizer step; the trainer does the rest (input
checks before any collective, the process group, gathering, the record)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from stackbench.core.config import Launch, RunConfig, knob_fields
from stackbench.trainer.data.batches import Batch
from stackbench.trainer.data.dataset import Dataset
from stackbench.trainer.metrics import Meter
from stackbench.trainer.models import Attention, ModelRef


@dataclass(frozen=True, slots=True)
class Topology:
    rank: int
    world: int
    local_rank: int
    local_world: int

    @property
    def nodes(self) -> int:
        return max(1, self.world // self.local_world)

    @classmethod
    def from_env(cls) -> "Topology":
        env = os.environ
        world = int(env.get("WORLD_SIZE", 1))
        return cls(int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)),
                   int(env.get("LOCAL_WORLD_SIZE", world)))


@dataclass(slots=True)
class Context:
    cfg: RunConfig
    launch: Launch
    ref: ModelRef
    attention: Attention      # the implementation the model is built with (asked for, or the fallback)
    tokenizer: Any
    dataset: Dataset
    ds_config: dict           # what DeepSpeed gets (a backend that must change it changes it here: it is recorded)
    ds_provenance: dict       # where it came from: source, --ds overrides, what stackbench changed (ds_config.py)
    dtype: str                # resolved: bf16, fp16 or fp32
    torch_dtype: Any
    weights: str | None       # a directory to load, or None: random init from the config
    topo: Topology
    device: Any
    batches: Iterator[Batch]  # this rank's micro-batches, endless, in the order every backend feeds them
    meter: Meter

    @property
    def work_dir(self) -> str:
        """Where a backend may write (its trainer's output_dir)."""
        return os.path.join(self.launch.out, f"{self.launch.run_id or self.cfg.run_id}-{self.cfg.backend}")


def engine_readback(engine: Any) -> dict[str, Any]:
    """What DeepSpeed built, read from the engine and its optimizer (not echoed from the config
    it was given): the record's proof that a user's config took effect."""
    def call(name: str) -> Any:
        fn = getattr(engine, name, None)
        try:
            return fn() if callable(fn) else None
        except Exception:  # noqa: BLE001 - a getter this DeepSpeed version lacks or cannot answer
            return None

    def device(offload: Any) -> str:
        dev = getattr(offload, "device", None)
        return str(getattr(dev, "value", dev) or "none") if offload is not None else "none"

    optimizer = getattr(engine, "optimizer", None)
    inner = getattr(optimizer, "optimizer", optimizer)  # ZeRO wraps the torch / DeepSpeed optimizer
    group = dict((getattr(inner, "param_groups", None) or [{}])[0])
    param = next(iter(engine.module.parameters()), None)
    return {
        "zero_stage": call("zero_optimization_stage"), "micro_batch": call("train_micro_batch_size_per_gpu"),
        "grad_accum": call("gradient_accumulation_steps"), "train_batch_size": call("train_batch_size"),
        "gradient_clipping": call("gradient_clipping"), "bf16": call("bfloat16_enabled"), "fp16": call("fp16_enabled"),
        "offload_optimizer": device(call("zero_offload_optimizer")),
        "offload_param": device(call("zero_offload_param")),
        "reduce_bucket_size": call("zero_reduce_bucket_size"), "overlap_comm": call("zero_overlap_comm"),
        "optimizer": type(inner).__name__ if inner is not None else None,
        # torch's AdamW says which kernel it steps with; DeepSpeed's own (FusedAdam, DeepSpeedCPUAdam) are compiled ops
        "optimizer_module": type(inner).__module__ if inner is not None else None,
        "optimizer_kernel": _kernel(inner, group, param),
        "lr": group.get("lr"), "betas": list(group["betas"]) if "betas" in group else None, "eps": group.get("eps"),
        "weight_decay": group.get("weight_decay"),
        "param_dtype": str(param.dtype).replace("torch.", "") if param is not None else None,
    }


def _kernel(optimizer: Any, group: dict, param: Any) -> str | None:
    """How the optimizer steps: DeepSpeed's compiled op, or torch's fused / foreach / for-loop kernel
    (foreach unset: torch's default, foreach for GPU tensors, a for-loop on CPU)."""
    if optimizer is None:
        return None
    if type(optimizer).__module__.startswith("deepspeed.ops"):
        return "compiled op"
    if "fused" not in group:
        return None
    if group.get("fused"):
        return "fused"
    on_gpu = param is not None and param.device.type == "cuda"
    return "foreach" if group.get("foreach") or (group.get("foreach") is None and on_gpu) else "for-loop"


@dataclass(slots=True)
class Result:
    steps: list[dict[str, Any]]   # per optimizer step on this rank (Meter.steps, losses filled in)
    leaves: list[dict]            # the ZeRO-3 leaf module classes, who found and registered them (trainer/moe.py)
    setup: dict | None = None     # how the harness made another trainer run, for the record
    engine: dict | None = None    # engine_readback() of the policy engine


def named_knobs(cfg: RunConfig, names: dict[str, str | tuple[str, ...] | None],
                own_name: Callable[[str], str]) -> Iterator[tuple[str, str, Any]]:
    """(knob, a backend's name for it, its value) for every knob that means something for this run's task
    (knob(tasks=...)), in the run config's field order: a knob in `names` under the name(s) it maps
    to, or not at all where it maps to None (the backend does not take it); any other knob under
    `own_name(knob)`. So a knob added to the run config reaches every backend with no edit to it
    (tests/unit/test_run_config.py), and tests/unit/test_backend_parts.py says where it does not fit."""
    for f in knob_fields():
        if cfg.task in f.metadata["tasks"]:
            mapped = names.get(f.name, own_name(f.name))
            for name in (mapped,) if isinstance(mapped, str) else mapped or ():
                yield f.name, name, getattr(cfg, f.name)
