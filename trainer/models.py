"""Model references -> HF configs, exact shapes, and models built the way DeepSpeed needs them.

A reference is one of:
  - a preset name (trainer/presets/<name>.json): real architectures with random init, so the
    throughput and memory of real shapes are measured without downloading weights;
  - "tiny": the embedded Qwen3-shaped model (trainer/embedded.py);
  - a local Hugging Face model directory (config, tokenizer, weights). A directory with only a
    config.json is an architecture: random init, like a preset (and the embedded tokenizer when
    it has none, said as a warning);
  - a Hugging Face hub id, `org/name` or `org/name@revision` (a branch, tag or commit): read from
    the local HF cache first (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), so
    it works offline (HF_HUB_OFFLINE=1); where it is not cached and the user has not said offline,
    its config and tokenizer files only are fetched, never weights. It is then what its snapshot
    directory is: weights already in the snapshot (a model the user downloaded) are loaded, as a
    local directory's; without them it is random init from its config, like a preset. Said on the
    console and in the record (resolved.model: kind "hub", path, weights).

The tokenizer that counts the tokens (choose_tokenizer: the one choice the bench process and the
ranks share): the run config's `tokenizer` when given (a directory or a hub id), else the model's
own (its directory's, its snapshot's; a preset's: its family's from the local HF cache, never
fetched), else the embedded one, which for any model but 'tiny' is a fallback said as a warning
on the console and in the record (resolved.tokenizer: name, source, fallback).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stackbench.core import formulas
from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"

def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(HF config dict, stackbench metadata: name, source, published_params)."""
    raw = json.loads((PRESET_DIR / f"{name}.json").read_text())
    return raw, raw.pop("_stackbench")


@dataclass(frozen=True, slots=True)
class ModelRef:
    kind: str          # preset | tiny | dir | hub
    name: str          # what the record calls it (a hub id as given)
    path: str          # directory holding config (+ tokenizer, weights); "" for presets
    config: dict       # the HF config as a dict
    preset: str = ""   # the preset's file name (qwen3-8b) for kind preset

    @property
    def weights_dir(self) -> str | None:
        """Where weights load from; None means random init from the config."""
        if self.kind in ("dir", "hub") and any(next(Path(self.path).glob(p), None)
                                               for p in ("*.safetensors", "*.bin")):
            return self.path
        return None


# --- Hugging Face hub ids -------------------------------------------------------------------------

HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<revision>[\w.\-/]+))?")
TOKENIZER_FILES = ["tokenizer*", "*.jinja", "chat_template.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.*", "merges.txt", "*.tiktoken", "*.model"]  # *.model: sentencepiece (tokenizer.model)
CONFIG_FILES = ["config.json", "generation_config.json", *TOKENIZER_FILES]  # what a hub id fetches: never weights
HAS_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_TRUE = {"1", "ON", "YES", "TRUE"}


def is_hub_id(ref: str) -> bool:
    """`org/name` or `org/name@revision`, not a path (no leading / . ~, one slash before any @)."""
    m = HUB_ID.fullmatch(ref)
    return bool(m) and ".." not in m["repo"]


