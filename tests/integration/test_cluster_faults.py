"""Faults on a real cluster (the 2-node Slurm cluster in network namespaces, and its sshd per
node): a node cut off before its job starts or mid-run, a job that cannot leave the queue, a job
Slurm requeues. Each sweep must end on its own, within a bound these tests assert on the records'
own timestamps, with the cause and the host; the node state is reset between tests.

Bounds: what the launcher waits for (the preflight deadline, the queue timeout, the collective
timeout + the grace period) plus MARGIN_S for what a 2-core machine adds around it (sbatch and
scheduling, the ranks' imports, the launcher's polling)."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.slurm import SlurmLauncher
from stackbench.bench.launchers.slurm.scheduler import slurm as _slurm
from stackbench.bench.launchers.torchrun import TorchrunLauncher
from stackbench.bench.sweep import run_sweep
from stackbench.core.config import RunConfig

pytestmark = [pytest.mark.slurm, pytest.mark.deepspeed]

MARGIN_S = 45
PREFLIGHT_S = 10
COLLECTIVE_S = 15
GRACE_S = 10
SLURM_RETRY_S = 180  # slurmctld's own retries reaching a node whose link came back (see the mid-run test)


def _spec(**kw) -> RunConfig:
    return RunConfig(**{"task": "sft", "model": "tiny", "zero_stage": 2, "gpus_per_node": 1, "steps": 2,
                        "warmup_steps": 1, **kw})


def _long(**kw) -> RunConfig:
    return _spec(nodes=2, steps=400, repeat_data=True, **kw)  # runs until it is cut


def _options(**kw) -> LaunchOptions:
    return LaunchOptions(**{"deadline_s": 300, "preflight_deadline_s": PREFLIGHT_S,
                            "collective_timeout_s": COLLECTIVE_S, "grace_s": GRACE_S, "queue_timeout_s": 60, **kw})


def _seconds(rec: dict, since: float | None = None) -> float:
    """From the record's start (or from `since`, a time.time()) to its finish, by its timestamps."""
    end = datetime.strptime(rec["finished_at"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    start = since if since is not None else datetime.strptime(rec["started_at"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    return end - start


def _when_stepping(sweep_dir, cfg: RunConfig, then) -> dict:
    """Call then() once rank 0 has finished 2 steps of cfg; what happened, for the test."""
    out: dict = {}
    heartbeat = sweep_dir / cfg.run_id / "heartbeat"

    def watch():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                step = int(heartbeat.read_text().split("/")[0] or 0)
            except (OSError, ValueError):
                step = 0
            if step >= 2:
                out["at"] = time.time()
                out["result"] = then()
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    return out


@pytest.fixture
def cluster(slurm_cluster):
    """The session's cluster with every link up, no job, every node idle, before and after."""
    slurm_cluster.reset()
    yield slurm_cluster
    slurm_cluster.reset()


@pytest.fixture
def slurm_env(cluster, monkeypatch):
    for k, v in cluster.env.items():
        monkeypatch.setenv(k, v)
    return cluster


def test_a_node_cut_before_its_job_starts_fails_the_preflight_by_name_and_the_sweep_goes_on(slurm_env, tmp_path):
    """slurmctld still believes the cut node idle (its node timeout is 5 minutes) and places the
    job there; the preflight names it, the job is cancelled at once, the node is left out of the
    next job, which runs on the node that is left."""
    slurm_env.cut(1)
    two, one = run_sweep([_spec(nodes=2), _spec(nodes=1)], SlurmLauncher(_options(), poll_s=0.5), tmp_path / "s",
                         quiet=True)
    assert two["status"] == "failed" and two["error"]["kind"] == "preflight", two["error"]
    assert two["error"]["host"] == "sbnode1" and "sbnode1" in two["error"]["message"]
    assert _seconds(two) < PREFLIGHT_S + MARGIN_S, two["error"]["message"]
    assert one["status"] == "ok", one.get("error")
    assert one["excluded_hosts"] == ["sbnode1"] and one["environment"]["hosts"] == ["sbnode0"]
    assert "--exclude=sbnode1" in (tmp_path / "s" / one["run_id"] / "job.sbatch").read_text()


def test_a_job_that_cannot_leave_the_queue_is_cancelled_at_the_queue_timeout_with_slurms_reason(slurm_env, tmp_path):
    _slurm("scontrol", "update", "nodename=sbnode1", "state=drain", "reason=stackbench-test")
    queued = 15
    two, one = run_sweep([_spec(nodes=2), _spec(nodes=1)], SlurmLauncher(_options(queue_timeout_s=queued), poll_s=0.5),
                         tmp_path / "s", quiet=True)
    assert two["status"] == "timeout" and two["error"]["kind"] == "queue_timeout", two["error"]
    assert "--queue-timeout" in two["error"]["message"] and "Slurm's reason: " in two["error"]["message"]
    assert "none given" not in two["error"]["message"]  # Slurm said why (ReqNodeNotAvail, Resources, ...)
    assert queued <= _seconds(two) < queued + MARGIN_S
    assert not _slurm("squeue", "-h", "-j", two["slurm_job_id"], "-o", "%T", check=False).strip()
    assert one["status"] == "ok", one.get("error")


def test_a_node_cut_mid_run_is_named_within_the_collective_timeout_and_no_job_is_left(slurm_env, tmp_path):
    cfg = _long()
    cut = _when_stepping(tmp_path / "s", cfg, lambda: slurm_env.cut(1))
    (rec,) = run_sweep([cfg], SlurmLauncher(_options(), poll_s=0.5), tmp_path / "s", quiet=True)
    assert "at" in cut, "the run never reached step 2"
    assert rec["status"] == "failed" and rec["error"]["kind"] == "node_lost", rec["error"]
    assert rec["error"]["host"] == "sbnode1" and "sbnode1 stopped answering" in rec["error"]["message"]
    assert _seconds(rec, since=cut["at"]) < COLLECTIVE_S + GRACE_S + MARGIN_S
    # nothing of the job runs or pends; its part on the cut node is left COMPLETING until the node
    # answers: once the link is back, the job is gone from squeue and no rank is left on the node.
    # How soon is slurmctld's: it retries the kill RPC about once a minute and pings a node every
    # SlurmdTimeout / 3 (100 s by default), so up to SLURM_RETRY_S after the link returns
    assert _slurm("squeue", "-h", "-j", rec["slurm_job_id"], "-o", "%T", check=False).strip() in ("", "COMPLETING")
    slurm_env.restore(1)
    t0 = time.monotonic()
    while time.monotonic() - t0 < SLURM_RETRY_S and (
            _slurm("squeue", "-h", "-j", rec["slurm_job_id"], check=False).strip()
            or slurm_env.processes(1, cfg.run_id)):
        time.sleep(1)
    assert not _slurm("squeue", "-h", "-j", rec["slurm_job_id"], check=False).strip()
    assert not slurm_env.processes(1, cfg.run_id)


def test_a_requeued_job_is_recorded_and_not_followed(slurm_env, tmp_path):
    """Jobs are submitted --no-requeue; a site can still requeue one (here: made requeueable, then
    `scontrol requeue`, as a node failure would): recorded at once, not followed back into the queue."""
    cfg = _long()

    def requeue():
        job = _slurm("squeue", "-h", "-n", f"sb-{cfg.run_id}", "-o", "%i").strip()
        _slurm("scontrol", "update", f"jobid={job}", "requeue=1")
        _slurm("scontrol", "requeue", job)
        return job

    done = _when_stepping(tmp_path / "s", cfg, requeue)
    (rec,) = run_sweep([cfg], SlurmLauncher(_options(), poll_s=0.5), tmp_path / "s", quiet=True)
    assert done.get("result") == rec["slurm_job_id"]
    assert rec["status"] == "failed" and rec["error"]["kind"] == "node_lost", rec["error"]
    assert "requeued the job" in rec["error"]["message"]
    assert rec["error"]["host"] is None  # no node is down: none is named, none is left out
    assert _seconds(rec, since=done["at"]) < MARGIN_S
    assert not _slurm("squeue", "-h", "-j", rec["slurm_job_id"], "-t", "PENDING,RUNNING", check=False).strip()


def test_a_host_cut_mid_run_under_torchrun_over_ssh_is_named_and_ends_its_own_ranks(cluster, tmp_path):
    """Both hosts over ssh. The launcher kills its ssh clients, which cannot reach the cut host;
    that host's ranks and torchrun agent end by themselves (trainer/liveness.py: the store
    unreachable for the collective timeout + 30 s). Checked the moment the link comes back, before
    the restored connection could tell the far side anything."""
    cfg = _long()
    launcher = TorchrunLauncher(_options(), hostfile=str(cluster.hostfile(tmp_path / "hosts")),
                                ssh_options=cluster.ssh_options)
    cut = _when_stepping(tmp_path / "s", cfg, lambda: cluster.cut(1))
    (rec,) = run_sweep([cfg], launcher, tmp_path / "s", quiet=True)
    assert "at" in cut, "the run never reached step 2"
    assert rec["status"] == "failed" and rec["error"]["kind"] == "node_lost", rec["error"]
    assert rec["error"]["host"] == "sbnode1" and "sbnode1 stopped answering" in rec["error"]["message"]
    assert _seconds(rec, since=cut["at"]) < COLLECTIVE_S + GRACE_S + MARGIN_S
    isolated_by = cut["at"] + COLLECTIVE_S + 30 + 15  # the watchdog's bound, its beat and the kill
    while time.time() < isolated_by and cluster.processes(1, cfg.run_id):
        time.sleep(1)
    cluster.restore(1)
    assert not cluster.processes(1, cfg.run_id), "a rank or torchrun agent outlived the cut on sbnode1"
