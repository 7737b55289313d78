"""slurm: one sbatch job per run; srun starts one torchrun per node, meeting (c10d) at the
allocation's first host; stackbench submits the job, follows it, and cancels it at the deadline.

Each job runs the preflight first (join + all-reduce across every rank of the allocation it got:
later jobs may land on other nodes, so a per-sweep check would prove nothing about them); a host
that does not join fails the job in seconds and is named in the record. `--script-only` prints
the script for users who submit it themselves. With `--container-image`, srun runs each node's
command in that image (pyxis/enroot), e.g. one built by `invoke build`.

The launcher glues the package's parts: its settings (settings.py), the job script (script.py,
pure), the Slurm commands (scheduler.py), following a job (follow.py: a pure decide() and the loop
around it); the skeleton of a launch (clear, start, wait, Ctrl-C, the trainer's own record) is
contract.Launcher's, and this file says what a job's end means for its record.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from pathlib import Path

from stackbench.bench.launchers import outcomes
from stackbench.bench.launchers.backends import env_for
from stackbench.bench.launchers.contract import Attempt, Launcher
from stackbench.bench.launchers.options import LaunchOptions
from stackbench.bench.launchers.slurm import scheduler
from stackbench.bench.launchers.slurm.follow import Stopped, follow, killed_because, slurm_error
from stackbench.bench.launchers.slurm.script import Gpus, Paths, ShellVar, nodes_script, train_script
from stackbench.bench.launchers.slurm.settings import SLURM_NAME, SlurmSettings
from stackbench.core import record
from stackbench.core.config import Launch, RunConfig
from stackbench.core.errors import EXIT_PREFLIGHT


class SlurmLauncher(Launcher):
    name = "slurm"

    def __init__(self, options: LaunchOptions | None = None, settings: SlurmSettings | None = None, **fields):
        """settings, or its fields by name (partition=..., gpus=...)."""
        super().__init__(options)
        self.settings = settings if settings is not None else SlurmSettings(**fields)
        self._asked = False  # whether a Slurm client said if the cluster has GPUs
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

    def request_gpus(self) -> bool:
        if self.settings.gpus != "auto":
            return self.settings.gpus == "yes"
        if self._cluster_has_gpus is None:  # does any node advertise a gpu GRES?
            found = scheduler.gres_has_gpu()
            if found is None and self.settings.ask_cluster:  # a run needs the cluster: no client is the error it names
                found = "gpu" in scheduler.gres()
            # a script for elsewhere with no cluster to ask: assume GPU nodes (the script says so)
            self._asked, self._cluster_has_gpus = found is not None, True if found is None else found
        return self._cluster_has_gpus

    def env(self, extra: dict[str, str] | None = None, *, cuda: bool | None = None) -> dict[str, str]:
        # the ranks run on the allocation's nodes, not here: they have GPUs when the job asks for them
        return super().env(extra, cuda=self.request_gpus() if cuda is None else cuda)

    # --- the job script --------------------------------------------------------------------------

    def gpu_request(self) -> Gpus:
        return Gpus(self.request_gpus(), self._asked)

    def script(self, cfg: RunConfig, sweep_dir: Path, *, command: str = "") -> str:
        sweep_dir = sweep_dir.resolve()
        run_dir = sweep_dir / cfg.run_id
        train = self.commands(cfg, sweep_dir, 0)[0] + (["--command", command] if command else [])
        env = self.env({"STACKBENCH_HEARTBEAT": str(run_dir / "heartbeat"), **env_for(cfg.backend)})
        return train_script(cfg, self.options, self.settings, Paths(run_dir, Path.cwd(), sys.executable),
                            train=train, env=env, gpus=self.gpu_request(), exclude=self.dead)

    def run_on_nodes(self, argv: list[str], nodes: int, procs_per_node: int, work_dir: Path,
                     deadline_s: float) -> tuple[list[Path], dict | None]:
        """argv once on every node of one allocation ({node} is left to the command: $SLURM_NODEID),
        then the preflight on the same nodes; per-node logs and the preflight result."""
        work_dir = work_dir.resolve()
        job = scheduler.submit(work_dir, nodes_script(
            argv, nodes, procs_per_node, deadline_s, self.options, self.settings,
            Paths(work_dir, Path.cwd(), sys.executable), env=self.env(), gpus=self.gpu_request(), exclude=self.dead))
        options = dataclasses.replace(self.options, deadline_s=deadline_s or self.options.deadline_s)
        stopped = follow(job, options, self.settings.poll_s, work_dir / "no-heartbeat")
        logs = sorted(work_dir.glob("node*.log"))
        return logs, outcomes.read_preflight(work_dir / "preflight.json", sorted(work_dir.glob("preflight-node*.log")),
                                             stopped.message if stopped else None)

    # --- running: contract.Launcher.launch's skeleton, a job for the processes -------------------

    def begin(self, at: Attempt) -> tuple[Launch, str]:
        """Submit the run's job; its bookkeeping and the job id."""
        command = shlex.join(["sbatch", "--export=ALL", str(at.run_dir / scheduler.JOB_FILE)])
        launch = self.bookkeeping(at.cfg, at.sweep_dir, command)
        return launch, scheduler.submit(at.run_dir, self.script(at.cfg, at.sweep_dir, command=command))

    def wait(self, at: Attempt, job: str) -> Stopped | None:
        return follow(job, self.options, self.settings.poll_s, at.run_dir / "heartbeat",
                      preflight=at.run_dir / "preflight.json", run_dir=at.run_dir)

    def stop(self, job: str) -> None:
        scheduler.cancel(job, wait_s=0)  # Ctrl-C: cancel this job only, without waiting for it

    def recorded(self, at: Attempt, job: str) -> dict:
        rec = record.read(at.out)
        rec["slurm_job_id"] = job
        record.write(at.out, rec)
        return rec

    def outcome(self, at: Attempt, launch: Launch, job: str, stopped: Stopped | None) -> dict:
        """The record of a job the trainer did not record: its preflight failed, stackbench stopped
        it (a lost node, the queue), or how it ended (its logs, and Slurm's state and exit code)."""
        cfg, run_dir, started = at.cfg, at.run_dir, at.started
        state, code = scheduler.job_state(job, settle_s=0)  # the exit code is known while the job completes
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
            record.write(at.out, rec)
            return rec
        if state == "COMPLETING":  # how it ended (OUT_OF_MEMORY, TIMEOUT ...) shows once it has completed
            state, code = scheduler.job_state(job)
        logs = sorted(run_dir.glob("node*.log")) + sorted(run_dir.glob("slurm-*.out"))
        joined = record.read(pf).get("joined_hosts") if pf.exists() else None  # node i's host, from the preflight
        status, error = outcomes.classify(logs, killed_because(state, stopped), {"job": code}, joined,
                                          outcomes.rank_errors(run_dir))
        status, error = slurm_error(job, state, status, error, stopped, self.options)
        rec = record.new(status, cfg, launch, started_at=started, error=error, slurm_job_id=job)
        record.write(at.out, rec)
        return rec


# srun's own line when it cannot start a step's task on a node (slurmd unreachable, node gone)
_LAUNCH_FAILED = re.compile(r"Task launch for StepId=\S+ failed on node ([\w.-]+): (.+)")


def srun_unreachable(run_dir: Path, job: str) -> dict[str, str]:
    """{node: srun's reason} for the nodes srun could not start a task on, from this job's output
    (an earlier attempt's slurm-<job>.out may lie beside it: not this job's nodes)."""
    out = run_dir / f"slurm-{job}.out"
    text = out.read_text(errors="replace") if out.exists() else ""
    return {node: why.strip() for node, why in reversed(_LAUNCH_FAILED.findall(text))}
