"""The DeepSpeed config of a run, from its run config: the one every backend hands to DeepSpeed
(the hf and swift backends through their trainers' `deepspeed=` argument)."""

from __future__ import annotations

from typing import Any

from core.config import RunConfig


def deepspeed_config(cfg: RunConfig, dtype: str, device_type: str) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    pin = device_type == "cuda"
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if cfg.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.global_batch,
        # torch_adam: torch's AdamW, no compiled op. With offload DeepSpeed's CPU Adam does the
        # step on the host, as in production (compiled once, cached in TORCH_EXTENSIONS_DIR).
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "betas": [cfg.adam_beta1, cfg.adam_beta2],
                                                  "eps": cfg.adam_eps, "weight_decay": cfg.weight_decay,
                                                  "torch_adam": not cfg.offload_optimizer}},
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {"enabled": dtype == "fp16", "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def reference_config(ds: dict[str, Any], stage: int) -> dict[str, Any]:
    """The frozen DPO reference as an inference-only engine: partitioned at stage 3, plain at stage
    0 (ZeRO 1/2 shard optimizer states and gradients, which a frozen model has none of). `auto`
    (the default) is TRL's `prepare_deepspeed`: 3 under a ZeRO-3 policy, else 0."""
    ref = {k: v for k, v in ds.items() if k not in ("optimizer", "gradient_clipping")}
    zero = ds["zero_optimization"]
    ref["zero_optimization"] = {"stage": 3, **({"offload_param": zero["offload_param"]} if "offload_param" in zero
                                               else {})} if stage == 3 else {"stage": 0}
    return ref
