"""bench/launchers/slurm/follow.py: decide() per exit, from hand-made observations of one poll (what
a real cluster shows only when a node dies, a job requeues or a queue stays full), the reading of a
job that ended by itself, and the loop's calls to Slurm."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.slurm import follow as follow_mod
from stackbench.bench.launchers.slurm.follow import (
    RANK_FAILED,
    Ended,
    Observation,
    Stopped,
    decide,
    killed_because,
    slurm_error,
)

OPTS = LaunchOptions(deadline_s=900, preflight_deadline_s=30, queue_timeout_s=60, heartbeat_s=300, grace_s=30)
LIMIT = 900 + 2 * 30  # the run's deadline from its first start, the preflight's two deadlines included
VERDICT_BY = 2 * 30 + 30  # the preflight's join and all-reduce deadlines, and start-up
HEARTBEAT = Path("/r/sft/heartbeat")


def running(**kw) -> Observation:
    """A job that runs on two nodes, its preflight passed, a step finished a second ago."""
    return Observation(**{"state": "RUNNING", "nodes": "hn[1-2]", "running_s": 10.0, "preflight": "ok",
                          "heartbeat": HEARTBEAT, "heartbeat_age_s": 1.0, **kw})


# --- the job ends by itself ----------------------------------------------------------------------

def test_a_job_that_left_the_queue_ended_by_itself():
    assert decide(Observation(state=""), 5.0, OPTS) == Ended()
    assert decide(Observation(state="", running_s=2000.0), 5000.0, OPTS) == Ended()  # no deadline after the end


def test_completing_without_a_requeue_is_the_end_of_the_batch_script():
    assert decide(running(state="COMPLETING"), 5.0, OPTS) == Ended()


# --- the queue -----------------------------------------------------------------------------------

def test_pending_within_the_queue_timeout_waits():
    assert decide(Observation(state="PENDING", reason="Resources"), 60.0, OPTS) is None


def test_pending_past_the_queue_timeout_is_cancelled_with_slurms_reason():
    assert decide(Observation(state="PENDING", reason="ReqNodeNotAvail"), 60.5, OPTS) == Stopped(
        "timeout", "queue_timeout", "still pending after 60 s (--queue-timeout), Slurm's reason: ReqNodeNotAvail")
    assert decide(Observation(state="PENDING"), 61.0, OPTS).message.endswith("Slurm's reason: none given")


# --- Slurm gives up on the job's nodes -----------------------------------------------------------

def test_a_requeue_seen_while_completing_is_a_lost_node_named_by_sinfo():
    obs = running(state="COMPLETING", requeues=1, down="hn2")
    assert decide(obs, 100.0, OPTS) == Stopped(
        "failed", "node_lost", "Slurm requeued the job (COMPLETING, reason none given) after it had started on "
        "hn[1-2]; down or failing: hn2", "hn2")


def test_a_job_pending_again_after_it_ran_was_requeued_and_no_node_is_blamed_that_sinfo_does_not():
    obs = Observation(state="PENDING", reason="BeginTime", nodes="hn[1-2]", running_s=50.0)
    assert decide(obs, 10.0, OPTS) == Stopped(
        "failed", "node_lost", "Slurm requeued the job (PENDING, reason BeginTime) after it had started on hn[1-2]; "
        "down or failing: none of them, per sinfo", None)


@pytest.mark.parametrize("state", ["REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "BOOT_FAIL", "RESV_DEL_HOLD"])
def test_the_states_of_a_requeue_are_a_lost_node(state):
    stopped = decide(running(state=state, reason="JobHeldAdmin", down="hn1"), 10.0, OPTS)
    assert stopped == Stopped("failed", "node_lost", f"Slurm requeued the job ({state}, reason JobHeldAdmin) after it "
                              "had started on hn[1-2]; down or failing: hn1", "hn1")


def test_node_fail_names_the_host_slurm_marks_down():
    obs = Observation(state="NODE_FAIL", reason="NodeDown", nodes="hn[1-2]", running_s=30.0, down="hn2")
    assert decide(obs, 40.0, OPTS) == Stopped(
        "failed", "node_lost", "Slurm ended the job (NODE_FAIL, reason NodeDown) after it had started on hn[1-2]; "
        "down or failing: hn2", "hn2")


# --- the preflight inside the job ----------------------------------------------------------------

def test_a_failed_preflight_cancels_the_job():
    assert decide(running(preflight="failed"), 10.0, OPTS) == Stopped("failed", "preflight", "the preflight failed")


def test_a_preflight_with_no_result_in_time_names_the_nodes_whose_step_never_started():
    assert decide(running(preflight="missing", running_s=VERDICT_BY), 100.0, OPTS) is None  # not yet overdue
    assert decide(running(preflight="missing", running_s=VERDICT_BY + 1, silent=("hn2",)), 100.0, OPTS) == Stopped(
        "failed", "preflight", "no preflight result 90 s after the job started on hn[1-2]: the step never started "
        "on hn2 (down, or unreachable from slurmctld)", "hn2")
    stopped = decide(running(preflight="missing", running_s=VERDICT_BY + 1), 100.0, OPTS)
    assert "never started on some node (" in stopped.message and stopped.host is None


def test_a_preflight_not_watched_never_stops_the_job():
    """envcheck --nodes follows its job without a preflight file to wait for."""
    assert decide(running(preflight=None, running_s=VERDICT_BY + 100), 500.0, OPTS) is None


# --- the run -------------------------------------------------------------------------------------

def test_still_running_waits():
    assert decide(running(), 20.0, OPTS) is None


def test_the_run_deadline_counts_from_the_first_start_with_the_preflights_deadlines():
    assert decide(running(running_s=LIMIT), 5000.0, OPTS) is None
    assert decide(running(running_s=LIMIT + 0.5), 5000.0, OPTS) == Stopped("timeout", "timeout",
                                                                            "deadline of 960 s passed")


def test_a_silent_heartbeat_stops_the_run():
    assert decide(running(heartbeat_age_s=300.0), 400.0, OPTS) is None
    assert decide(running(heartbeat_age_s=301.0), 400.0, OPTS) == Stopped(
        "timeout", "timeout", "no step finished for 300 s (heartbeat /r/sft/heartbeat)")
    assert decide(running(heartbeat_age_s=None), 400.0, OPTS) is None  # no step yet: the deadline decides


def test_a_rank_that_failed_while_its_peers_did_not_end_is_a_crash_after_the_grace():
    assert decide(running(rank_failed_s=0.0), 20.0, OPTS) is None
    assert decide(running(rank_failed_s=30.0), 20.0, OPTS) is None
    assert decide(running(rank_failed_s=31.0), 20.0, OPTS) == Stopped("failed", "crash", RANK_FAILED)


def test_the_first_exit_that_applies_wins():
    """As the loop read them: a failed preflight before the deadline, the deadline before the heartbeat."""
    late = running(running_s=LIMIT + 1, heartbeat_age_s=1000.0, rank_failed_s=100.0)
    assert decide(dataclasses.replace(late, preflight="failed"), 0.0, OPTS).kind == "preflight"
    assert decide(late, 0.0, OPTS).message == "deadline of 960 s passed"


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED", "CANCELLED", "OUT_OF_MEMORY", "TIMEOUT"])
def test_a_final_state_squeue_still_lists_is_followed_as_a_running_job(state):
    """squeue -j lists a job only while it pends, runs or completes: once it has ended it shows
    nothing (the Ended above). Where squeue is told to list every state (SQUEUE_STATES=all), the
    loop reads a final state as it reads RUNNING, as before: the deadline still ends the wait."""
    assert decide(running(state=state), 10.0, OPTS) is None
    assert decide(running(state=state, running_s=LIMIT + 1), 10.0, OPTS).message == "deadline of 960 s passed"


# --- how a job that ended reads ------------------------------------------------------------------

CRASH = {"kind": "crash", "message": "rank 1 on hn2 exited with code 1", "rank": 1}


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL"])
def test_a_job_that_ended_keeps_what_its_logs_say_and_names_the_job_and_state(state):
    assert killed_because(state, None) is None
    status, error = slurm_error("42", state, "failed", CRASH, None, OPTS)
    assert status == "failed"
    assert error == {**CRASH, "message": f"Slurm job 42 {state}: rank 1 on hn2 exited with code 1"}


def test_out_of_memory_is_an_oom_whatever_the_logs_say():
    status, error = slurm_error("42", "OUT_OF_MEMORY", "failed", CRASH, None, OPTS)
    assert (status, error["kind"]) == ("oom", "oom")
    assert error["message"] == "Slurm job 42 OUT_OF_MEMORY: rank 1 on hn2 exited with code 1"


def test_slurms_time_limit_is_a_timeout_and_stackbenchs_own_reason_comes_first():
    assert killed_because("TIMEOUT", None) == "Slurm ended the job: TIMEOUT"
    ours = Stopped("timeout", "timeout", "deadline of 960 s passed")
    assert killed_because("TIMEOUT", ours) == killed_because("CANCELLED", ours) == "deadline of 960 s passed"
    assert killed_because("CANCELLED", Stopped("failed", "crash", RANK_FAILED)) is None


def test_a_crash_stackbench_cancelled_says_how_long_the_peers_had():
    _, error = slurm_error("42", "CANCELLED", "failed", CRASH, Stopped("failed", "crash", RANK_FAILED), OPTS)
    assert error["message"] == ("Slurm job 42 CANCELLED: rank 1 on hn2 exited with code 1 (cancelled 30 s later: the "
                                "other nodes had not ended)")


# --- the loop: what it asks Slurm, and when -------------------------------------------------------

class FakeSlurm:
    """squeue's answers in turn; every call recorded."""

    def __init__(self, answers, restarts=(0,), down="", hosts=("hn1", "hn2")):
        self.answers, self.restart_counts, self.down, self.hosts = list(answers), list(restarts), down, list(hosts)
        self.calls: list[str] = []

    def install(self, monkeypatch):
        sched = follow_mod.scheduler
        monkeypatch.setattr(sched, "queue", lambda job: self._log("queue", self.answers.pop(0)))
        monkeypatch.setattr(sched, "restarts", lambda job: self._log("restarts", self.restart_counts.pop(0)))
        monkeypatch.setattr(sched, "down_nodes", lambda nodes: self._log(f"down_nodes {nodes}", self.down))
        monkeypatch.setattr(sched, "hostnames", lambda nodes: self._log(f"hostnames {nodes}", self.hosts))
        monkeypatch.setattr(sched, "cancel", lambda job: self._log("cancel", None))
        return self

    def _log(self, call, answer):
        self.calls.append(call)
        return answer


