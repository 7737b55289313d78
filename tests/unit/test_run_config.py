"""The run config is defined once: a knob added to RunConfig reaches every place a run is
described, with no other edit. The test adds a throwaway knob to a copy of the source and follows
it: the trainer's argv, the `invoke bench` flags, the matrix, the run id, record.config and the
hf / swift arguments. Also: the committed reference records keep their run ids, and the backend
registry matches the config's backend names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stackbench.core.config import BACKENDS, Launch, RunConfig, dtype_on, resolve_dtype
from stackbench.core.errors import ConfigError
from stackbench.core.flags import parse_trainer_args
from tests.conftest import ROOT

# the backends name no new knob: it reaches hf as the keyword throwaway_knob, ms-swift as --throwaway_knob
KNOB = '    throwaway_knob: int = knob(7, "a knob added by a test", minimum=0)\n'
CHECK = r'''
import json, subprocess, sys
from stackbench.bench.main import split_flags
from stackbench.bench.matrix import expand
from stackbench.core import record
from stackbench.core.config import Launch, RunConfig
from stackbench.core.flags import parse_trainer_args
from stackbench.trainer import models
from stackbench.trainer.backends.hf import trainer_arguments
from stackbench.trainer.backends.swift import swift_argv
from stackbench.trainer.ds_config import deepspeed_config

cfg = RunConfig(throwaway_knob=9)
argv = cfg.to_argv()
axes, given, _ = split_flags({"throwaway_knob": "1,2", "tasks": "sft", "zero": "2", "nodes": "1"})
configs, _ = expand(axes, given=given)
rec = record.new("ok", cfg, Launch(), started_at="t", metrics={"x": 1})
swift = swift_argv(cfg, models.resolve("tiny"), "/m", "d", "ds", "o", "fp32")
help = subprocess.run([sys.executable, "-m", "invoke", "--help", "bench"], capture_output=True, text=True).stdout
print(json.dumps({
    "argv": argv, "round_trip": parse_trainer_args(argv)[0] == cfg,
    "matrix": [c.throwaway_knob for c in configs], "ids": [c.run_id for c in configs],
    "default_id": RunConfig().run_id, "id": cfg.run_id,
    "record": rec["config"]["throwaway_knob"], "read_back": RunConfig.from_dict(rec["config"]) == cfg,
    "hf": trainer_arguments(cfg, deepspeed_config(cfg, "fp32", "cpu")[0], "o").get("throwaway_knob"),
    "swift": swift[swift.index("--throwaway_knob") + 1] if "--throwaway_knob" in swift else None,
    "flag": "--throwaway-knob" in help,
}))
'''


def test_a_knob_added_once_reaches_everything(tmp_path):
    tree = tmp_path / "src"
    for name in ("stackbench", "core", "trainer", "bench", "envcheck", "report", "imagebuild"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "assets", "presets"))
    for name in ("assets", "presets"):  # data, read only: linked, not copied
        (tree / "trainer" / name).symlink_to(ROOT / "trainer" / name)
    shutil.copy(ROOT / "tasks.py", tree / "tasks.py")
    config = tree / "core" / "config.py"
    text = config.read_text()
    anchor = "\n    def __post_init__(self) -> None:"
    assert anchor in text
    config.write_text(text.replace(anchor, "\n" + KNOB + anchor, 1))  # the one edit
    p = subprocess.run([sys.executable, "-c", CHECK], cwd=tree, capture_output=True, text=True, timeout=300,
                       env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tree), "HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["argv"] == ["--throwaway-knob", "9"] and got["round_trip"]
    assert got["flag"], "invoke bench has no --throwaway-knob"
    assert got["matrix"] == [1, 2] and len(set(got["ids"])) == 2
    assert got["default_id"] == RunConfig().run_id  # adding a knob keeps every existing id
    assert got["id"] != got["default_id"]
    assert got["record"] == 9 and got["read_back"]
    assert got["hf"] == 9 and got["swift"] == "9"


def reference_records() -> list[Path]:
    # cpu-2core/ was recorded under the first id scheme (every field hashed, defaults included):
    # its ids cannot be rebuilt by design; every later reference can
    return [p for p in sorted((ROOT / "results" / "reference").glob("*/*.json"))
            if p.parent.name != "cpu-2core"
            and json.loads(p.read_text()).get("schema", "").startswith("stackbench.result/")]


@pytest.mark.parametrize("path", reference_records(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_reference_records_keep_their_run_ids(path):
    from stackbench.core import record

    rec = record.as_current(json.loads(path.read_text()))
    assert RunConfig(**rec["config"]).run_id == rec["run_id"]


def test_reference_records_are_many():
    assert len(reference_records()) >= 36


def test_every_backend_name_has_a_registered_backend():
    from stackbench.trainer.backends import REGISTRY

    assert set(REGISTRY) == set(BACKENDS)


def test_run_ids_follow_content():
    a = RunConfig(task="sft", model="tiny", zero_stage=2)
    assert a.run_id == RunConfig(task="sft", model="tiny", zero_stage=2).run_id
    assert a.run_id != RunConfig(task="sft", model="tiny", zero_stage=2, seq_len=256).run_id
    assert a.run_id.startswith("sft-z2-n1x2-mb2-s128-")


def test_trainer_config_round_trips_through_argv():
    cfg = RunConfig(task="dpo", model="qwen3-8b", zero_stage=3, offload="optimizer+params", grad_checkpointing=True,
                    micro_batch=4, max_grad_norm=0.2)
    launch = Launch(out="o", sweep_id="s", launcher="local", run_id=cfg.run_id)
    back, launch_back, given = parse_trainer_args(cfg.to_argv() + launch.to_argv())
    assert (back, launch_back) == (cfg, launch) and "max_grad_norm" in given and "seed" not in given


def test_the_auto_dtype_rule():
    assert (dtype_on("auto", "cuda") == "bf16" and dtype_on("auto", "cpu") == "fp32"
            and dtype_on("bf16", "cpu") == "bf16")
    # bf16 on a CPU: slow, but users' configs say it
    assert resolve_dtype("auto", "cpu") == "fp32" and resolve_dtype("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 on a CPU: DeepSpeed's CPU accelerator has no fp16"):
        resolve_dtype("fp16", "cpu")
