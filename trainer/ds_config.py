"""The DeepSpeed config of a run, the one every backend hands to DeepSpeed (the hf and swift
backends through their trainers' `deepspeed=` argument): built from the run config's knobs, or
from the user's own (trainer/ds_source.py: the source, what it states, the rule), with its "auto"
values filled by transformers' own resolver and every change stackbench makes to it listed."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from stackbench.core.config import RunConfig, overrides_of
from stackbench.core.errors import ConfigError
from stackbench.trainer import ds_source

STEPS_PER_PRINT = 1 << 30  # DeepSpeed's own step log would interleave with the ranks' output


def generated(cfg: RunConfig, dtype: str, device_type: str) -> dict[str, Any]:
    """The config stackbench builds when the user brings none."""
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
        "optimizer": adamw(cfg, device_type),
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {"enabled": dtype == "fp16", "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }


def adamw(cfg: RunConfig, device_type: str) -> dict[str, Any]:
    # torch_adam: torch's AdamW, no compiled op (DeepSpeed's fused Adam is JIT-compiled with nvcc,
    # which a GPU host may not have); on a GPU its fused kernel (fused=True), one launch per step.
    # With offload DeepSpeed's CPU Adam does the step on the host, as in production (compiled once,
    # cached in TORCH_EXTENSIONS_DIR). The record's resolved.engine says which optimizer ran.
    params = {"lr": cfg.lr, "betas": [cfg.adam_beta1, cfg.adam_beta2], "eps": cfg.adam_eps,
              "weight_decay": cfg.weight_decay, "torch_adam": not cfg.offload_optimizer}
    if device_type == "cuda" and not cfg.offload_optimizer:
        params["fused"] = True
    return {"type": "AdamW", "params": params}


def deepspeed_config(cfg: RunConfig, dtype: str, device_type: str,
                     model_config: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the effective config, its provenance: source, overrides, what stackbench changed and why).
    model_config: the model's HF config (the hidden size some "auto" values follow)."""
    overrides = overrides_of(cfg.ds) if cfg.ds else {}
    src, config = ds_source.source_config(cfg)
    changed: list[dict[str, Any]] = []
    if src is None:
        config = ds_source.apply_overrides(generated(cfg, dtype, device_type), overrides)
        return config, {"source": {"kind": "generated"}, "overrides": overrides, "changed": changed}

    def change(key: str, value: Any, why: str, ds_default: Any = None) -> None:
        """Set key, and list it when that changes what the config said or, for a key it leaves
        out, what DeepSpeed would do ("auto" means: fill me)."""
        if key in overrides:
            return  # --ds said it: it wins (rule 4)
        before = ds_source._get(config, key)
        if before != value:
            if before != "auto" and not (before is None and value == ds_default):
                changed.append({"key": key, "was": before, "now": value, "why": why})
            node = config
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value

    # rule 2: the knobs fill what the config leaves out ...
    absent = "not in the config: "
    if ds_source._get(config, "zero_optimization.stage") is None:
        change("zero_optimization.stage", cfg.zero_stage, absent + "--zero")
    for key, on in (("offload_optimizer", cfg.offload_optimizer), ("offload_param", cfg.offload_param)):
        if on and ds_source._get(config, f"zero_optimization.{key}") is None:
            change(f"zero_optimization.{key}", {"device": "cpu", "pin_memory": device_type == "cuda"},
                   absent + "--offload")
    for section in ("bf16", "fp16"):
        state = ds_source._get(config, f"{section}.enabled")
        if state is False and dtype == section:
            raise ConfigError(f"the run's dtype is {dtype} (--dtype {cfg.dtype} on {device_type}) but the config says "
                              f"{section}.enabled = false", where=f"--deepspeed {cfg.deepspeed}",
                              fix=f"give --dtype for what the config enables, or set {section}.enabled to true or auto")
        if state in (None, "auto"):
            change(f"{section}.enabled", dtype == section, absent + f"--dtype {cfg.dtype} is {dtype} here",
                   ds_default=False)
    for key, value, flag in (("train_micro_batch_size_per_gpu", cfg.micro_batch, "--micro-batch"),
                             ("gradient_accumulation_steps", cfg.grad_accum, "--grad-accum"),
                             ("gradient_clipping", cfg.max_grad_norm, "--max-grad-norm")):
        if ds_source._get(config, key) is None:  # DeepSpeed's default would differ from what the record says
            change(key, value, absent + flag)
    # ... rule 3: the global batch follows the world size ...
    tbs = ds_source._get(config, "train_batch_size")
    if tbs is None or ds_source._explicit(tbs) and tbs != cfg.global_batch:  # absent: what DeepSpeed derives, quietly
        change("train_batch_size", cfg.global_batch,
               f"micro-batch {cfg.micro_batch} x accumulation {cfg.grad_accum} x {cfg.world_size} ranks "
               f"(the config's {tbs} fits another world size)", ds_default=cfg.global_batch)
    # ... the optimizer: where the config has none, the Hugging Face Trainer's (AdamW from the knobs);
    # an Adam without some of its settings gets them from the knobs
    optimizer = ds_source._get(config, "optimizer.type")
    if optimizer is None:
        change("optimizer", adamw(cfg, device_type),
               "no optimizer in the config: AdamW from --lr, --adam-*, --weight-decay, as the Hugging Face Trainer "
               "creates")
    elif str(optimizer).lower() in ("adam", "adamw"):
        for key, value, flag in (("lr", cfg.lr, "--lr"), ("betas", [cfg.adam_beta1, cfg.adam_beta2], "--adam-beta1/2"),
                                 ("eps", cfg.adam_eps, "--adam-eps"),
                                 ("weight_decay", cfg.weight_decay, "--weight-decay")):
            if ds_source._get(config, f"optimizer.params.{key}") is None:
                change(f"optimizer.params.{key}", value, absent + flag)
        if (device_type == "cpu" and not cfg.offload_optimizer
                and not ds_source._get(config, "optimizer.params.torch_adam")):
            change("optimizer.params.torch_adam", True, "DeepSpeed's fused Adam needs CUDA: torch's AdamW on a CPU")
    config = _resolve_auto(config, cfg, dtype, model_config)
    change("steps_per_print", STEPS_PER_PRINT, "DeepSpeed's step log would interleave with the ranks' output",
           ds_default=STEPS_PER_PRINT)  # left out: set quietly (it only logs)
    if ds_source._get(config, "optimizer.params.torch_adam") and "zero_allow_untested_optimizer" not in config:
        change("zero_allow_untested_optimizer", True, "lets ZeRO take torch's AdamW, as the Hugging Face Trainer does")
    config = ds_source.apply_overrides(config, overrides)
    return config, {"source": src.describe(), "overrides": overrides, "changed": changed, "notes": src.notes}


