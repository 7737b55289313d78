"""The docs read as data: README.md and docs/*.md, their fenced code blocks and their links.

A ```bash block runs in CI as written (from the repository root, `bash -euo pipefail`, exit 0);
```bash exit=N must exit N; ```bash needs=WHAT is not run (WHAT says what it needs), but its
`./sb` commands are still checked against the real tasks and flags. Other languages (text, json,
yaml, toml) are not commands.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

NEEDS = {"slurm", "hosts", "gpu", "docker", "registry", "long"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
ENTRY_POINTS = (("./sb",), ("invoke",), ("python", "-m", "stackbench"), ("python3", "-m", "stackbench"))


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    options: dict[str, str]
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang == "bash" and "needs" not in self.options

    @property
    def exit_code(self) -> int:
        return int(self.options.get("exit", 0))


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        lang, options = (info[0] if info else ""), dict(o.split("=", 1) if "=" in o else (o, "") for o in info[1:])
        out.append(Block(page, text.count("\n", 0, m.start()) + 1, lang, options, m.group(2)))
    return out


def commands(body: str) -> list[list[str]]:
    """The simple commands of a shell block: continuations joined, comments dropped, split at
    `&&`, `||`, `;` and `|`; redirections left out."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
            lexer.whitespace_split, lexer.commenters = True, "#"
            words = list(lexer)
        except ValueError:
            continue
        current: list[str] = []
        skip_next = False
        for w in words:
            if skip_next:
                skip_next = False
            elif w in (";", "&&", "||", "|", "&"):
                out.append(current) if current else None
                current = []
            elif w in (">", ">>", "<", "2>", "2>&1") or set(w) <= set("<>&"):
                skip_next = True
            else:
                current.append(w)
        if current:
            out.append(current)
    return out


def stackbench_call(argv: list[str]) -> list[str] | None:
    """The task arguments of a `./sb ...`, `invoke ...` or `python -m stackbench ...` command, else None."""
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):  # VAR=value ./sb ...
        argv = argv[1:]
    for entry in ENTRY_POINTS:
        if tuple(argv[:len(entry)]) == entry:
            return argv[len(entry):]
    return None


def links(page: Path) -> list[tuple[int, str]]:
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lowercased, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        out.add(slug)
    return out
