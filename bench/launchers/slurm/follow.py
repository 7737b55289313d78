"""Following a submitted job until it ends: a pure `decide(observation, elapsed, options)` says,
from what one poll saw, whether to go on waiting (None), that the job ended by itself (Ended), or
why stackbench cancels it (Stopped); `follow` is the loop that polls, sleeps and cancels.

Every wait is bounded: the queue (--queue-timeout, before the first start and after a requeue),
the run (its deadline, from the first start), the preflight's verdict (a node that never starts its
step leaves srun waiting for slurmctld's node timeout, 5 minutes by default), and a failed rank's
peers (srun cannot stop a step on a node it cannot reach). How a job that ended by itself reads
(Slurm's TIMEOUT, OUT_OF_MEMORY ...) is `killed_because` and `slurm_error`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from stackbench.bench.launchers.options import LaunchOptions
from stackbench.bench.launchers.slurm import scheduler
from stackbench.core import record

PREFLIGHT_FAILED = "the preflight failed"
RANK_FAILED = "a rank failed and the job did not end"
# states in which Slurm has given up on the job's nodes (a requeue shows as one of these, or PENDING again)
NODE_FAILURE = {"NODE_FAIL", "BOOT_FAIL", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}


@dataclass(frozen=True)
class Observation:
    """What one poll of a job saw."""

    state: str = ""
    """squeue's state (PENDING, RUNNING, COMPLETING, NODE_FAIL ...); "" once the job has left the queue"""
    reason: str = ""
    """squeue's reason (why it pends: Resources, ReqNodeNotAvail ...)"""
    nodes: str = ""
    """the allocation as first listed (Slurm's compressed list; a COMPLETING job lists only the nodes it waits for)"""
    requeues: int = 0
    """times Slurm requeued the job since it was submitted (asked only while COMPLETING: a requeue passes through it)"""
    running_s: float | None = None
    """seconds since the job was first seen running; None: not yet"""
    preflight: str | None = None
    """the preflight's result file while running: "missing", "ok" (or being written), "failed"; None: not watched"""
    heartbeat: Path | None = None
    """rank 0's heartbeat file (it touches it after every step)"""
    heartbeat_age_s: float | None = None
    """seconds since the heartbeat was last touched; None: not written yet"""
    rank_failed_s: float | None = None
    """seconds since a rank's error file was first seen; None: none"""
    down: str = ""
    """of the job's nodes, those sinfo marks bad (asked only when Slurm has given up on the job)"""
    silent: tuple[str, ...] = ()
    """nodes whose preflight step wrote nothing (asked only when the preflight's result is overdue)"""


@dataclass(frozen=True)
class Ended:
    """The batch script ended by itself (Slurm may still wait on a node it cannot reach)."""


@dataclass(frozen=True)
class Stopped:
    """Why stackbench cancelled a job: the record's status and error kind, a message, the host(s)."""

    status: str
    kind: str
    message: str
    host: str | None = None


def running(state: str) -> bool:
    """Whether squeue's state is one of a job that runs (nor pends, nor ends, nor lost its nodes)."""
    return bool(state) and state not in ("PENDING", "COMPLETING") and state not in NODE_FAILURE


def requeued(obs: Observation) -> bool:
    """A requeue passes through COMPLETING too (the job is stopped, then pends again): the restart count says which."""
    return obs.state == "COMPLETING" and obs.requeues > 0


def gave_up(obs: Observation) -> bool:
    """Slurm gave up on the job's nodes: it ended or requeued the job, or the job pends again after it had run."""
    return obs.state in NODE_FAILURE or requeued(obs) or (obs.running_s is not None and obs.state == "PENDING")


def verdict_by(options: LaunchOptions) -> float:
    """Seconds after the start by which the preflight has a result: its join and all-reduce deadlines, and start-up."""
    return 2 * options.preflight_deadline_s + 30


def preflight_overdue(obs: Observation, options: LaunchOptions) -> bool:
    """The job runs and the preflight has written no result in time: a node never started its step."""
    return running(obs.state) and obs.preflight == "missing" and (obs.running_s or 0.0) > verdict_by(options)


def decide(obs: Observation, elapsed: float, options: LaunchOptions) -> Ended | Stopped | None:
    """What to do after one poll: None (poll again), Ended (the job ended by itself), or Stopped (cancel
    it, and why). elapsed: seconds since the job was submitted; options.deadline_s: the run's limit."""
    if not obs.state or (obs.state == "COMPLETING" and not requeued(obs)):
        return Ended()  # the batch script has ended; Slurm may still wait on a node it cannot reach
    if gave_up(obs):
        # only nodes Slurm itself marks bad are named (and left out of the sweep): a requeue
        # by hand or by a site's policy says nothing against the nodes the job had
        how = "requeued the job" if obs.state != "NODE_FAIL" else "ended the job"
        return Stopped("failed", "node_lost", f"Slurm {how} ({obs.state}, reason {obs.reason or 'none given'}) after "
                       f"it had started on {obs.nodes}; down or failing: {obs.down or 'none of them, per sinfo'}",
                       obs.down or None)
    if obs.state == "PENDING":
        if elapsed > options.queue_timeout_s:
            return Stopped("timeout", "queue_timeout", f"still pending after {options.queue_timeout_s:.0f} s "
                           f"(--queue-timeout), Slurm's reason: {obs.reason or 'none given'}")
        return None
    running_s = obs.running_s or 0.0
    # node 0 has named a node that did not join: srun would wait for that node's step
    # until slurmctld declares it down (its node timeout: 5 minutes by default)
    if obs.preflight == "failed":
        return Stopped("failed", "preflight", PREFLIGHT_FAILED)
    if preflight_overdue(obs, options):
        return Stopped("failed", "preflight", f"no preflight result {verdict_by(options):.0f} s after the job started "
                       f"on {obs.nodes}: the step never started on {', '.join(obs.silent) or 'some node'} "
                       f"(down, or unreachable from slurmctld)", ",".join(obs.silent) or None)
    limit = options.deadline_s + options.preflight_deadline_s * 2
    if running_s > limit:
        return Stopped("timeout", "timeout", f"deadline of {limit:.0f} s passed")
    if obs.heartbeat_age_s is not None and obs.heartbeat_age_s > options.heartbeat_s:
        return Stopped("timeout", "timeout",
                       f"no step finished for {options.heartbeat_s:.0f} s (heartbeat {obs.heartbeat})")
    if obs.rank_failed_s is not None and obs.rank_failed_s > options.grace_s:
        return Stopped("failed", "crash", RANK_FAILED)  # a rank raised and its peers did not end: one cannot be reached
    return None


