"""--backend hf: transformers' Trainer (SFT, PT) or TRL's DPOTrainer (DPO) doing the training,
stackbench doing the measuring. Also the pieces the swift backend shares (ms-swift's trainers are
Trainer subclasses): the accelerate state on gloo, the measuring callback, the logged losses.

The Trainer gets exactly what the native loop gets: the DeepSpeed config (its values mirrored in
TrainingArguments, which the HF integration checks), the same model weights, and the same
micro-batches per rank (a plain DataLoader over them: no sampler reshuffles or re-shards). Its
metrics are never taken from the Trainer's own reports: a callback times every optimizer step
with the same StepTimer as the native loop, samples memory, and beats the launcher's heartbeat.

Without a GPU, accelerate decides there is no distributed backend and the Trainer fails with
"train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size"; the
process group (gloo) already exists, so accelerate is told to use the state configured here
(ACCELERATE_USE_DEEPSPEED + `PartialState` + `use_configured_state`), in this module only. The
record says so.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from transformers import TrainerCallback

from stackbench.trainer import compat, models
from stackbench.trainer.backends.base import Context, Result, engine_readback, named_knobs

# knob -> its TrainingArguments / DPOConfig keyword where the two names differ, or None where the
# Trainer is not given the knob. Any other knob goes in under its own name (seed, adam_beta1,
# adam_beta2, weight_decay, max_grad_norm, beta): tests/unit/test_backend_parts.py checks that every
# keyword is a field of TrainingArguments (DPOConfig for a DPO-only knob), and every knob the run
# config refuses with --backend hf is None here.
KEYWORDS: dict[str, str | None] = {
    "micro_batch": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
    "grad_checkpointing": "gradient_checkpointing", "lr": "learning_rate", "adam_eps": "adam_epsilon",
    # which trainer runs, on how many ranks, for how long (max_steps: trainer_arguments)
    "task": None, "backend": None, "nodes": None, "gpus_per_node": None, "steps": None, "warmup_steps": None,
    # the model, built by stackbench (models.build_for)
    "model": None, "tokenizer": None, "attn_impl": None, "z3_leaf": None,
    # the DeepSpeed config (bf16 / fp16: trainer_arguments reads them from it)
    "zero_stage": None, "offload": None, "deepspeed": None, "ds": None, "dtype": None,
    # stackbench's micro-batches, fed as they are
    "seq_len": None, "data": None, "data_format": None, "repeat_data": None, "padding": None, "too_long": None,
    "packing": None,  # pt only: refused for sft and dpo (RunConfig)
    "dpo_ref_zero_stage": None,  # refused (RunConfig): TRL chooses the reference model's stage
}

# our per-step key -> the Trainer's (TRL's) log key
LOGGED = {"loss": "loss", "reward_accuracy": "rewards/accuracies", "reward_margin": "rewards/margins"}


def use_process_group(device) -> str:
    """Make accelerate adopt the process group stackbench already made; returns what the record
    says about it. Must run before TrainingArguments are built."""
    from accelerate import PartialState

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # the state is DeepSpeed's, as TrainingArguments then checks
    PartialState(backend=backend)  # reuses the process group deepspeed made
    return f"PartialState(backend={backend}) + use_configured_state"


class Measure(TrainerCallback):
    """Drives the run's Meter from a Trainer's callbacks (step timing, memory, heartbeat, phases);
    `tokens(step)` gives (real, padded, sequences) of that step; losses come from the Trainer's logs."""

    def __init__(self, meter, tokens: Callable[[int], tuple[int, int, int]]):
        self.meter, self.tokens = meter, tokens

    def on_train_begin(self, *a, **k):
        self.meter.engines_ready()

    def on_step_begin(self, *a, **k):
        self.meter.step_begin()

    def on_step_end(self, args, state, control, **k):
        def figures():  # counted after the step's clock stops; the loss comes with the Trainer's log
            real, padded, seqs = self.tokens(state.global_step - 1)
            return {"loss": None, "real": real, "padded": padded, "seqs": seqs}

        self.meter.step_end(figures)

    def on_log(self, args, state, control, logs=None, **k):
        if logs and "loss" in logs and self.meter.steps:  # this step's figures, averaged over ranks by the Trainer
            for ours, theirs in LOGGED.items():
                if theirs in logs:
                    self.meter.steps[-1][ours] = float(logs[theirs])

    def steps(self) -> list[dict[str, Any]]:
        """Per-step figures on every rank: the Trainer logs (means over ranks) on rank 0 only."""
        import torch

        per_step = self.meter.steps
        logged = [[{k: s.get(k) for k in LOGGED} for s in per_step]]
        torch.distributed.broadcast_object_list(logged, src=0)
        for s, values in zip(per_step, logged[0]):
            s.update(values)
        return per_step


