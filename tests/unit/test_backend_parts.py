"""The swift backend's plumbing without ms-swift: the row order its sampler must see, the argv it
gets, and which interpreter bench starts it with (tests/integration/test_backends.py runs it)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stackbench.bench.launchers import backends
from stackbench.core.config import TASKS, RunConfig, knob_fields
from stackbench.core.errors import ConfigError, UserError
from stackbench.trainer import models
from stackbench.trainer.backends.hf import KEYWORDS, knob_keywords
from stackbench.trainer.backends.swift import FLAGS, VALUES, ordered_rows, swift_argv
from stackbench.trainer.data import batches, dataset
from tests.conftest import ROOT


def swift_sampler(rows: list, rank: int, world: int, micro_batch: int) -> list[list]:
    """ms-swift 4.6's BatchSamplerShard without shuffling: rank r takes positions r, r+world, ...
    in batches of micro_batch (swift/dataloader/shard.py)."""
    mine = rows[rank:(len(rows) // world) * world:world]
    return [mine[i:i + micro_batch] for i in range(0, len(mine) - micro_batch + 1, micro_batch)]


@pytest.mark.parametrize("world, micro_batch, grad_accum", [(2, 2, 1), (4, 1, 2), (3, 2, 2)])
def test_rows_reach_each_rank_in_the_native_order(tokenizer, world, micro_batch, grad_accum):
    ds = dataset.load(RunConfig(task="sft", seq_len=256), tokenizer)
    steps = 40  # more than the dataset holds: rows cycle as the native batches do
    rows = ordered_rows(ds, world, micro_batch, steps * grad_accum)
    for rank in range(world):
        native = batches.micro_batches(ds, rank=rank, world=world, micro_batch=micro_batch, grad_accum=grad_accum,
                                       pad_id=0, seq_len=256, padding="longest")
        for got in swift_sampler(rows, rank, world, micro_batch):
            want = next(native)
            texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in got]
            native_ids = [ids[mask.bool()].tolist() for ids, mask in zip(want.input_ids, want.attention_mask)]
            assert [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] == native_ids


def test_dpo_rows_carry_the_rejected_response(tokenizer):
    ds = dataset.load(RunConfig(task="dpo", seq_len=256), tokenizer)
    rows = ordered_rows(ds, 2, 2, 3)
    assert len(rows) == 12 and all(r["rejected_response"] and r["messages"][-1]["role"] == "assistant" for r in rows)


def test_swift_argv_mirrors_the_run_spec(tmp_path):
    cfg = RunConfig(task="dpo", zero_stage=3, micro_batch=4, grad_accum=2, seq_len=512, lr=2e-5, beta=0.2,
                    padding="longest", grad_checkpointing=True, max_grad_norm=0.2, too_long="truncate")
    argv = swift_argv(cfg, models.resolve("tiny"), "/m", tmp_path / "d.jsonl", tmp_path / "ds.json", tmp_path / "o",
                      "bf16")
    assert argv[:3] == ["rlhf", "--rlhf_type", "dpo"]
    flags = dict(zip(argv[3::2], argv[4::2]))
    assert flags["--tuner_type"] == "full" and flags["--torch_dtype"] == "bfloat16"
    assert (flags["--bf16"], flags["--fp16"]) == ("true", "false")
    assert flags["--per_device_train_batch_size"] == "4" and flags["--gradient_accumulation_steps"] == "2"
    assert flags["--max_steps"] == "10" and flags["--max_length"] == "512" and flags["--learning_rate"] == "2e-05"
    assert flags["--dataset_shuffle"] == flags["--train_dataloader_shuffle"] == "false"
    assert flags["--lr_scheduler_type"] == "constant" and flags["--adam_beta2"] == "0.95"
    assert (flags["--beta"] == "0.2" and flags["--loss_type"] == "sigmoid"
            and flags["--gradient_checkpointing"] == "true")
    assert json.loads(flags["--accelerator_config"]) == {"use_configured_state": True}
    assert flags["--template"] == "chatml" and flags["--model_type"] == "qwen3"
    assert flags["--max_grad_norm"] == "0.2" and flags["--truncation_strategy"] == "right"


def test_swift_runs_use_their_own_interpreter(monkeypatch, tmp_path):
    monkeypatch.setenv("STACKBENCH_SWIFT_PYTHON", str(tmp_path / "nope" / "python"))
    assert backends.python_for("native") == backends.python_for("hf") == sys.executable
    assert backends.python_for("swift") == str(tmp_path / "nope" / "python")
    assert backends.env_for("swift")["TORCH_EXTENSIONS_DIR"].endswith("-swift") and backends.env_for("hf") == {}
    backends.check(["native", "hf"])  # nothing to check
    backends.check(["hf"], ("sft", "dpo"))  # TRL and datasets are here
    with pytest.raises(UserError, match="does not exist") as e:
        backends.check(["native", "swift"])
    assert "./sb swift-env" in e.value.render()
    monkeypatch.setenv("STACKBENCH_SWIFT_PYTHON", sys.executable)  # a python without ms-swift
    with pytest.raises(UserError, match="ms-swift is not installed"):
        backends.check(["swift"])


def test_hf_dpo_without_trl_is_refused_before_anything_runs(monkeypatch):
    """A host set up from ./sb gpu-wheels has no TRL: hf SFT runs there, hf DPO is said at once."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    backends.check(["hf"], ("sft",))
    with pytest.raises(UserError, match="TRL's DPOTrainer, and trl is not installed") as e:
        backends.check(["hf", "native"], ("dpo", "sft"))
    assert "--backend hf runs SFT" in e.value.render()


