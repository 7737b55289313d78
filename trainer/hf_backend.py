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
    """Times every optimizer step with stackbench's StepTimer, samples memory, beats the heartbeat
    and keeps each step's figures; `tokens(step)` gives (real, padded, sequences) of that step."""

    def __init__(self, timer, memory, phases, total_steps: int, tokens: Callable[[int], tuple[int, int, int]]):
        self.timer, self.memory, self.phases, self.total_steps, self.tokens = timer, memory, phases, total_steps, tokens
        self.per_step: list[dict[str, Any]] = []

    def on_train_begin(self, *a, **k):
        self.phases.mark("engines_ready")

    def on_step_begin(self, *a, **k):
        self.timer.start()

    def on_step_end(self, args, state, control, **k):
        from trainer.run import heartbeat

        self.timer.stop()
        self.memory.sample()
        step = state.global_step - 1
        real, padded, seqs = self.tokens(step)
        self.per_step.append({"loss": None, "real": real, "padded": padded, "seqs": seqs})
        heartbeat(step, self.total_steps)
        if step == 0:
            self.phases.mark("first_step_done")

    def on_log(self, args, state, control, logs=None, **k):
        if logs and "loss" in logs and self.per_step:  # this step's figures, averaged over ranks by the Trainer
            for ours, theirs in LOGGED.items():
                if theirs in logs:
                    self.per_step[-1][ours] = float(logs[theirs])

    def steps(self) -> list[dict[str, Any]]:
        """Per-step figures on every rank: the Trainer logs (means over ranks) on rank 0 only."""
        import torch

        logged = [[{k: s.get(k) for k in LOGGED} for s in self.per_step]]
        torch.distributed.broadcast_object_list(logged, src=0)
        for s, values in zip(self.per_step, logged[0]):
            s.update(values)
        return self.per_step


def train(cfg, ref, tokenizer, ds_config: dict, torch_dtype, weights: str | None, batches, device, total_steps: int,
          timer, memory, phases) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    import torch
    from transformers import Trainer, TrainingArguments

    from trainer.run import build_model

    state = use_process_group(device)
    optim = ds_config["optimizer"]["params"]
    common = dict(
        output_dir=f"{cfg.out}/{cfg.run_id or 'hf'}-hf", max_steps=total_steps, per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, lr_scheduler_type="constant",
        adam_beta1=optim["betas"][0], adam_beta2=optim["betas"][1], adam_epsilon=optim["eps"],
        weight_decay=optim["weight_decay"], max_grad_norm=ds_config["gradient_clipping"],
        bf16=ds_config["bf16"]["enabled"], fp16=ds_config["fp16"]["enabled"], deepspeed=ds_config, seed=cfg.seed,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, average_tokens_across_devices=False,  # a per-rank token mean, as the native loss
        accelerator_config={"use_configured_state": True}, gradient_checkpointing=cfg.grad_checkpointing)
    if cfg.task == "dpo":  # TRL's DPOTrainer: sigmoid loss, a frozen reference model, as the native loop
        from trl import DPOConfig

        args = DPOConfig(**common, beta=cfg.beta, loss_type=["sigmoid"], precompute_ref_log_probs=False)
    else:
        args = TrainingArguments(**common)
    # built after TrainingArguments: under ZeRO-3 that is what makes from_pretrained partition it
    model, leaves = build_model(cfg, ref, torch_dtype, weights)
    model.config.use_cache = False
    fed = [next(batches) for _ in range(total_steps * cfg.grad_accum)]

    def tokens(step: int) -> tuple[int, int, int]:
        mb = fed[step * cfg.grad_accum:(step + 1) * cfg.grad_accum]
        return sum(b.real_tokens for b in mb), sum(b.padded_tokens for b in mb), sum(b.sequences for b in mb)

    measure = Measure(timer, memory, phases, total_steps, tokens)
    if cfg.task == "dpo":
        from trl import DPOTrainer

        # TRL's batch: chosen rows then rejected rows, as the native batches, and which tokens are completion
        feed = [{"input_ids": b.input_ids, "attention_mask": b.attention_mask,
                 "completion_mask": (b.labels != -100).long()} for b in fed]
        reference, _ = build_model(cfg, ref, torch_dtype, weights, frozen=True)
        from datasets import Dataset

        placeholder = Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]})  # batches come from feed
        base, kwargs = DPOTrainer, {"ref_model": reference, "train_dataset": placeholder, "processing_class": tokenizer}
    else:
        feed = [{"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels} for b in fed]
        base, kwargs = Trainer, {}

    class FixedBatches(base):
        def get_train_dataloader(self):
            return torch.utils.data.DataLoader(feed, batch_size=None, shuffle=False)

    FixedBatches(model=model, args=args, callbacks=[measure], **kwargs).train()
    setup = {"trainer": "trl.DPOTrainer" if cfg.task == "dpo" else "transformers.Trainer",
             "batches": "stackbench's, per rank, unshuffled", "timing": "stackbench StepTimer in a TrainerCallback",
             "accelerate_state": state}
    return measure.steps(), leaves, setup
