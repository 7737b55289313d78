"""slurm: one sbatch job per run; srun starts one torchrun per node, meeting (c10d) at the
allocation's first host; stackbench submits the job, follows it, and cancels it at the deadline.

Each job runs the preflight first (join + all-reduce across every rank of the allocation it got:
later jobs may land on other nodes, so a per-sweep check would prove nothing about them); a host
that does not join fails the job in seconds and is named in the record. `--script-only` prints
the script for users who submit it themselves. With `--container-image`, srun runs each node's
command in that image (pyxis/enroot), e.g. one built by `invoke build`.

State comes from squeue while the job lives and `scontrol show job` after (sacct needs an
accounting database many small clusters do not run; it is the fallback).

Secrets (core.secrets) are never in the script: sbatch is run with `--export=ALL`, so Slurm carries
them from the submitting shell's environment to the job, and srun to every node. Every value in
the script is checked or quoted: `#SBATCH` values are double-quoted where sbatch's own parser
needs it, a control character (a newline would start a new line of the script) is refused, and
only the job's own variables ($SLURM_NNODES, $MASTER_ADDR ...) are left for the shell to expand.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stackbench.bench.launchers import outcomes
from stackbench.bench.launchers.backends import env_for
from stackbench.bench.launchers.contract import Launcher, export_lines
from stackbench.bench.launchers.options import LaunchOptions
from stackbench.core import files, record, secrets
from stackbench.core.config import RunConfig
from stackbench.core.errors import EXIT_PREFLIGHT, ConfigError

JOB_FILE = "job.sbatch"
# a Slurm name (partition, account; comma lists of them)
SLURM_NAME = re.compile(r"[\w.+-]+(,[\w.+-]+)*")
# a value sbatch's #SBATCH parser reads as one word without quotes
BARE = re.compile(r"[\w@%+=:,./-]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ShellVar(str):
    """An argument the batch shell expands (it names the job's variables: $SLURM_NNODES,
    $MASTER_ADDR ...): written in double quotes. Every other argument is single-quoted."""

    def __new__(cls, value: str) -> "ShellVar":
        assert re.fullmatch(r"[\w=:./,${}%-]+", value), value  # built here, never from user input
        return super().__new__(cls, value)


def filename(path: Path, where: str = "--results") -> str:
    """A path for sbatch / srun --output: Slurm expands %-patterns in it (%j, %n), so a literal %
    is written %%; a backslash would turn the patterns off (Slurm's rule), so it is refused."""
    if "\\" in str(path):
        raise ConfigError(f"{path}: Slurm reads a backslash in an output path as 'no patterns'", where=where,
                          fix="use a results directory without a backslash")
    return str(path).replace("%", "%%")


def config_dirs(cfg: RunConfig) -> tuple[Path, ...]:
    """Where a run's --deepspeed file lives: mounted into a --container-image too."""
    return (Path(cfg.deepspeed).parent,) if cfg.deepspeed and Path(cfg.deepspeed).is_absolute() else ()


def directive(arg: str, where: str = "--sbatch-arg") -> str:
    """One #SBATCH word: as is, or double-quoted with \\ and \" escaped (sbatch's own parser);
    a control character is refused (a newline would end the directive and start a script line)."""
    if CONTROL.search(arg):
        raise ConfigError(f"{arg!r} holds a newline or another control character", where=where,
                          fix="give the value on one line, without control characters")
    return arg if BARE.fullmatch(arg) else '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _submit(work_dir: Path, script: str) -> str:
    """Clear what an earlier job in this directory left (logs, heartbeat, preflight result), write
    the script beside them, submit it with the submitting environment (--export=ALL: how the
    secrets reach the job); the job id."""
    for stale in [*work_dir.glob("*.log"), work_dir / "heartbeat", work_dir / "preflight.json"]:
        stale.unlink(missing_ok=True)
    leaked = secrets.leaks(script)
    if leaked:  # a setting that holds a credential's value (NCCL_FOO=$HF_TOKEN): refused, never rewritten
        raise ConfigError(f"the job script would hold the value of {', '.join(leaked)}", where="--env / the environment",
                          fix="pass secrets only as themselves (export HF_TOKEN=...), not inside other settings")
    files.write_atomic(work_dir / JOB_FILE, script, redact=False)
    exported = os.environ.get("SBATCH_EXPORT")
    if exported and exported.upper() != "ALL":
        print(f"note: SBATCH_EXPORT={exported} overridden with --export=ALL: the ranks get their settings and "
              "secrets from this environment", file=sys.stderr)
    return _slurm("sbatch", "--parsable", "--export=ALL", str(work_dir / JOB_FILE)).strip().split(";")[0]


def _slurm(*argv: str, check: bool = True, timeout: float = 60) -> str:
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


class SlurmLauncher(Launcher):
    name = "slurm"

    def __init__(self, options: LaunchOptions | None = None, *, partition: str = "", account: str = "",
                 exclusive: bool = False, sbatch_args: tuple[str, ...] = (), gpus: str = "auto",
                 container_image: str = "", poll_s: float = 1.0, ask_cluster: bool = True):
        super().__init__(options)
        if gpus not in ("auto", "yes", "no"):
            raise ConfigError(f"--slurm-gpus {gpus!r}", where="--slurm-gpus", fix="use auto, yes or no")
        for flag, value in (("--partition", partition), ("--account", account)):
            if value and not SLURM_NAME.fullmatch(value):
                raise ConfigError(f"{value!r} is not a Slurm {flag[2:]} name", where=flag,
                                  fix="letters, digits, '_', '.', '+', '-' (a comma list for several)")
        for arg in sbatch_args:
            directive(arg)
            if not arg.startswith("-"):
                raise ConfigError(f"{arg!r} is not an sbatch option", where="--sbatch-arg",
                                  fix="give one option per flag, e.g. --sbatch-arg=--qos=high")
            if arg.split("=", 1)[0] in ("--export", "--export-file"):
                raise ConfigError(f"{arg!r}: stackbench submits with --export=ALL (how settings and secrets reach "
                                  "the ranks without being written into the script)", where="--sbatch-arg",
                                  fix="set variables with --env KEY=VALUE, or export them in this shell")
        directive(container_image, "--container-image")
        self.partition, self.account, self.exclusive = partition, account, exclusive
        self.sbatch_args, self.gpus, self.container_image, self.poll_s = tuple(sbatch_args), gpus, container_image, poll_s
        # --script-only / --dry-run ask sinfo where one answers, and work on a laptop with no Slurm client
        self.ask_cluster = ask_cluster
        self._cluster_has_gpus: bool | None = None
        self.dead: set[str] = set()  # nodes found dead in this sweep: --exclude for every later job

    def hosts(self, nodes: int) -> list[str]:
        return [f"(allocation node {i})" for i in range(nodes)]  # known only inside the job

    def exclude(self, hosts: set[str]) -> set[str]:
        found = {h for h in hosts if SLURM_NAME.fullmatch(h) and "," not in h}
        self.dead |= found
        return found

    def rendezvous(self, cfg: RunConfig, node: int, port: int) -> list[str]:
        # evaluated by the batch shell: the same line for every node, c10d assigns node ranks
        return [ShellVar("--nnodes=$SLURM_NNODES"), "--rdzv-backend=c10d",
                ShellVar("--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT"), ShellVar("--rdzv-id=$SLURM_JOB_ID"),
                f"--rdzv-conf=join_timeout={int(self.options.preflight_deadline_s)}"]

    def preflight(self, nodes: int, procs_per_node: int, sweep_dir: Path) -> dict | None:
        return None  # inside every job, on the nodes it was given

    _asked = False

    def request_gpus(self) -> bool:
        if self.gpus != "auto":
            return self.gpus == "yes"
        if self._cluster_has_gpus is None:  # does any node advertise a gpu GRES?
            found = _gres_has_gpu()
            if found is None and self.ask_cluster:  # a run needs the cluster: no client is the error it names
                found = "gpu" in _slurm("sinfo", "-h", "-o", "%G", check=False)
            # a script for elsewhere with no cluster to ask: assume GPU nodes (the script says so)
            self._asked, self._cluster_has_gpus = found is not None, True if found is None else found
        return self._cluster_has_gpus

    def env(self, extra: dict[str, str] | None = None, *, cuda: bool | None = None) -> dict[str, str]:
        # the ranks run on the allocation's nodes, not here: they have GPUs when the job asks for them
        return super().env(extra, cuda=self.request_gpus() if cuda is None else cuda)

    # --- the job script --------------------------------------------------------------------------

    def batch(self, *, name: str, nodes: int, procs_per_node: int, run_dir: Path, minutes: int,
              env: dict[str, str], steps: list[str], about: str) -> str:
        """An sbatch script: the allocation, the environment (no secrets: Slurm carries those), the
        rendezvous variables, then steps (srun lines from `srun()`) in order."""
        # --no-requeue: a job Slurm requeues after a node failure would only pend again under the same id
        sb = [f"--job-name=sb-{name}"[:120], f"--nodes={nodes}", "--ntasks-per-node=1", f"--time={minutes}", "--no-requeue",
              f"--output={filename(run_dir)}/slurm-%j.out", f"--chdir={Path.cwd()}"]
        gpus = self.request_gpus()
        if gpus:
            sb.append(f"--gpus-per-node={procs_per_node}")
        sb += [f"--partition={self.partition}"] * bool(self.partition) + [f"--account={self.account}"] * bool(self.account)
        sb += ["--exclusive"] * self.exclusive + list(self.sbatch_args)
        if self.dead:  # slurmctld believes a cut node idle until its own node timeout, and would place us there
            sb.append(f"--exclude={','.join(sorted(self.dead))}")
        why_gpus = ("--slurm-gpus yes" if self.gpus == "yes" else "--slurm-gpus no" if self.gpus == "no" else
                    ("the cluster advertises gpu GRES" if gpus else "no node advertises a gpu GRES") if self._asked else
                    "--slurm-gpus auto, and no Slurm client answered here: --slurm-gpus no leaves the line out")
        return "\n".join(["#!/bin/bash", *(f"#SBATCH {directive(a)}" for a in sb), f"# stackbench {name}: {about}",
                          f"# GPUs: {f'--gpus-per-node={procs_per_node}' if gpus else 'none requested'} ({why_gpus})",
                          "# secrets (HF_TOKEN ...) are not written here: submit with sbatch --export=ALL from a "
                          "shell that has them",
                          "set -euo pipefail",
                          *export_lines(env),
                          "export STACKBENCH_LAUNCHED_AT=$(date +%s.%N)",
                          'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | paste -sd, -)',
                          "MASTER_ADDR=${HOSTS%%,*}",
                          "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))  # per job: jobs sharing a node do not collide",
                          "PREFLIGHT_PORT=$((MASTER_PORT + 1))",
                          f"mkdir -p {shlex.quote(str(run_dir))}", *steps, ""])

    def srun(self, nodes: int, log: str, argv: list[str], mounts: tuple[Path, ...] = (), all_or_none: bool = True) -> str:
        """One srun step, one task per node, each node's output in its own log (%n: node index);
        all_or_none: one node failing stops the others (training), else each finishes (checks)."""
        cmd = ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", f"--kill-on-bad-exit={int(all_or_none)}",
               f"--output={log}"]
        if self.container_image:
            for p in (Path.cwd(), *mounts):
                if set(str(p)) & {",", ":"}:  # pyxis splits its mount list on them
                    raise ConfigError(f"{p}: pyxis cannot mount a path with ',' or ':'", where="--container-image",
                                      fix="use a results directory and checkout without ',' or ':'")
            binds = ",".join(sorted({f"{p}:{p}" for p in (Path.cwd(), *mounts)}))
            cmd += [f"--container-image={self.container_image}", f"--container-mounts={binds}",
                    f"--container-workdir={Path.cwd()}"]
        return _shell(cmd + argv)

    def preflight_step(self, nodes: int, procs_per_node: int, run_dir: Path) -> str:
        argv = [sys.executable, "-m", "stackbench.bench.launchers.preflight", ShellVar("--nnodes=$SLURM_NNODES"), f"--nproc={procs_per_node}",
                ShellVar("--master=$MASTER_ADDR:$PREFLIGHT_PORT"), ShellVar("--hosts=$HOSTS"),
                f"--deadline={self.options.preflight_deadline_s:g}", f"--out={run_dir}/preflight.json"]
        return f"{self.srun(nodes, f'{filename(run_dir)}/preflight-node%n.log', argv, (run_dir,))} || exit {EXIT_PREFLIGHT}"

    def minutes(self, seconds: float) -> int:
        return math.ceil((seconds + 2 * self.options.preflight_deadline_s + 120) / 60)

    def script(self, cfg: RunConfig, sweep_dir: Path, *, command: str = "") -> str:
        sweep_dir = sweep_dir.resolve()
        run_dir = sweep_dir / cfg.run_id
        train = self.commands(cfg, sweep_dir, 0)[0] + (["--command", command] if command else [])
        return self.batch(name=cfg.run_id, nodes=cfg.nodes, procs_per_node=cfg.gpus_per_node, run_dir=run_dir,
                          minutes=self.minutes(self.options.deadline_s),
                          env=self.env({"STACKBENCH_HEARTBEAT": str(run_dir / "heartbeat"), **env_for(cfg.backend)}),
                          about="preflight, then one torchrun per node (c10d at the first host)",
                          steps=[self.preflight_step(cfg.nodes, cfg.gpus_per_node, run_dir),
                                 self.srun(cfg.nodes, f"{filename(run_dir)}/node%n.log", train,
                                           (sweep_dir, *config_dirs(cfg)))])

    def run_on_nodes(self, argv: list[str], nodes: int, procs_per_node: int, work_dir: Path,
                     deadline_s: float) -> tuple[list[Path], dict | None]:
        """argv once on every node of one allocation ({node} is left to the command: $SLURM_NODEID),
        then the preflight on the same nodes; per-node logs and the preflight result."""
        work_dir = work_dir.resolve()
        job = _submit(work_dir, self.batch(
            name=work_dir.name, nodes=nodes, procs_per_node=procs_per_node, run_dir=work_dir,
            minutes=self.minutes(deadline_s), env=self.env(), about="a command on every node, then the preflight",
            steps=[self.srun(nodes, f"{filename(work_dir)}/node%n.log", argv, (work_dir,), all_or_none=False) + " || true",
                   self.preflight_step(nodes, procs_per_node, work_dir)]))
        stopped = self._follow(job, work_dir / "no-heartbeat", limit=deadline_s)
        logs = sorted(work_dir.glob("node*.log"))
        return logs, outcomes.read_preflight(work_dir / "preflight.json", sorted(work_dir.glob("preflight-node*.log")),
                                             stopped.message if stopped else None)

    # --- running ---------------------------------------------------------------------------------

    def launch(self, cfg: RunConfig, sweep_dir: Path) -> dict:
        started = record.now()
        out = record.path(sweep_dir, cfg.run_id)
        out.unlink(missing_ok=True)
        run_dir = sweep_dir / cfg.run_id
        shutil.rmtree(run_dir / "ranks", ignore_errors=True)  # an earlier attempt's error files are not this one's
        command = shlex.join(["sbatch", "--export=ALL", str(run_dir / JOB_FILE)])
        launch = self.bookkeeping(cfg, sweep_dir, command)
        job = _submit(run_dir, self.script(cfg, sweep_dir, command=command))
        try:
            stopped = self._follow(job, run_dir / "heartbeat", preflight=run_dir / "preflight.json", run_dir=run_dir)
        except BaseException:  # Ctrl-C: cancel this job only, record it, pass it on
            _slurm("scancel", job, check=False)
            record.write(out, outcomes.interrupted(cfg, launch, started))
            raise
        if out.exists():
            rec = record.read(out)
            rec["slurm_job_id"] = job
            record.write(out, rec)
            return rec
        state, code = job_state(job, settle_s=0)  # the exit code is known while the job completes
        pf = run_dir / "preflight.json"
        pf_logs = sorted(run_dir.glob("preflight-node*.log"))
        if (stopped and stopped.kind == "preflight") or (code == EXIT_PREFLIGHT and not stopped):
            result = outcomes.read_preflight(pf, pf_logs, stopped.message if stopped else None)
            unreachable = srun_unreachable(run_dir, job)
            if not pf.exists() and (unreachable or (stopped and stopped.host)):
                result["missing_hosts"] = list(unreachable) or stopped.host.split(",")
                if unreachable:
                    result["message"] = (f"srun could not start the preflight on "
                                         f"{', '.join(f'{h} ({why})' for h, why in unreachable.items())}: "
                                         f"down or unreachable from this allocation; {result['message']}")
            return outcomes.preflight_failed(cfg, launch, result, started, slurm_job_id=job)
        if stopped and stopped.kind in ("node_lost", "queue_timeout"):
            rec = record.new(stopped.status, cfg, launch, started_at=started, slurm_job_id=job,
                             error=record.error(stopped.kind, f"Slurm job {job}: {stopped.message}", host=stopped.host,
                                                log=str(run_dir)))
            record.write(out, rec)
            return rec
        if state == "COMPLETING":  # how it ended (OUT_OF_MEMORY, TIMEOUT ...) shows once it has completed
            state, code = job_state(job)
        logs = sorted(run_dir.glob("node*.log")) + sorted(run_dir.glob("slurm-*.out"))
        joined = record.read(pf).get("joined_hosts") if pf.exists() else None  # node i's host, from the preflight
        killed_because = stopped.message if stopped and stopped.kind == "timeout" else None
        status, error = outcomes.classify(
            logs, killed_because or (f"Slurm ended the job: {state}" if state == "TIMEOUT" else None), {"job": code},
            joined, outcomes.rank_errors(run_dir))
        if state == "OUT_OF_MEMORY":
            status, error["kind"] = "oom", "oom"
        if stopped and stopped.kind == "crash":
            error["message"] += f" (cancelled {self.options.grace_s:.0f} s later: the other nodes had not ended)"
        error["message"] = f"Slurm job {job} {state}: {error['message']}"
        rec = record.new(status, cfg, launch, started_at=started, error=error, slurm_job_id=job)
        record.write(out, rec)
        return rec

    def _follow(self, job: str, heartbeat: Path, limit: float | None = None, preflight: Path | None = None,
                run_dir: Path | None = None) -> "Stopped | None":
        """Wait for the job to end; why stackbench cancelled it, or None when it ended by itself.

        Every wait is bounded: the queue (--queue-timeout, before the first start and after a
        requeue), the run (its deadline, from the first start), the preflight's verdict (a node
        that never starts its step leaves srun waiting for slurmctld's node timeout, 5 minutes by
        default), and a failed rank's peers (srun cannot stop a step on a node it cannot reach)."""
        opts = self.options
        limit = (limit or opts.deadline_s) + opts.preflight_deadline_s * 2
        verdict_by = 2 * opts.preflight_deadline_s + 30  # its join and all-reduce deadlines, and start-up
        t0 = time.monotonic()
        running_since = failed_at = None
        restarts = _restarts(job)  # at submission: a later count above it is a requeue of this follow's job
        nodes = ""  # the allocation, as first listed (a COMPLETING job lists only the nodes it waits for)
        while True:
            now = time.monotonic()
            state, reason, listed = (_slurm("squeue", "-h", "-j", job, "-o", "%T|%r|%N", check=False).strip()
                                     + "||").split("|")[:3]
            nodes = nodes or (listed if listed != "(null)" else "")
            # a requeue passes through COMPLETING too (the job is stopped, then pends again): its restart count says which
            requeued = state == "COMPLETING" and _restarts(job) > restarts
            if not state or (state == "COMPLETING" and not requeued):
                return None  # the batch script has ended; Slurm may still wait on a node it cannot reach
            if state in NODE_FAILURE or requeued or (running_since is not None and state == "PENDING"):
                # only nodes Slurm itself marks bad are named (and left out of the sweep): a requeue
                # by hand or by a site's policy says nothing against the nodes the job had
                lost = _down_nodes(nodes)
                _cancel(job)
                return Stopped("failed", "node_lost", f"Slurm {'requeued the job' if state != 'NODE_FAIL' else 'ended the job'} "
                               f"({state}, reason {reason or 'none given'}) after it had started on {nodes}; "
                               f"down or failing: {lost or 'none of them, per sinfo'}", lost or None)
            if state == "PENDING":
                if now - t0 > opts.queue_timeout_s:
                    _cancel(job)
                    return Stopped("timeout", "queue_timeout", f"still pending after {opts.queue_timeout_s:.0f} s "
                                   f"(--queue-timeout), Slurm's reason: {reason or 'none given'}")
                time.sleep(self.poll_s)
                continue
            running_since = running_since or now
            # node 0 has named a node that did not join: srun would wait for that node's step
            # until slurmctld declares it down (its node timeout: 5 minutes by default)
            if preflight is not None and preflight.exists() and not _preflight_ok(preflight):
                _cancel(job)
                return Stopped("failed", "preflight", PREFLIGHT_FAILED)
            if preflight is not None and not preflight.exists() and now - running_since > verdict_by:
                silent = _silent_nodes(nodes, preflight.parent)
                _cancel(job)
                return Stopped("failed", "preflight", f"no preflight result {verdict_by:.0f} s after the job started on "
                               f"{nodes}: the step never started on {', '.join(silent) or 'some node'} "
                               f"(down, or unreachable from slurmctld)", ",".join(silent) or None)
            if now - running_since > limit:
                _cancel(job)
                return Stopped("timeout", "timeout", f"deadline of {limit:.0f} s passed")
            if heartbeat.exists() and time.time() - heartbeat.stat().st_mtime > opts.heartbeat_s:
                _cancel(job)
                return Stopped("timeout", "timeout", f"no step finished for {opts.heartbeat_s:.0f} s (heartbeat {heartbeat})")
            if run_dir is not None and failed_at is None and next(run_dir.glob("ranks/**/error.json"), None):
                failed_at = now
            if failed_at is not None and now - failed_at > opts.grace_s:
                _cancel(job)  # a rank raised and its peers did not end: one of them cannot be reached
                return Stopped("failed", "crash", RANK_FAILED)
            time.sleep(self.poll_s)


