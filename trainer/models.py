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

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import formulas
from core.config import RunConfig
from core.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"

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
    config = copy.deepcopy(ref.config)  # configs change their nested dicts (DBRX's attn_config) as they read them
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
    moe: dict | None       # {"experts", "top_k", "routed_params"} for MoE models (routed: the experts' weights)
    qk_head_dim: int       # per head, the query / key width (MLA: nope + rope) ...
    v_head_dim: int        # ... and the value width
    attention_windows: list  # per layer: None full, N a window / chunk of N tokens, 0 no softmax attention
    attention_note: str    # how attention FLOPs are counted where they are approximate ("" when exact)

    @property
    def flops_params(self) -> int:
        """N in 6N: parameters doing matmuls per token, without the input embedding (a lookup), with
        the output projection (a matmul even when its weight is tied), MoE: active experts only."""
        return self.active - self.embedding - self.lm_head + self.vocab * self.hidden

    @property
    def attention(self) -> formulas.AttentionShape:
        return formulas.AttentionShape(self.heads, self.qk_head_dim, self.v_head_dim, tuple(self.attention_windows))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_model(ref: ModelRef, attn_impl: str | None = None):
    """The model built on the meta device: its structure and exact shapes, no memory, no weights.
    Not while a ZeRO-3 HfDeepSpeedConfig lives: transformers would build it inside zero.Init
    ("Cannot copy out of meta tensor")."""
    import torch
    from transformers import AutoModelForCausalLM

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = hf_config(ref)
        if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
            # import the modelling module before entering the meta device: transformers 4.51 builds a
            # tensor and calls .item() at import time ("Tensor.item() cannot be called on meta tensors")
            MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, **({"attn_implementation": attn_impl} if attn_impl else {}))
    except (ValueError, ImportError):
        raise  # transformers' refusals (an attention implementation, a size): attention() reads them
    except Exception as e:  # a config this transformers cannot build: the user's file, said before any launch
        import transformers

        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{ref.name}: its config does not build with transformers {transformers.__version__}: "
                          f"{type(e).__name__}: {first}", where=f"{ref.path}/config.json" if ref.path else "--model",
                          fix="check the config against what this transformers reads (model_type, rope_scaling, "
                              "sizes), or use the transformers the model needs") from None


