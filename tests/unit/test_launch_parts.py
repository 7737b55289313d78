"""Launchers without launching: sbatch scripts, hostfiles, ssh commands, failure classification,
the fit check, and the CLI's handling of bad launcher settings."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from stackbench.bench import sweep as sweep_mod
from stackbench.bench.launchers import LaunchOptions, outcomes
from stackbench.bench.launchers.outcomes import classify
from stackbench.bench.launchers.slurm import SlurmLauncher
from stackbench.bench.launchers.torchrun import TorchrunLauncher, read_hostfile
from stackbench.bench.planning.fit import FitCheck
from stackbench.bench.sweep import run_sweep
from stackbench.core import record
from stackbench.core.config import Launch, RunConfig
from stackbench.core.errors import ConfigError
from tests.conftest import ROOT
from tests.support.rows import assert_row_filled

SPEC = RunConfig(task="sft", model="tiny", zero_stage=3, nodes=2, gpus_per_node=8)


def test_sbatch_script_has_the_allocation_preflight_and_one_torchrun_per_node(tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "ib0")
    monkeypatch.setenv("UNRELATED_SETTING", "x")
    launcher = SlurmLauncher(LaunchOptions(deadline_s=600, env={"NCCL_DEBUG": "INFO"}), partition="gpu",
                             account="proj", exclusive=True, sbatch_args=("--qos=high",), gpus="yes",
                             container_image="/images/stack.sqsh")
    script = launcher.script(SPEC, tmp_path / "sweep")
    lines = script.splitlines()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --no-requeue", "#SBATCH --exclusive",
                 "#SBATCH --qos=high",
                 "export NCCL_SOCKET_IFNAME=ib0", "export NCCL_DEBUG=INFO", "set -euo pipefail"):
        assert line in lines, line
    assert "UNRELATED_SETTING" not in script  # only multi-node settings pass through
    assert 'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST"' in script and "MASTER_ADDR=${HOSTS%%,*}" in script
    preflight, train = [line for line in lines if line.startswith("srun ")]
    assert "-m stackbench.bench.launchers.preflight" in preflight and preflight.endswith("|| exit 4")
    assert "--master=$MASTER_ADDR:$PREFLIGHT_PORT" in preflight and "--hosts=$HOSTS" in preflight
    assert "--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT" in train and "--nproc_per_node=8" in train
    assert "--container-image=/images/stack.sqsh" in train and "--kill-on-bad-exit=1" in train
    assert f"--run-id {SPEC.run_id}" in train and "--launcher slurm" in train
    limit = next(line for line in lines if line.startswith("#SBATCH --time="))
    assert int(limit.split("=")[1]) >= 10  # deadline + margin
    assert "#SBATCH --gpus-per-node" not in SlurmLauncher(gpus="no").script(SPEC, tmp_path)


def test_hostfile_errors_name_file_and_line(tmp_path):
    good = tmp_path / "hosts"
    good.write_text("# cluster\nnode-a slots=8\nnode-b   # spare\n")
    assert read_hostfile(str(good)) == [("node-a", 8), ("node-b", None)]
    bad = tmp_path / "bad"
    bad.write_text("node-a slots=8\nnode-b gpus=8\n")
    with pytest.raises(ConfigError) as e:
        read_hostfile(str(bad))
    assert e.value.where == f"{bad}:2"
    launcher = TorchrunLauncher(hostfile=str(good))
    with pytest.raises(ConfigError, match="lists 2 hosts"):
        launcher.hosts(3)
    with pytest.raises(ConfigError, match="slots=8 but --gpus-per-node is 16"):
        launcher.commands(RunConfig(task="sft", model="tiny", zero_stage=2, nodes=2, gpus_per_node=16), tmp_path, 1)


def test_torchrun_runs_remote_nodes_over_ssh_with_the_environment_on_stdin(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_unit_planted_value")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 slots=8\nnode-b slots=8\n")
    launcher = TorchrunLauncher(hostfile=str(hosts))
    cmds = launcher.commands(SPEC, tmp_path, 29400)
    assert all("--rdzv-endpoint=127.0.0.1:29400" in c for c in cmds)
    env = launcher.env({"NCCL_DEBUG": "WARN"})
    assert "HF_TOKEN" not in env  # plain settings only: what may be written down
    assert launcher.wrap("127.0.0.1", cmds[0], env).argv == cmds[0]  # this host: no ssh
    remote = launcher.wrap("node-b", cmds[1], env)
    argv = remote.argv
    assert argv[:2] == ["ssh", "-T"] and "BatchMode=yes" in argv and argv[-3:-1] == ["--", "node-b"]
    assert argv[-1].startswith(f"cd {os.getcwd()} && exec ") and "-m stackbench.bench.launchers.remote --" in argv[-1]
    assert "hf_unit_planted_value" not in " ".join(argv) and "NCCL_DEBUG" not in " ".join(argv)
    sent = json.loads(remote.stdin)
    assert sent["NCCL_DEBUG"] == "WARN" and sent["HF_TOKEN"] == "hf_unit_planted_value"


def test_classify_names_rank_host_and_signal_from_torchrun_summary(tmp_path):
    log = tmp_path / "node1.log"
    log.write_text("""[rank1]: RuntimeError: boom
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Root Cause (first observed failure):
[0]:
  time      : 2026-11-22_09:00:00
  host      : node-b
  rank      : 3 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
