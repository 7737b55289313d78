"""`invoke envcheck`: the local checks, or with --nodes N every node through a launcher."""

from __future__ import annotations

import json
from pathlib import Path


def envcheck(*, as_json: bool = False, strict: bool = False, lock: str = "", nodes: int = 0, gpus_per_node: int = 1,
             launcher: str = "local", work_dir: str = "results/envcheck", deadline: float = 120.0,
             preflight_deadline: float = 30.0, out: str = "", **launcher_args) -> int:
    from envcheck import runner

    if nodes:
        from bench.launchers import LaunchOptions
        from bench.main import make_launcher
        from envcheck import nodes as nodes_mod

        runner_ = make_launcher(launcher, LaunchOptions(preflight_deadline_s=preflight_deadline), **launcher_args)
        report = nodes_mod.across(runner_, nodes, gpus_per_node, Path(work_dir) / f"{launcher}-n{nodes}", deadline)
    else:
        report = runner.run(lock=lock or None)
    report["exit_code"] = runner.exit_code(report, strict)
    if out:
        from trainer import record

        record.write(out, report)
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        runner.print_table(report)
    return report["exit_code"]
