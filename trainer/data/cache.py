"""Where a dataset's tokenized samples live: STACKBENCH_CACHE/data/<name>-<task>-<key>/, the key
naming everything that decides them: the file's content, the tokenizer's files and chat template,
the task, seq_len, the too-long policy, the data format, FORMAT and the source of the code that
makes samples (every *.py file of this package, trainer/data/: an edit to any of them, or a file
added, is a new cache entry).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from stackbench.core import files
from stackbench.trainer.data import rows as rows_mod
from stackbench.trainer.data.rows import default_path

FORMAT = 3     # bump when what the cache holds, or how it is made, changes
SOURCE = Path(__file__).parent  # the package whose source is part of the key: trainer/data/


@dataclass(frozen=True, slots=True)
class Spec:
    """What decides the tokenized samples."""

    path: str
    task: str
    seq_len: int
    too_long: str
    data_format: str = "auto"

    @classmethod
    def of(cls, cfg) -> "Spec":
        stream = cfg.task == "pt" and cfg.packing  # documents are cut into blocks, never dropped
        return cls(path=str(Path(cfg.data or default_path(cfg.task)).resolve()), task=cfg.task,
                   seq_len=0 if stream else cfg.seq_len, too_long="keep" if stream else cfg.too_long,
                   data_format=cfg.data_format)


def cache_root() -> Path:
    from stackbench.trainer.embedded import cache_root as root

    return root() / "data"


def digest_memo(path: Path) -> str:
    """The file's sha256, remembered by (size, mtime): a 1M-row file is hashed once, not per rank."""
    st = path.stat()
    memo = cache_root() / "digests" / (hashlib.sha256(str(path).encode()).hexdigest()[:24] + ".json")
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        saved = json.loads(memo.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = rows_mod.file_digest(path)
    files.write_atomic(memo, json.dumps({**stamp, "sha256": digest}), redact=False, where="STACKBENCH_CACHE")
    return digest


def tokenizer_digest(tokenizer) -> str:
    """The tokenizer's files (vocabulary, merges, special tokens) and its chat template."""
    h = hashlib.sha256((tokenizer.chat_template or "").encode())
    source = Path(getattr(tokenizer, "name_or_path", "") or "")
    for f in sorted(source.glob("*")) if source.is_dir() else []:
        if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "added_tokens", "vocab", "merges"))
                            or f.suffix == ".jinja"):
            h.update(f.name.encode() + f.read_bytes())
    h.update(json.dumps(sorted(map(str, tokenizer.all_special_tokens))).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """The source of everything that turns a file into samples: every *.py file of SOURCE (this
    package), in the order of its path there, each hashed with that path. A change to any of them,
    a file added, removed or renamed, is a new cache entry; no list of modules to keep up to date."""
    h = hashlib.sha256()
    named = sorted((p.relative_to(SOURCE).as_posix(), p) for p in SOURCE.rglob("*.py") if p.is_file())
    for name, path in named:
        text = path.read_bytes()
        h.update(b"%d:%s%d:" % (len(name.encode()), name.encode(), len(text)) + text)  # lengths: no two trees alike
    return h.hexdigest()


def cache_dir(spec: Spec, tokenizer) -> Path:
    content = {"format": FORMAT, "code": code_digest(), "file": digest_memo(Path(spec.path)),
               "tokenizer": tokenizer_digest(tokenizer), "task": spec.task, "seq_len": spec.seq_len,
               "too_long": spec.too_long, "data_format": spec.data_format}
    key = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / f"{Path(spec.path).stem[:40]}-{spec.task}-{key}"