""")
    status, error = classify([tmp_path / "node0.log", log])
    assert status == "failed" and error["rank"] == 3 and error["host"] == "node-b"
    assert "rank 3 on node-b killed by SIGKILL" in error["message"]
    status, error = classify([log], killed_because="deadline of 5 s passed")
    assert status == "timeout" and "deadline of 5 s" in error["message"] and "exitcode" in error["message"]
    oom = tmp_path / "oom.log"
    oom.write_text("[default0]:[node-c:5] error: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    assert classify([oom])[0] == "oom"


def test_runs_that_cannot_fit_are_recorded_skipped_with_the_prediction(tmp_path):
    fit = FitCheck(gpu_gib=80)
    big = RunConfig(task="sft", model="qwen3-8b", zero_stage=0, nodes=1, gpus_per_node=8, seq_len=4096, micro_batch=1)
    ok = RunConfig(task="sft", model="qwen3-8b", zero_stage=3, nodes=1, gpus_per_node=8, seq_len=4096, micro_batch=1)
    pred, why = fit.why_not(big)
    assert pred["fits"] is False and pred["model_states_gib"] > 150 and "> 72.0 GiB (90% of --gpu-mem 80)" in why
    assert fit.why_not(ok) == (fit.predict(ok).to_dict(), None)
    records = run_sweep([big], _no_launch(), tmp_path, quiet=True, fit=fit)
    assert records[0]["status"] == "skipped" and records[0]["error"]["kind"] == "predicted_oom"
    assert_row_filled(records[0], model="qwen3-8b", task="sft", zero_stage=0, nodes=1, gpus_per_node=8)
    assert record.read(tmp_path / f"{big.run_id}.json")["prediction"]["fits"] is False
    assert FitCheck(gpu_gib=80, run_anyway=True).why_not(big)[1] is None


def _no_launch():
    from stackbench.bench.launchers.local import LocalLauncher

    class MustNotLaunch(LocalLauncher):
        def launch(self, spec, sweep_dir):
            raise AssertionError(f"{spec.run_id} was launched although it cannot fit")

    return MustNotLaunch(LaunchOptions(preflight=False))


def _invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "bench", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.mark.parametrize("args, expect", [
    (["--launcher", "torchrun"], "the torchrun launcher needs a hostfile"),
    (["--launcher", "mpi"], "unknown launcher 'mpi'"),
    (["--env", "NCCL_DEBUG"], "cannot read --env 'NCCL_DEBUG'"),
    (["--launcher", "slurm", "--slurm-gpus", "maybe"], "--slurm-gpus 'maybe'"),
])
def test_bad_launcher_settings_exit_2_without_traceback(args, expect):
    p = _invoke("--dry-run", *args)
    assert p.returncode == 2 and expect in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_script_only_writes_one_sbatch_file_per_run_and_nothing_else_on_stdout(tmp_path, capfd, monkeypatch):
    from tests.support.cli import run_sb

    slurm = ["bench", "--launcher", "slurm", "--slurm-gpus", "no", "--tasks", "sft", "--nodes", "2"]
    code, out, err = run_sb([*slurm, "--zero", "3", "--script-only"], capfd, monkeypatch)
    assert code == 0, err
    assert out.startswith("#!/bin/bash\n") and out.count("#!/bin/bash") == 1, out[:200]
    assert "data:" in err and "data:" not in out  # diagnostics on stderr: `> job.sbatch` is the job
    code, out, err = run_sb([*slurm, "--zero", "2,3", "--script-only"], capfd, monkeypatch)
    assert code == 2 and out == "" and "give a folder" in err
    folder = tmp_path / "scripts"
    code, out, err = run_sb([*slurm, "--zero", "2,3", "--gpu-mem", "0.001", "--run-anyway", "--script-only",
                             str(folder)], capfd, monkeypatch)
    assert code == 0 and out == "", out
    written = sorted(folder.glob("*.sbatch"))
    assert len(written) == 2 and all(f.read_text().startswith("#!/bin/bash\n#SBATCH") for f in written)
    # what the memory model says cannot fit is left out, and said
    code, out, err = run_sb([*slurm, "--zero", "2,3", "--gpu-mem", "0.001", "--script-only", str(tmp_path / "none")],
                            capfd, monkeypatch)
    assert code == 0 and out == "" and err.count("left out sft-z") == 2, err
    assert not list((tmp_path / "none").glob("*.sbatch"))


def _error_file(run_dir, local_rank, message, *, rank, host, timestamp, where='File "/x/model.py", line 7, in forward',
                lost_hosts=""):
    path = run_dir / "ranks" / "run_abc" / "attempt_0" / str(local_rank) / "error.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"message": {"message": message, "extraInfo": {
        "py_callstack": f"Traceback (most recent call last):\n  {where}\n{message}\n", "timestamp": str(timestamp),
        "rank": str(rank), "host": host, "lost_hosts": lost_hosts}}}))


def test_a_timeout_after_a_node_stopped_beating_is_recorded_node_lost_with_that_host(tmp_path):
    """A cut link gives the survivors a receive timeout without an address; rank 0's error file
    names the node whose liveness beats stopped, and that host is the record's."""
    _error_file(tmp_path, 0, "torch.distributed.DistBackendError: Timed out waiting 20000ms for recv", rank=0,
                host="hn1", timestamp=100, lost_hosts="hn2")
    status, error = classify([tmp_path / "node0.log"], raised=outcomes.rank_errors(tmp_path))
    assert (status, error["kind"], error["host"]) == ("failed", "node_lost", "hn2")
    assert error["message"].startswith("hn2 stopped answering") and "Timed out waiting" in error["message"]
    rec = record.new(status, SPEC, Launch(out=str(tmp_path)), started_at=record.now(), error=error)
    assert record.validate(rec) == []


