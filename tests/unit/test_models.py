"""Models by the names people use (issue 38): hub ids resolved from a throwaway Hugging Face cache
laid out as huggingface_hub lays it out (offline), an unknown name pointing at the nearest preset;
and the tokenizer that counts the tokens: the model's own, a preset's family's from the local cache,
--tokenizer, or the embedded one as a warning said on the console (a dry-run's stderr) and kept in
the record's shape (resolved.tokenizer: name, source, fallback)."""

from __future__ import annotations

import pytest

from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError
from stackbench.trainer import models
from tests.support import hf_cache
from tests.support.cli import run_sb


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    hf_cache.use(monkeypatch, root)
    return root


def test_a_hub_id_resolves_offline_from_the_cache_by_branch_or_commit(cache):
    snapshot = hf_cache.add_model(cache, "org/tiny", hf_cache.tiny_files())
    ref = models.resolve("org/tiny")
    assert (ref.kind, ref.name, ref.path) == ("hub", "org/tiny", str(snapshot))
    assert ref.weights_dir is None and ref.config["model_type"] == "qwen3"  # no weights there: random init
    assert models.resolve(f"org/tiny@{snapshot.name}").path == str(snapshot)
    with pytest.raises(ConfigError) as e:
        models.resolve("org/tiny@v2")
    assert "HF_HUB_OFFLINE is set" in e.value.what and "--revision v2" in e.value.fix
    (snapshot.parent.parent / "blobs" / "w").write_bytes(b"")
    (snapshot / "model.safetensors").symlink_to("../../blobs/w")
    assert models.resolve("org/tiny").weights_dir == str(snapshot)  # a downloaded model's weights are loaded


@pytest.mark.parametrize("name, nearest, hub", [
    ("Qwen/Qwen3-8B", "qwen3-8b", True), ("qwen3_8b", "qwen3-8b", False), ("meta-llama/Llama-3.1-8B", "llama-3.1-8b",
                                                                            True)])
def test_an_unknown_name_says_the_nearest_preset_and_how_to_give_a_directory(cache, name, nearest, hub):
    with pytest.raises(ConfigError) as e:
        models.resolve(name)
    text = e.value.render()
    assert "nearest preset" in text and nearest in text.split("nearest preset")[1].split(";")[0]
    assert "--model /path/to/model" in text and ("Hugging Face cache" in text) == hub
    with pytest.raises(ConfigError, match="neither a preset nor an existing directory"):
        models.resolve("/no/such/model")


def test_a_preset_takes_its_familys_tokenizer_from_the_cache_else_the_embedded_one_said(cache):
    preset = models.resolve("qwen3-8b")
    fallback = models.choose_tokenizer(preset)
    assert fallback.to_dict() == {"name": "embedded (tiny-qwen3)", "source": fallback.source, "fallback": True}
    line = fallback.console_line("qwen3-8b")
    assert line.startswith("warning: qwen3-8b: tokens are counted with stackbench's embedded tokenizer")
    assert "--tokenizer Qwen/Qwen3-8B" in line and str(cache) in line
    family = hf_cache.add_model(cache, "Qwen/Qwen3-0.6B", hf_cache.tiny_files(config=False))
    assert models.choose_tokenizer(preset).to_dict() == {"name": "Qwen/Qwen3-0.6B", "source": str(family),
                                                         "fallback": False}
    own = hf_cache.add_model(cache, "Qwen/Qwen3-8B", hf_cache.tiny_files(config=False))
    assert models.choose_tokenizer(preset).source == str(own)  # its own source's first
    assert models.choose_tokenizer(models.resolve("llama-3.1-8b")).fallback  # another family's is not taken
    assert not models.choose_tokenizer(models.resolve("tiny")).fallback  # the embedded model's own
    assert models.choose_tokenizer(preset, backend="swift").fallback  # ms-swift's seeded copy: the embedded one


def test_the_tokenizer_knob_a_directory_or_a_hub_id_and_the_run_id(cache, tmp_path):
    hub = hf_cache.add_model(cache, "org/tok", hf_cache.tiny_files(config=False))
    hf_cache.add_model(cache, "org/bare", hf_cache.tiny_files(tokenizer=False))
    bare = models.resolve("org/bare")
    assert models.choose_tokenizer(bare).fallback  # a hub snapshot without tokenizer files
    assert models.choose_tokenizer(bare, "org/tok").to_dict() == {"name": "org/tok", "source": str(hub),
                                                                  "fallback": False}
    assert models.choose_tokenizer(bare, str(hub)).source == str(hub)
    for bad in ("org/none", str(tmp_path)):
        with pytest.raises(ConfigError, match="--tokenizer"):
            models.choose_tokenizer(bare, bad)
    tok, choice = models.tokenizer_for(RunConfig(model="org/bare", tokenizer="org/tok"), bare)
    assert choice.source == str(hub) and tok.name_or_path == str(hub)
    assert RunConfig(tokenizer="org/tok").run_id != RunConfig().run_id  # a non-default enters the run id
    with pytest.raises(ConfigError, match="--tokenizer with --backend swift"):
        RunConfig(tokenizer="org/tok", backend="swift")


def test_a_dry_run_says_which_tokenizer_counts_and_warns_once_for_the_fallback(cache, tmp_path, capfd, monkeypatch):
    argv = ["bench", "--dry-run", "--model", "qwen3-8b", "--tasks", "sft,dpo", "--zero", "2", "--nodes", "1",
            "--results", str(tmp_path / "r")]
    code, out, err = run_sb(argv, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert err.count("warning: qwen3-8b: tokens are counted with stackbench's embedded tokenizer") == 1, err
    assert "warning" not in out
    hf_cache.add_model(cache, "Qwen/Qwen3-8B", hf_cache.tiny_files(config=False))
    code, out, err = run_sb(argv, capfd, monkeypatch)
    assert code == 0 and "warning" not in err, err[-3000:]
    assert err.count("data: qwen3-8b: tokens counted with the Qwen/Qwen3-8B tokenizer") == 1, err
