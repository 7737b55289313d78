"""The Slurm client commands stackbench runs (sbatch, squeue, scontrol, sacct, sinfo, scancel), each a
small function that runs one and reads its output; the only module that runs them.

State comes from squeue while the job lives and `scontrol show job` after (sacct needs an
accounting database many small clusters do not run; it is the fallback). Secrets (core.secrets)
are never in the script: sbatch is run with `--export=ALL`, so Slurm carries them from the
submitting shell's environment to the job, and srun to every node.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stackbench.core import files, secrets
from stackbench.core.errors import ConfigError

JOB_FILE = "job.sbatch"


def slurm(*argv: str, check: bool = True, timeout: float = 60) -> str:
    """A Slurm client command's standard output; no client here, or (check) a failed command, is a
    ConfigError saying so."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ConfigError(f"{argv[0]} not found: this host is not a Slurm client", where="--launcher slurm",
                          fix="run on a login node (sbatch, squeue, scontrol on PATH); to submit from elsewhere, "
                              "`./sb bench --launcher slurm --script-only DIR` writes the job scripts") from None
    if check and out.returncode != 0:
        raise ConfigError(f"{' '.join(argv[:2])} failed: {out.stderr.strip() or out.stdout.strip()}",
                          where="--launcher slurm", fix="check SLURM_CONF, the partition and the account")
    return out.stdout


def submit(work_dir: Path, script: str) -> str:
    """Clear what an earlier job in this directory left (logs, heartbeat, preflight result), write
    the script beside them, submit it with the submitting environment (--export=ALL: how the
    secrets reach the job); the job id."""
    for stale in [*work_dir.glob("*.log"), work_dir / "heartbeat", work_dir / "preflight.json"]:
        stale.unlink(missing_ok=True)
    secrets.refuse_leaks(script, "the job script")
    files.write_atomic(work_dir / JOB_FILE, script, redact=False)
    exported = os.environ.get("SBATCH_EXPORT")
    if exported and exported.upper() != "ALL":
        print(f"note: SBATCH_EXPORT={exported} overridden with --export=ALL: the ranks get their settings and "
              "secrets from this environment", file=sys.stderr)
    return slurm("sbatch", "--parsable", "--export=ALL", str(work_dir / JOB_FILE)).strip().split(";")[0]


def queue(job: str) -> tuple[str, str, str]:
    """(state, reason, node list) as squeue shows the job; ("", "", "") once it has left the queue.
    A pending job's node list is "(null)" or empty."""
    shown = slurm("squeue", "-h", "-j", job, "-o", "%T|%r|%N", check=False).strip()
    state, reason, nodes = (shown + "||").split("|")[:3]
    return state, reason, nodes


def restarts(job: str) -> int:
    """How many times Slurm has requeued the job."""
    found = re.search(r"Restarts=(\d+)", slurm("scontrol", "show", "job", "-o", job, check=False))
    return int(found.group(1)) if found else 0


def cancel(job: str, wait_s: float = 60) -> None:
    """Cancel and wait until nothing of the job runs or pends. A job stays COMPLETING on a node
    slurmctld cannot reach until the node answers or its node timeout passes: not waited for (that
    node's ranks end themselves, trainer/liveness.py)."""
    slurm("scancel", job, check=False)
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        if slurm("squeue", "-h", "-j", job, "-o", "%T", check=False).strip() in ("", "COMPLETING"):
            return
        time.sleep(0.5)


def job_state(job: str, settle_s: float = 10) -> tuple[str, int | None]:
    """(state, exit code of the batch script) of a finished job. While the job is COMPLETING,
    Slurm shows that flag instead of how it ended (OUT_OF_MEMORY, TIMEOUT, CANCELLED ...): read
    again for up to settle_s (an epilog takes seconds; a node slurmctld cannot reach keeps the job
    COMPLETING for minutes, and is not waited for)."""
    t0 = time.monotonic()
    while True:
        text = slurm("scontrol", "show", "job", "-o", job, check=False)
        state = re.search(r"JobState=(\S+)", text)
        if not state or state.group(1) != "COMPLETING" or time.monotonic() - t0 > settle_s:
            break
        time.sleep(1)
    code = re.search(r"ExitCode=(\d+):(\d+)", text)
    if not state and shutil.which("sacct"):
        text = slurm("sacct", "-n", "-P", "-X", "-j", job, "-o", "State,ExitCode", check=False).strip()
        if "|" in text:
            st, ec = text.splitlines()[0].split("|")
            return st.split()[0], int(ec.split(":")[0])
    return (state.group(1) if state else "UNKNOWN"), (int(code.group(1)) if code else None)


def hostnames(nodelist: str) -> list[str]:
    """Slurm's compressed node list (hn[1-3],gpu7) as host names."""
    return slurm("scontrol", "show", "hostnames", nodelist, check=False).split() if nodelist else []


def down_nodes(nodelist: str) -> str:
    """Those of the nodes slurmctld marks down, failing, not responding or drained."""
    text = slurm("sinfo", "-h", "-N", "-n", nodelist, "-o", "%N|%T", check=False) if nodelist else ""
    bad = [n for n, _, st in (line.partition("|") for line in text.split())
           if re.search(r"down|fail|drain|\*|no_resp", st)]
    return ",".join(dict.fromkeys(bad))


def gres() -> str:
    """The GRES the cluster's nodes advertise (sinfo %G, one line per node configuration); no Slurm
    client here is the ConfigError `slurm` names."""
    return slurm("sinfo", "-h", "-o", "%G", check=False)


def gres_has_gpu() -> bool | None:
    """Whether any node of the cluster advertises a gpu GRES; None when no Slurm client answers here."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return None if out.returncode else "gpu" in out.stdout


def partition_memory_gib(partition: str = "") -> tuple[float | None, str]:
    """(the smallest RealMemory of the partition's nodes, in GiB, or None; where it came from or why
    not): what a compute node offers for offloaded states, never the login host's RAM. sinfo's %m is
    RealMemory in megabytes (MiB), one line per node configuration."""
    try:
        out = subprocess.run(["sinfo", "-h", *(["-p", partition] if partition else []), "-o", "%m"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None, "no Slurm client here (sinfo)"
    if out.returncode:
        return None, f"sinfo did not answer ({(out.stderr.strip().splitlines() or ['no message'])[-1]})"
    sizes = [int(m.group()) for m in re.finditer(r"\d+", out.stdout)]
    where = f"partition {partition}" if partition else "every partition"
    if not sizes or min(sizes) <= 1:  # RealMemory=1: the node's memory is not configured
        return None, f"sinfo names no RealMemory for {where}"
    return min(sizes) / 1024, f"sinfo RealMemory of {where}"
