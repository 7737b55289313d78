"""Secrets planted in the environment of a test, unique per session, and the search for them in
files, directories, traces and image tars (they must appear in none)."""

from __future__ import annotations

import secrets
from pathlib import Path

from stackbench.core.secrets import HASH_KEY, fingerprint

# two secrets and the key of the ranks' hashes of them (set here, so the hashes can be checked)
SECRETS = {"HF_TOKEN": f"hf_planted{secrets.token_hex(12)}", "WANDB_API_KEY": f"wandb{secrets.token_hex(16)}"}
PLANTED = {**SECRETS, HASH_KEY: f"key{secrets.token_hex(16)}"}
NEEDLES = [v.encode() for v in PLANTED.values()]


def hashes() -> dict[str, str]:
    """What a rank that saw the planted secrets records for them."""
    return {k: fingerprint(v, PLANTED[HASH_KEY]) for k, v in SECRETS.items()}


def found_in_bytes(data: bytes) -> list[str]:
    return [name for name, v in zip(PLANTED, NEEDLES) if v in data]


def found_in(*roots: Path) -> list[str]:
    """'<path>: <secret name>' for every file under roots that holds a planted value."""
    hits = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            hits += [f"{path}: {name}" for name in found_in_bytes(path.read_bytes())]
    return hits


def found_in_stream(chunks) -> list[str]:
    """Search a byte stream (docker save) chunk by chunk, across chunk borders."""
    keep = max(len(n) for n in NEEDLES)
    tail, hits = b"", set()
    for chunk in chunks:
        data = tail + chunk
        hits.update(found_in_bytes(data))
        tail = data[-keep:]
    return sorted(hits)
