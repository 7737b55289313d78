"""`invoke bench`: expand the matrix, print the plan or run it, end with the table."""

from __future__ import annotations

from pathlib import Path

from bench import summary, sweep
from bench.launchers import LAUNCHERS, LaunchOptions
from bench.launchers.base import join_commands
from bench.spec import expand
from trainer.errors import ConfigError


def csv(value: str, kind=str) -> list:
    """'0,1,2' -> [0, 1, 2]; errors name the flag value."""
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    try:
        return [kind(v) for v in items]
    except ValueError:
        raise ConfigError(f"cannot read {value!r} as a comma list of {kind.__name__}", fix="e.g. 0,1,2,3") from None


def bench(*, tasks: str, zero: str, offload: str, nodes: str, gpus_per_node: str, micro_batch: str, seq_len: str,
          model: str, steps: int, warmup: int, grad_accum: int, dtype: str, data: str, launcher: str,
          results: str, sweep_name: str, deadline: float, dry_run: bool) -> int:
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}", where="--launcher", fix=f"use {', '.join(LAUNCHERS)}")
    specs, invalid = expand(tasks=csv(tasks), zero_stages=csv(zero, int), offloads=csv(offload), nodes=csv(nodes, int),
                            procs_per_node=csv(gpus_per_node, int), micro_batches=csv(micro_batch, int),
                            seq_lens=csv(seq_len, int), models=csv(model), steps=steps, warmup_steps=warmup,
                            grad_accum=grad_accum, dtype=dtype, data=data, launcher=launcher)
    sweep_id = sweep_name or sweep.sweep_id_for(specs)
    sweep_dir = Path(results) / sweep_id
    runner = LAUNCHERS[launcher](LaunchOptions(deadline_s=deadline))
    for spec, why in invalid:
        print(f"left out {spec.run_id}: {why}")
    if dry_run:
        print(f"sweep {sweep_id}: {len(specs)} runs -> {sweep_dir}")
        for spec in specs:
            state = "done (ok), will be skipped" if sweep.done(sweep_dir, spec) else "to run"
            print(f"\n# {spec.run_id}: {state}\n{join_commands(runner.commands(spec, sweep_dir, 29500))}")
        return 0
    if not specs:
        raise ConfigError("the matrix is empty", fix="check --tasks, --zero and --offload")
    records = sweep.run_sweep(specs, runner, sweep_dir)
    summary.print_table(records, title=f"{sweep_id}: {sum(r['status'] == 'ok' for r in records)}/{len(records)} ok "
                                       f"-> {sweep_dir}")
    return 0 if all(r["status"] == "ok" for r in records) else 1
