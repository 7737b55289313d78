"""A [git] piece (apex) comes from a checkout fetched beforehand at exactly the locked commit, or
from its URL when that answers; anything else is refused before the engine starts."""

import subprocess

import pytest

from stackbench.core.errors import UserError
from stackbench.imagebuild import profile, sources


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    repo = tmp_path / "apex"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / "setup.py").write_text("print('apex')\n")
    _git("add", ".", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=repo)
    first = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "setup.py").write_text("print('apex 2')\n")
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two", cwd=repo)
    return repo, first


def _megatron(commit: str, url: str = "https://unreachable.invalid/NVIDIA/apex"):
    prof = profile.load("cuda12.4-megatron")
    prof.git = {"apex": {**prof.git["apex"], "url": url, "commit": commit}}
    return prof


def test_a_checkout_at_the_locked_commit_is_taken(checkout):
    repo, first = checkout
    _git("checkout", "-q", first, cwd=repo)
    assert sources.git_sources(_megatron(first), {"apex": str(repo)}) == {
        "apex": {"source": str(repo), "commit": first}}


def test_a_checkout_at_another_commit_or_with_edits_is_refused(checkout):
    repo, first = checkout
    with pytest.raises(UserError, match=f"is at .*, the lock wants {first[:12]}") as e:
        sources.git_sources(_megatron(first), {"apex": str(repo)})
    assert f"checkout --force {first}" in e.value.fix
    _git("checkout", "-q", first, cwd=repo)
    (repo / "setup.py").write_text("edited\n")
    with pytest.raises(UserError, match="has local edits"):
        sources.git_sources(_megatron(first), {"apex": str(repo)})


def test_no_source_and_an_unreachable_url_is_refused_with_the_way_out(checkout, tmp_path):
    repo, first = checkout
    with pytest.raises(UserError, match="which this machine cannot reach") as e:
        sources.git_sources(_megatron(first), {})
    assert e.value.kind == "unreachable" and "--git-source apex=DIR" in e.value.fix
    with pytest.raises(UserError, match="is not a git checkout"):
        sources.git_sources(_megatron(first), {"apex": str(tmp_path / "nowhere")})
    with pytest.raises(UserError, match="does not build from git"):
        sources.git_sources(_megatron(first), {"te": str(repo)})
