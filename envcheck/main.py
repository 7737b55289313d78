"""`invoke envcheck`: the local checks, or with --nodes N every node through a launcher."""

from __future__ import annotations

from pathlib import Path

from stackbench.bench.launchers import LaunchOptions


def envcheck(*, as_json: bool = False, strict: bool = False, lock: str = "", nodes: int = 0, gpus_per_node: int = 1,
             launcher: str = "local", work_dir: str = "results/envcheck", deadline: float = 120.0,
             preflight_deadline: float = LaunchOptions.preflight_deadline_s, out: str = "", **launcher_args) -> int:
    from stackbench.envcheck import runner

    if nodes:
        from stackbench.bench import launchers
        from stackbench.envcheck import nodes as nodes_mod

        runner_ = launchers.make(launcher, LaunchOptions(preflight_deadline_s=preflight_deadline),
                                 **launcher_args)
        report = nodes_mod.across(runner_, nodes, gpus_per_node, Path(work_dir) / f"{launcher}-n{nodes}", deadline)
    else:
        report = runner.run(lock=lock or None)
    return runner.emit(report, strict=strict, as_json=as_json, out=out)