def test_bench_without_the_swift_environment_exits_2_before_running(tmp_path):
    env = dict(os.environ, STACKBENCH_SWIFT_PYTHON=str(tmp_path / "missing" / "python"))
    p = subprocess.run([sys.executable, "-m", "invoke", "bench", "--backend", "native,swift", "--tasks", "sft",
                        "--zero", "2", "--nodes", "1", "--results", str(tmp_path / "r")],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2 and "./sb swift-env" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not any(Path(tmp_path / "r").rglob("*.json"))  # nothing ran, nothing recorded


def test_every_launcher_starts_swift_ranks_in_its_environment(tmp_path, monkeypatch):
    from stackbench.bench.launchers import LaunchOptions
    from stackbench.bench.launchers.local import LocalLauncher
    from stackbench.bench.launchers.slurm import SlurmLauncher
    from stackbench.core.config import RunConfig

    monkeypatch.setenv("STACKBENCH_SWIFT_PYTHON", "/opt/swift-env/bin/python")
    swift, native = (RunConfig(task="sft", model="tiny", zero_stage=3, nodes=2, backend=b) for b in ("swift", "native"))
    for cmd in LocalLauncher(LaunchOptions()).commands(swift, tmp_path, 29500):
        assert cmd[:3] == ["/opt/swift-env/bin/python", "-m", "torch.distributed.run"] and "--backend" in cmd
    assert LocalLauncher(LaunchOptions()).commands(native, tmp_path, 29500)[0][0] == sys.executable
    script = SlurmLauncher(LaunchOptions(), gpus="no").script(swift, tmp_path)
    train = [line for line in script.splitlines() if line.startswith("srun ")][-1]
    assert "/opt/swift-env/bin/python -m torch.distributed.run" in train and "--backend swift" in train
    assert "export TORCH_EXTENSIONS_DIR=" in script and "-swift" in script  # its own compiled-op cache
    preflight = [line for line in script.splitlines() if "stackbench.bench.launchers.preflight" in line][0]
    assert sys.executable in preflight  # the preflight needs no ms-swift


# --- each backend's names for the knobs (trainer/backends/hf.py KEYWORDS, swift.py FLAGS) ----------

@pytest.mark.parametrize("names", [KEYWORDS, FLAGS, VALUES], ids=["hf.KEYWORDS", "swift.FLAGS", "swift.VALUES"])
def test_a_backend_names_only_knobs_of_the_run_config(names):
    assert set(names) <= {f.name for f in knob_fields()}, "not knobs: " + ", ".join(sorted(set(names) - {
        f.name for f in knob_fields()}))


@pytest.mark.parametrize("task", TASKS)
def test_every_knob_reaches_the_trainer_as_one_of_its_arguments(task):
    """A knob hf.KEYWORDS does not list goes in under its own name: it must be a TrainingArguments
    (DPOConfig) field, or be listed (renamed, or None where the Trainer does not take it)."""
    from transformers import TrainingArguments
    from trl import DPOConfig

    fields = {f.name for f in dataclasses.fields(DPOConfig if task == "dpo" else TrainingArguments)}
    unknown = set(knob_keywords(RunConfig(task=task, backend="hf"))) - fields
    assert not unknown, f"not arguments of the {task} trainer: {sorted(unknown)}; map them in hf.KEYWORDS"


def _other_values(f: dataclasses.Field) -> list:
    if f.metadata["choices"]:
        return [v for v in f.metadata["choices"] if v != f.default]
    return [not f.default] if isinstance(f.default, bool) else ["x"] if isinstance(f.default, str) else [f.default + 1]


def _accepted(values: dict) -> bool:
    try:
        RunConfig(**values)
        return True
    except ConfigError:
        return False


@pytest.mark.parametrize("backend, names", [("hf", KEYWORDS), ("swift", FLAGS)], ids=["hf", "swift"])
def test_a_knob_the_config_refuses_with_a_backend_is_one_it_does_not_take(backend, names):
    """RunConfig refuses some knobs with a backend (--packing, --dpo-ref-zero-stage, --tokenizer
    with swift): the backend's map lists each as not taken (None), never passes it on."""
    refused = {f.name for f in knob_fields() for task in TASKS for value in _other_values(f)
               if _accepted({"task": task, f.name: value}) and not _accepted({"task": task, f.name: value,
                                                                               "backend": backend})}
    assert {"packing", "dpo_ref_zero_stage"} <= refused  # the probe finds what __post_init__ refuses
    assert {k: names.get(k, "(its own name)") for k in refused} == dict.fromkeys(refused)
