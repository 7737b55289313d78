"""bench/launchers/slurm/script.py: the sbatch script from what the launcher decided, with no Slurm
client, no launcher and no clock (the launcher's own script is tested in test_launch_parts.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stackbench.bench.launchers import LaunchOptions, SlurmSettings
from stackbench.bench.launchers.slurm.script import Gpus, Paths, nodes_script, train_script
from stackbench.core.config import RunConfig

CFG = RunConfig(task="sft", model="tiny", zero_stage=3, nodes=2, gpus_per_node=4)
RUN = Path("/results/sweep") / CFG.run_id
PATHS = Paths(RUN, Path("/src/stackbench"), "/venv/bin/python")


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the renderer ran a command")
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_a_run_is_its_allocation_the_preflight_then_one_torchrun_per_node():
    script = train_script(CFG, LaunchOptions(deadline_s=600), SlurmSettings(partition="gpu"), PATHS,
                          train=["/venv/bin/python", "-m", "torch.distributed.run", "--nproc_per_node=4"],
                          env={"NCCL_DEBUG": "INFO"}, gpus=Gpus(True, asked=True), exclude={"hn9", "hn3"})
    lines = script.splitlines()
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --partition=gpu",
                 "#SBATCH --time=13", "#SBATCH --chdir=/src/stackbench", "#SBATCH --exclude=hn3,hn9",
                 f"#SBATCH --output={RUN}/slurm-%j.out", "# GPUs: --gpus-per-node=4 (the cluster advertises gpu GRES)",
                 "export NCCL_DEBUG=INFO", f"mkdir -p {RUN}"):
        assert line in lines, line
    preflight, train = [line for line in lines if line.startswith("srun ")]
    assert preflight.startswith(f"srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1 "
                                f"--output={RUN}/preflight-node%n.log "
                                "/venv/bin/python -m stackbench.bench.launchers.preflight")
    assert "--deadline=30" in preflight and preflight.endswith("|| exit 4")
    assert train == (f"srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1 --output={RUN}/node%n.log "
                     "/venv/bin/python -m torch.distributed.run --nproc_per_node=4")


@pytest.mark.parametrize("settings, gpus, says", [
    (SlurmSettings(gpus="no"), Gpus(False), "# GPUs: none requested (--slurm-gpus no)"),
    (SlurmSettings(gpus="yes"), Gpus(True), "# GPUs: --gpus-per-node=4 (--slurm-gpus yes)"),
    (SlurmSettings(), Gpus(False, asked=True), "# GPUs: none requested (no node advertises a gpu GRES)"),
    (SlurmSettings(), Gpus(True, asked=False), "# GPUs: --gpus-per-node=4 (--slurm-gpus auto, and no Slurm client "
                                               "answered here: --slurm-gpus no leaves the line out)"),
])
def test_the_script_says_why_it_asks_for_gpus_or_not(settings, gpus, says):
    lines = train_script(CFG, LaunchOptions(), settings, PATHS, train=["x"], env={}, gpus=gpus).splitlines()
    assert says in lines
    assert ("#SBATCH --gpus-per-node=4" in lines) == gpus.request


def test_a_container_mounts_the_checkout_the_sweep_and_the_deepspeed_config():
    cfg = RunConfig(task="sft", model="tiny", zero_stage=3, nodes=1, gpus_per_node=1, deepspeed="/etc/ds/z3.json")
    script = train_script(cfg, LaunchOptions(), SlurmSettings(container_image="/img/s.sqsh"),
                          Paths(Path("/results/sweep") / cfg.run_id, Path("/src/stackbench"), "/venv/bin/python"),
                          train=["x"], env={}, gpus=Gpus(False))
    train = script.splitlines()[-1]
    assert ("--container-mounts=/etc/ds:/etc/ds,/results/sweep:/results/sweep,/src/stackbench:/src/stackbench "
            "--container-workdir=/src/stackbench") in train


def test_a_command_on_every_node_runs_to_its_end_before_the_preflight():
    script = nodes_script(["envcheck", "--node", "{node}"], 2, 1, 120, LaunchOptions(), SlurmSettings(),
                          Paths(Path("/results/envcheck/slurm-n2"), Path("/src"), "/py"), env={}, gpus=Gpus(False))
    command, preflight = [line for line in script.splitlines() if line.startswith("srun ")]
    assert "--kill-on-bad-exit=0" in command and command.endswith("envcheck --node '{node}' || true")
    assert "stackbench.bench.launchers.preflight" in preflight and "#SBATCH --time=5" in script.splitlines()
    assert "#SBATCH --job-name=sb-slurm-n2" in script.splitlines()