@dataclass(frozen=True)
class Stopped:
    """Why stackbench cancelled a job: the record's status and error kind, a message, the host(s)."""

    status: str
    kind: str
    message: str
    host: str | None = None


PREFLIGHT_FAILED = "the preflight failed"
RANK_FAILED = "a rank failed and the job did not end"
# states in which Slurm has given up on the job's nodes (a requeue shows as one of these, or PENDING again)
NODE_FAILURE = {"NODE_FAIL", "BOOT_FAIL", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}


# srun's own line when it cannot start a step's task on a node (slurmd unreachable, node gone)
_LAUNCH_FAILED = re.compile(r"Task launch for StepId=\S+ failed on node ([\w.-]+): (.+)")


def srun_unreachable(run_dir: Path, job: str) -> dict[str, str]:
    """{node: srun's reason} for the nodes srun could not start a task on, from this job's output
    (an earlier attempt's slurm-<job>.out may lie beside it: not this job's nodes)."""
    out = run_dir / f"slurm-{job}.out"
    text = out.read_text(errors="replace") if out.exists() else ""
    return {node: why.strip() for node, why in reversed(_LAUNCH_FAILED.findall(text))}


def _preflight_ok(path: Path) -> bool:
    try:
        return bool(record.read(path).get("ok"))
    except (OSError, ValueError):  # being written (atomically: not half a file) or gone
        return True


