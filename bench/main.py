"""`invoke bench`: the flags -> the matrix of run configs -> the plan (or the scripts) or the
sweep, ending with the table. The flags are the run config's knobs (core.config.RunConfig, every
non-boolean one a comma list) and the sweep's options (bench.options.BenchOptions)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import backends, claims, datacheck, dscheck, modelcheck, summary, sweep
from bench.autotune import Autotuner
from bench.fit import FitCheck
from bench.launchers import LAUNCHERS, LaunchOptions, Launcher
from bench.launchers.contract import ENV_NAME, join_commands
from bench.matrix import expand, sweep_id_for
from bench.options import BenchOptions
from core import files, secrets
from core.config import (CPU_BF16_WARNING, bench_default, bench_flag, check_value, cli_flag, dtype_on, knob_fields,
                         parse_axis, parse_axis_flag, parse_overrides, resolve_dtype)
from core.host import has_nvidia_driver
from trainer import ds_source
from core.errors import EXIT_FAILED, EXIT_OK, ConfigError


def env_pairs(items: tuple[str, ...]) -> dict[str, str]:
    """--env KEY=VALUE items; a secret is refused (on a command line, `ps` and the shell's history
    show it): exported in the shell, it reaches the ranks without being written down."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not ENV_NAME.fullmatch(key):
            raise ConfigError(f"cannot read --env {item.split('=')[0]!r}=...", where="--env",
                              fix="write KEY=VALUE with KEY a variable name, e.g. NCCL_DEBUG=INFO")
        if secrets.is_secret(key, value):
            raise ConfigError(f"{key} looks like a secret and would be visible in `ps` and your shell's history",
                              where="--env", fix=f"export {key} in this shell instead: stackbench passes secrets to "
                                                 "every rank without writing them into scripts, commands or records")
        out[key] = value
    return out


def launch_options(opts: BenchOptions) -> LaunchOptions:
    return LaunchOptions(deadline_s=opts.deadline, preflight=opts.preflight, preflight_deadline_s=opts.preflight_deadline,
                         collective_timeout_s=opts.collective_timeout,
                         queue_timeout_s=opts.queue_timeout, env=env_pairs(tuple(opts.env)))


def make_launcher(opts: BenchOptions) -> Launcher:
    if opts.launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {opts.launcher!r}", where="--launcher", fix=f"use {', '.join(LAUNCHERS)}")
    settings: dict[str, Any] = {
        "torchrun": dict(hostfile=opts.hostfile, ssh_options=opts.ssh_options),
        "slurm": dict(partition=opts.partition, account=opts.account, exclusive=opts.exclusive,
                      sbatch_args=tuple(opts.sbatch_arg), gpus=opts.slurm_gpus, container_image=opts.container_image),
    }.get(opts.launcher, {})
    if opts.launcher == "slurm":  # --script-only / --dry-run need no Slurm client
        settings["ask_cluster"] = not (opts.script_only or opts.dry_run)
    return LAUNCHERS[opts.launcher](launch_options(opts), **settings)


AUTO_MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)


def split_flags(flags: dict[str, Any]) -> tuple[dict[str, list], set[str], BenchOptions]:
    """`invoke bench`'s keyword arguments -> (knob name -> values, the knobs given explicitly, the
    sweep's options). A knob flag not given sweeps its default (or wider list: --zero 0,1,2,3)."""
    axes: dict[str, list] = {}
    given: set[str] = set()
    if str(flags.get("micro_batch", "")).strip() == "auto":  # the autotuner's candidates, stopped by memory
        flags["micro_batch"], flags["autotune"] = ",".join(map(str, AUTO_MICRO_BATCHES)), True
    for f in knob_fields():
        value = flags.pop(bench_flag(f), None)
        if f.metadata["repeatable"] == "overrides":
            value = parse_overrides(value) if value else None
        elif f.metadata["repeatable"] == "list":  # one value: the names given, joined
            value = [",".join(dict.fromkeys(n.strip() for item in value for n in item.split(",") if n.strip()))] \
                if value else None
        elif str(f.type) == "bool":
            value = [True] if value else None  # a boolean flag given is True; --axis sweeps both
        elif value is not None:
            value = parse_axis(f, value)
            for v in value:  # a wrong value names the flag it was typed in, before the matrix is built
                check_value(f, v, flag=cli_flag(bench_flag(f)))
        if value is not None:
            given.add(f.name)
        axes[f.name] = value if value is not None else bench_default(f)
    opts = BenchOptions.from_flags(flags)
    for text in opts.axis:
        f, values = parse_axis_flag(text)
        for v in values:
            check_value(f, v, flag=f"--axis {f.name}")
        if f.name in given:
            raise ConfigError(f"{f.name} is given twice (its flag and --axis)", where="--axis", fix="give it once")
        axes[f.name], _ = values, given.add(f.name)
    axes["deepspeed"] = [ds_source.canonical_ref(v) for v in axes["deepspeed"]]
    return axes, given, opts


