"""--backend swift: ms-swift's own pipeline (`swift sft`, `swift pt`, `swift rlhf --rlhf_type dpo`,
full-parameter) doing the training, stackbench doing the measuring.

What ms-swift gets is what its CLI would get (the argv is recorded as a `swift ...` command):
- the run's DeepSpeed config, written to a JSON file;
- the same weights (the tiny model's seeded directory; a preset is written once with seeded
  weights, since ms-swift loads a directory);
- the rows stackbench validated and kept, as messages JSONL (alpaca rows converted), laid out so
  that ms-swift's unshuffled sampler (rank r takes every world-th sample) hands each rank the
  samples stackbench's batches give it, cycled to cover the steps. ms-swift's own template
  tokenizes them; for the tiny model's ChatML template its ids and loss masks are stackbench's
  (tests/integration/test_backends.py compares the losses);
- its collator pads to --seq-len with --padding fixed (its `padding_to`), else to the longest.

Measured by the harness, never read from ms-swift: a TrainerCallback times each optimizer step
with the native loop's StepTimer; a wrapper around ms-swift's collator counts each micro-batch's
real and padded tokens; losses come from the trainer's per-step logs. ms-swift's `train_speed` is
a cumulative average and its `memory(GiB)` a sum over devices (ms-swift issue 9801): not used.

ms-swift pins older transformers / trl / peft, so it lives in its own environment (`invoke
swift-env`); bench starts these ranks with that environment's python (bench/launchers/backends.py).
"""

from __future__ import annotations

import json
import shlex
from collections import deque
from pathlib import Path
from typing import Any

from stackbench.core.errors import UserError
from stackbench.trainer.backends.base import Context, Result, named_knobs

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SUBCOMMAND = {"sft": "sft", "pt": "pt", "dpo": "rlhf"}

# knob -> ms-swift's flag(s) where the name is not --<knob>, or None where ms-swift is not given the
# knob. Any other knob goes in as --<knob> (attn_impl, adam_beta1, adam_beta2, weight_decay,
# max_grad_norm, beta); tests/unit/test_backend_parts.py checks that every knob the run config
# refuses with --backend swift is None here.
FLAGS: dict[str, str | tuple[str, ...] | None] = {
    "micro_batch": "--per_device_train_batch_size", "seq_len": "--max_length",
    "grad_accum": "--gradient_accumulation_steps", "grad_checkpointing": "--gradient_checkpointing",
    "too_long": "--truncation_strategy", "lr": "--learning_rate", "adam_eps": "--adam_epsilon",
    "seed": ("--seed", "--data_seed"),
    # which pipeline runs (the subcommand), on how many ranks, for how long (--max_steps: swift_argv)
    "task": None, "backend": None, "nodes": None, "gpus_per_node": None, "steps": None, "warmup_steps": None,
    # the model directory and dtype (swift_argv: --model, --torch_dtype); ms-swift registers its own leaves
    "model": None, "dtype": None, "z3_leaf": None,
    # the DeepSpeed config file (--deepspeed)
    "zero_stage": None, "offload": None, "deepspeed": None, "ds": None,
    # the rows, written by stackbench in its order (--dataset); padding: the collator's padding_to
    "data": None, "data_format": None, "repeat_data": None, "padding": None,
    # refused with --backend swift (RunConfig)
    "tokenizer": None, "packing": None, "dpo_ref_zero_stage": None,
}
# knob -> {value: the text ms-swift's CLI takes for it}; other values: str(value), booleans lowercase
VALUES = {"too_long": {"drop": "delete", "truncate": "right"}}


def check_installed() -> str:
    """ms-swift's version, or a UserError that says how to get the environment it needs."""
    from importlib import metadata

    try:
        return metadata.version("ms-swift")
    except metadata.PackageNotFoundError:
        import sys

        raise UserError(f"ms-swift is not installed for {sys.executable}", where="--backend swift",
                        fix="run `./sb swift-env` (its own virtualenv, .venv-swift) and start the ranks with that "
                            "python; `invoke bench --backend swift` does this by itself") from None


