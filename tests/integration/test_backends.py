"""--backend hf (transformers' Trainer, TRL's DPOTrainer, fed stackbench's batches) and --backend
swift (ms-swift's own sft / rlhf pipeline in its own environment, fed the same rows) against the
native loop: same DeepSpeed stage, weights and data, timed by stackbench. A backend that is fast
but computes something else must not win: fp32 losses must agree with native's to 1e-5.

And the stack the CUDA image pins (./sb pinned-env: transformers 4.51, TRL 0.17, DeepSpeed 0.16)
running the same runs as the development venv (transformers 5, TRL 1.x, DeepSpeed 0.19)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.local import LocalLauncher
from stackbench.bench.matrix import expand
from stackbench.bench.sweep import run_sweep
from stackbench.core import record
from stackbench.imagebuild import pinned
from stackbench.report import load, tables
from tests.conftest import ROOT, SHORT_STEPS, SHORT_WARMUP

pytestmark = pytest.mark.deepspeed
STEPS, WARMUP = SHORT_STEPS, SHORT_WARMUP
PROFILE_PINS = dict(r.split("==", 1) for r in pinned.requirements("cuda12.4")[0] if "==" in r)
# the pinned stack's four runs: both tasks, both stages, both backends, each backend on both tasks
PINNED = {("sft", "native", 3), ("dpo", "native", 2), ("sft", "hf", 2), ("dpo", "hf", 3)}


@pytest.fixture(scope="module")
def dev_records(tmp_path_factory, swift_python, short_native):
    """native, hf and swift in this (the development) environment, one sweep. Its native runs are
    the session's short native runs (conftest.short_native: the same specs), copied in: the sweep
    resumes past them as it would past any ok run of its own."""
    specs, _ = expand(task=["sft", "dpo"], zero_stage=[2, 3], backend=["native", "hf", "swift"], steps=STEPS,
                      warmup_steps=WARMUP)
    # ms-swift once per task (its runs cost a pipeline start-up each): SFT under ZeRO-3, DPO under ZeRO-2
    specs = [s for s in specs if s.backend != "swift" or (s.task, s.zero_stage) in {("sft", 3), ("dpo", 2)}]
    sweep_dir = tmp_path_factory.mktemp("backends") / "s"
    native, native_dir = short_native
    assert {r["run_id"] for r in native.values()} == {s.run_id for s in specs if s.backend == "native"}
    sweep_dir.mkdir()
    for rec in native.values():
        shutil.copy(native_dir / f"{rec['run_id']}.json", sweep_dir)
    records = run_sweep(specs, LocalLauncher(LaunchOptions(deadline_s=400, preflight=False)), sweep_dir, quiet=True)
    return {(r["config"]["task"], r["config"]["backend"], r["config"]["zero_stage"]): r for r in records}, sweep_dir


def test_backends_match_native_losses_and_are_measured_the_same_way(dev_records, swift_python):
    by, sweep_dir = dev_records
    assert len(by) == 10
    for key, rec in by.items():
        assert rec["status"] == "ok", (key, rec.get("error"))
    for (task, backend, stage), rec in by.items():
        if backend == "native":
            continue
        theirs, native = rec["metrics"], by[(task, "native", stage)]["metrics"]
        assert theirs["loss"]["per_step"] == pytest.approx(native["loss"]["per_step"], rel=1e-5), (task, backend, stage)
        if task == "dpo":  # TRL's / ms-swift's DPO against the native sigmoid DPO with its frozen reference
            assert theirs["loss"]["per_step"][0] == pytest.approx(0.693147, abs=1e-5)
            assert theirs["reward_accuracy"]["per_step"] == pytest.approx(native["reward_accuracy"]["per_step"])
        # the same tokens were fed (ms-swift's are counted at its collator)
        assert theirs["tokens_per_s"] / theirs["padded_tokens_per_s"] == pytest.approx(
            native["tokens_per_s"] / native["padded_tokens_per_s"])
        assert len(theirs["step_times_s"]) == STEPS and theirs["step_time_s"]["median"] > 0
    setup = by[("sft", "hf", 2)]["resolved"]["backend_setup"]
    assert "use_configured_state" in setup["accelerate_state"] and "TrainerCallback" in setup["timing"]
    swift = by[("sft", "swift", 3)]
    assert swift["resolved"]["backend_setup"]["command"].startswith("swift sft --tuner_type full")
    assert "use_configured_state" in swift["resolved"]["backend_setup"]["accelerate_state"]
    assert swift["command"].startswith(swift_python)  # bench started its ranks in ms-swift's environment
    assert swift["environment"]["packages"]["ms-swift"]
    assert not by[("sft", "hf", 3)]["environment"]["packages"]["ms-swift"]
    # ms-swift's trainer builds AdamW itself: recorded as given
    assert "optimizer" not in swift["resolved"]["deepspeed"]
    df, _ = load.load(sweep_dir)
    side = tables.backends(df)
    assert {"hf / native", "swift / native"} <= set(side.columns) and len(side) == 4
    assert (side["hf / native"] > 0).all() and side["swift / native"].notna().sum() == 2


def test_the_stack_the_image_pins_gives_the_development_stacks_losses(dev_records, pinned_python, tmp_path):
    """Four short runs in .venv-pinned (the image profile's pins, CPU torch) against the same runs
    here: the same weights, data and seed. Native: every step's loss equal to 1e-6 relative (it was
    bitwise equal when measured). hf: within 5e-5, half the last digit transformers 4.x keeps of the
    loss it logs (it rounds to 4 decimals, trainer/compat.py)."""
    by, _ = dev_records
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / "torch_extensions-pinned"))  # its own op builds
    for task, backend, stage in sorted(PINNED):
        p = subprocess.run([pinned_python, "-m", "invoke", "bench", "--tasks", task, "--backend", backend, "--zero",
                            str(stage), "--nodes", "1", "--steps", str(STEPS), "--warmup", str(WARMUP),
                            "--no-preflight", "--results", str(tmp_path), "--sweep", "pinned"],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    pinned = {(r["config"]["task"], r["config"]["backend"], r["config"]["zero_stage"]): r
              for r in map(record.read, (tmp_path / "pinned").glob("*.json")) if "schema" in r}
    assert set(pinned) == PINNED
    for key, rec in pinned.items():
        assert rec["status"] == "ok", (key, rec["error"])
        assert rec["environment"]["packages"]["transformers"] == PROFILE_PINS["transformers"] != by[key][
            "environment"]["packages"]["transformers"]
        ours, theirs = rec["metrics"]["loss"]["per_step"], by[key]["metrics"]["loss"]["per_step"]
        assert ours == (pytest.approx(theirs, rel=1e-6) if key[1] == "native" else pytest.approx(theirs, abs=5e-5)), key
        if key[1] == "hf":
            assert "rounded to 4 decimals" in rec["resolved"]["backend_setup"]["loss"]
        assert rec["metrics"]["tokens_per_s"] / rec["metrics"]["padded_tokens_per_s"] == pytest.approx(
            by[key]["metrics"]["tokens_per_s"] / by[key]["metrics"]["padded_tokens_per_s"])  # the same tokens fed


@pytest.mark.slurm
def test_swift_runs_across_two_slurm_nodes_with_native_losses(slurm_cluster, swift_python, tmp_path):
    """The same launchers: a 2-node job on the Slurm test cluster (a distinct host per node) starts
    ms-swift's ranks in its environment on both nodes; native's losses, same spec, come out equal."""
    env = dict(os.environ, **slurm_cluster.env)
    p = subprocess.run([sys.executable, "-m", "invoke", "bench", "--launcher", "slurm", "--nodes", "2",
                        "--backend", "native,swift", "--tasks", "sft", "--zero", "3", "--gpus-per-node", "1",
                        "--steps", "3", "--warmup", "1", "--results", str(tmp_path), "--sweep", "slurm"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    recs = {r["config"]["backend"]: r for r in map(record.read, (tmp_path / "slurm").glob("*.json")) if "schema" in r}
    assert set(recs) == {"native", "swift"}
    for rec in recs.values():
        assert rec["status"] == "ok" and rec["environment"]["hosts"] == ["sbnode0", "sbnode1"]
    assert recs["swift"]["metrics"]["loss"]["per_step"] == pytest.approx(recs["native"]["metrics"]["loss"]["per_step"],
                                                                         rel=1e-5)
    job = (tmp_path / "slurm" / recs["swift"]["run_id"] / "job.sbatch").read_text()
    assert f"{swift_python} -m torch.distributed.run" in job


def test_the_shipped_ms_swift_configs_are_ms_swifts_own(swift_python):
    """--deepspeed zero2 (...) means what it means in ms-swift: the copies under
    trainer/assets/ds_configs/ equal the installed ms-swift's, name for name."""
    import json

    from stackbench.trainer import ds_source

    where = subprocess.run([swift_python, "-c", "import os, swift; print(os.path.join(os.path.dirname(swift.__file__), "
                            "'config'))"], capture_output=True, text=True, check=True).stdout.strip()
    for name in ds_source.SWIFT_NAMES:
        ours = json.loads((ds_source.SWIFT_DIR / f"{name}.json").read_text())
        assert ours == json.loads(Path(where, f"{name}.json").read_text()), name