def _say_what_configs_change(configs: list) -> None:
    """Before anything runs: what each user DeepSpeed config states, and what of it is not used as
    it is (once per config, world size and overrides: the global batch follows the world size)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:  # a login node without the training stack
        if any(c.deepspeed for c in configs):
            print("note: the training stack is not installed here: what each --deepspeed config sets is said by "
                  "the ranks (their logs and records)")
        return
    from trainer import ds_config, models

    seen = set()
    for cfg in configs:
        key = (cfg.deepspeed, cfg.ds, cfg.world_size, cfg.micro_batch, cfg.grad_accum)
        if not cfg.deepspeed or key in seen:
            continue
        seen.add(key)
        dtype = dtype_on(cfg.dtype, "cuda" if has_nvidia_driver() else "cpu")
        shape = models.shape(models.resolve(cfg.model))
        _, provenance = ds_config.deepspeed_config(cfg, dtype, "cuda" if has_nvidia_driver() else "cpu",
                                                   SimpleNamespace(hidden_size=shape.hidden))
        stated = ds_source.stated_knobs(ds_source.source_config(cfg)[1])
        print(f"--deepspeed {cfg.deepspeed} ({cfg.world_size} ranks): sets "
              + (", ".join(f"{k}={v}" for k, v in stated.items()) or "no knob"))
        for line in ds_config.describe(provenance):
            print(f"  note: {line}")


def bench(**flags: Any) -> int:
    axes, given, opts = split_flags(dict(flags))
    runner = make_launcher(opts)
    configs, invalid = expand(axes, given=given)
    _say_what_configs_change(configs)
    if any(c.dtype == "bf16" for c in configs) and opts.launcher == "local" and not has_nvidia_driver():
        print(f"warning: {CPU_BF16_WARNING}")
    if any(c.dtype == "fp16" for c in configs) and opts.launcher == "local" and not has_nvidia_driver():
        resolve_dtype("fp16", "cpu")  # the local ranks are this host's CPUs: refused here, before anything runs
    sweep_id = opts.sweep or sweep_id_for(configs, runner.name)
    sweep_dir = Path(opts.results) / sweep_id
    fit = FitCheck(gpu_gib=opts.gpu_mem or None, run_anyway=opts.run_anyway)
    for combination, why in invalid:
        print(f"left out {combination}: {why}")
    kept = datacheck.check(configs, max_drop=opts.max_drop)  # a bad file stops here: nothing launched or queued
    dscheck.check(configs)  # the effective DeepSpeed configs against the installed DeepSpeed
    modelcheck.check(configs, given)  # attention and ZeRO-3 leaves: a --z3-leaf or --attn-impl the model refuses stops here
    if opts.script_only:
        for cfg in configs:
            print(runner.script(cfg, sweep_dir))
        return EXIT_OK
    if opts.dry_run:
        print(f"sweep {sweep_id}: {len(configs)} runs -> {sweep_dir}")
        for cfg in configs:
            _, why = fit.why_not(cfg)
            state = ("done (ok), will be skipped" if sweep.done(sweep_dir, cfg)
                     else f"will be skipped: {why}" if why else "to run")
            if cfg.run_id in kept:
                state += f"; rows kept/read: {summary.data_cell(kept[cfg.run_id])}"
            print(f"\n# {cfg.run_id}: {state}\n{join_commands(runner.commands(cfg, sweep_dir, 29500))}")
        return EXIT_OK
    if not configs:
        raise ConfigError("the matrix is empty", fix="check --tasks, --zero and --offload")
    backends.check(sorted({c.backend for c in configs}), tuple(sorted({c.task for c in configs if c.backend == "hf"})))
    files.check_writable(sweep_dir)
    tuner = Autotuner(configs, fit=fit) if opts.autotune else None
    with claims.SweepLock(sweep_dir):
        records = sweep.run_sweep(configs, runner, sweep_dir, fit=fit, tuner=tuner)
    ok = sum(r["status"] == "ok" for r in records)
    skipped = sum(r["status"] == "skipped" for r in records)
    summary.print_table(records, title=f"{sweep_id}: {ok}/{len(records)} ok" + (f", {skipped} skipped"
                                       if skipped else "") + f" -> {sweep_dir}")
    if tuner is not None:
        summary.print_autotune(records, len(configs))
    if len(records) < len(configs):
        print(f"{len(configs) - len(records)} run(s) left to the other process running them (see above)")
    return EXIT_OK if len(records) == len(configs) and all(r["status"] in ("ok", "skipped") for r in records) \
        else EXIT_FAILED