def ordered_rows(dataset, world: int, micro_batch: int, micro_steps: int) -> list[dict[str, Any]]:
    """The kept rows in the order ms-swift's sampler must see them: within each block of
    world x micro_batch samples (one micro-step of every rank), stackbench gives rank r the slice
    [r*mb, (r+1)*mb) and ms-swift gives it positions r, r+world, ... (BatchSamplerShard, no shuffle)."""
    block, source = world * micro_batch, dataset.source_rows()
    order = [(k * block + r * micro_batch + j) % len(dataset)
             for k in range(micro_steps) for j in range(micro_batch) for r in range(world)]
    return [_as_messages(source[dataset.sample(i).row]) for i in order]


def _as_messages(row) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": row.messages}
    if row.rejected is not None:
        out["rejected_response"] = row.rejected
    return out


def knob_flags(cfg) -> dict[str, str]:
    """The knobs ms-swift takes, as its flags (FLAGS) and the text its CLI parses (VALUES)."""
    def text(knob: str, value: Any) -> str:
        return VALUES.get(knob, {}).get(value, str(value).lower() if isinstance(value, bool) else str(value))

    return {flag: text(knob, value) for knob, flag, value in named_knobs(cfg, FLAGS, lambda knob: "--" + knob)}


def swift_argv(cfg, ref, model_dir: str, data_file: Path, ds_file: Path, out_dir: Path, dtype: str) -> list[str]:
    """The `swift <subcommand>` arguments for this run (subcommand first): the knobs (knob_flags),
    then what this harness decides (files, dtype, schedule)."""
    argv = [SUBCOMMAND[cfg.task]] + (["--rlhf_type", "dpo"] if cfg.task == "dpo" else []) + [
        "--tuner_type", "full", "--model", model_dir, "--check_model", "false",
        "--torch_dtype", DTYPE_NAMES[dtype],
        "--bf16", str(dtype == "bf16").lower(), "--fp16", str(dtype == "fp16").lower(),  # else it picks mixed precision
        "--dataset", str(data_file), "--dataset_shuffle", "false", "--train_dataloader_shuffle", "false",
        "--split_dataset_ratio", "0", "--load_from_cache_file", "false", "--dataset_num_proc", "1",
        "--max_steps", str(cfg.total_steps), "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
        "--optim", "adamw_torch", "--deepspeed", str(ds_file),
        "--average_tokens_across_devices", "false",  # a per-rank token mean, as the native loss
        "--accelerator_config", json.dumps({"use_configured_state": True}),
        "--logging_steps", "1", "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none",
        "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--add_version", "false",
        "--output_dir", str(out_dir)]
    for flag, value in knob_flags(cfg).items():
        argv += [flag, value]
    if ref.kind in ("tiny", "preset"):  # the embedded tokenizer: ChatML; ms-swift cannot guess either
        argv += ["--model_type", ref.config["model_type"], "--template", "chatml"]
    if cfg.task == "dpo":
        argv += ["--loss_type", "sigmoid"]
    return argv


def swift_leaves(model) -> list[dict]:
    """The classes ms-swift registered as ZeRO-3 leaves (its own table of model types), as the
    record's moe_leaf_modules entries; what the structural finder sees is listed beside them."""
    from stackbench.trainer import moe

    flagged = {type(m) for m in model.modules() if getattr(m, "_z3_leaf", False)}
    found = {b.name: b for b in moe.find(model)}
    return [moe.Block(c.__name__, moe.qualname(c), sum(type(m) is c for m in model.modules()),
                      found_by=["ms-swift"] + (["structure"] if c.__name__ in found else []),
                      registered_by="ms-swift").to_dict() for c in sorted(flagged, key=lambda c: c.__name__)] + [
        {**b.to_dict(), "registered_by": ""} for name, b in found.items() if name not in {c.__name__ for c in flagged}]


def model_dir(cfg, ref, weights: str | None, dtype: str, topo) -> str:
    """A directory ms-swift can load. Presets are random-init: written once per host from the seed."""
    if weights:
        return weights
    import torch.distributed as dist  # as the trainer's other collectives (trainer/compat.py)

    from stackbench.trainer import embedded, models

    dest = embedded.cache_root() / f"{ref.name}-seed{cfg.seed}-{DTYPE_NAMES[dtype]}"
    if topo.local_rank == 0:
        embedded.save_seeded(models.hf_config(ref), cfg.seed, dest, DTYPE_NAMES[dtype])
    dist.barrier()
    return str(dest)