def test_liveness_names_the_node_whose_beats_stopped_on_a_real_store(monkeypatch):
    from datetime import timedelta

    import torch.distributed as dist

    from stackbench.core.host import free_port
    from stackbench.trainer import liveness

    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setattr(liveness, "STALE_S", 0.3)
    watcher = liveness.Liveness(0, 2, watch=True, isolate_after_s=60)
    peer = liveness.Liveness(1, 2, watch=False, isolate_after_s=60)
    for _ in range(3):
        watcher.beat_once()
        peer.beat_once()
    watcher.beat_once()  # it has seen node 1's last beat
    assert watcher.lost() == []
    time.sleep(0.4)
    watcher.beat_once()  # node 0 goes on; node 1 has stopped
    assert watcher.lost() == [socket.gethostname()]
    assert not peer.isolated()
    del server


def test_a_host_found_dead_is_left_out_of_later_runs(tmp_path):
    """torchrun: out of the hostfile (a 2-node run then cannot be placed); Slurm: --exclude."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text("127.0.0.1\nnode-b\n")
    launcher = TorchrunLauncher(hostfile=str(hostfile))
    rec = {"status": "failed", "error": record.error("node_lost", "gone", host="node-b")}
    assert sweep_mod._exclude_dead(rec, launcher) == {"node-b"}
    assert launcher.hosts(1) == ["127.0.0.1"]
    with pytest.raises(ConfigError, match="1 of them found dead"):
        launcher.hosts(2)
    assert sweep_mod._exclude_dead({"status": "failed", "error": record.error("crash", "x", host="127.0.0.1")},
                                   launcher) == set()  # a crash says nothing about its host
    slurm = SlurmLauncher(gpus="no", ask_cluster=False)
    slurm.exclude({"hn2"})
    assert "#SBATCH --exclude=hn2" in slurm.script(SPEC, tmp_path).splitlines()


SUMMARY = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Root Cause (first observed failure):
[0]:
  time      : 2026-11-22_09:00:00
  host      : localhost
  rank      : {rank} (local_rank: {local})
  exitcode  : {code} (pid: 4242)
  error_file: /somewhere/error.json
  traceback : see the error file
"""


