"""The trainer's one typed config; the command line is generated from it, field docs included."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trainer.errors import ConfigError

TASKS = ("sft", "dpo", "pt")
ZERO_STAGES = (0, 1, 2, 3)
DTYPES = ("auto", "bf16", "fp16", "fp32")
ATTN_IMPLS = ("sdpa", "flash_attention_2", "eager")
BACKENDS = ("native", "hf", "swift")


def _opt(help: str, **kw: Any) -> Any:
    return field(metadata={"help": help}, **kw)


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    task: str = _opt("sft (chat, loss on assistant turns), dpo (preference pairs) or pt (continued pre-training)", default="sft")
    model: str = _opt("a preset name (e.g. qwen3-8b, random init), 'tiny' (the embedded model) or a local HF model directory", default="tiny")
    data: str = _opt("JSONL dataset; default: the shipped sample set for the task", default="")
    out: str = _opt("directory the result record is written to (by rank 0)", default="results/adhoc")
    run_id: str = _opt("name of the record; default derived from the config", default="")
    sweep_id: str = _opt("sweep this run belongs to", default="adhoc")
    zero_stage: int = _opt("DeepSpeed ZeRO stage: 0, 1, 2 or 3", default=2)
    offload_optimizer: bool = _opt("keep optimizer states (and the step) on the CPU (ZeRO 1-3)", default=False)
    offload_param: bool = _opt("keep parameters on the CPU between uses (ZeRO-3 only)", default=False)
    micro_batch: int = _opt("sequences (DPO: pairs) per rank per forward pass", default=2)
    grad_accum: int = _opt("micro-batches per optimizer step", default=1)
    seq_len: int = _opt("maximum tokens per sequence; longer samples are dropped or truncated (--too-long)", default=256)
    padding: str = _opt("fixed: pad every batch to seq_len (real shapes); longest: pad to the longest in the batch", default="fixed")
    too_long: str = _opt("what to do with samples longer than seq_len: drop or truncate", default="drop")
    packing: bool = _opt("pt only: concatenate documents and cut into seq_len blocks (no padding)", default=False)
    repeat_data: bool = _opt("cycle over the dataset when it has fewer samples than the steps need", default=False)
    steps: int = _opt("measured optimizer steps", default=8)
    warmup_steps: int = _opt("optimizer steps run first and excluded from the timings", default=2)
    lr: float = _opt("learning rate (AdamW, constant)", default=1e-4)
    beta: float = _opt("DPO: strength of the KL penalty in the sigmoid loss", default=0.1)
    seed: int = _opt("seed for random init and data order", default=0)
    dtype: str = _opt("auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32", default="auto")
    attn_impl: str = _opt("attention kernel: sdpa, flash_attention_2 (needs flash-attn) or eager", default="sdpa")
    grad_checkpointing: bool = _opt("recompute activations in the backward pass (saves memory, costs ~1/3 more compute)", default=False)
    backend: str = _opt("native (stackbench's DeepSpeed loop), hf (transformers' Trainer / TRL's DPOTrainer) or swift (ms-swift's sft / pt / rlhf pipeline, in its own environment), each with the same DeepSpeed config, data and timing", default="native")
    collective_timeout_s: int = _opt("seconds a collective may wait before the run fails (a hang fails in minutes, not after torch's 30)", default=300)
    launcher: str = _opt("the launcher that started this run (recorded, not used)", default="manual")
    command: str = _opt("the exact command that reproduces this run (recorded; the launcher fills it in)", default="")

    def __post_init__(self) -> None:
        def need(ok: bool, what: str, fix: str) -> None:
            if not ok:
                raise ConfigError(what, where="trainer config", fix=fix)

        need(self.task in TASKS, f"unknown task {self.task!r}", f"use one of {', '.join(TASKS)}")
        need(self.zero_stage in ZERO_STAGES, f"invalid ZeRO stage {self.zero_stage}", "use 0, 1, 2 or 3")
        need(not self.offload_param or self.zero_stage == 3, "parameter offload needs ZeRO-3",
             "drop --offload-param or use --zero-stage 3")
        need(not self.offload_optimizer or self.zero_stage >= 1, "optimizer offload needs ZeRO 1, 2 or 3",
             "drop --offload-optimizer or use --zero-stage 1-3")
        for name in ("micro_batch", "grad_accum", "seq_len", "steps"):
            need(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})",
                 "give a positive integer")
        need(self.warmup_steps >= 0, "--warmup-steps must be >= 0", "give 0 or more")
        need(self.seq_len >= 8, f"--seq-len {self.seq_len} is too short to hold a chat turn", "use at least 8")
        need(self.padding in ("fixed", "longest"), f"unknown --padding {self.padding!r}", "use fixed or longest")
        need(self.too_long in ("drop", "truncate"), f"unknown --too-long {self.too_long!r}", "use drop or truncate")
        need(not self.packing or self.task == "pt", "--packing applies to continued pre-training only",
             "drop --packing or use --task pt")
        need(self.dtype in DTYPES, f"unknown --dtype {self.dtype!r}", f"use one of {', '.join(DTYPES)}")
        need(self.attn_impl in ATTN_IMPLS, f"unknown --attn-impl {self.attn_impl!r}", f"use one of {', '.join(ATTN_IMPLS)}")
        need(self.backend in BACKENDS, f"unknown --backend {self.backend!r}", f"use one of {', '.join(BACKENDS)}")
        need(not (self.packing and self.backend == "swift"), "--packing with --backend swift",
             "drop --packing: ms-swift packs with its own algorithm, so the runs would not be comparable")
        need(self.collective_timeout_s >= 10, "--collective-timeout-s must be at least 10", "give seconds, e.g. 300")
        need(self.lr > 0 and self.beta > 0, "--lr and --beta must be positive", "give positive numbers")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_argv(self) -> list[str]:
        """The command-line arguments that rebuild this config (non-defaults only)."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default
            if value == default:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + flag[2:])
            else:
                argv += [flag, str(value)]
        return argv


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            p.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"])
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    return TrainConfig(**vars(parser().parse_args(argv)))