def shape(ref: ModelRef, model=None) -> ModelShape:
    """model: the meta_model(ref) when the caller has one."""
    cfg = hf_config(ref)
    model = model if model is not None else meta_model(ref)
    from trainer import moe

    named = dict(model.named_parameters())  # deduplicates tied weights
    total = sum(p.numel() for p in named.values())
    embedding = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is model.get_input_embeddings().weight
    lm_head = 0 if tied or out is None else out.weight.numel()
    per_block, n_exp = moe.routed_parameters(model)  # the experts' weights, found from the structure
    routed = sum(n for n, _ in per_block)
    top_k = next((v for v in (getattr(cfg, k, None) for k in TOP_K_KEYS) if v),
                 getattr(getattr(cfg, "ffn_config", None), "moe_top_k", None))  # DBRX keeps it in ffn_config
    if n_exp and not top_k:
        raise ConfigError(f"{ref.name}: a sparse MoE model whose config names no experts-per-token",
                          where="--model", fix=f"set one of {', '.join(TOP_K_KEYS)} in its config.json")
    active = total - routed + sum(n * top_k // e for n, e in per_block)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    mla = getattr(cfg, "kv_lora_rank", None)  # DeepSeek's multi-head latent attention
    windows, note = attention_windows(cfg)
    return ModelShape(
        params=total, embedding=embedding, lm_head=lm_head, non_embedding=total - embedding - lm_head,
        active=active, largest_layer=max(p.numel() for p in named.values()), layers=cfg.num_hidden_layers,
        hidden=cfg.hidden_size, heads=heads, kv_heads=getattr(cfg, "num_key_value_heads", heads) or heads,
        head_dim=head_dim, vocab=cfg.vocab_size,
        moe={"experts": n_exp, "top_k": top_k, "routed_params": routed} if n_exp else None,
        qk_head_dim=cfg.qk_nope_head_dim + cfg.qk_rope_head_dim if mla else head_dim,
        v_head_dim=cfg.v_head_dim if mla else head_dim, attention_windows=windows, attention_note=note,
    )


# where configs say how many experts each token goes to
TOP_K_KEYS = ("num_experts_per_tok", "moe_top_k", "moe_k")  # not "top_k": 4.x configs carry generation's top_k=50


def attention_windows(cfg) -> tuple[list, str]:
    """(per layer: None full, N a sliding window / chunk of N tokens, 0 no softmax attention; a
    note where attention FLOPs are approximate). From transformers' layer_types where the config
    has them (5.x), else the 4.x fields (Llama 4's no_rope_layers, Jamba's attention period)."""
    layers = cfg.num_hidden_layers
    kinds = getattr(cfg, "layer_types", None)
    if not kinds and getattr(cfg, "attention_chunk_size", None) and getattr(cfg, "no_rope_layers", None):
        kinds = ["chunked_attention" if rope else "full_attention" for rope in cfg.no_rope_layers]  # Llama 4, 4.x
    if not kinds and getattr(cfg, "attn_layer_period", None):  # Jamba, 4.x
        kinds = ["full_attention" if i % cfg.attn_layer_period == cfg.attn_layer_offset else "mamba"
                 for i in range(layers)]
    if not kinds:
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        kinds = ["sliding_attention" if window else "full_attention"] * layers
    by_kind = {"full_attention": None, "sliding_attention": getattr(cfg, "sliding_window", None),
               "chunked_attention": getattr(cfg, "attention_chunk_size", None)}
    windows = [by_kind.get(k, 0) for k in kinds[:layers]]
    other = sorted({k for k in kinds[:layers] if k not in by_kind})
    note = (f"{sum(w == 0 for w in windows)} of {layers} layers are {', '.join(other)}: their sequence mixing is not "
            "counted in the attention FLOPs (their projections are, in 6N), so MFU is approximate") if other else ""
    return windows, note


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


@dataclass(frozen=True, slots=True)
class Attention:
    """The attention implementation a run uses: the one asked for, or where the model has none of
    that kind, the first it supports of sdpa and eager (said on the console and in the record)."""

    asked: str
    used: str
    why: str = ""      # the model's own reason for refusing `asked` ("" when used == asked)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def attention(ref: ModelRef, asked: str, explicit: bool):
    """(Attention, the model built on the meta device with it). Asks transformers itself: a
    meta-device build with the implementation, whose refusal is the model's reason. explicit
    (--attn-impl given): a refusal is the user's error, not a fallback."""
    reasons: dict[str, str] = {}
    built: dict[str, Any] = {}

    def refuses(impl: str) -> str:
        """The model's reason for refusing impl (its first sentence), "" when it builds."""
        if impl not in reasons:
            try:
                built[impl] = meta_model(ref, impl)
                reasons[impl] = ""
            except (ValueError, ImportError) as e:  # transformers: "... does not support ... attn_implementation"
                reasons[impl] = " ".join(str(e).split()).split(". ")[0].rstrip(".") + "."
        return reasons[impl]

    if not refuses(asked):
        return Attention(asked, asked), built[asked]  # the usual case: one build
    supported = [impl for impl in ("sdpa", "eager") if impl != asked and not refuses(impl)]
    if explicit or not supported:
        raise ConfigError(f"--attn-impl {asked}: {ref.name} refuses it: {reasons[asked]}", where="--attn-impl",
                          fix=f"give one it supports ({', '.join(supported) or 'none of sdpa, eager'}), or leave "
                              "--attn-impl out and stackbench uses the first of them")
    return Attention(asked, supported[0], reasons[asked]), built[supported[0]]


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


def build_for(cfg: RunConfig, ref: ModelRef, torch_dtype, weights: str | None, *, attn_impl: str, ds_config: dict,
              frozen: bool = False):
    """(model, MoE leaf blocks) for a run: the policy, or with frozen=True DPO's reference. Under
    ZeRO-3 the caller keeps a HfDeepSpeedConfig alive so this builds inside zero.Init, and sparse
    MoE blocks become leaf modules (trainer/moe.py: DeepSpeed issue 7461)."""
    from trainer import moe

    model = build(ref, dtype=torch_dtype, attn_impl=attn_impl, seed=cfg.seed, weights_dir=weights)
    stage = (ds_config.get("zero_optimization") or {}).get("stage", 0)
    leaves = moe.register(model, ds_config, cfg.z3_leaf) if stage == 3 else []
    if frozen:
        model.requires_grad_(False)
    return model, [b.to_dict() for b in leaves]
