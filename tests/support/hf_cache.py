"""A throwaway Hugging Face hub cache laid out as huggingface_hub lays it out, nothing downloaded:

    <cache>/models--ORG--NAME/blobs/<sha256 of the file>        the content, once
    <cache>/models--ORG--NAME/snapshots/<commit>/<file>         a relative symlink to its blob
    <cache>/models--ORG--NAME/refs/main                         the commit main points at

Point HF_HUB_CACHE at <cache> (and set HF_HUB_OFFLINE=1) and huggingface_hub's
snapshot_download(..., local_files_only=True) finds the snapshot."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stackbench.trainer.embedded import ASSET_DIR

TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def add_model(cache: Path, repo_id: str, files: dict[str, bytes], *, ref: str = "main") -> Path:
    """Put repo_id's files into the cache as one snapshot; its directory."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()  # a commit-shaped id (40 hex)
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def tiny_files(*, config: bool = True, tokenizer: bool = True) -> dict[str, bytes]:
    """The embedded tiny Qwen3's config and tokenizer files (no weights)."""
    names = (("config.json",) if config else ()) + (TOKENIZER if tokenizer else ())
    return {name: (ASSET_DIR / name).read_bytes() for name in names}


def use(monkeypatch, cache: Path) -> None:
    """This process and the ranks it starts read `cache`, offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(cache.parent / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