def test_a_crash_record_carries_the_failing_ranks_own_exception_from_its_error_file(tmp_path):
    """The exception comes from torch elastic's error file, not the launcher's summary; a peer's
    consequence at the same second (its connection reset) is not the cause."""
    log = tmp_path / "node0.log"
    log.write_text(SUMMARY.format(rank=1, local=1, code=1))
    _error_file(tmp_path, 0, "RuntimeError: Connection reset by peer", rank=0, host="node-a", timestamp=100)
    _error_file(tmp_path, 1, 'ValueError: GptOssForCausalLM does not support attn_implementation="sdpa"', rank=1,
                host="node-a", timestamp=100)
    status, error = classify([log], raised=outcomes.rank_errors(tmp_path))
    assert status == "failed" and error["rank"] == 1 and error["host"] == "node-a"
    assert 'raised ValueError: GptOssForCausalLM does not support attn_implementation="sdpa"' in error["message"]
    assert "exited with code 1" in error["message"] and "model.py" in error["message"]
    assert error["log"].endswith("1/error.json")
    # a rank killed by a signal raised nothing: it stays the cause over the peers' exceptions
    log.write_text(SUMMARY.format(rank=2, local=0, code=-9))
    status, error = classify([log], raised=outcomes.rank_errors(tmp_path))
    assert "rank 2 on localhost killed by SIGKILL" in error["message"]
    # one that raised and was then stopped by torchrun (SIGTERM to the survivors) is not
    log.write_text(SUMMARY.format(rank=1, local=1, code=-15))
    status, error = classify([log], raised=outcomes.rank_errors(tmp_path))
    assert error["rank"] == 1 and "raised ValueError" in error["message"]


def test_every_process_group_gets_the_collective_timeout_deepspeed_does_not_pass(tmp_path):
    """DeepSpeed's new_group(ranks) passes no timeout: torch's default (30 min on gloo) applied to
    ZeRO's gradient all-reduce until the trainer set it for every group (trainer/compat.py)."""
    script = f"""
import torch, torch.distributed as dist
from datetime import timedelta
from stackbench.trainer import compat
compat.collective_timeout_for_every_group(timedelta(seconds=17))
dist.init_process_group("gloo", init_method="file://{tmp_path}/pg", rank=0, world_size=1, timeout=timedelta(seconds=17))
import deepspeed.comm as dcomm
dcomm.init_distributed(dist_backend="gloo", timeout=timedelta(seconds=17))
group = dcomm.new_group([0])  # how DeepSpeed makes its data-parallel and expert groups
print(group._get_backend(torch.device("cpu")).options._timeout.total_seconds())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=dict(os.environ, DS_ACCELERATOR="cpu"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "17.0"
