"""The embedded default model: a tiny Qwen3-shaped causal LM, nothing downloaded.

Shipped in trainer/assets/tiny-qwen3/: config.json and a byte-level BPE tokenizer trained on the
shipped sample sets with a ChatML chat template (`python -m trainer.embedded --rebuild` rewrites
them). Weights are not shipped: `materialize()` initialises them from a fixed seed and saves them
once to a cache directory, so every ZeRO stage (ZeRO-3 included, through `from_pretrained`)
starts from the same weights and fp32 losses can be compared across stages.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

ASSET_DIR = Path(__file__).parent / "assets" / "tiny-qwen3"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CONFIG = {  # ~3.7M parameters: small enough for 2 CPU ranks, shaped like Qwen3 (GQA, qk-norm, tied)
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
    "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
    "max_position_embeddings": 2048, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True, "hidden_act": "silu", "initializer_range": 0.02,
}
SEED = 1234


def build_assets(out: Path = ASSET_DIR, vocab_size: int = 1024) -> None:
    """Train the tokenizer on the shipped samples and write config + tokenizer files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from trainer.rows import SAMPLES_DIR

    texts = []
    for f in sorted(SAMPLES_DIR.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [m["content"] for m in row.get("messages", [])]
            texts += [row[k] for k in ("instruction", "input", "output", "rejected_response") if k in row]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=CONFIG["max_position_embeddings"])
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    from trainer.compat import portable_tokenizer_config

    portable_tokenizer_config(out)  # the image's transformers 4.x reads it too
    vocab = -(-len(fast) // 64) * 64  # round up to a multiple of 64, as real models do
    config = dict(CONFIG, vocab_size=vocab, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                  bos_token_id=None)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def cache_root() -> Path:
    return Path(os.environ.get("STACKBENCH_CACHE", Path.home() / ".cache" / "stackbench"))


def materialize(dest: Path | None = None) -> Path:
    """The tiny model as a complete HF directory (config, tokenizer, seeded weights); built once."""
    import hashlib

    from transformers import AutoConfig

    # The asset files' content names the directory, so a changed config never reuses old weights.
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(ASSET_DIR.iterdir()))).hexdigest()[:12]
    dest = dest or cache_root() / f"tiny-qwen3-{digest}-seed{SEED}"
    return save_seeded(AutoConfig.from_pretrained(ASSET_DIR), SEED, dest)


def save_seeded(config, seed: int, dest: Path, dtype: str = "float32", tokenizer_dir: Path = ASSET_DIR) -> Path:
    """`config` with weights initialised from `seed`, plus the tokenizer files of tokenizer_dir, as
    one HF directory at dest: written once, atomically (ranks of one host may race to it)."""
    import torch
    from transformers import AutoModelForCausalLM

    if (dest / "model.safetensors").exists() or (dest / "model.safetensors.index.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        torch.manual_seed(seed)
        from trainer.compat import model_dtype

        model = AutoModelForCausalLM.from_config(config, **model_dtype(getattr(torch, dtype)))
        model.save_pretrained(tmp)
        for f in tokenizer_dir.iterdir():
            if f.name != "config.json":
                shutil.copy(f, tmp / f.name)
        try:
            os.rename(tmp, dest)  # atomic; another process may have won the race: theirs is identical
        except OSError:
            if not dest.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rebuild", action="store_true", help="retrain the tokenizer and rewrite the asset files")
    args = p.parse_args()
    if args.rebuild:
        build_assets()
    print(materialize())