def hub_cache() -> Path:
    """The HF hub cache, as huggingface_hub finds it, read from the environment now (not when
    huggingface_hub was imported): HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """The user said offline: HF_HUB_OFFLINE (or transformers' TRANSFORMERS_OFFLINE) set true."""
    return any(os.environ.get(k, "").strip().upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_snapshot(hub_id: str, patterns: list[str], *, fetch: bool, flag: str = "--model") -> Path | None:
    """The snapshot directory of hub_id (`org/name[@revision]`) holding the files of `patterns`:
    from the local cache, else (fetch and not offline) downloaded, those files only. None where
    the cache has no snapshot of it and nothing is fetched; a ConfigError where a fetch fails."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(f"{hub_id}: a Hugging Face hub id, but huggingface_hub is not installed here", where=flag,
                          fix="install the training stack (transformers brings huggingface_hub), or give the "
                              "model's directory") from None
    m = HUB_ID.fullmatch(hub_id)
    repo, revision = m["repo"], m["revision"] or "main"
    try:  # the cache first, offline or not: a cached model needs no network
        folder = Path(snapshot_download(repo, revision=revision, cache_dir=hub_cache(), local_files_only=True,
                                        allow_patterns=patterns))
        return folder
    except Exception:  # noqa: BLE001 - not cached (huggingface_hub's LocalEntryNotFoundError and kin, by version)
        if not fetch or hub_offline():
            return None
    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=hub_cache(), allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - unknown repo, gated, no network: said as the user's
        first = (str(e).strip().splitlines() or [""])[0]
        near = nearest_presets(hub_id) if flag == "--model" else []
        raise ConfigError(f"{hub_id}: not in the local Hugging Face cache ({hub_cache()}), and fetching its "
                          f"{'config and ' if 'config.json' in patterns else ''}tokenizer files failed: "
                          f"{type(e).__name__}: {first}", where=flag,
                          fix=(f"the nearest preset: {', '.join(near)} (a real architecture, random init); " if near
                               else "") + "check the id (and HF_TOKEN for a gated model), download it where the hub "
                              f"is reachable (`hf download {repo}`), set HF_HUB_OFFLINE=1 to use the cache only, or "
                              "give a local directory") from None


_SAID: set[str] = set()  # hub models described on this process's console


def _from_hub(ref: str) -> ModelRef | None:
    folder = hub_snapshot(ref, CONFIG_FILES, fetch=True)
    if folder is None:
        return None
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{ref}: its snapshot in the Hugging Face cache has no config.json", where=str(folder),
                          fix="fetch it (`hf download ... config.json`), or give a local model directory")
    model = ModelRef("hub", ref, str(folder), json.loads((folder / "config.json").read_text()))
    if ref not in _SAID and os.environ.get("RANK", "0") == "0":  # the bench process and rank 0 say it, once
        _SAID.add(ref)
        from stackbench.core.console import note

        note(f"model {ref}: {folder} (the Hugging Face cache's snapshot); "
             + ("its weights are loaded" if model.weights_dir else
                "no weights there: random init from its config, as a preset"))
    return model


def nearest_presets(ref: str) -> list[str]:
    """The presets a name is closest to (difflib), matched against each preset's file name, its
    model name and its hub id, so 'Qwen/Qwen3-8B' and 'qwen3_8b' both find qwen3-8b."""
    keys: dict[str, str] = {}
    for name in preset_names():
        meta = load_preset(name)[1]
        for key in (name, meta["name"], preset_hub_id(name) or ""):
            if key:
                keys[key.lower()] = name
                keys[key.lower().rsplit("/", 1)[-1]] = name
    asked = ref.lower().replace("_", "-")
    hits = difflib.get_close_matches(asked, keys, n=6, cutoff=0.6)
    hits += difflib.get_close_matches(asked.rsplit("/", 1)[-1].split("@")[0], keys, n=6, cutoff=0.6)
    return list(dict.fromkeys(keys[h] for h in sorted(hits, key=lambda h: -difflib.SequenceMatcher(
        None, asked.rsplit("/", 1)[-1], h).ratio())))[:3]


def _unknown(ref: str) -> ConfigError:
    near = nearest_presets(ref)
    hint = f"the nearest preset{'s' * (len(near) > 1)}: {', '.join(near)} (a real architecture, random init); " \
        if near else ""
    if is_hub_id(ref):
        m = HUB_ID.fullmatch(ref)
        offline = " (HF_HUB_OFFLINE is set: nothing fetched)" if hub_offline() else ""
        return ConfigError(f"model {ref!r}: not a preset, not a directory, and not in the local Hugging Face cache "
                           f"({hub_cache()}){offline}", where="--model",
                           fix=f"{hint}download it (`hf download {m['repo']}"
                               + (f" --revision {m['revision']}" if m["revision"] else "")
                               + "`, or its config and tokenizer files only), point HF_HUB_CACHE / HF_HOME at the "
                                 "cache that has it, or give its directory (--model /path/to/model, holding "
                                 "config.json)")
    return ConfigError(f"model {ref!r} is neither a preset nor an existing directory", where="--model",
                       fix=f"{hint}or 'tiny', a hub id (org/name, from the local HF cache), a local model directory "
                           f"(--model /path/to/model, holding config.json), or a preset: {', '.join(preset_names())}")


def resolve(ref: str) -> ModelRef:
    if ref == "tiny":
        from stackbench.trainer.embedded import ASSET_DIR
        return ModelRef("tiny", "tiny-qwen3", str(ASSET_DIR), json.loads((ASSET_DIR / "config.json").read_text()))
    if ref.lower() in preset_names():
        config, meta = load_preset(ref.lower())
        return ModelRef("preset", meta["name"], "", config, ref.lower())
    path = Path(ref)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model directory {path} has no config.json", where="--model",
                              fix="point at a Hugging Face model directory (config.json, tokenizer, weights)")
        return ModelRef("dir", path.name, str(path.resolve()), json.loads((path / "config.json").read_text()))
    if is_hub_id(ref):
        found = _from_hub(ref)
        if found:
            return found
    raise _unknown(ref)


# --- presets' tokenizers ---------------------------------------------------------------------------

SIZE = re.compile(r"\d+(\.\d+)?[bm]|a\d+(\.\d+)?b|\d+x\d+(\.\d+)?b|\d+e", re.I)  # 8b, a22b, 8x7b, 16e


def preset_hub_id(name: str) -> str | None:
    """The hub id a preset's source names (https://huggingface.co/ORG/NAME ...)."""
    m = re.search(r"huggingface\.co/([\w.-]+/[\w.-]+)", load_preset(name)[1].get("source", ""))
    return m[1] if m else None


def preset_family(name: str) -> str:
    """A preset's name without its sizes: qwen3-235b-a22b -> qwen3, llama-3.1-8b -> llama-3.1
    (the sizes of one family share a tokenizer)."""
    parts = name.split("-")
    while len(parts) > 1 and SIZE.fullmatch(parts[-1]):
        parts.pop()
    return "-".join(parts)


def preset_tokenizer_ids(name: str) -> list[str]:
    """Hub ids whose tokenizer a preset takes, best first: its own source's, then its family's."""
    family = preset_family(name)
    ids = [preset_hub_id(name)] + [preset_hub_id(n) for n in preset_names() if n != name and preset_family(n) == family]
    return list(dict.fromkeys(i for i in ids if i))


def hf_config(ref: ModelRef):
    from transformers import AutoConfig

    if ref.path:
        return AutoConfig.from_pretrained(ref.path)
    config = copy.deepcopy(ref.config)  # configs change their nested dicts (DBRX's attn_config) as they read them
    return AutoConfig.for_model(config.pop("model_type"), **config)


def loaded_config(ref: ModelRef):
    """hf_config(ref), or a ConfigError naming the model where this transformers cannot read it (an
    unknown model_type, a key it refuses): transformers raises ValueError there, which callers of
    meta_model would take for a refused attention implementation."""
    try:
        return hf_config(ref)
    except Exception as e:  # noqa: BLE001 - whatever transformers raises for the user's file, said as the user's
        import transformers

        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{ref.name}: its config does not load with transformers {transformers.__version__}: "
                          f"{type(e).__name__}: {first}", where=f"{ref.path}/config.json" if ref.path else "--model",
                          fix="check model_type and the keys against what this transformers knows (a newer model "
                              "may need a newer transformers), or leave the model out of --model") from None


def text_config(config):
    """The config that holds the language model's sizes: a composite config's text config
    (Qwen3.5, Llama 4, Gemma 3 keep hidden size, heads, layers... in text_config), else the config."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


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

    config = loaded_config(ref)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:  # transformers' ValueError would read as an attention refusal
        import transformers

        raise ConfigError(f"{ref.name}: {type(config).__name__} has no causal language model in transformers "
                          f"{transformers.__version__} (AutoModelForCausalLM maps no class to it)",
                          where=f"{ref.path}/config.json" if ref.path else "--model",
                          fix="use a decoder-only language model (its text model's config where it is a "
                              "vision-language one), or leave the model out of --model")
    try:
        # import the modelling module before entering the meta device: transformers 4.51 builds a
        # tensor and calls .item() at import time ("Tensor.item() cannot be called on meta tensors")
        MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, **({"attn_implementation": attn_impl} if attn_impl else {}))
    except (ValueError, ImportError):
        raise  # transformers' refusals (an attention implementation, a size): attention() reads them
    except Exception as e:  # noqa: BLE001 - a config this transformers cannot build: said before any launch
        import transformers

        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{ref.name}: its config does not build with transformers {transformers.__version__}: "
                          f"{type(e).__name__}: {first}", where=f"{ref.path}/config.json" if ref.path else "--model",
                          fix="check the config against what this transformers reads (model_type, rope_scaling, "
                              "sizes), or use the transformers the model needs") from None


_SHAPES: dict[str, ModelShape] = {}  # one meta-device build per model and process (bench: the checks and the fit)


def shape(ref: ModelRef, model=None) -> ModelShape:
    """model: the meta_model(ref) when the caller has one. Cached by the reference's content."""
    key = json.dumps([ref.kind, ref.path, ref.config], sort_keys=True, default=str)
    if key not in _SHAPES:
        _SHAPES[key] = _shape(ref, model if model is not None else meta_model(ref))
    return _SHAPES[key]


def _shape(ref: ModelRef, model) -> ModelShape:
    from stackbench.trainer import moe

    cfg = loaded_config(ref)
    text = text_config(cfg)
    named = dict(model.named_parameters())  # deduplicates tied weights
    total = sum(p.numel() for p in named.values())
    embedding = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is model.get_input_embeddings().weight
    lm_head = 0 if tied or out is None else out.weight.numel()
    per_block, n_exp = moe.routed_parameters(model)  # the experts' weights, E and k, found from the structure
    ks = _experts_per_token(ref, cfg, text, per_block)
    routed = sum(n for n, _, _ in per_block)
    active = total - routed + sum(n * k // e for (n, e, _), k in zip(per_block, ks))
    layers = _size(text, "num_hidden_layers", ref, cfg)
    hidden = _size(text, "hidden_size", ref, cfg)
    per_layer = {key: _layer_values(text, key, layers) for key in ("num_attention_heads", "num_key_value_heads",
                                                                    "head_dim")}
    heads = _most_common(per_layer["num_attention_heads"]) or 0  # 0: no softmax attention (Mamba, RWKV, xLSTM)
    head_dim = _most_common(per_layer["head_dim"]) or (hidden // heads if heads else 0)
    mla = _get(text, "kv_lora_rank")  # DeepSeek's multi-head latent attention
    windows, note = attention_windows(text) if heads else ([0] * layers, "")
    notes = [note] if note else []
    if not heads:
        notes.append(f"{type(text).__name__} names no attention heads: no layer's sequence mixing is counted in the "
                     "attention FLOPs (its projections are, in 6N), so MFU is approximate")
    varying = [key for key, values in per_layer.items() if values and len(set(values)) > 1]
    if varying:
        notes.append(f"{', '.join(varying)}: not the same in every layer; the attention FLOPs use the most common "
                     "value, so MFU is approximate")
    return ModelShape(
        params=total, embedding=embedding, lm_head=lm_head, non_embedding=total - embedding - lm_head,
        active=active, largest_layer=max(p.numel() for p in named.values()), layers=layers,
        hidden=hidden, heads=heads, kv_heads=_most_common(per_layer["num_key_value_heads"]) or heads,
        head_dim=head_dim, vocab=_size(text, "vocab_size", ref, cfg),
        moe={"experts": n_exp, "top_k": ks[max(range(len(ks)), key=lambda i: per_block[i][0])],  # the largest block's
             "routed_params": routed} if n_exp else None,
        qk_head_dim=text.qk_nope_head_dim + text.qk_rope_head_dim if mla else head_dim,
        v_head_dim=text.v_head_dim if mla else head_dim, attention_windows=windows, attention_note="; ".join(notes),
    )


def _where(ref: ModelRef) -> str:
    return f"{ref.path}/config.json" if ref.path else "--model"


def _experts_per_token(ref: ModelRef, cfg, text, per_block: list) -> list[int]:
    """k of each sparse MoE block: the one its router (or the block) keeps, else the config's."""
    fallback = (config_top_k(text) or config_top_k(cfg)) if any(k is None for *_, k in per_block) else None
    ks = [k or fallback for *_, k in per_block]
    if not all(ks):
        raise ConfigError(f"{ref.name} ({type(cfg).__name__}): a sparse MoE model ({per_block[0][1]} experts) whose "
                          "routers keep no experts-per-token and whose config names none", where=_where(ref),
                          fix="set num_experts_per_tok in its config.json (in text_config where it has one)")
    over = [(k, e) for k, (_, e, _) in zip(ks, per_block) if k > e]
    if over:
        raise ConfigError(f"{ref.name} ({type(cfg).__name__}): sends each token to {over[0][0]} experts of a block of "
                          f"{over[0][1]}", where=_where(ref),
                          fix="set num_experts_per_tok (in text_config where it has one) to at most the experts "
                              "per block")
    return ks


def _size(text, key: str, ref: ModelRef, cfg) -> int:
    """A size every decoder has (layers, hidden size, vocabulary), or a ConfigError naming the model."""
    value = _get(text, key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{ref.name}: {type(cfg).__name__} has no {key}"
                          + (f" (nor its text config, {type(text).__name__})" if text is not cfg else ""),
                          where=_where(ref),
                          fix=f"set {key} in its config.json, or use a model whose config names its sizes the way "
                              "transformers' decoder-only configs do")
    return value


def _layer_values(text, key: str, layers: int | None = None) -> list | None:
    """key's value per layer where a heterogeneous config (transformers 5's per_layer_config: Gemma 4)
    varies it (reading the global value then raises), [the value] where it is one, None where the
    config has no such key."""
    if key in (getattr(text, "per_layer_attributes", None) or ()):
        return [getattr(text.per_layer_config[i], key, None) for i in range(layers or text.num_hidden_layers)]
    value = getattr(text, key, None)
    return None if value is None else [value]


def _most_common(values: list | None):
    return max(values, key=values.count) if values else None


def _get(text, key: str, default=None):
    """getattr for configs whose keys may vary per layer: the most common value there."""
    value = _most_common(_layer_values(text, key))
    return default if value is None else value


def config_top_k(config) -> int | None:
    """Experts per token as a config names it, where the model's blocks keep none: a key named like
    top_k (num_experts_per_tok, moe_topk, moe_top_k, moe_k ...), also nested (DBRX's ffn_config),
    never a bare top_k (4.x configs carry generation's top_k=50)."""
    from stackbench.trainer import moe

    def found(d: dict):
        for key, value in d.items():
            if isinstance(value, dict):
                yield from found(value)
            elif (isinstance(key, str) and key not in ("top_k", "topk") and moe.TOP_K_NAME.search(key)
                  and type(value) is int and value >= 1):
                yield value

    return next(found(config.to_dict()), None)


def attention_windows(cfg) -> tuple[list, str]:
    """(per layer: None full, N a sliding window / chunk of N tokens, 0 no softmax attention; a
    note where attention FLOPs are approximate). From transformers' layer_types where the config
    has them (5.x), else the 4.x fields (Llama 4's no_rope_layers, Jamba's attention period). A key
    a heterogeneous config varies per layer is read as its most common value."""
    layers = _get(cfg, "num_hidden_layers")
    kinds = _get(cfg, "layer_types")
    if not kinds and _get(cfg, "attention_chunk_size") and _get(cfg, "no_rope_layers"):
        kinds = ["chunked_attention" if rope else "full_attention"
                 for rope in _get(cfg, "no_rope_layers")]  # Llama 4, 4.x
    if not kinds and _get(cfg, "attn_layer_period"):  # Jamba, 4.x
        kinds = ["full_attention" if i % cfg.attn_layer_period == cfg.attn_layer_offset else "mamba"
                 for i in range(layers)]
    if not kinds:
        window = _get(cfg, "sliding_window") if _get(cfg, "use_sliding_window", True) else None
        kinds = ["sliding_attention" if window else "full_attention"] * layers
    by_kind = {"full_attention": None, "sliding_attention": _get(cfg, "sliding_window"),
               "chunked_attention": _get(cfg, "attention_chunk_size")}
    windows = [by_kind.get(k, 0) for k in kinds[:layers]]
    other = sorted({k for k in kinds[:layers] if k not in by_kind})
    note = (f"{sum(w == 0 for w in windows)} of {layers} layers are {', '.join(other)}: their sequence mixing is not "
            "counted in the attention FLOPs (their projections are, in 6N), so MFU is approximate") if other else ""
    return windows, note


@dataclass(frozen=True, slots=True)
class TokenizerChoice:
    """The tokenizer that counts a run's tokens, and how it was found (the record's
    resolved.tokenizer: name, source, fallback)."""

    name: str          # a hub id, a directory's name, or "embedded (tiny-qwen3)"
    source: str        # the directory it loads from
    fallback: bool     # the embedded tokenizer standing in for a model that has its own
    why: str = ""      # where it was found, or why the embedded one stands in (the console's words)
    suggest: str = ""  # the fallback's fix: the hub id whose tokenizer is the model's

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "fallback": self.fallback}

    def console_line(self, model: str) -> str:
        """What the console says about it (stderr, once per model): a note, or for the fallback a
        warning with its fix."""
        if not self.fallback:
            return f"data: {model}: tokens counted with the {self.name} tokenizer ({self.why})"
        own = f"--tokenizer {self.suggest} (fetched if not cached: tokenizer files only)" if self.suggest else \
            "--tokenizer DIR|org/name"
        get = f", or `hf download {self.suggest.split('@')[0]} --include 'tokenizer*'`" if self.suggest else ""
        return (f"warning: {model}: tokens are counted with stackbench's embedded tokenizer, not the model's own "
                f"({self.why}): token counts, rows dropped or truncated and --seq-len hints are not the model's\n"
                f"  fix: {own}, or a tokenizer directory{get} (into {hub_cache()})")


def _embedded(fallback: bool, why: str = "", suggest: str = "") -> TokenizerChoice:
    from stackbench.trainer.embedded import ASSET_DIR

    return TokenizerChoice("embedded (tiny-qwen3)", str(ASSET_DIR), fallback, why, suggest)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in HAS_TOKENIZER)


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def choose_tokenizer(ref: ModelRef, asked: str = "", backend: str = "native") -> TokenizerChoice:
    """The one choice of tokenizer for a run (the bench process tokenizes the data with it, the
    ranks train on it, the record names it): `asked` (the run config's tokenizer: a directory or a
    hub id, cached or fetched: tokenizer files only), else the model's own (its directory's or
    snapshot's; a preset's: its family's from the local HF cache, never fetched), else the
    embedded one (a fallback for any model but 'tiny'). backend "swift": ms-swift tokenizes with
    the directory it loads, which for a random-init model is a seeded copy with the embedded
    tokenizer (trainer/backends/swift.py), so that is what counts its tokens."""
    if asked:
        path = Path(asked).expanduser()
        if path.is_dir():
            if not _has_tokenizer(path):
                raise ConfigError(f"tokenizer directory {path} has no tokenizer files ({', '.join(HAS_TOKENIZER)})",
                                  where="--tokenizer", fix="point at a directory a Hugging Face tokenizer was saved to")
            return TokenizerChoice(path.resolve().name, str(path.resolve()), False, f"--tokenizer, {path.resolve()}")
        if is_hub_id(asked):
            folder = hub_snapshot(asked, TOKENIZER_FILES, fetch=True, flag="--tokenizer")
            if folder is not None and _has_tokenizer(folder):
                return TokenizerChoice(asked, str(folder), False, f"--tokenizer, {folder}")
        raise ConfigError(f"tokenizer {asked!r}: not a directory with tokenizer files"
                          + (f", nor in the local Hugging Face cache ({hub_cache()})" if is_hub_id(asked) else ""),
                          where="--tokenizer",
                          fix="give a tokenizer directory, or a hub id (org/name) that is cached or fetchable "
                              "(HF_HUB_OFFLINE unset); leave --tokenizer out for the model's own")
    if ref.kind == "tiny":
        return _embedded(False, "the embedded model's own")
    if backend == "swift" and not ref.weights_dir:
        return _embedded(True, "ms-swift loads a seeded copy of a random-init model, which carries the embedded "
                               "tokenizer")
    if ref.path and _has_tokenizer(Path(ref.path)):
        return TokenizerChoice(ref.name, ref.path, False, "its own, from its snapshot" if ref.kind == "hub" else
                               f"its own, from {ref.path}")
    if ref.kind != "preset":
        return _embedded(True, f"{ref.path} has no tokenizer files", ref.name if ref.kind == "hub" else "")
    ids = preset_tokenizer_ids(ref.preset) if ref.preset else []
    skipped = []
    for hub_id in ids:
        folder = hub_snapshot(hub_id, TOKENIZER_FILES, fetch=False)  # a preset never fetches: the cache only
        if folder is None or not _has_tokenizer(folder):
            continue
        if not _has_chat_template(folder):
            skipped.append(f"{hub_id}'s has no chat template")
            continue
        whose = "its own" if hub_id == ids[0] else "its family's"
        return TokenizerChoice(hub_id, str(folder), False, f"{whose}, from the local Hugging Face cache: {folder}")
    family = f" nor its family's ({len(ids) - 1} more)" if len(ids) > 1 else ""
    return _embedded(True, f"no {ids[0] if ids else ref.name} tokenizer{family} in the local Hugging Face cache"
                           + (f"; {'; '.join(skipped)}" if skipped else ""), ids[0] if ids else "")


def load_tokenizer(ref: ModelRef, choice: TokenizerChoice | None = None):
    """The tokenizer of `choice` (default: choose_tokenizer(ref)), with a pad token."""
    from transformers import AutoTokenizer

    path = (choice or choose_tokenizer(ref)).source
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ConfigError(f"the tokenizer in {path} has no chat_template", where="--model",
                          fix="name a tokenizer that has one: --tokenizer DIR or org/name")
    return tok


def tokenizer_for(cfg: RunConfig, ref: ModelRef):
    """(tokenizer, TokenizerChoice) for a run: what the bench process and every rank both call."""
    choice = choose_tokenizer(ref, cfg.tokenizer, cfg.backend)
    return load_tokenizer(ref, choice), choice


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

    from stackbench.trainer.compat import model_dtype

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
    from stackbench.trainer import moe

    model = build(ref, dtype=torch_dtype, attn_impl=attn_impl, seed=cfg.seed, weights_dir=weights)
    stage = (ds_config.get("zero_optimization") or {}).get("stage", 0)
    leaves = moe.register(model, ds_config, cfg.z3_leaf) if stage == 3 else []
    if frozen:
        model.requires_grad_(False)
    return model, [b.to_dict() for b in leaves]
