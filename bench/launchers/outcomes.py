"""What happened to a run the trainer could not record itself, as a record.

The trainer records what it can see (bad input, OOM raised in Python). What it cannot see is read
here from the launcher's side: a deadline or heartbeat that expired, a rank killed by a signal
(torchrun's failure summary names host, rank and exit code), an OOM killer, a crash; and the
runs that never started: interrupted (Ctrl-C), or nodes that failed the preflight.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from stackbench.bench.launchers import preflight as preflight_mod
from stackbench.core import record
from stackbench.core.config import Launch, RunConfig
from stackbench.core.errors import OUT_OF_MEMORY
from stackbench.trainer.liveness import STALE_S as LOST_AFTER_S

_TORCHRUN_FAILURE = re.compile(r"time\s*:\s*(\S+)\s*\n\s*host\s*:\s*(\S+)\s*\n\s*rank\s*:\s*(\d+)[^\n]*\n"
                               r"\s*exitcode\s*:\s*(-?\d+)")
_TEE = r"(?:\[default\d+\]:)?"  # torchrun --tee prefixes each line with the local rank
_TRAINER_ERROR = re.compile(rf"^{_TEE}\[([^:\]]+):(\d+)\] error: (.*)$", re.M)  # the trainer's own line


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def describe_exit(code: int) -> str:
    if code < 0 or code > 128:  # torchrun reports -N; shells and Slurm report 128 + N
        sig = -code if code < 0 else code - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        how = f"killed by {name}"
        if sig == signal.SIGKILL:
            how += " (the kernel's OOM killer, or someone killed it)"
        return how
    return f"exited with code {code}"


def classify(logs: list[Path], killed_because: str | None = None, exit_codes: dict | None = None,
             hosts: list[str] | None = None, raised: list[dict] | None = None) -> tuple[str, dict]:
    """(status, error) from per-node logs (index = node), when known exit codes by node, the host
    of each node (torchrun's summary names a host by its FQDN, often just "localhost"), and the
    exceptions the ranks raised (rank_errors: their own error files)."""
    raised = raised or []
    texts = [p.read_text(errors="replace") if p.exists() else "" for p in logs]
    log_paths = ", ".join(str(p) for p in logs)
    if killed_because:
        lasts = "\n".join(f"--- node {n} ({p.name}) ---\n{tail(p, 8)}" for n, p in enumerate(logs))
        return "timeout", record.error("timeout", f"{killed_because}; last lines:\n{lasts}", log=log_paths)
    for node, text in enumerate(texts):
        m = _TRAINER_ERROR.search(text)
        if m:
            oom = bool(OUT_OF_MEMORY.search(m.group(3)))
            return ("oom" if oom else "failed"), record.error(
                "oom" if oom else "crash", m.group(3), rank=int(m.group(2)), host=m.group(1), log=str(logs[node]))
    for node, text in enumerate(texts):
        if OUT_OF_MEMORY.search(text):
            return "oom", record.error("oom", "out of memory (see log)", log=str(logs[node]))
    # torchrun's summaries: a rank killed by a signal is the cause; the others failing after it
    # (their peer vanished from a collective) are consequences, so signals first, then the earliest
    found = [(int(code) >= 0, when, node, host, int(rank), int(code))
             for node, text in enumerate(texts) for when, host, rank, code in _TORCHRUN_FAILURE.findall(text)]
    first = min(found) if found else None
    # a rank killed by a signal before it could raise (the OOM killer, a segfault) is the cause; one
    # that raised first and was then stopped (torchrun sends the survivors SIGTERM) is not
    first_rank, first_code = (first[4], first[5]) if first else (None, 0)
    killed_first = first_code < 0 and first_code != -signal.SIGTERM and first_rank not in {e["rank"] for e in raised}
    lost = next((e for e in raised if e["lost_hosts"]), None)
    if lost and not killed_first:  # a peer that vanished is the cause of every timeout after it
        hosts_lost = ", ".join(lost["lost_hosts"])
        return "failed", record.error("node_lost", f"{hosts_lost} stopped answering (no liveness beat for "
                                      f"{LOST_AFTER_S:.0f} s); then rank {lost['rank']} on {lost['host']} raised "
                                      f"{lost['message']}{lost['where']}", rank=lost["rank"],
                                      host=lost["lost_hosts"][0], log=lost["file"])
    if raised and not killed_first:
        cause = raised[0]
        code = next((c for _, _, _, _, r, c in found if r == cause["rank"]), None)
        how = f"{describe_exit(code)}: " if code is not None else ""
        return "failed", record.error("crash", f"rank {cause['rank']} on {cause['host']} {how}raised "
                                      f"{cause['message']}{cause['where']}", rank=cause["rank"], host=cause["host"],
                                      log=cause["file"])
    if first:
        _, _, node, host, rank, code = first
        host = hosts[node] if hosts and node < len(hosts) else host
        return "failed", record.error("crash", f"rank {rank} on {host} {describe_exit(code)}", rank=rank, host=host,
                                      log=str(logs[node]))
    codes = ", ".join(f"node {n}: {describe_exit(c)}" for n, c in (exit_codes or {}).items() if c not in (None, 0))
    first = next((p for p in logs if p.exists()), logs[0] if logs else Path("-"))
    return "failed", record.error("crash", f"{codes or 'no exit code'}; last lines of {first.name}:\n{tail(first)}",
                                  log=log_paths)


# what a rank raises because another went away: never the cause when a rank raised something else
_CONSEQUENCE = re.compile(r"DistBackendError|Connection (reset|closed)|Broken pipe|timed out|Timeout|"
                          r"ProcessGroupGloo|NCCL communicator was aborted|watchdog", re.I)


def rank_errors(run_dir: Path) -> list[dict]:
    """The exceptions ranks raised, from torch elastic's error files (trainer/__main__.py writes
    them through @record, under the run's --log-dir), first cause first: the earliest, and at the
    same second an exception of its own before one caused by a vanished peer."""
    out = []
    for path in sorted(run_dir.glob("ranks/**/error.json")):
        try:
            info = json.loads(path.read_text())["message"]
            extra = info.get("extraInfo") or {}
            stack = [line.strip() for line in str(extra.get("py_callstack", "")).splitlines() if line.strip()]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a file a dying rank left half-written: the others still speak
        frames = [line for line in stack if line.startswith('File "')]
        where = f" ({frames[-1]})" if frames else ""
        message = str(info.get("message", "")).strip().splitlines()
        out.append({"rank": int(extra["rank"]) if str(extra.get("rank", "")).isdigit() else None,
                    "host": extra.get("host"), "timestamp": int(extra.get("timestamp") or 0),
                    "lost_hosts": [h for h in str(extra.get("lost_hosts") or "").split(",") if h],
                    "message": message[0] if message else "an exception", "where": where, "file": str(path)})
    return sorted(out, key=lambda e: (e["timestamp"], bool(_CONSEQUENCE.search(e["message"]))))


def interrupted(cfg: RunConfig, launch: Launch, started: str) -> dict:
    return record.new("interrupted", cfg, launch, started_at=started,
                      error=record.error("interrupted", "stopped by the user (Ctrl-C)"))


def preflight_failed(cfg: RunConfig, launch: Launch, result: dict, started: str, **extra) -> dict:
    """The record of a run that did not start because its nodes failed the preflight (host named);
    written beside the others."""
    host = (result.get("missing_hosts") or [result.get("host")])[0]
    error = record.error("preflight", result.get("message", "preflight failed"), host=host,
                         log=str(Path(launch.out) / cfg.run_id))
    rec = record.new("failed", cfg, launch, started_at=started, error=error, preflight=result, **extra)
    record.write(record.path(launch.out, rec["run_id"]), rec)
    return rec


def read_preflight(out: Path, logs: list[Path], killed_because: str | None) -> dict:
    """Node 0's JSON, else the first failure a node printed, else why it was stopped."""
    if out.exists():
        return json.loads(out.read_text())
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if line.startswith(preflight_mod.PREFIX):
                result = json.loads(line[len(preflight_mod.PREFIX):])
                if not result.get("ok"):
                    return result
    why = killed_because or "the preflight exited without a result"
    return {"ok": False, "error": "preflight", "message": f"{why}; logs: {', '.join(str(p) for p in logs)}"}
