"""Real launches: multi-node emulation, a rank killed mid-run, a node that never joins, and a real
Slurm cluster (slurmctld + one slurmd per network namespace) brought up here and torn down after."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.local import LocalLauncher
from stackbench.bench.launchers.torchrun import TorchrunLauncher
from stackbench.bench.sweep import run_sweep
from stackbench.core import record
from stackbench.core.config import RunConfig
from tests.conftest import ROOT
from tests.support.rows import assert_row_filled

pytestmark = pytest.mark.deepspeed


def _spec(**kw) -> RunConfig:
    return RunConfig(**{"task": "sft", "model": "tiny", "zero_stage": 2, "gpus_per_node": 1, "steps": 4,
                      "warmup_steps": 1, **kw})


@pytest.mark.parametrize("nodes", [2, 4])
def test_multi_node_local_runs_of_zero2_and_zero3_are_ok(tmp_path, nodes):
    specs = [_spec(zero_stage=z, nodes=nodes) for z in ((2, 3) if nodes == 2 else (3,))]  # 4 nodes: the gathering stage
    records = run_sweep(specs, LocalLauncher(LaunchOptions(deadline_s=400)), tmp_path / "sweep", quiet=True)
    for rec in records:
        assert rec["status"] == "ok", rec.get("error")
        assert rec["config"]["nodes"] == nodes and rec["resolved"]["world_size"] == nodes
        assert len(rec["environment"]["ranks"]) == nodes
        startup = rec["metrics"]["startup_s"]
        assert 0 < startup["python_started"] < startup["dist_ready"] < startup["first_step_done"]
    if len(records) == 2:  # the same global batch on the same data: both stages see the same losses
        a, b = (r["metrics"]["loss"]["per_step"] for r in records)
        assert a == pytest.approx(b, rel=1e-4)
    preflight = record.read(tmp_path / "sweep" / f"preflight-n{nodes}x1" / "preflight.json")
    assert preflight["ok"] and len(preflight["joined_hosts"]) == nodes and preflight["world_size"] == nodes
    assert preflight["allreduce"]["busbw_gbps"] > 0


def _rank_pid(run_id: str, rank: int) -> int | None:
    """The process of `rank` in run `run_id` (found by its environment, not by name)."""
    for proc in Path("/proc").iterdir():
        try:
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, ValueError):
            continue
        if env.get("RANK") == str(rank) and run_id in env.get("STACKBENCH_HEARTBEAT", ""):
            return int(proc.name)
    return None


def test_a_rank_killed_mid_run_is_recorded_failed_and_the_sweep_goes_on(tmp_path):
    victim = _spec(nodes=2, steps=400, warmup_steps=1, repeat_data=True)  # long enough to be killed mid-run
    after = _spec(nodes=2, zero_stage=3)
    sweep_dir = tmp_path / "sweep"
    heartbeat = sweep_dir / victim.run_id / "heartbeat"
    killed = {}

    def kill_rank_1_after_step_3():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if heartbeat.exists() and int(heartbeat.read_text().split("/")[0] or 0) >= 3:
                pid = _rank_pid(victim.run_id, 1)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed["at"] = time.monotonic()
                    return
            time.sleep(0.2)

    threading.Thread(target=kill_rank_1_after_step_3, daemon=True).start()
    opts = LaunchOptions(deadline_s=300)
    records = run_sweep([victim, after], LocalLauncher(opts), sweep_dir, quiet=True)
    assert "at" in killed, "rank 1 was never found to kill"
    failed, ok = records
    assert failed["status"] == "failed", failed
    err = failed["error"]
    assert err["kind"] == "crash" and err["rank"] == 1 and err["host"] == socket.gethostname()
    assert "SIGKILL" in err["message"]
    assert_row_filled(failed, task="sft", zero_stage=2, nodes=2, gpus_per_node=1, launcher="local")
    assert record.read(sweep_dir / f"{victim.run_id}.json")["status"] == "failed"
    assert ok["status"] == "ok", ok.get("error")


def test_a_rank_that_raises_is_recorded_with_its_own_exception_from_its_error_file(tmp_path):
    """DeepSpeed refuses the optimizer on both ranks after the process group formed: the record
    names the rank, its exception and where it was raised, read from torch elastic's error file
    (trainer/__main__.py runs under @record), not torchrun's summary; torchrun's SIGTERM to the
    other rank is not mistaken for the cause."""
    spec = _spec(ds='{"optimizer.type": "NoSuchOptimizer"}', gpus_per_node=2)
    rec = LocalLauncher(LaunchOptions(deadline_s=300)).launch(spec, tmp_path / "sweep")
    err = rec["error"]
    assert rec["status"] == "failed" and err["kind"] == "crash" and err["rank"] in (0, 1), err
    assert "raised AssertionError: NoSuchOptimizer is not a supported DeepSpeed Optimizer" in err["message"]
    assert "deepspeed/runtime/engine.py" in err["message"] and err["log"].endswith("error.json")


def test_a_run_past_its_deadline_is_killed_and_recorded_timeout_with_the_last_lines(tmp_path):
    spec = _spec(nodes=2, steps=400, repeat_data=True)
    t0 = time.monotonic()
    rec = LocalLauncher(LaunchOptions(deadline_s=12, preflight=False)).launch(spec, tmp_path / "sweep")
    assert rec["status"] == "timeout" and "deadline of 12 s passed" in rec["error"]["message"]
    assert "--- node 1" in rec["error"]["message"]  # every node's last lines
    assert time.monotonic() - t0 < 12 + 30  # killed at the deadline, not after the run
    assert _rank_pid(spec.run_id, 0) is None  # nothing left running
    assert_row_filled(rec, task="sft", zero_stage=2, nodes=2, gpus_per_node=1)


def test_a_node_that_never_joins_fails_the_preflight_and_is_named(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("127.0.0.1 slots=1\nghost-node.invalid slots=1\n")  # .invalid never resolves (RFC 6761)
    launcher = TorchrunLauncher(LaunchOptions(deadline_s=300, preflight_deadline_s=8), hostfile=str(hostfile))
    t0 = time.monotonic()
    records = run_sweep([_spec(nodes=2), _spec(nodes=1)], launcher,
                        tmp_path / "sweep", quiet=True)
    two, one = records
    assert two["status"] == "failed" and two["error"]["kind"] == "preflight"
    assert two["error"]["host"] == "ghost-node.invalid" and "node 1 (ghost-node.invalid) did not join" in \
        two["error"]["message"]
    assert one["status"] == "ok", one.get("error")  # the sweep went on, through the torchrun launcher
    assert "--rdzv-backend=c10d" in one["command"] and one["launch"]["launcher"] == "torchrun"
    assert_row_filled(two, nodes=2, gpus_per_node=1, launcher="torchrun")
    assert time.monotonic() - t0 < 8 + 60 + 120  # the preflight deadline + imports + the one-node run


@pytest.mark.slurm
def test_bench_through_a_real_slurm_cluster_runs_one_and_two_nodes(slurm_cluster, tmp_path):
    env = dict(os.environ, **slurm_cluster.env)
    p = subprocess.run([sys.executable, "-m", "invoke", "bench", "--launcher", "slurm", "--nodes", "1,2",
                        "--tasks", "sft", "--zero", "3", "--gpus-per-node", "1", "--steps", "4", "--warmup", "1",
                        "--results", str(tmp_path), "--sweep", "slurm"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    recs = {r["config"]["nodes"]: r for r in map(record.read, (tmp_path / "slurm").glob("*.json"))
            if "schema" in r}
    assert set(recs) == {1, 2}
    for nodes, rec in recs.items():
        assert rec["status"] == "ok" and rec["launch"]["launcher"] == "slurm" and rec["slurm_job_id"]
        assert rec["command"].startswith("sbatch --export=ALL ") and Path(shlex.split(rec["command"])[-1]).exists()
    assert recs[2]["environment"]["hosts"] == ["sbnode0", "sbnode1"]  # a distinct hostname per node
    assert len(recs[1]["environment"]["hosts"]) == 1 and recs[1]["environment"]["hosts"][0].startswith("sbnode")
    run_dir = tmp_path / "slurm" / recs[2]["run_id"]
    assert record.read(run_dir / "preflight.json")["joined_hosts"] == ["sbnode0", "sbnode1"]
    assert (run_dir / "node0.log").exists() and (run_dir / "node1.log").exists()


def _jobs(env: dict) -> set[str]:
    """Every job id slurmctld knows (finished ones stay listed for MinJobAge, 300 s by default)."""
    out = subprocess.run(["scontrol", "show", "jobs", "-o"], capture_output=True, text=True, env=env).stdout
    return set(re.findall(r"JobId=(\d+)", out))


@pytest.mark.slurm
def test_inside_an_allocation_every_run_is_a_step_of_it_and_no_job_is_submitted(slurm_cluster, tmp_path):
    """A team's salloc: `bench --launcher slurm` runs each run's nodes as job steps of that allocation,
    the 1-node and 2-node runs on the allocation's first hosts; the salloc is the only job Slurm saw;
    a node count larger than the allocation is refused before anything runs."""
    env = dict(os.environ, **slurm_cluster.env)
    before = _jobs(env)
    bench = [sys.executable, "-m", "invoke", "bench", "--launcher", "slurm", "--tasks", "sft", "--zero", "2",
             "--gpus-per-node", "1", "--steps", "3", "--warmup", "1", "--results", str(tmp_path)]
    p = subprocess.run(["salloc", "-N", "2", *bench, "--nodes", "1,2", "--sweep", "alloc"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (job,) = _jobs(env) - before  # the salloc's, and nothing else
    assert f"inside allocation {job} (2 nodes: sbnode0, sbnode1)" in p.stderr
    recs = {r["config"]["nodes"]: r for r in map(record.read, (tmp_path / "alloc").glob("*.json")) if "schema" in r}
    assert set(recs) == {1, 2}
    for rec in recs.values():
        assert rec["status"] == "ok" and rec["slurm_job_id"] == job and "step" in rec["slurm_steps"]
    assert recs[1]["environment"]["hosts"] == ["sbnode0"] and recs[2]["environment"]["hosts"] == ["sbnode0", "sbnode1"]
    p = subprocess.run(["salloc", "-N", "1", *bench, "--nodes", "2", "--sweep", "too-big"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=300)
    assert p.returncode == 2 and "2 nodes asked for inside allocation" in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "too-big").exists() or not list((tmp_path / "too-big").glob("*.json"))


@pytest.mark.slurm
def test_script_only_files_pass_sbatch_test_only_and_the_partitions_ram_bounds_offload(slurm_cluster, tmp_path):
    """What a login node gets: one sbatch-ready file per run (nothing else on stdout) that bash and
    sbatch --test-only accept; and offload's host share checked against the partition's RealMemory
    (2000 MB on the test nodes), not this host's RAM."""
    env = dict(os.environ, **slurm_cluster.env)
    folder = tmp_path / "scripts"
    p = subprocess.run([sys.executable, "-m", "invoke", "bench", "--launcher", "slurm", "--nodes", "1,2", "--tasks",
                        "sft", "--zero", "2,3", "--gpus-per-node", "1", "--results", str(tmp_path), "--script-only",
                        str(folder)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert p.returncode == 0 and p.stdout == "", p.stdout + p.stderr[-2000:]
    scripts = sorted(folder.glob("*.sbatch"))
    assert len(scripts) == 4
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
        test = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, env=env,
                              timeout=60)
        assert test.returncode == 0 and "to start at" in test.stderr, (script.name, test.stderr)
    p = subprocess.run([sys.executable, "-m", "invoke", "bench", "--launcher", "slurm", "--partition", "debug",
                        "--model", "qwen3-8b", "--gpu-mem", "80", "--gpus-per-node", "8", "--nodes", "1", "--tasks",
                        "sft", "--zero", "3", "--offload", "none,optimizer", "--seq-len", "512", "--micro-batch", "1",
                        "--results", str(tmp_path), "--dry-run"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = {line.split(":")[0]: line for line in p.stdout.splitlines() if line.startswith("# sft-")}
    offloaded = next(v for k, v in lines.items() if "-offopt-" in k)
    plain = next(v for k, v in lines.items() if "-offopt-" not in k)
    assert "will be skipped: offload keeps" in offloaded and "sinfo RealMemory of partition debug" in offloaded
    assert ": to run" in plain and p.stdout.rstrip().endswith("1 to run, 1 skipped (1 for the nodes' RAM)")


@pytest.mark.slurm
def test_a_failed_preflight_inside_a_slurm_job_is_recorded_with_its_cause(slurm_cluster, tmp_path):
    """Every rank's gloo told to use an interface no node has: the preflight's all-reduce fails in
    the job, the job exits with the preflight's code, and the run is recorded failed / preflight."""
    env = dict(os.environ, **slurm_cluster.env)
    p = subprocess.run([sys.executable, "-m", "invoke", "bench", "--launcher", "slurm", "--nodes", "2",
                        "--tasks", "sft", "--zero", "2", "--gpus-per-node", "1",
                        "--env", "GLOO_SOCKET_IFNAME=nosuchif0",
                        "--preflight-deadline", "15", "--results", str(tmp_path), "--sweep", "pf"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]  # a run failed, and is recorded
    (rec,) = [r for r in map(record.read, (tmp_path / "pf").glob("*.json")) if "schema" in r]
    assert rec["status"] == "failed" and rec["error"]["kind"] == "preflight", rec["error"]
    assert rec["slurm_job_id"] and rec["preflight"]["ok"] is False
    assert_row_filled(rec, task="sft", zero_stage=2, nodes=2, gpus_per_node=1, launcher="slurm")


def test_ctrl_c_records_the_running_run_interrupted_and_keeps_the_others(tmp_path):
    """SIGINT to `invoke bench` (what Ctrl-C sends) during its second run: that run is recorded
    interrupted and its processes are gone; the first run's ok record stays as it was."""
    args = [sys.executable, "-m", "invoke", "bench", "--tasks", "sft", "--zero", "0,2", "--nodes", "1", "--steps", "60",
            "--repeat-data", "--results", str(tmp_path), "--sweep", "s", "--no-preflight"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sweep_dir, first_ok = tmp_path / "s", None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = [p for p in sweep_dir.glob("sft-z0-*.json")]
        beats = [p for p in sweep_dir.glob("sft-z2-*/heartbeat")]
        if done and beats:
            first_ok = done[0].read_text()
            break
        time.sleep(0.3)
    assert first_ok, "the second run never started"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    run_id = beats[0].parent.name
    rec = record.read(sweep_dir / f"{run_id}.json")
    assert rec["status"] == "interrupted" and rec["error"]["kind"] == "interrupted", out[-2000:]
    assert_row_filled(rec, task="sft", zero_stage=2, nodes=1, gpus_per_node=2)
    assert _rank_pid(run_id, 0) is None and _rank_pid(run_id, 1) is None  # nothing left running
    assert json.loads(first_ok)["status"] == "ok" and done[0].read_text() == first_ok
