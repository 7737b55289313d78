"""The docs are tested like code: the generated pages are current, every relative link resolves,
every code block says whether CI runs it, and every `./sb` command names real tasks and flags
(the commands CI runs: tests/integration/test_docs_commands.py)."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import PurePosixPath

import pytest

from stackbench.cli import reference
from stackbench.core import record, record_doc
from tests.conftest import ROOT
from tests.support import docs

README_FIRST = [["./sb", "bench"], ["./sb", "test"]]


def test_the_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text() == reference.markdown(), (
        "docs/cli.md is stale: python -m stackbench.cli.reference --markdown > docs/cli.md")


def test_the_record_page_is_current():
    assert (ROOT / "docs" / "record.md").read_text() == record_doc.markdown(), (
        "docs/record.md is stale: python -m stackbench.core.record_doc > docs/record.md")


def test_every_field_of_the_committed_records_is_documented():
    files = [f for f in (ROOT / "results" / "reference").rglob("*.json")]
    recs = [json.loads(f.read_text()) for f in files]
    recs = [r for r in recs if r.get("schema") == record.SCHEMA]
    assert len(recs) > 50
    missing = {p: r["run_id"] for r in recs for p in record_doc.undocumented(r)}
    assert not missing, f"fields no row of core/record_doc.py FIELDS explains: {missing}"


def test_the_readme_is_a_landing_page_whose_first_block_is_the_two_commands():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 170
    first = docs.blocks(readme)[0]
    assert first.lang == "bash" and docs.commands(first.body) == README_FIRST


@pytest.mark.parametrize("page", docs.pages(), ids=lambda p: p.name if p.parent == ROOT else f"docs/{p.name}")
def test_every_relative_link_resolves(page):
    broken = []
    for line, target in docs.links(page):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.name}:{line}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in docs.anchors(dest):
            broken.append(f"{page.name}:{line}: {target} (no heading #{anchor} in {dest.name})")
        elif dest.relative_to(ROOT).as_posix() not in _tracked():
            broken.append(f"{page.name}:{line}: {target} (not tracked by git: not in a fresh clone)")
    assert not broken, "\n".join(broken)


@functools.cache
def _tracked() -> set[str]:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    return {".", *files, *(str(parent) for f in files for parent in PurePosixPath(f).parents)}


def _task_flags() -> dict[str, set[str]]:
    out = {}
    for t in reference.tasks():
        flags = {"-h", "--help"}
        for f in t["flags"]:
            flags.add(f["flag"])
            if f["kind"] == "bool":
                flags.add("--no-" + f["flag"][2:])
        out[t["name"]] = flags
    return out


def test_every_code_block_says_whether_ci_runs_it_and_names_real_tasks_and_flags():
    known, bad = _task_flags(), []
    for page in docs.pages():
        for block in docs.blocks(page):
            if block.lang in ("bash", "sh", "shell", "console"):
                if block.lang != "bash":
                    bad.append(f"{block.where}: ```{block.lang}: write ```bash (runs in CI) or ```bash needs=...")
                unknown = set(block.options) - {"needs", "exit"}
                if unknown or (block.options.get("needs", "slurm") not in docs.NEEDS):
                    bad.append(f"{block.where}: info string {block.options}: needs= one of {sorted(docs.NEEDS)}, "
                               "or exit=N")
                for argv in docs.commands(block.body):
                    call = docs.stackbench_call(argv)
                    if call is None or not call:
                        continue
                    if call[0] in ("--help", "-h"):
                        call = call[1:]
                        if not call:
                            continue
                    if call[0] in ("--list", "--version", "-l"):
                        continue
                    task, *rest = call
                    if task not in known:
                        bad.append(f"{block.where}: {' '.join(argv)}: no task {task!r}")
                        continue
                    for word in rest:
                        if word == "--":
                            break
                        if word.startswith("-") and word.split("=", 1)[0] not in known[task]:
                            bad.append(f"{block.where}: {' '.join(argv)}: {task} has no flag {word.split('=')[0]}")
    assert not bad, "\n".join(bad)


def test_the_docs_have_a_page_per_topic_and_the_index_links_each():
    index = (ROOT / "docs" / "README.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md")
    assert len(pages) >= 15
    assert all(f"({name})" in index for name in pages), [n for n in pages if f"({n})" not in index]
