"""The embedded default model: a tiny Qwen3-shaped causal LM, nothing downloaded.

Shipped in trainer/assets/tiny-qwen3/: config.json and a BPE tokenizer with byte fallback trained
on the shipped sample sets (English, Japanese, Chinese) with a ChatML chat template
(`python -m trainer.embedded --rebuild` rewrites them). Weights are not shipped: `materialize()`
initialises them from a fixed seed and saves them once to a cache directory, so every ZeRO stage
(ZeRO-3 included, through `from_pretrained`) starts from the same weights and fp32 losses can be
compared across stages.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from stackbench.core import files

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
WEIGHTS_FORMAT = 2  # bump when what save_seeded writes changes
MERGES = 1536  # learned from the samples on top of the coverage characters (build_assets)


def coverage_characters() -> list[str]:
    """The characters the tokenizer holds as single tokens beyond what the samples teach it: ASCII,
    kana, CJK punctuation and full-width forms, and the common ideographs of Chinese and Japanese:
    GB 2312's level-1 hanzi (3,755, the most used) and JIS X 0208's level-1 kanji (2,965), read from
    Python's own codecs, no download. Anything else falls back to its UTF-8 bytes."""
    chars = [chr(c) for c in range(0x20, 0x7F)] + ["\n", "\t"]
    chars += [chr(c) for r in ((0x3000, 0x3040), (0x3041, 0x3097), (0x30A0, 0x3100), (0xFF01, 0xFF5F))
              for c in range(*r)]
    for codec, rows in (("gb2312", range(0xB0, 0xD8)), ("euc_jp", range(0xB0, 0xD0))):
        for hi in rows:
            for lo in range(0xA1, 0xFF):
                try:
                    chars.append(bytes([hi, lo]).decode(codec))
                except UnicodeDecodeError:
                    pass
    return list(dict.fromkeys(chars))


def sample_texts() -> list[str]:
    from stackbench.trainer.data.rows import SAMPLES_DIR

    texts = []
    for f in sorted(SAMPLES_DIR.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [m["content"] for m in row.get("messages", [])]
            texts += [row[k] for k in ("instruction", "input", "output", "rejected_response") if k in row]
    return texts


def build_assets(out: Path = ASSET_DIR, merges: int = MERGES) -> None:
    """Train the tokenizer on the shipped samples and write config + tokenizer files.

    A BPE over characters with byte fallback, as Llama 2's, Mistral's and Gemma's tokenizers are:
    every coverage character is one token (so Japanese and Chinese cost about a token per
    character, not three bytes), `merges` merges learned from the samples on top, and the 256
    byte tokens for everything else."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = coverage_characters()
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=len(SPECIAL) + len(alphabet) + merges, special_tokens=SPECIAL,
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet) + 64)
    tok = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=False))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    tok.train_from_iterator(sample_texts(), trainer)
    trained = json.loads(tok.to_str())
    vocab = trained["model"]["vocab"]
    for t in byte_tokens:  # the fallback for any character outside the vocabulary
        vocab.setdefault(t, len(vocab))
    trained["model"]["byte_fallback"] = True
    trained["decoder"] = json.loads(decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                                       decoders.Fuse()]).__getstate__())
    tok = Tokenizer.from_str(json.dumps(trained))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=CONFIG["max_position_embeddings"])
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    from stackbench.trainer.compat import portable_tokenizer_config

    portable_tokenizer_config(out)  # the image's transformers 4.x reads it too
    vocab_size = -(-len(fast) // 64) * 64  # round up to a multiple of 64, as real models do
    config = dict(CONFIG, vocab_size=vocab_size, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                  bos_token_id=None)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def cache_root() -> Path:
    return Path(os.environ.get("STACKBENCH_CACHE", Path.home() / ".cache" / "stackbench"))


def materialize(dest: Path | None = None) -> Path:
    """The tiny model as a complete HF directory (config, tokenizer, seeded weights); built once."""
    import hashlib

    from transformers import AutoConfig

    # The asset files' content names the directory, so a changed config never reuses old weights.
    # (and WEIGHTS_FORMAT: a directory saved before its config was made portable is not reused)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(ASSET_DIR.iterdir()))
                            + str(WEIGHTS_FORMAT).encode()).hexdigest()[:12]
    dest = dest or cache_root() / f"tiny-qwen3-{digest}-seed{SEED}"
    return save_seeded(AutoConfig.from_pretrained(ASSET_DIR), SEED, dest)


def save_seeded(config, seed: int, dest: Path, dtype: str = "float32", tokenizer_dir: Path = ASSET_DIR) -> Path:
    """`config` with weights initialised from `seed`, plus the tokenizer files of tokenizer_dir, as
    one HF directory at dest: written once, atomically (ranks of one host may race to it). Call it
    before torch.distributed is initialised: transformers 5 then saves on global rank 0 only, and
    node 1's first rank would find an empty directory."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from stackbench.trainer import compat

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, **compat.model_dtype(getattr(torch, dtype)))
        model.save_pretrained(tmp)
        compat.portable_model_config(tmp)  # the image's transformers 4.x reads RoPE's theta the same
        for f in tokenizer_dir.iterdir():
            if f.name != "config.json":
                shutil.copy(f, tmp / f.name)

    files.build_once(dest, "config.json", build)
    return dest


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rebuild", action="store_true", help="retrain the tokenizer and rewrite the asset files")
    args = p.parse_args()
    if args.rebuild:
        build_assets()
    print(materialize())