def knob_keywords(cfg) -> dict[str, Any]:
    """The knobs the Trainer takes, as TrainingArguments' (DPOConfig's) keywords (KEYWORDS), values
    as they are."""
    return {name: value for _, name, value in named_knobs(cfg, KEYWORDS, lambda knob: knob)}


def trainer_arguments(cfg, ds_config: dict, output_dir: str, on_cpu: bool = False) -> dict[str, Any]:
    """TrainingArguments' (DPOConfig's) keywords: the knobs (knob_keywords), then what the harness
    decides (schedule, logging, the DeepSpeed config, the accelerate state).
    on_cpu: say so (use_cpu), or TrainingArguments refuses bf16 on a host without a bf16 GPU."""
    return dict(
        knob_keywords(cfg), **({"use_cpu": True} if on_cpu else {}),
        output_dir=output_dir, max_steps=cfg.total_steps, lr_scheduler_type="constant",
        bf16=ds_config["bf16"]["enabled"], fp16=ds_config["fp16"]["enabled"], deepspeed=ds_config,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, average_tokens_across_devices=False,  # a per-rank token mean, as the native loss
        accelerator_config={"use_configured_state": True})


def train(ctx: Context) -> Result:
    import torch
    from transformers import Trainer, TrainingArguments

    cfg = ctx.cfg
    state = use_process_group(ctx.device)
    common = trainer_arguments(cfg, ctx.ds_config, ctx.work_dir, on_cpu=ctx.device.type == "cpu")
    if cfg.task == "dpo":  # TRL's DPOTrainer: sigmoid loss, a frozen reference model, as the native loop
        from trl import DPOConfig

        args = DPOConfig(**compat.dpo_config(common))
    else:
        args = TrainingArguments(**common)
    # built after TrainingArguments: under ZeRO-3 that is what makes from_pretrained partition it
    model, leaves = models.build_for(cfg, ctx.ref, ctx.torch_dtype, ctx.weights, attn_impl=ctx.attention.used,
                                     ds_config=ctx.ds_config)
    model.config.use_cache = False
    fed = [next(ctx.batches) for _ in range(cfg.total_steps * cfg.grad_accum)]

    def tokens(step: int) -> tuple[int, int, int]:
        mb = fed[step * cfg.grad_accum:(step + 1) * cfg.grad_accum]
        return sum(b.real_tokens for b in mb), sum(b.padded_tokens for b in mb), sum(b.sequences for b in mb)

    measure = Measure(ctx.meter, tokens)
    if cfg.task == "dpo":
        from trl import DPOTrainer

        # the native batches in TRL's layout (trainer/compat.py: it changed in TRL 0.29)
        feed = [compat.dpo_batch(b.input_ids, b.attention_mask, b.labels, ctx.tokenizer.pad_token_id) for b in fed]
        reference, _ = models.build_for(cfg, ctx.ref, ctx.torch_dtype, ctx.weights, attn_impl=ctx.attention.used,
                                        ds_config=ctx.ds_config, frozen=True)
        from datasets import Dataset

        placeholder = Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]})  # batches come from feed
        base, kwargs = compat.dpo_trainer(DPOTrainer), {"ref_model": reference, "train_dataset": placeholder,
                                    "processing_class": ctx.tokenizer}
    else:
        feed = [{"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels} for b in fed]
        base, kwargs = Trainer, {}

    class FixedBatches(base):
        def get_train_dataloader(self):
            return torch.utils.data.DataLoader(feed, batch_size=None, shuffle=False)

    trainer = FixedBatches(model=model, args=args, callbacks=[measure], **kwargs)
    trainer.train()
    setup = {"trainer": "trl.DPOTrainer" if cfg.task == "dpo" else "transformers.Trainer",
             "batches": "stackbench's, per rank, unshuffled", "timing": "stackbench StepTimer in a TrainerCallback",
             "accelerate_state": state, "loss": "the Trainer's logged loss" + (
                 f", rounded to {compat.logged_loss_decimals()} decimals by this transformers"
                 if compat.logged_loss_decimals() else "")}
    return Result(measure.steps(), leaves, setup, engine=engine_readback(trainer.model_wrapped))
