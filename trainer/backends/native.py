"""--backend native: stackbench's own DeepSpeed loop. The policy (and DPO's frozen reference) as
DeepSpeed engines; each optimizer step is grad_accum micro-batches forward + backward, DeepSpeed
stepping at the boundary; losses are computed here (LM cross-entropy, sigmoid DPO)."""

from __future__ import annotations

from typing import Any

from stackbench.trainer import models
from stackbench.trainer.backends.base import Context, Result, engine_readback
from stackbench.trainer.data.batches import Batch
from stackbench.trainer.data.dataset import IGNORE
from stackbench.trainer.ds_config import reference_config


def sequence_logps(logits, labels, sequence_ids=None, sequences: int = 0):
    """Sum of log p(label) over the labelled tokens of each sequence, and the token count: per row,
    or per packed sequence (sequence_ids, `sequences` of them)."""
    import torch
    import torch.nn.functional as F

    logits, labels = logits[:, :-1, :].float(), labels[:, 1:]
    mask = labels != IGNORE
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.clamp(min=0).reshape(-1),
                          reduction="none").view(labels.shape)
    if sequence_ids is None:
        return -(nll * mask).sum(-1), mask.sum(-1)
    index = sequence_ids[:, 1:].clamp(min=0).reshape(-1)
    logp = torch.zeros(sequences, dtype=nll.dtype, device=nll.device).index_add_(0, index, -(nll * mask).reshape(-1))
    count = torch.zeros(sequences, dtype=torch.long, device=nll.device).index_add_(0, index, mask.reshape(-1).long())
    return logp, count


def forward_args(batch) -> dict[str, Any]:
    out = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    if batch.position_ids is not None:  # packed: positions restart per sample, the 4-D mask keeps samples apart
        out["position_ids"] = batch.position_ids
    return out


def lm_loss(engine, batch):
    logits = engine(**forward_args(batch)).logits
    logp, count = sequence_logps(logits, batch.labels)
    return -logp.sum() / count.sum().clamp(min=1), {}


def dpo_loss(engine, reference, batch, beta: float):
    """Sigmoid DPO (Rafailov et al., arXiv 2305.18290): chosen rows first, rejected after."""
    import torch
    import torch.nn.functional as F

    b, fwd = batch.sequences, forward_args(batch)
    per = dict(sequence_ids=batch.sequence_ids, sequences=2 * b) if batch.sequence_ids is not None else {}
    policy, _ = sequence_logps(engine(**fwd).logits, batch.labels, **per)
    with torch.no_grad():
        ref, _ = sequence_logps(reference(**fwd).logits, batch.labels, **per)
    chosen, rejected = beta * (policy[:b] - ref[:b]), beta * (policy[b:] - ref[b:])
    loss = -F.logsigmoid(chosen - rejected).mean()
    extra = {"reward_accuracy": (chosen > rejected).float().mean().detach(),
             "reward_margin": (chosen - rejected).mean().detach()}
    return loss, extra


def optimizer_step(engine, reference, batches, cfg, device) -> dict[str, Any]:
    """One optimizer step. Losses stay on the device (no synchronisation here); token counts are host ints."""
    import torch

    real = padded = seqs = 0
    losses, extras = [], []

    def moved(t):
        return None if t is None else t.to(device)

    for _ in range(cfg.grad_accum):
        b = next(batches)
        batch = Batch(b.input_ids.to(device), moved(b.attention_mask), b.labels.to(device),
                           real_tokens=b.real_tokens, padded_tokens=b.padded_tokens, sequences=b.sequences,
                           position_ids=moved(b.position_ids), sequence_ids=moved(b.sequence_ids))
        if cfg.task == "dpo":
            loss, extra = dpo_loss(engine, reference, batch, cfg.beta)
        else:
            loss, extra = lm_loss(engine, batch)
        engine.backward(loss)
        engine.step()
        losses.append(loss.detach())
        extras.append(extra)
        real, padded, seqs = real + b.real_tokens, padded + b.padded_tokens, seqs + b.sequences
    out: dict[str, Any] = {"loss": torch.stack(losses).mean(), "real": real, "padded": padded, "seqs": seqs}
    for key in extras[0]:
        out[key] = torch.stack([e[key] for e in extras]).mean()
    return out


def engines(cfg, ref, ds_config: dict, torch_dtype, weights: str | None, attn_impl: str):
    """(policy engine, reference engine or None, MoE leaves). A model is built inside zero.Init
    (partitioned as it is created) while a HfDeepSpeedConfig of a stage-3 config lives."""
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = HfDeepSpeedConfig(ds_config) if cfg.zero_stage == 3 else None
    model, leaves = models.build_for(cfg, ref, torch_dtype, weights, attn_impl=attn_impl, ds_config=ds_config)
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_config)
    reference = None
    if cfg.task == "dpo":
        ref_config = reference_config(ds_config, cfg.ref_zero_stage)
        keep_alive = HfDeepSpeedConfig(ref_config) if cfg.ref_zero_stage == 3 else None
        ref_model, _ = models.build_for(cfg, ref, torch_dtype, weights, attn_impl=attn_impl, ds_config=ref_config,
                                        frozen=True)
        reference, *_ = deepspeed.initialize(model=ref_model, config=ref_config)
        reference.eval()
    del keep_alive
    return engine, reference, leaves


def train(ctx: Context) -> Result:
    engine, reference, leaves = engines(ctx.cfg, ctx.ref, ctx.ds_config, ctx.torch_dtype, ctx.weights,
                                        ctx.attention.used)
    ctx.meter.engines_ready()
    for _ in range(ctx.cfg.total_steps):
        ctx.meter.step_begin()
        figures = optimizer_step(engine, reference, ctx.batches, ctx.cfg, ctx.device)
        ctx.meter.step_end(figures)
    return Result(ctx.meter.steps, leaves, engine=engine_readback(engine))  # after training, as the hf backend's
