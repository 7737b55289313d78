"""The data cache's key (trainer/data/cache.py) covers the source of every module of trainer/data/:
an edit to any of them, or a module added or renamed, is a new cache entry; the same tree, wherever
it lies, the same key; what is not source (__pycache__) changes nothing."""

import shutil
from types import SimpleNamespace

import pytest

from stackbench.trainer.data import cache
from tests.conftest import ROOT, write_jsonl

PACKAGE = ROOT / "trainer" / "data"
MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))
# a tokenizer as tokenizer_digest reads it: no files, a template, its special tokens
TOKENIZER = SimpleNamespace(chat_template="{{ messages }}", name_or_path="", all_special_tokens=["<eos>"])


@pytest.fixture
def key(tmp_path, monkeypatch):
    """key(tree): the cache entry's name (cache_dir) for one file and settings, code_digest reading tree."""
    monkeypatch.setenv("STACKBENCH_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "d.jsonl", ['{"text": "hello"}'])
    spec = cache.Spec(path=str(path), task="pt", seq_len=64, too_long="drop")

    def of(tree):
        monkeypatch.setattr(cache, "SOURCE", tree)
        cache.code_digest.cache_clear()
        return cache.cache_dir(spec, TOKENIZER).name

    yield of
    cache.code_digest.cache_clear()  # later callers digest the real package again


@pytest.fixture
def copy(tmp_path):
    """A copy of trainer/data/ (its source only) in a tmp tree."""
    return shutil.copytree(PACKAGE, tmp_path / "tree" / "data", ignore=shutil.ignore_patterns("__pycache__"))


def test_every_module_is_covered():
    assert {"__init__.py", "rows.py", "layouts.py", "chat.py", "cache.py", "tokenize.py", "dataset.py", "checks.py",
            "batches.py"} <= set(MODULES)


def test_the_same_tree_gives_the_same_key(key, copy):
    assert key(copy) == key(copy) == key(PACKAGE)  # the path in the package is hashed, not where it lies


@pytest.mark.parametrize("module", MODULES)
def test_an_edit_to_any_module_is_a_new_key(key, copy, module):
    before = key(copy)
    target = copy / module
    text = target.read_text()
    target.write_text(text + "# a comment\n")
    appended = key(copy)
    mid = len(text) // 2
    target.write_text(text[:mid] + ("y" if text[mid] == "x" else "x") + text[mid + 1:])  # one character
    one_char = key(copy)
    target.write_text(text)
    assert len({before, appended, one_char}) == 3
    assert key(copy) == before  # the content decides, not the file's mtime


def test_a_module_added_or_renamed_is_a_new_key(key, copy):
    before = key(copy)
    (copy / "extra.py").write_text("")
    added = key(copy)
    (copy / "extra.py").unlink()
    (copy / "checks.py").rename(copy / "checks2.py")
    renamed = key(copy)
    assert len({before, added, renamed}) == 3


def test_what_is_not_source_changes_nothing(key, copy):
    before = key(copy)
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "cache.cpython-312.pyc").write_bytes(b"\0compiled")
    (copy / "notes.txt").write_text("not code")
    assert key(copy) == before
