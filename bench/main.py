"""`invoke bench`: expand the matrix, print the plan (or the scripts) or run it, end with the table."""

from __future__ import annotations

from pathlib import Path

from bench import backends, summary, sweep
from bench.fit import FitCheck
from bench.launchers import LAUNCHERS, LaunchOptions, Launcher
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


def env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"cannot read --env {item!r}", where="--env", fix="write KEY=VALUE, e.g. NCCL_DEBUG=INFO")
        out[key] = value
    return out


def make_launcher(name: str, options: LaunchOptions, *, hostfile: str = "", ssh_options: str = "",
                  partition: str = "", account: str = "", exclusive: bool = False, sbatch_args: tuple = (),
                  slurm_gpus: str = "auto", container_image: str = "") -> Launcher:
    if name not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {name!r}", where="--launcher", fix=f"use {', '.join(LAUNCHERS)}")
    if name == "torchrun":
        return LAUNCHERS[name](options, hostfile=hostfile, ssh_options=ssh_options)
    if name == "slurm":
        return LAUNCHERS[name](options, partition=partition, account=account, exclusive=exclusive,
                               sbatch_args=tuple(sbatch_args), gpus=slurm_gpus, container_image=container_image)
    return LAUNCHERS[name](options)


def bench(*, tasks: str, zero: str, offload: str, nodes: str, gpus_per_node: str, micro_batch: str, seq_len: str,
          model: str, steps: int, warmup: int, grad_accum: int, dtype: str, data: str, launcher: str, repeat_data: bool = False,
          results: str, sweep_name: str, deadline: float, dry_run: bool = False, script_only: bool = False,
          preflight: bool = True, preflight_deadline: float = 30.0, collective_timeout: int = 300,
          gpu_mem: float = 0.0, run_anyway: bool = False, env: tuple = (), backend: str = "native",
          **launcher_args) -> int:
    options = LaunchOptions(deadline_s=deadline, preflight=preflight, preflight_deadline_s=preflight_deadline,
                            collective_timeout_s=collective_timeout, env=env_pairs(list(env)))
    runner = make_launcher(launcher, options, **launcher_args)
    specs, invalid = expand(tasks=csv(tasks), zero_stages=csv(zero, int), offloads=csv(offload), nodes=csv(nodes, int),
                            procs_per_node=csv(gpus_per_node, int), micro_batches=csv(micro_batch, int),
                            seq_lens=csv(seq_len, int), models=csv(model), backends=csv(backend), steps=steps, warmup_steps=warmup,
                            grad_accum=grad_accum, dtype=dtype, data=data, repeat_data=repeat_data, launcher=launcher)
    sweep_id = sweep_name or sweep.sweep_id_for(specs)
    sweep_dir = Path(results) / sweep_id
    fit = FitCheck(gpu_gib=gpu_mem or None, run_anyway=run_anyway)
    for spec, why in invalid:
        print(f"left out {spec.run_id}: {why}")
    if script_only:
        for spec in specs:
            print(runner.script(spec, sweep_dir))
        return 0
    if dry_run:
        print(f"sweep {sweep_id}: {len(specs)} runs -> {sweep_dir}")
        for spec in specs:
            _, why = fit.why_not(spec)
            state = ("done (ok), will be skipped" if sweep.done(sweep_dir, spec)
                     else f"will be skipped: {why}" if why else "to run")
            print(f"\n# {spec.run_id}: {state}\n{join_commands(runner.commands(spec, sweep_dir, 29500))}")
        return 0
    if not specs:
        raise ConfigError("the matrix is empty", fix="check --tasks, --zero and --offload")
    backends.check(sorted({s.backend for s in specs}))
    records = sweep.run_sweep(specs, runner, sweep_dir, fit=fit)
    ok = sum(r["status"] == "ok" for r in records)
    skipped = sum(r["status"] == "skipped" for r in records)
    summary.print_table(records, title=f"{sweep_id}: {ok}/{len(records)} ok" + (f", {skipped} skipped (cannot fit)"
                                       if skipped else "") + f" -> {sweep_dir}")
    return 0 if all(r["status"] in ("ok", "skipped") for r in records) else 1