class Watch:
    """Polls one job: what squeue says, and while it runs, the files its ranks and preflight write."""

    def __init__(self, job: str, options: LaunchOptions, heartbeat: Path, preflight: Path | None = None,
                 run_dir: Path | None = None):
        self.job, self.options = job, options
        self.heartbeat, self.preflight, self.run_dir = heartbeat, preflight, run_dir
        self.t0 = time.monotonic()
        self.restarts = scheduler.restarts(job)  # at submission: a later count above it is a requeue of this job
        self.nodes = ""  # the allocation, as first listed
        self.running_since: float | None = None
        self.failed_at: float | None = None

    def observe(self, now: float) -> Observation:
        """What squeue says of the job now (now: time.monotonic()), and while it runs, what its files say."""
        state, reason, listed = scheduler.queue(self.job)
        self.nodes = self.nodes or (listed if listed != "(null)" else "")
        requeues = scheduler.restarts(self.job) - self.restarts if state == "COMPLETING" else 0
        preflight = heartbeat_age = None
        if running(state):
            self.running_since = self.running_since or now
            if self.preflight is not None:
                preflight = ("missing" if not self.preflight.exists() else
                             "ok" if _preflight_ok(self.preflight) else "failed")
            if self.heartbeat.exists():
                heartbeat_age = time.time() - self.heartbeat.stat().st_mtime
            if (self.run_dir is not None and self.failed_at is None
                    and next(self.run_dir.glob("ranks/**/error.json"), None)):
                self.failed_at = now  # a rank raised: its peers get options.grace_s to end
        obs = Observation(state=state, reason=reason, nodes=self.nodes, requeues=requeues,
                          running_s=None if self.running_since is None else now - self.running_since,
                          preflight=preflight, heartbeat=self.heartbeat, heartbeat_age_s=heartbeat_age,
                          rank_failed_s=None if self.failed_at is None else now - self.failed_at)
        if gave_up(obs):
            obs = dataclasses.replace(obs, down=scheduler.down_nodes(self.nodes))
        if preflight_overdue(obs, self.options):
            obs = dataclasses.replace(obs, silent=tuple(_silent_nodes(self.nodes, self.preflight.parent)))
        return obs


def follow(job: str, options: LaunchOptions, poll_s: float, heartbeat: Path, preflight: Path | None = None,
           run_dir: Path | None = None) -> Stopped | None:
    """Wait for the job to end; why stackbench cancelled it, or None when it ended by itself.
    options.deadline_s is the run's limit, from its first start."""
    watch = Watch(job, options, heartbeat, preflight, run_dir)
    while True:
        now = time.monotonic()
        outcome = decide(watch.observe(now), now - watch.t0, options)
        if isinstance(outcome, Stopped):
            scheduler.cancel(job)
            return outcome
        if isinstance(outcome, Ended):
            return None
        time.sleep(poll_s)


def killed_because(state: str, stopped: Stopped | None) -> str | None:
    """Why a job that ended was killed, as outcomes.classify reads it (a timeout): stackbench's
    deadline or heartbeat, or Slurm's own time limit."""
    if stopped and stopped.kind == "timeout":
        return stopped.message
    return f"Slurm ended the job: {state}" if state == "TIMEOUT" else None


def slurm_error(job: str, state: str, status: str, error: dict, stopped: Stopped | None,
                options: LaunchOptions) -> tuple[str, dict]:
    """(status, error) of a job that ended, from outcomes.classify's reading of its logs and how
    Slurm says it ended: OUT_OF_MEMORY is an oom, a cancelled crash says so, the message names the job."""
    error = dict(error)
    if state == "OUT_OF_MEMORY":
        status, error["kind"] = "oom", "oom"
    if stopped and stopped.kind == "crash":
        error["message"] += f" (cancelled {options.grace_s:.0f} s later: the other nodes had not ended)"
    error["message"] = f"Slurm job {job} {state}: {error['message']}"
    return status, error


def _preflight_ok(path: Path) -> bool:
    try:
        return bool(record.read(path).get("ok"))
    except (OSError, ValueError):  # being written (atomically: not half a file) or gone
        return True


def _silent_nodes(nodelist: str, run_dir: Path) -> list[str]:
    """Nodes of the allocation whose preflight step wrote nothing (its log is made when it starts)."""
    return [h for i, h in enumerate(scheduler.hostnames(nodelist))
            if not (run_dir / f"preflight-node{i}.log").exists()]