def train(ctx: Context) -> Result:
    version = check_installed()
    from stackbench.trainer.backends.hf import Measure, use_process_group

    cfg, topo = ctx.cfg, ctx.topo
    state = use_process_group(ctx.device)
    work = Path(ctx.work_dir)
    data_file, ds_file = work / f"data.rank{topo.rank}.jsonl", work / f"deepspeed.rank{topo.rank}.json"
    work.mkdir(parents=True, exist_ok=True)
    rows = ordered_rows(ctx.dataset, topo.world, cfg.micro_batch, cfg.total_steps * cfg.grad_accum)
    data_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    argv = swift_argv(cfg.replace(attn_impl=ctx.attention.used), ctx.ref,
                      model_dir(cfg, ctx.ref, ctx.weights, ctx.dtype, topo), data_file, ds_file, work / "out",
                      ctx.dtype)
    # ms-swift's trainer builds the optimizer itself (it fails on DeepSpeed's DummyOptim): the
    # AdamW settings went in as Trainer arguments, and the record's config shows what DeepSpeed got
    removed = ctx.ds_config.pop("optimizer")
    ctx.ds_provenance["changed"].append({"key": "optimizer", "was": removed, "now": None,
                                         "why": "ms-swift builds its optimizer from --optim adamw_torch and the "
                                                "learning-rate flags (the same AdamW settings)"})
    ds_file.write_text(json.dumps(ctx.ds_config, indent=1))

    counts: deque[tuple[int, int, int]] = deque()  # (real, padded, sequences) per micro-batch, in feeding order
    pairs = cfg.task == "dpo"

    def tokens(step: int) -> tuple[int, int, int]:
        mb = [counts.popleft() for _ in range(cfg.grad_accum)]
        return sum(c[0] for c in mb), sum(c[1] for c in mb), sum(c[2] for c in mb)

    measure = Measure(ctx.meter, tokens)
    pipeline_cls = _measured_pipeline(cfg.task, measure, counts, cfg.seq_len if cfg.padding == "fixed" else None, pairs)
    pipeline = pipeline_cls(argv[1:])  # parsed by ms-swift's own argument classes
    pipeline.main()
    setup = {"trainer": f"ms-swift {version}: swift {argv[0]}", "command": shlex.join(["swift", *argv]),
             "batches": "ms-swift's template and collator over stackbench's kept rows, in stackbench's per-rank order",
             "timing": "stackbench StepTimer in a TrainerCallback; tokens counted at ms-swift's collator",
             "accelerate_state": state, "optimizer": "the Trainer's adamw_torch, same settings as DeepSpeed's AdamW",
             "model_dir": argv[argv.index("--model") + 1]}
    return Result(measure.steps(), pipeline.leaves, setup)


def _measured_pipeline(task: str, measure, counts: deque, padding_to: int | None, pairs: bool):
    """ms-swift's pipeline class for the task, with the measuring callback and a collator that
    pads as asked and counts each micro-batch's tokens into `counts`."""
    if task == "dpo":
        from swift.pipelines.train.rlhf import SwiftRLHF as base
    elif task == "pt":
        from swift.pipelines.train.pretrain import SwiftPretrain as base
    else:
        from swift.pipelines.train.sft import SwiftSft as base

    class Measured(base):
        leaves: list[str] = []

        def train(self, trainer):
            collate = trainer.data_collator
            inner = getattr(collate, "func", collate)  # ms-swift: partial(template.data_collator, padding_to=...)

            def counting(batch):
                out = inner(batch, padding_to=padding_to)
                ids = out["input_ids"]
                mask = out.get("attention_mask")
                real = int(mask.sum()) if mask is not None else int(ids.numel())
                counts.append((real, int(ids.numel()), ids.shape[0] // 2 if pairs else ids.shape[0]))
                return out

            trainer.data_collator = counting
            trainer.add_callback(measure)
            try:
                return super().train(trainer)
            finally:  # ms-swift registers MoE blocks as ZeRO-3 leaves itself: record which it did
                self.leaves = swift_leaves(trainer.model)

    return Measured
