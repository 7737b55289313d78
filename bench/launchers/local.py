"""local: N emulated nodes x P processes on this host, one torchrun per node over loopback.

Each "node" is its own torchrun (--nnodes N --node_rank R) rendezvousing at 127.0.0.1, so the
multi-node code paths (node ranks, LOCAL_WORLD_SIZE, cross-node collectives) run for real.
"""

from __future__ import annotations

from pathlib import Path

from bench.launchers import base
from bench.spec import RunSpec
from trainer import record


class LocalLauncher(base.Launcher):
    name = "local"

    def commands(self, spec: RunSpec, sweep_dir: Path, port: int) -> list[list[str]]:
        torchruns = [[base.python(), "-m", "torch.distributed.run", f"--nnodes={spec.nodes}", f"--node_rank={node}",
                      f"--nproc_per_node={spec.procs_per_node}", "--master_addr=127.0.0.1", f"--master_port={port}"]
                     for node in range(spec.nodes)]
        argv = base.trainer_argv(spec, sweep_dir, sweep_dir.name)
        return [t + argv for t in torchruns]

    def launch(self, spec: RunSpec, sweep_dir: Path) -> dict:
        started = record.now()
        out = sweep_dir / f"{spec.run_id}.json"
        out.unlink(missing_ok=True)  # a re-run replaces an earlier failure; the sweep never re-runs an ok
        run_dir = sweep_dir / spec.run_id
        heartbeat = run_dir / "heartbeat"
        heartbeat.unlink(missing_ok=True)
        cmds = self.commands(spec, sweep_dir, base.free_port())
        cmds = [c + ["--command", base.join_commands(cmds)] for c in cmds]  # the record says how to reproduce it
        env = base.base_env(dict(self.options.env, STACKBENCH_HEARTBEAT=str(heartbeat)))
        procs = base.start(cmds, env, run_dir)
        try:
            killed_because = base.supervise(procs, self.options, heartbeat)
        except BaseException:  # Ctrl-C: stop this run's processes only, record it, pass it on
            base.kill(procs)
            record.write(out, record.new(spec.run_id, sweep_dir.name, "interrupted", config=_config(spec),
                                         command=base.join_commands(cmds), started_at=started,
                                         error=record.error("interrupted", "stopped by the user (Ctrl-C)")))
            raise
        if out.exists():  # the trainer wrote its own record (ok, bad input, oom)
            return record.read(out)
        status, error = base.classify(procs, killed_because)
        rec = record.new(spec.run_id, sweep_dir.name, status, config=_config(spec),
                         command=base.join_commands(cmds), started_at=started, error=error)
        record.write(out, rec)
        return rec


def _config(spec: RunSpec) -> dict:
    import dataclasses

    return {"spec": dataclasses.asdict(spec), "task": spec.task, "zero_stage": spec.zero_stage,
            "nodes": spec.nodes, "gpus_per_node": spec.procs_per_node, "world_size": spec.world_size,
            "launcher": spec.launcher}
