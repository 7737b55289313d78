"""--backend hf: transformers' Trainer doing the training, stackbench doing the measuring.

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

from typing import Any


def train(cfg, ref, ds_config: dict, torch_dtype, weights: str | None, batches, device, total_steps: int, timer,
          memory, phases) -> tuple[list[dict[str, Any]], list[str]]:
    import torch
    from accelerate import PartialState
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from trainer import models
    from trainer.run import heartbeat

    import os

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # the state is DeepSpeed's, as TrainingArguments then checks
    PartialState(backend="nccl" if device.type == "cuda" else "gloo")  # reuses the process group deepspeed made
    optim = ds_config["optimizer"]["params"]
    args = TrainingArguments(
        output_dir=f"{cfg.out}/{cfg.run_id or 'hf'}-hf", max_steps=total_steps, per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, lr_scheduler_type="constant",
        adam_beta1=optim["betas"][0], adam_beta2=optim["betas"][1], adam_epsilon=optim["eps"],
        weight_decay=optim["weight_decay"], max_grad_norm=ds_config["gradient_clipping"],
        bf16=ds_config["bf16"]["enabled"], fp16=ds_config["fp16"]["enabled"], deepspeed=ds_config, seed=cfg.seed,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, average_tokens_across_devices=False,  # a per-rank token mean, as the native loss
        accelerator_config={"use_configured_state": True}, gradient_checkpointing=cfg.grad_checkpointing)
    # built after TrainingArguments: under ZeRO-3 that is what makes from_pretrained partition it
    model = models.build(ref, dtype=torch_dtype, attn_impl=cfg.attn_impl, seed=cfg.seed, weights_dir=weights)
    leaves = models.set_moe_leaves(model, model.config.model_type) if cfg.zero_stage == 3 else []
    model.config.use_cache = False
    fed = [next(batches) for _ in range(total_steps * cfg.grad_accum)]
    per_step: list[dict[str, Any]] = []

    class Measure(TrainerCallback):
        def on_train_begin(self, *a, **k):
            phases.mark("engines_ready")

        def on_step_begin(self, *a, **k):
            timer.start()

        def on_step_end(self, args, state, control, **k):
            timer.stop()
            memory.sample()
            step = state.global_step - 1
            mb = fed[step * cfg.grad_accum:(step + 1) * cfg.grad_accum]
            per_step.append({"loss": None, "real": sum(b.real_tokens for b in mb),
                             "padded": sum(b.padded_tokens for b in mb), "seqs": sum(b.sequences for b in mb)})
            heartbeat(step, total_steps)
            if step == 0:
                phases.mark("first_step_done")

        def on_log(self, args, state, control, logs=None, **k):
            if logs and "loss" in logs and per_step:  # this step's loss, averaged over ranks by the Trainer
                per_step[-1]["loss"] = float(logs["loss"])

    class FixedBatches(Trainer):
        def get_train_dataloader(self):
            return torch.utils.data.DataLoader(
                [{"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels} for b in fed],
                batch_size=None, shuffle=False)

    FixedBatches(model=model, args=args, callbacks=[Measure()]).train()
    # the Trainer logs each step's loss (already the mean over ranks) on the main process only
    losses = [[s["loss"] for s in per_step]]
    torch.distributed.broadcast_object_list(losses, src=0)
    for s, loss in zip(per_step, losses[0]):
        s["loss"] = loss
    return per_step, leaves
