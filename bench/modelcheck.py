"""What each run's model will be built with, said before anything is launched or queued: every
distinct model of the sweep is resolved, built once on the meta device (no memory, no weights) and
its shape read (trainer.models.shape: what the fit check and the runs read), whatever the ZeRO
stage, so a model stackbench cannot use stops the sweep here, with exit 2, before run 1 rather
than when its turn comes. Then the attention implementation (a fallback where the model has no
kernel of the kind asked for; an --attn-impl given explicitly that the model refuses is an error
here) and, under ZeRO-3, the leaf modules and who registers them (trainer/moe.py). A --z3-leaf
class the model lacks stops the sweep here too."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

from stackbench.core.config import RunConfig
from stackbench.core.console import note
from stackbench.core.host import has_nvidia_driver


def check(configs: list[RunConfig], given: set[str]) -> None:
    if importlib.util.find_spec("transformers") is None:  # a login node without the training stack
        return  # the ranks check the same before any collective
    from stackbench.core.config import dtype_on
    from stackbench.trainer import ds_config, models, moe

    device = "cuda" if has_nvidia_driver() else "cpu"
    said: set = set()
    built: dict = {}  # (model, attn_impl) -> (Attention, meta model): one build per pair, not per run
    for cfg in configs:
        ref = models.resolve(cfg.model)
        if (cfg.model, cfg.attn_impl) not in built:
            built[cfg.model, cfg.attn_impl] = models.attention(ref, cfg.attn_impl, explicit="attn_impl" in given)
        attention, meta = built[cfg.model, cfg.attn_impl]
        shape = models.shape(ref, meta)  # cached per model: the fit check's later models.shape reads it, no rebuild
        if attention.why and (ref.name, attention.asked) not in said:
            said.add((ref.name, attention.asked))
            note(f"note: {ref.name}: attention {attention.used}, not {attention.asked}: {attention.why} "
                 f"(give --attn-impl {attention.used} to make it explicit)")
        if cfg.zero_stage != 3 and not cfg.z3_leaf:
            continue
        moe.check_names(meta, cfg.z3_leaf)
        key = (ref.name, cfg.z3_leaf, cfg.deepspeed, cfg.ds)
        if cfg.zero_stage == 3 and key not in said:
            said.add(key)
            config, _ = ds_config.deepspeed_config(cfg, dtype_on(cfg.dtype, device), device,
                                                   SimpleNamespace(hidden_size=shape.hidden))
            blocks = moe.plan(meta, config, cfg.z3_leaf)
            if blocks or cfg.z3_leaf or shape.moe:  # a dense model without --z3-leaf: nothing to say
                note(f"{ref.name}: {moe.describe(blocks)}")