def _gres_has_gpu() -> bool | None:
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


def hostnames(nodelist: str) -> list[str]:
    """Slurm's compressed node list (hn[1-3],gpu7) as host names."""
    return _slurm("scontrol", "show", "hostnames", nodelist, check=False).split() if nodelist else []


def _down_nodes(nodelist: str) -> str:
    """Those of the nodes slurmctld marks down, failing, not responding or drained."""
    text = _slurm("sinfo", "-h", "-N", "-n", nodelist, "-o", "%N|%T", check=False) if nodelist else ""
    bad = [n for n, _, st in (line.partition("|") for line in text.split()) if re.search(r"down|fail|drain|\*|no_resp", st)]
    return ",".join(dict.fromkeys(bad))


def _silent_nodes(nodelist: str, run_dir: Path) -> list[str]:
    """Nodes of the allocation whose preflight step wrote nothing (its log is made when it starts)."""
    return [h for i, h in enumerate(hostnames(nodelist))
            if not (run_dir / f"preflight-node{i}.log").exists()]


def _cancel(job: str, wait_s: float = 60) -> None:
    """Cancel and wait until nothing of the job runs or pends. A job stays COMPLETING on a node
    slurmctld cannot reach until the node answers or its node timeout passes: not waited for (that
    node's ranks end themselves, trainer/liveness.py)."""
    _slurm("scancel", job, check=False)
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        if _slurm("squeue", "-h", "-j", job, "-o", "%T", check=False).strip() in ("", "COMPLETING"):
            return
        time.sleep(0.5)


