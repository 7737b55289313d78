"""Model references -> HF configs, exact shapes, and models built the way DeepSpeed needs them.

A reference is one of:
  - a preset name (trainer/presets/<name>.json): real architectures with random init, so the
    throughput and memory of real shapes are measured without downloading weights;
  - "tiny": the embedded Qwen3-shaped model (trainer/embedded.py);
  - a local Hugging Face model directory (config, tokenizer, weights). A directory with only a
    config.json is an architecture: random init, like a preset (and the embedded tokenizer when
    it has none).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"

# Sparse MoE blocks that must be ZeRO-3 leaf modules: ZeRO-3 prefetches parameters in the order
# of the first forward, and a token routing that skips experts on one rank and not another makes
# the ranks wait on each other forever (DeepSpeed issue 7461). As a leaf, the whole block's
# parameters are gathered at once. Keyed by HF model_type.
MOE_LEAF_CLASSES = {
    "qwen3_moe": "Qwen3MoeSparseMoeBlock",
    "qwen2_moe": "Qwen2MoeSparseMoeBlock",
    "mixtral": "MixtralSparseMoeBlock",
}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(HF config dict, stackbench metadata: name, source, published_params)."""
    raw = json.loads((PRESET_DIR / f"{name}.json").read_text())
    return raw, raw.pop("_stackbench")


@dataclass(frozen=True, slots=True)
class ModelRef:
    kind: str          # preset | tiny | dir
    name: str          # what the record calls it
    path: str          # directory holding config (+ tokenizer, weights); "" for presets
    config: dict       # the HF config as a dict

    @property
    def weights_dir(self) -> str | None:
        """Where weights load from; None means random init from the config."""
        if self.kind == "dir" and any(next(Path(self.path).glob(p), None) for p in ("*.safetensors", "*.bin")):
            return self.path
        return None


def resolve(ref: str) -> ModelRef:
    if ref == "tiny":
        from trainer.embedded import ASSET_DIR
        return ModelRef("tiny", "tiny-qwen3", str(ASSET_DIR), json.loads((ASSET_DIR / "config.json").read_text()))
    if ref.lower() in preset_names():
        config, meta = load_preset(ref.lower())
        return ModelRef("preset", meta["name"], "", config)
    path = Path(ref)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model directory {path} has no config.json", where="--model",
                              fix="point at a Hugging Face model directory (config.json, tokenizer, weights)")
        return ModelRef("dir", path.name, str(path.resolve()), json.loads((path / "config.json").read_text()))
    raise ConfigError(f"model {ref!r} is neither a preset nor an existing directory", where="--model",
                      fix=f"use 'tiny', a local model directory, or a preset: {', '.join(preset_names())}")


def hf_config(ref: ModelRef):
    from transformers import AutoConfig

    if ref.path:
        return AutoConfig.from_pretrained(ref.path)
    config = dict(ref.config)
    return AutoConfig.for_model(config.pop("model_type"), **config)


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Exact parameter counts (from the model built on the meta device: no memory used)."""

    params: int            # all trainable parameters (tied embeddings counted once)
    embedding: int         # input embedding
    lm_head: int           # output projection (0 when tied to the embedding)
    non_embedding: int     # params - embedding - lm_head (the model cards' "non-embedding")
    active: int            # params a token passes through (MoE: top-k of the experts)
    largest_layer: int     # largest single parameter tensor (ZeRO-3 gathers at least this)
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    moe: dict | None       # {"experts", "top_k"} for MoE models

    @property
    def flops_params(self) -> int:
        """N in 6N: parameters doing matmuls per token, without the input embedding (a lookup), with
        the output projection (a matmul even when its weight is tied), MoE: active experts only."""
        return self.active - self.embedding - self.lm_head + self.vocab * self.hidden

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape(ref: ModelRef) -> ModelShape:
    import torch
    from transformers import AutoModelForCausalLM

    cfg = hf_config(ref)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    named = dict(model.named_parameters())  # deduplicates tied weights
    total = sum(p.numel() for p in named.values())
    embedding = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is model.get_input_embeddings().weight
    lm_head = 0 if tied or out is None else out.weight.numel()
    experts = sum(p.numel() for n, p in named.items() if ".experts." in n)
    n_exp = getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None)
    top_k = getattr(cfg, "num_experts_per_tok", None)
    active = total - experts + (experts * top_k // n_exp if n_exp else 0)
    heads = cfg.num_attention_heads
    return ModelShape(
        params=total, embedding=embedding, lm_head=lm_head, non_embedding=total - embedding - lm_head,
        active=active, largest_layer=max(p.numel() for p in named.values()), layers=cfg.num_hidden_layers,
        hidden=cfg.hidden_size, heads=heads, kv_heads=getattr(cfg, "num_key_value_heads", heads) or heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads, vocab=cfg.vocab_size,
        moe={"experts": n_exp, "top_k": top_k} if n_exp else None,
    )


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    path = ref.path
    if not path or not any((Path(path) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from trainer.embedded import ASSET_DIR  # presets carry no tokenizer: the embedded one feeds real ids

        path = ASSET_DIR
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ConfigError(f"the tokenizer in {path} has no chat_template", where="--model",
                          fix="use a chat model's tokenizer, or --task pt")
    return tok


def build(ref: ModelRef, *, dtype, attn_impl: str, seed: int, weights_dir: str | None):
    """The model on the CPU (DeepSpeed moves it). Under ZeRO-3 the caller keeps an HfDeepSpeedConfig
    alive, so transformers builds it inside deepspeed.zero.Init (partitioned as it is created)."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.compat import model_dtype

    kw = dict(model_dtype(dtype), attn_implementation=attn_impl)
    torch.manual_seed(seed)  # the DPO reference model is built twice and must match
    if weights_dir:
        return AutoModelForCausalLM.from_pretrained(weights_dir, **kw)
    return AutoModelForCausalLM.from_config(hf_config(ref), **kw)


def set_moe_leaves(model, model_type: str) -> list[str]:
    """Register sparse MoE blocks as ZeRO-3 leaf modules; returns the class names registered."""
    name = MOE_LEAF_CLASSES.get(model_type)
    if not name:
        return []
    classes = {type(m) for m in model.modules() if type(m).__name__ == name}
    if classes:
        from deepspeed.utils import set_z3_leaf_modules
        set_z3_leaf_modules(model, list(classes))
    return sorted(c.__name__ for c in classes)


def build_for(cfg: RunConfig, ref: ModelRef, torch_dtype, weights: str | None, frozen: bool = False):
    """(model, MoE leaf classes) for a run: the policy, or with frozen=True DPO's reference. Under
    ZeRO-3 the caller keeps a HfDeepSpeedConfig alive so this builds inside zero.Init, and MoE
    blocks become leaf modules (DeepSpeed issue 7461)."""
    model = build(ref, dtype=torch_dtype, attn_impl=cfg.attn_impl, seed=cfg.seed, weights_dir=weights)
    leaves = set_moe_leaves(model, model.config.model_type) if cfg.zero_stage == 3 else []
    if frozen:
        model.requires_grad_(False)
    return model, leaves