def describe(provenance: dict[str, Any]) -> list[str]:
    """One line per thing of the user's config not used as it was: for the console and the log."""
    return [*provenance.get("notes", []),
            *(f"DeepSpeed config: {c['key']} {c['was']!r} -> {c['now']!r}: {c['why']}" for c in provenance["changed"])]


def _resolve_auto(config: dict[str, Any], cfg: RunConfig, dtype: str, model_config: Any) -> dict[str, Any]:
    """Fill every "auto" with transformers' own resolver (what the Hugging Face Trainer does),
    given the run config in place of TrainingArguments."""
    if "auto" not in json.dumps(config):
        return config
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    # a schedule the config states explicitly is the user's: the resolver is told the same numbers
    warmup = ds_source._get(config, "scheduler.params.warmup_num_steps")
    total = ds_source._get(config, "scheduler.params.total_num_steps")
    args = SimpleNamespace(
        world_size=cfg.world_size, per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm, learning_rate=cfg.lr,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_eps, weight_decay=cfg.weight_decay,
        save_on_each_node=False, fp16=dtype == "fp16", fp16_full_eval=False, bf16=dtype == "bf16", bf16_full_eval=False,
        fp16_backend="auto", fp16_opt_level="O1", half_precision_backend="auto",
        get_warmup_steps=lambda steps: int(warmup) if ds_source._explicit(warmup) else 0)
    hf = HfTrainerDeepSpeedConfig(json.loads(json.dumps(config)))
    try:
        hf.trainer_config_process(args)
        hf.trainer_config_finalize(args, SimpleNamespace(config=model_config),
                                   int(total) if ds_source._explicit(total) else cfg.total_steps)
        return hf.config
    except ValueError as e:  # transformers' words: which value cannot be filled, or what mismatches
        raise ConfigError(" ".join(str(e).split()), where=f"--deepspeed {cfg.deepspeed}",
                          fix="replace that 'auto' with a value, or drop the knob that contradicts it") from None
    finally:
        unset_hf_deepspeed_config()  # the resolver registers itself globally (zero.Init on from_pretrained)


def reference_config(ds: dict[str, Any], stage: int) -> dict[str, Any]:
    """The frozen DPO reference as an inference-only engine: partitioned at stage 3, plain at stage
    0 (ZeRO 1/2 shard optimizer states and gradients, which a frozen model has none of). `auto`
    (the default) is TRL's `prepare_deepspeed`: 3 under a ZeRO-3 policy, else 0."""
    ref = {k: v for k, v in ds.items() if k not in ("optimizer", "scheduler", "gradient_clipping")}
    zero = ds["zero_optimization"]
    ref["zero_optimization"] = {"stage": 3, **({"offload_param": zero["offload_param"]} if "offload_param" in zero
                                               else {})} if stage == 3 else {"stage": 0}
    return ref
