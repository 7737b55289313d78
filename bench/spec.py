"""RunSpec: everything needed to reproduce one run; its id is derived from its content."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass

from trainer.config import TrainConfig
from trainer.errors import ConfigError

OFFLOADS = {"none": (False, False), "optimizer": (True, False), "optimizer+params": (True, True)}


@dataclass(frozen=True, slots=True)
class RunSpec:
    task: str
    model: str
    zero_stage: int
    backend: str = "native"    # native | hf | swift
    offload: str = "none"      # none | optimizer | optimizer+params
    nodes: int = 1
    procs_per_node: int = 2    # GPUs per node (CPU: processes per emulated node)
    micro_batch: int = 2
    grad_accum: int = 1
    seq_len: int = 128
    steps: int = 8
    warmup_steps: int = 2
    dtype: str = "auto"
    attn_impl: str = "sdpa"
    grad_checkpointing: bool = False
    data: str = ""
    repeat_data: bool = False
    seed: int = 0
    launcher: str = "local"

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def run_id(self) -> str:
        """Readable prefix + a hash of every field: a resumed sweep finds its runs, twins never collide."""
        # only fields that differ from their defaults: adding a field later keeps existing ids
        content = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]
        off = {"none": "", "optimizer": "-offopt", "optimizer+params": "-offall"}[self.offload]
        backend = "" if self.backend == "native" else f"-{self.backend}"
        return (f"{self.task}{backend}-z{self.zero_stage}{off}-n{self.nodes}x{self.procs_per_node}"
                f"-mb{self.micro_batch}-s{self.seq_len}-{digest}")

    def trainer_config(self, out: str, sweep_id: str, command: str = "") -> TrainConfig:
        """The trainer's config for this spec; raises ConfigError for an impossible combination."""
        opt, par = OFFLOADS[self.offload]
        return TrainConfig(task=self.task, model=self.model, data=self.data, out=out, run_id=self.run_id,
                           sweep_id=sweep_id, zero_stage=self.zero_stage, offload_optimizer=opt, offload_param=par,
                           micro_batch=self.micro_batch, grad_accum=self.grad_accum, seq_len=self.seq_len,
                           steps=self.steps, warmup_steps=self.warmup_steps, dtype=self.dtype,
                           attn_impl=self.attn_impl, grad_checkpointing=self.grad_checkpointing, seed=self.seed,
                           repeat_data=self.repeat_data, backend=self.backend,
                           launcher=self.launcher, command=command)


def expand(*, tasks, zero_stages, offloads=("none",), nodes=(1,), procs_per_node=(2,), micro_batches=(2,),
           seq_lens=(128,), models=("tiny",), backends=("native",), **fixed) -> tuple[list[RunSpec], list[tuple[RunSpec, str]]]:
    """The matrix as run specs, and the combinations left out with the reason (e.g. parameter
    offload without ZeRO-3). Order: model, task, nodes, stage, offload... so one node count's
    runs are together (a preflight per node count, issue 3)."""
    specs, invalid = [], []
    for model, task, n, ppn, mb, seq, stage, off, backend in itertools.product(
            models, tasks, nodes, procs_per_node, micro_batches, seq_lens, zero_stages, offloads, backends):
        if off not in OFFLOADS:
            raise ConfigError(f"unknown offload {off!r}", where="--offload", fix=f"use {', '.join(OFFLOADS)}")
        spec = RunSpec(task=task, model=model, zero_stage=int(stage), backend=backend, offload=off, nodes=int(n),
                       procs_per_node=int(ppn), micro_batch=int(mb), seq_len=int(seq), **fixed)
        try:
            spec.trainer_config(out="", sweep_id="")
        except ConfigError as e:
            invalid.append((spec, e.what))
            continue
        specs.append(spec)
    return specs, invalid
