"""A zoo of tiny, randomly initialised MoE models, one per MoE class transformers ships, trained
under ZeRO-3 on 2 ranks in ONE launch (torch + DeepSpeed start once for all of them).

    torchrun --nproc_per_node=2 -m tests.support.moe_zoo --out results.json [--only mixtral,...]
             [--z3-leaf none] [--timeout 60]

Each model: its config at tiny sizes with 64 experts (so ranks with different tokens route to
different subsets, the condition of DeepSpeed issue 7461), built the way the trainer builds it
(trainer.models.build_for: inside zero.Init, sparse MoE blocks registered by trainer/moe.py), then
3 optimizer steps of the native loop (trainer.backends.native) on each rank's own micro-batches
of the shipped pre-training sample. A hook on every block's router records which experts each
rank's tokens were sent to. Rank 0 writes, per model type: status, the leaf entries, the experts
fired per rank, the losses, the error line of a failure.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=7296, max_position_embeddings=512, tie_word_embeddings=False)
EXPERTS, TOP_K = 64, 2

# per model type: its own names for the MoE sizes (and what a 2-layer tiny version needs)
ZOO = {
    "mixtral": dict(num_local_experts=EXPERTS, num_experts_per_tok=TOP_K),
    "qwen2_moe": dict(num_experts=EXPERTS, num_experts_per_tok=TOP_K, moe_intermediate_size=16,
                      shared_expert_intermediate_size=32, decoder_sparse_step=1),
    "qwen3_moe": dict(num_experts=EXPERTS, num_experts_per_tok=TOP_K, moe_intermediate_size=16, decoder_sparse_step=1),
    "qwen3_next": dict(num_experts=EXPERTS, num_experts_per_tok=TOP_K, moe_intermediate_size=16,
                       shared_expert_intermediate_size=16, decoder_sparse_step=1, linear_num_value_heads=4,
                       linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
                       full_attention_interval=2),
    "deepseek_v2": dict(n_routed_experts=EXPERTS, num_experts_per_tok=TOP_K, moe_intermediate_size=16,
                        n_shared_experts=1, first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=None,
                        qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, head_dim=8, num_key_value_heads=4,
                        topk_method="greedy", n_group=1, topk_group=1),
    "deepseek_v3": dict(n_routed_experts=EXPERTS, num_experts_per_tok=TOP_K, moe_intermediate_size=16,
                        n_shared_experts=1, first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=32,
                        qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, head_dim=8, num_key_value_heads=4,
                        n_group=1, topk_group=1),
    "olmoe": dict(num_experts=EXPERTS, num_experts_per_tok=TOP_K, intermediate_size=16),
    "gpt_oss": dict(num_local_experts=EXPERTS, num_experts_per_tok=TOP_K, intermediate_size=16, sliding_window=16,
                    layer_types=["sliding_attention", "full_attention"]),
    "llama4_text": dict(num_local_experts=EXPERTS, num_experts_per_tok=1, intermediate_size=16,
                        intermediate_size_mlp=128, interleave_moe_layer_step=1, attention_chunk_size=64),
    "glm4_moe": dict(n_routed_experts=EXPERTS, num_experts_per_tok=TOP_K, moe_intermediate_size=16, n_shared_experts=1,
                     first_k_dense_replace=0, n_group=1, topk_group=1),
    "granitemoe": dict(num_local_experts=EXPERTS, num_experts_per_tok=TOP_K, intermediate_size=16),
    "phimoe": dict(num_local_experts=EXPERTS, num_experts_per_tok=TOP_K, intermediate_size=16),
    "jamba": dict(num_experts=EXPERTS, num_experts_per_tok=TOP_K, intermediate_size=16, expert_layer_period=1,
                  expert_layer_offset=0, attn_layer_period=2, attn_layer_offset=1, mamba_d_state=8, mamba_d_conv=4,
                  mamba_expand=2, mamba_dt_rank=8, use_mamba_kernels=False),
    "ernie4_5_moe": dict(moe_num_experts=EXPERTS, moe_k=TOP_K, moe_intermediate_size=16, moe_layer_start_index=0,
                         moe_num_shared_experts=1),
    # DBRX runs its experts' weights (one flattened [E*F, d] tensor each) through a sub-module
    # per expert hit: without DbrxFFN a leaf, ranks routing differently issue mismatched
    # all-gathers and one aborts, under transformers 5 too
    "dbrx": dict(d_model=64, n_heads=4, n_layers=2, max_seq_len=512,
                 attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                 ffn_config=dict(ffn_hidden_size=16, moe_num_experts=EXPERTS, moe_top_k=TOP_K)),
}
# DBRX names its sizes itself; the base's would be unknown keys to it
OWN_NAMES = {"dbrx": ("vocab_size", "tie_word_embeddings")}


def config(model_type: str) -> dict:
    """The tiny config of one zoo member, as a config.json would hold it."""
    base = {k: v for k, v in BASE.items() if model_type not in OWN_NAMES or k in OWN_NAMES[model_type]}
    return {"model_type": model_type, **base, **ZOO[model_type]}


# Model classes whose configs read differently (tests/unit/test_model_classes.py), 2 layers, 64 wide:
# composite configs whose text model's sizes are in text_config (Qwen3.5 dense and MoE, Llama 4),
# experts-per-token under another name (Aria's moe_topk), dense models whose subclasses of torch
# layers once looked like experts (Falcon's FalconLinear, Gemma 4's scaled per-layer embedding; Gemma
# 4's config also varies head_dim per layer), beside plain ones. name -> (config.json, experts-per-
# token or None for a dense model); the model types are transformers 5's (CONFIG_MAPPING_NAMES).
_LINEAR_ATTENTION = {"linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_key_head_dim": 16,
                     "linear_value_head_dim": 16, "layer_types": ["linear_attention", "full_attention"]}
CLASSES = {
    "llama": ({"model_type": "llama", **BASE}, None),
    "qwen3": ({"model_type": "qwen3", **BASE}, None),
    "falcon": ({"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_kv_heads": 2, "new_decoder_architecture": True, "vocab_size": 7296,
                "tie_word_embeddings": False}, None),
    "qwen3_5": ({"model_type": "qwen3_5", "text_config": {**BASE, **_LINEAR_ATTENTION}}, None),
    "gemma4_text": ({"model_type": "gemma4_text", **BASE, "num_hidden_layers": 3,
                     "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]}, None),
    "mixtral": ({"model_type": "mixtral", **BASE, "num_local_experts": 8, "num_experts_per_tok": 2}, 2),
    "qwen3_moe": ({"model_type": "qwen3_moe", **BASE, "num_experts": 8, "num_experts_per_tok": 3,
                   "moe_intermediate_size": 16, "decoder_sparse_step": 1}, 3),
    "qwen3_5_moe": ({"model_type": "qwen3_5_moe", "text_config": {
        **BASE, **_LINEAR_ATTENTION, "num_experts": 8, "num_experts_per_tok": 3, "moe_intermediate_size": 16,
        "shared_expert_intermediate_size": 16}}, 3),
    "llama4": ({"model_type": "llama4", "text_config": {
        **BASE, "num_local_experts": 4, "num_experts_per_tok": 1, "intermediate_size": 16, "intermediate_size_mlp": 128,
        "interleave_moe_layer_step": 1, "attention_chunk_size": 64}}, 1),
    "aria_text": ({"model_type": "aria_text", **BASE, "moe_num_experts": 8, "moe_topk": 2,
                   "moe_num_shared_experts": 1}, 2),
}


def available_classes() -> list[str]:
    """The CLASSES the installed transformers has (transformers 4.x lacks Qwen3.5 and Gemma 4)."""
    from transformers import CONFIG_MAPPING

    return sorted(name for name, (config, _) in CLASSES.items() if config["model_type"] in CONFIG_MAPPING)


def available() -> list[str]:
    """The zoo members the installed transformers has."""
    from transformers import CONFIG_MAPPING

    return [t for t in ZOO if t in CONFIG_MAPPING]


def _router_hook(fired: set, name: str, e: int, k: int):
    """Forward hook on a router: the experts its output sends the tokens to (its own top-k indices
    where it returns them, else the top-k of its logits)."""
    import torch

    def hook(_module, _inputs, output):
        tensors = [t for t in (output if isinstance(output, tuple) else (output,)) if isinstance(t, torch.Tensor)]
        picked = next((t for t in tensors if not t.is_floating_point() and t.shape[-1] == k), None)
        if picked is None:
            logits = next(t for t in tensors if t.is_floating_point() and t.shape[-1] == e)
            picked = logits.topk(k, dim=-1).indices
        fired.update((name, int(i)) for i in picked.flatten().tolist())
    return hook


def run_one(model_type: str, z3_leaf: str, topo, device) -> dict:
    import deepspeed
    import torch
    import torch.distributed as dist
    from transformers.integrations import HfDeepSpeedConfig

    from stackbench.core.config import RunConfig
    from stackbench.trainer import models, moe
    from stackbench.trainer.backends import native
    from stackbench.trainer.data import dataset
    from stackbench.trainer.data.batches import micro_batches
    from stackbench.trainer.ds_config import deepspeed_config

    cfg = RunConfig(task="pt", packing=True, seq_len=64, micro_batch=1, zero_stage=3, steps=2, warmup_steps=1,
                    z3_leaf=z3_leaf, gpus_per_node=topo.world)
    ref = models.ModelRef("preset", f"zoo-{model_type}", "", config(model_type))
    tokenizer = models.load_tokenizer(ref)
    attention, _ = models.attention(ref, cfg.attn_impl, explicit=False)
    hidden = models.hf_config(ref).hidden_size
    top_k = models.shape(ref).moe["top_k"]  # on the meta device: before zero.Init is on
    ds, _ = deepspeed_config(cfg, "fp32", "cpu", type("M", (), {"hidden_size": hidden}))
    keep_alive = HfDeepSpeedConfig(ds)
    model, leaves = models.build_for(cfg, ref, torch.float32, None, attn_impl=attention.used, ds_config=ds)
    model.config.use_cache = False
    fired: set = set()
    for name, module, e, _layout, _experts in moe.blocks(model):
        router = next(c for c in module.children() if moe.router_experts(c) == e)
        router.register_forward_hook(_router_hook(fired, name, e, top_k))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters()], config=ds)
    del keep_alive
    batches = micro_batches(dataset.load(cfg, tokenizer), rank=topo.rank, world=topo.world, micro_batch=1,
                            grad_accum=1, pad_id=tokenizer.pad_token_id, seq_len=cfg.seq_len, padding="fixed",
                            dtype=torch.float32)
    losses = [float(native.optimizer_step(engine, None, batches, cfg, device)["loss"]) for _ in range(cfg.total_steps)]
    everyone: list = [None] * topo.world
    dist.all_gather_object(everyone, sorted(fired))
    engine.destroy()
    return {"status": "ok", "leaves": leaves, "attention": attention.to_dict(), "losses": losses,
            "fired": everyone, "transformers_layout": sorted({b["layout"] for b in leaves if b.get("layout")})}


def main() -> None:
    import datetime
    import os

    import deepspeed
    import torch

    from stackbench.trainer.backends.base import Topology

    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--only", default="")
    p.add_argument("--z3-leaf", default="")
    p.add_argument("--timeout", type=int, default=120)
    args = p.parse_args()
    deepspeed.init_distributed(dist_backend="gloo", timeout=datetime.timedelta(seconds=args.timeout))
    topo = Topology.from_env()
    results = {}
    for model_type in [t for t in available() if not args.only or t in args.only.split(",")]:
        t0 = time.monotonic()
        try:
            results[model_type] = run_one(model_type, args.z3_leaf, topo, torch.device("cpu"))
        except Exception as e:  # noqa: BLE001 - a failure is this member's result; a broken group ends the zoo
            results[model_type] = {"status": "failed", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:500]}",
                                   "where": traceback.format_exc().splitlines()}
        results[model_type]["seconds"] = round(time.monotonic() - t0, 1)
        if topo.rank == 0:  # after every member: a rank that aborts in the next one keeps these
            done = results[model_type]
            print(f"zoo {model_type}: {done['status']} in {done['seconds']} s", flush=True)
            with open(args.out, "w") as fh:
                json.dump({"transformers": __import__("transformers").__version__,
                           "deepspeed": deepspeed.__version__, "results": results}, fh, indent=1)
        if results[model_type]["status"] != "ok":
            break
    os._exit(0)  # a member that failed mid-collective leaves the group unusable: do not wait on it


if __name__ == "__main__":
    main()
