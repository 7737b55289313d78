"""bench/dscheck.py: each run's effective DeepSpeed config against the installed DeepSpeed, before
anything launches. Bad configs (table below, written as JSON files; two public-repo-style ones in
tests/support/ds_configs/refused_*) are one ConfigError naming the file, the key and the nearest
valid name; every good config (the other files there, the ms-swift names, the configs stackbench
generates from its knobs) passes."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json

import deepspeed  # imported here, not first inside a test whose stderr is captured (its logger keeps the stream)
import pytest

from stackbench.bench import dscheck
from stackbench.core.config import RunConfig
from stackbench.core.errors import EXIT_BAD_INPUT, ConfigError
from stackbench.trainer import ds_source
from tests.conftest import ROOT
from tests.support.cli import run_sb

CONFIGS = ROOT / "tests" / "support" / "ds_configs"
GOOD_FILES = sorted(p.name for p in CONFIGS.iterdir() if not p.name.startswith("refused_"))
HF = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
      "bf16": {"enabled": "auto"}}  # the Hugging Face Trainer style most public configs share


def _check(deepspeed: str = "", ds: str = "", **knobs) -> None:
    dscheck.check([ds_source.reconcile(RunConfig(deepspeed=deepspeed, ds=ds, **knobs), set())])


def _refused(path: str, **knobs) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        _check(path, **knobs)
    return e.value


# (what is wrong, the config, the key the error names, what its fix says)
BAD = [
    ("top-level typo", {"zero_optimisation": {"stage": 3}},
     "zero_optimisation", "did you mean zero_optimization?"),
    ("typo inside zero", {"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_sizes": 5e7}},
     "zero_optimization.stage3_prefetch_bucket_sizes", "did you mean zero_optimization.stage3_prefetch_bucket_size?"),
    ("typo inside zero, its auto filled by no one",
     {"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_sizes": "auto"}},
     "zero_optimization.stage3_prefetch_bucket_sizes", "did you mean zero_optimization.stage3_prefetch_bucket_size?"),
    ("British spelling", {"zero_optimization": {"stage": 2, "offload_optimiser": {"device": "cpu"}}},
     "zero_optimization.offload_optimiser", "did you mean zero_optimization.offload_optimizer?"),
    ("typo two levels down",
     {"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu", "pin_memorys": True}}},
     "zero_optimization.offload_param.pin_memorys", "did you mean zero_optimization.offload_param.pin_memory?"),
    ("a value the enum refuses", {"zero_optimization": {"stage": 3, "offload_param": {"device": "gpu"}}},
     "zero_optimization.offload_param.device", "'none', 'cpu' or 'nvme'"),
    ("a ZeRO setting at the top", {"zero_optimization": {"stage": 2}, "offload_optimizer": {"device": "cpu"}},
     "offload_optimizer", "did you mean zero_optimization.offload_optimizer?"),
    ("typo in a monitor", {"csv_monitor": {"enabled": True, "output_dir": "logs"}},
     "csv_monitor.output_dir", "did you mean csv_monitor.output_path?"),
    ("typo in a section read key by key", {"activation_checkpointing": {"partition_activation": True}},
     "activation_checkpointing.partition_activation", "did you mean activation_checkpointing.partition_activations?"),
    ("typo in aio", {"aio": {"block_sizes": 1048576}}, "aio.block_sizes", "did you mean aio.block_size?"),
    ("scheduler type", {"scheduler": {"type": "WarmupLr", "params": {}}}, "scheduler.type", "did you mean WarmupLR?"),
    ("optimizer type", {"optimizer": {"type": "AdamWW", "params": {"lr": 1e-4}}}, "optimizer.type",
     "did you mean AdamW?"),
    ("a removed feature", {"amp": {"enabled": True}}, "amp", "remove amp"),
    ("bf16 and fp16 together", {"train_batch_size": 4, "train_micro_batch_size_per_gpu": 2,  # no "auto": past
                                "gradient_accumulation_steps": 1,  # transformers' resolver, which refuses it too
                                "bf16": {"enabled": True}, "fp16": {"enabled": True}}, "", "make the sections agree"),
]


@pytest.mark.parametrize("name, extra, key, fix", BAD, ids=[b[0] for b in BAD])
def test_a_bad_config_is_one_error_naming_the_file_the_key_and_the_nearest_name(name, extra, key, fix, tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**HF, "zero_optimization": {"stage": 2}, **extra}))
    e = _refused(str(path))
    assert e.where == (f"{path}: {key}" if key else str(path)), e.render()
    assert fix in e.fix and "DeepSpeed " + deepspeed.__version__ in e.what, e.render()


def test_a_public_config_with_tensor_and_pipeline_parallel_blocks_names_both():
    e = _refused(str(CONFIGS / "refused_tp_pp_blocks.json"))
    text = e.render()
    assert "pipeline_parallel" in e.where and deepspeed.__version__ in e.what, text
    assert "tensor_parallel.tp_size: DeepSpeed" in text and "did you mean tensor_parallel.autotp_size?" in text


@pytest.mark.parametrize("installed", [False, True])
def test_an_enabled_monitor_needs_its_package(installed, monkeypatch, capsys):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "tensorboard":
            return importlib.machinery.ModuleSpec("tensorboard", None) if installed else None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    path = str(CONFIGS / "refused_tensorboard_monitor.json")
    if installed:
        _check(path, nodes=2)
        return
    e = _refused(path, nodes=2)
    assert e.where == f"{path}: tensorboard.enabled" and "tensorboard package is not installed" in e.what
    assert "install tensorboard" in e.fix and "tensorboard.enabled" in e.fix


def test_a_ds_override_is_named_as_the_place():
    with pytest.raises(ConfigError) as e:
        _check(ds='{"zero_optimization.stage3_prefetch_bucket_sizes": 5e7}', zero_stage=3)
    assert e.value.where == "--ds zero_optimization.stage3_prefetch_bucket_sizes"
    assert "zero_optimization.stage3_prefetch_bucket_size?" in e.value.fix


GOOD = ([str(CONFIGS / name) for name in GOOD_FILES] + list(ds_source.SWIFT_NAMES))


@pytest.mark.parametrize("ref", GOOD, ids=lambda r: r.rsplit("/", 1)[-1])
def test_good_configs_pass_and_the_console_says_against_which_deepspeed(ref, capsys):
    _check(ds_source.canonical_ref(ref), nodes=2)
    assert f"deepspeed config: checked against DeepSpeed {deepspeed.__version__} (1 configs)" in capsys.readouterr().err


@pytest.mark.parametrize("stage, offload", [(0, "none"), (1, "optimizer"), (2, "none"), (2, "optimizer"),
                                            (3, "none"), (3, "optimizer"), (3, "params"),
                                            (3, "optimizer+params")])
def test_the_configs_stackbench_generates_pass(stage, offload):
    _check(zero_stage=stage, offload=offload, nodes=2, dtype="bf16")


def test_one_check_per_distinct_config_and_deprecations_said(tmp_path, capsys):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**HF, "zero_optimization": {"stage": 2, "cpu_offload": True}}))
    cfgs = [ds_source.reconcile(RunConfig(deepspeed=str(path), nodes=n, task=t), set())
            for n in (1, 2) for t in ("sft", "pt")]
    dscheck.check(cfgs)
    err = capsys.readouterr().err
    assert "(2 configs)" in err  # the task does not change the config, the world size does
    assert err.count("cpu_offload is deprecated") == 1 and f"note: {path}: DeepSpeed" in err


def test_without_deepspeed_here_the_configs_are_read_as_json_only(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**HF, "zero_optimisation": {"stage": 3}}))
    _check(str(path))  # the typo is the ranks' to find
    assert "checked only as JSON" in capsys.readouterr().err
    path.write_text('{"zero_optimization": {"stage": 3},}')
    ds_source.stated_for.cache_clear()
    with pytest.raises(ConfigError, match="not JSON"):
        _check(str(path))


def test_bench_refuses_a_bad_config_before_anything_runs(tmp_path, capfd, monkeypatch):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({**HF, "zero_optimisation": {"stage": 3},
                               "zero_optimization": {"stage": 3, "stage3_prefetch_bucket_sizes": 5e7}}))
    code, out, err = run_sb(["bench", "--dry-run", "--deepspeed", str(bad), "--tasks", "sft", "--zero", "3",
                             "--results", str(tmp_path / "results")], capfd, monkeypatch)
    assert code == EXIT_BAD_INPUT and "Traceback" not in err, err[-2000:]
    assert f"{bad}: zero_optimisation: DeepSpeed {deepspeed.__version__} reads no top-level key" in err
    assert "did you mean zero_optimization?" in err
    assert "zero_optimization.stage3_prefetch_bucket_sizes" in err and "# sft-" not in out
