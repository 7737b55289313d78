"""The backend contract: `train(ctx) -> Result`. A backend trains with what the context gives
(the run config, the DeepSpeed config, the model reference and weights, this rank's micro-batches)
and measures through `ctx.meter`, around each optimizer step; the trainer does the rest (input
checks before any collective, the process group, gathering, the record)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

from core.config import Launch, RunConfig
from trainer.data import Batch, Dataset
from trainer.metrics import Meter
from trainer.models import ModelRef


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
        return cls(int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", world)))


@dataclass(slots=True)
class Context:
    cfg: RunConfig
    launch: Launch
    ref: ModelRef
    tokenizer: Any
    dataset: Dataset
    ds_config: dict           # what DeepSpeed gets (a backend that must change it changes it here: it is recorded)
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


@dataclass(slots=True)
class Result:
    steps: list[dict[str, Any]]   # per optimizer step on this rank (Meter.steps, losses filled in)
    leaves: list[str]             # the MoE classes registered as ZeRO-3 leaf modules
    setup: dict | None = None     # how the harness made another trainer run, for the record