def _restarts(job: str) -> int:
    """How many times Slurm has requeued the job."""
    found = re.search(r"Restarts=(\d+)", _slurm("scontrol", "show", "job", "-o", job, check=False))
    return int(found.group(1)) if found else 0


def job_state(job: str, settle_s: float = 10) -> tuple[str, int | None]:
    """(state, exit code of the batch script) of a finished job. While the job is COMPLETING,
    Slurm shows that flag instead of how it ended (OUT_OF_MEMORY, TIMEOUT, CANCELLED ...): read
    again for up to settle_s (an epilog takes seconds; a node slurmctld cannot reach keeps the job
    COMPLETING for minutes, and is not waited for)."""
    t0 = time.monotonic()
    while True:
        text = _slurm("scontrol", "show", "job", "-o", job, check=False)
        state = re.search(r"JobState=(\S+)", text)
        if not state or state.group(1) != "COMPLETING" or time.monotonic() - t0 > settle_s:
            break
        time.sleep(1)
    code = re.search(r"ExitCode=(\d+):(\d+)", text)
    if not state and shutil.which("sacct"):
        text = _slurm("sacct", "-n", "-P", "-X", "-j", job, "-o", "State,ExitCode", check=False).strip()
        if "|" in text:
            st, ec = text.splitlines()[0].split("|")
            return st.split()[0], int(ec.split(":")[0])
    return (state.group(1) if state else "UNKNOWN"), (int(code.group(1)) if code else None)


def _shell(argv: list[str]) -> str:
    """Quote for the batch shell: the job's own variables (ShellVar) expand, nothing else does."""
    return " ".join(f'"{a}"' if isinstance(a, ShellVar) else shlex.quote(a) for a in argv)