def test_the_loop_waits_through_the_queue_and_returns_none_when_the_job_ends(tmp_path, monkeypatch):
    fake = FakeSlurm([("PENDING", "Priority", "(null)"), ("RUNNING", "None", "hn[1-2]"),
                      ("COMPLETING", "None", "hn2"), ("", "", "")], restarts=(0, 0)).install(monkeypatch)
    (tmp_path / "preflight.json").write_text('{"ok": true}')
    assert follow_mod.follow("7", OPTS, 0, tmp_path / "heartbeat", tmp_path / "preflight.json", tmp_path) is None
    # a restart count at submission and while COMPLETING only; nothing cancelled, no node asked about
    assert fake.calls == ["restarts", "queue", "queue", "queue", "restarts"]


def test_the_loop_asks_sinfo_only_when_slurm_gave_up_and_then_cancels(tmp_path, monkeypatch):
    fake = FakeSlurm([("RUNNING", "None", "hn[1-2]"), ("NODE_FAIL", "NodeDown", "hn[1-2]")],
                     down="hn2").install(monkeypatch)
    (tmp_path / "preflight.json").write_text('{"ok": true}')
    stopped = follow_mod.follow("7", OPTS, 0, tmp_path / "heartbeat", tmp_path / "preflight.json", tmp_path)
    assert (stopped.kind, stopped.host) == ("node_lost", "hn2") and "after it had started on hn[1-2]" in stopped.message
    assert fake.calls == ["restarts", "queue", "queue", "down_nodes hn[1-2]", "cancel"]


def test_the_loop_names_the_nodes_whose_preflight_step_never_started(tmp_path, monkeypatch):
    fake = FakeSlurm([("RUNNING", "None", "hn[1-2]")] * 2).install(monkeypatch)
    (tmp_path / "preflight-node0.log").write_text("started")
    clock = iter([0.0, 1.0, 1.0 + VERDICT_BY + 1])  # submission, first poll, second poll
    monkeypatch.setattr(follow_mod, "time", SimpleNamespace(monotonic=lambda: next(clock), sleep=lambda s: None))
    stopped = follow_mod.follow("7", OPTS, 0, tmp_path / "heartbeat", tmp_path / "preflight.json", tmp_path)
    assert stopped == Stopped("failed", "preflight", "no preflight result 90 s after the job started on hn[1-2]: the "
                              "step never started on hn2 (down, or unreachable from slurmctld)", "hn2")
    assert fake.calls == ["restarts", "queue", "queue", "hostnames hn[1-2]", "cancel"]
