"""`invoke bench`: the flags -> the matrix of run configs -> the plan (or the scripts) or the
sweep, ending with the table. The flags are the run config's knobs (core.config.RunConfig, every
non-boolean one a comma list) and the sweep's options (bench.options.BenchOptions)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from stackbench.bench import claims, datacheck, dscheck, launchers, modelcheck, summary, sweep
from stackbench.bench.launchers import Launcher, LaunchOptions, backends
from stackbench.bench.launchers.contract import ENV_NAME, join_commands
from stackbench.bench.matrix import expand, sweep_id_for
from stackbench.bench.options import BenchOptions
from stackbench.bench.planning.autotune import Autotuner
from stackbench.bench.planning.fit import FitCheck, node_memory
from stackbench.core import files, secrets
from stackbench.core.config import CPU_BF16_WARNING, check_value, dtype_on, knob_fields, resolve_dtype
from stackbench.core.console import note
from stackbench.core.errors import EXIT_FAILED, EXIT_OK, ConfigError
from stackbench.core.flags import bench_default, bench_flag, flag_values, parse_axis_flag
from stackbench.core.host import has_nvidia_driver
from stackbench.trainer import ds_source


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
    return LaunchOptions(deadline_s=opts.deadline, preflight=opts.preflight,
                         preflight_deadline_s=opts.preflight_deadline,
                         collective_timeout_s=opts.collective_timeout,
                         queue_timeout_s=opts.queue_timeout, env=env_pairs(tuple(opts.env)))


def make_launcher(opts: BenchOptions) -> Launcher:
    """The sweep's launcher, from its flags."""
    settings: dict[str, Any] = {
        "torchrun": dict(hostfile=opts.hostfile, ssh_options=opts.ssh_options),
        "slurm": dict(partition=opts.partition, account=opts.account, exclusive=opts.exclusive,
                      sbatch_args=tuple(opts.sbatch_arg), gpus=opts.slurm_gpus, container_image=opts.container_image),
    }.get(opts.launcher, {})
    if opts.launcher == "slurm" and not opts.slurm_job_per_run:
        steps = launchers.in_allocation(launch_options(opts))
        if steps is not None:
            return _inside(steps, opts)
    if opts.launcher == "slurm":  # --script-only / --dry-run need no Slurm client
        settings["ask_cluster"] = not (opts.script_only or opts.dry_run)
    return launchers.make(opts.launcher, launch_options(opts), **settings)


def _inside(steps: Launcher, opts: BenchOptions) -> Launcher:
    """Inside an allocation: what the submitting flags mean there is said, never dropped silently."""
    if opts.container_image:
        raise ConfigError("--container-image inside an allocation is not supported yet", where="--container-image",
                          fix="add --slurm-job-per-run (one sbatch job per run), or run outside the allocation")
    given = [f for f, v in (("--partition", opts.partition), ("--account", opts.account),
                            ("--exclusive", opts.exclusive), ("--sbatch-arg", opts.sbatch_arg),
                            ("--slurm-gpus", opts.slurm_gpus != "auto")) if v]
    note(f"slurm: inside {steps.allocation.describe()}: every run is a job step of it, no job is submitted "
         "(--slurm-job-per-run submits one job per run instead)")
    if given:
        note(f"slurm: {', '.join(given)} not used: they shape the job stackbench would submit, and the allocation is "
             "already made")
    return steps


AUTO_MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)


def split_flags(flags: dict[str, Any]) -> tuple[dict[str, list], set[str], BenchOptions]:
    """`invoke bench`'s keyword arguments -> (knob name -> values, the knobs given explicitly, the
    sweep's options). A knob flag not given sweeps its default (or wider list: --zero 0,1,2,3)."""
    axes: dict[str, list] = {}
    given: set[str] = set()
    if str(flags.get("micro_batch", "")).strip() == "auto":  # the autotuner's candidates, stopped by memory
        flags["micro_batch"], flags["autotune"] = ",".join(map(str, AUTO_MICRO_BATCHES)), True
    for f in knob_fields():
        value = flag_values(f, flags.pop(bench_flag(f), None))
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


def target_device(opts: BenchOptions, runner: Launcher) -> str:
    """The device the ranks will have, not this host's (a login node has no GPU): the local launcher
    runs here; Slurm's nodes have GPUs when the job asks for them; torchrun's hosts are GPU nodes."""
    if opts.launcher == "local":
        return "cuda" if has_nvidia_driver() else "cpu"
    if opts.launcher == "slurm":
        return "cuda" if runner.request_gpus() else "cpu"
    return "cuda"


def _say_what_configs_change(configs: list, device: str) -> None:
    """Before anything runs: what each user DeepSpeed config states (once per config), and each thing
    of it not used as it is (once per wording: the global batch follows the world size), for the
    device the ranks will have."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:  # a login node without the training stack
        if any(c.deepspeed for c in configs):
            note("note: the training stack is not installed here: what each --deepspeed config sets is said by "
                 "the ranks (their logs and records)")
        return
    from stackbench.trainer import ds_config, models

    said_sets: set = set()
    said: set = set()
    seen = set()
    for cfg in configs:
        key = (cfg.deepspeed, cfg.ds, cfg.world_size, cfg.micro_batch, cfg.grad_accum)
        if not cfg.deepspeed or key in seen:
            continue
        seen.add(key)
        shape = models.shape(models.resolve(cfg.model))
        _, provenance = ds_config.deepspeed_config(cfg, dtype_on(cfg.dtype, device), device,
                                                   SimpleNamespace(hidden_size=shape.hidden))
        if (cfg.deepspeed, cfg.ds) not in said_sets:
            said_sets.add((cfg.deepspeed, cfg.ds))
            stated = ds_source.stated_knobs(ds_source.source_config(cfg)[1])
            sets = ", ".join(f"{k}={v}" for k, v in stated.items()) or "no knob"
            note(f"--deepspeed {cfg.deepspeed}: sets {sets}")
        for line in ds_config.describe(provenance):
            if (cfg.deepspeed, cfg.ds, line) not in said:
                said.add((cfg.deepspeed, cfg.ds, line))
                note(f"  note: {line}")


class _HostAccelerator(logging.Filter):
    """DeepSpeed's "Setting accelerator to CPU" at import: a fact of this host (a login node, a
    laptop), not of the nodes the runs go to, and nothing a user can act on: left out of the bench's
    console. The ranks still log it where it is true."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.filename.startswith("real_accelerator")


def header(axes: dict[str, list], given: set[str], opts: BenchOptions) -> str:
    """What the sweep is, with the defaults it took marked: bench's defaults are the embedded
    default's (a tiny model on this host's CPU), not a GPU node's (`invoke plan`'s)."""
    shown = [f"{bench_flag(f).replace('_', '-')} {','.join(map(str, axes[f.name]))}" + ("" if f.name in given else "*")
             for f in knob_fields() if f.name in SHOWN or f.name in given]
    return f"bench: {', '.join(shown)}; launcher {opts.launcher}  (* the embedded default's: flags override)"


SHOWN = ("model", "task", "nodes", "gpus_per_node", "micro_batch", "seq_len", "zero_stage", "offload")


def closing_count(counts: dict[str, int]) -> str:
    """'3 to run (1 with host RAM unchecked), 5 skipped (4 too big for the GPU, 1 for the nodes' RAM), 2 done'."""
    run = counts.get("to run", 0) + counts.get("to run, host RAM unchecked", 0)
    gpu, ram = counts.get("skipped: too big for the GPU", 0), counts.get("skipped: too big for the nodes' RAM", 0)
    parts = [f"{run} to run" + (f" ({counts['to run, host RAM unchecked']} with host RAM unchecked)"
                                if counts.get("to run, host RAM unchecked") else "")]
    if gpu or ram:
        why = [f"{gpu} too big for the GPU"] * bool(gpu) + [f"{ram} for the nodes' RAM"] * bool(ram)
        parts.append(f"{gpu + ram} skipped ({', '.join(why)})")
    if counts.get("already done"):
        parts.append(f"{counts['already done']} already done")
    return ", ".join(parts)


def write_scripts(runner: Launcher, configs: list, sweep_dir: Path, fit: FitCheck, target: str) -> int:
    """--script-only: one script per run that is not skipped, sbatch-ready for slurm; into the folder
    `target`, or, for a single run, on stdout ("-"). What is left out is said on stderr."""
    kept = []
    for cfg in configs:
        why = fit.why_not(cfg)[1]
        if why:
            note(f"left out {cfg.run_id}: {why}")
        else:
            kept.append(cfg)
    if target == "-":
        if len(kept) != 1:
            raise ConfigError(f"--script-only without a folder prints one run's script; this sweep has {len(kept)} "
                              "runs to script", where="--script-only",
                              fix="give a folder (--script-only scripts/: one file per run), or narrow the matrix "
                                  "to one run (--tasks, --zero, --nodes ...)")
        script = runner.script(kept[0], sweep_dir)
        secrets.refuse_leaks(script, f"the script of {kept[0].run_id}")
        print(script)
        return EXIT_OK
    folder = Path(target)
    files.check_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".sbatch" if runner.name == "slurm" else ".sh"
    scripts = {cfg.run_id: runner.script(cfg, sweep_dir) for cfg in kept}
    for run_id, script in scripts.items():  # all checked before any is written
        secrets.refuse_leaks(script, f"the script of {run_id}")
    for run_id, script in scripts.items():
        path = folder / f"{run_id}{suffix}"
        path.write_text(script + "\n")
        path.chmod(0o755)
    first = f"{folder}/{kept[0].run_id}{suffix}" if kept else ""
    note(f"wrote {len(kept)} script(s) to {folder}/" + (f" ({len(configs) - len(kept)} left out, above)"
                                                        if len(kept) < len(configs) else "")
         + (f"; e.g. sbatch {first}" if kept and runner.name == "slurm" else f"; e.g. bash {first}" if kept else ""))
    return EXIT_OK


def _check(configs: list, invalid: list, axes: dict, given: set[str], opts: BenchOptions,
           runner: Launcher) -> tuple[Path, FitCheck, dict]:
    """Every input before anything is launched, queued or printed as a plan (a mistake exits 2
    here): (the sweep's folder, its fit check, what each run keeps of its data)."""
    note(header(axes, given, opts))
    _say_what_configs_change(configs, target_device(opts, runner))
    if any(c.dtype == "bf16" for c in configs) and opts.launcher == "local" and not has_nvidia_driver():
        note(f"warning: {CPU_BF16_WARNING}")
    if any(c.dtype == "fp16" for c in configs) and opts.launcher == "local" and not has_nvidia_driver():
        resolve_dtype("fp16", "cpu")  # the local ranks are this host's CPUs: refused here, before anything runs
    sweep_dir = Path(opts.results) / (opts.sweep or sweep_id_for(configs, runner.name))
    slurm = opts.partition if opts.launcher == "slurm" else None
    host_gib, host_source = node_memory(opts.host_mem, partition=slurm, this_host=opts.launcher == "local")
    fit = FitCheck(gpu_gib=opts.gpu_mem or None, run_anyway=opts.run_anyway, host_gib=host_gib,
                   host_source=host_source)
    for combination, why in invalid:
        note(f"left out {combination}: {why}")
    if configs:  # a launcher with a fixed set of hosts (a hostfile, an allocation) refuses more nodes than it has
        runner.hosts(max(cfg.nodes for cfg in configs))
    modelcheck.check(configs, given)  # every model shaped; attention and ZeRO-3 leaves the model refuses
    dscheck.check(configs)  # the effective DeepSpeed configs against the installed DeepSpeed
    kept = datacheck.check(configs, max_drop=opts.max_drop)  # every data file read, checked and tokenized
    for cfg in configs:
        fit.why_not(cfg)  # the memory model's verdicts, worked out once (what they load prints here)
    return sweep_dir, fit, kept


def bench(**flags: Any) -> int:
    logging.getLogger("DeepSpeed").addFilter(_HostAccelerator())  # before DeepSpeed is first imported here
    axes, given, opts = split_flags(dict(flags))
    runner = make_launcher(opts)
    configs, invalid = expand(axes, given=given)
    # what the checks and the libraries they load print (DeepSpeed's accelerator line) is diagnostics
    with contextlib.redirect_stdout(sys.stderr):
        sweep_dir, fit, kept = _check(configs, invalid, axes, given, opts, runner)
    sweep_id = sweep_dir.name
    if opts.script_only:
        return write_scripts(runner, configs, sweep_dir, fit, opts.script_only)
    if opts.dry_run:
        print(f"sweep {sweep_id}: {len(configs)} runs -> {sweep_dir}")
        counts: dict[str, int] = {}
        for cfg in configs:
            pred, why = fit.why_not(cfg)
            done = sweep.done(sweep_dir, cfg)
            # what the closing line counts: to run, done, or skipped and why
            kind = ("already done" if done else "skipped: too big for the GPU" if why and pred["fits"] is False
                    else "skipped: too big for the nodes' RAM" if why else
                    "to run, host RAM unchecked" if fit.host_note(cfg) else "to run")
            counts[kind] = counts.get(kind, 0) + 1
            state = ("done (ok), will be skipped" if done else f"will be skipped: {why}" if why
                     else "; ".join(filter(None, ["to run", fit.host_note(cfg)])))
            if cfg.run_id in kept:
                state += f"; rows kept/read: {summary.data_cell(kept[cfg.run_id])}"
            print(f"\n# {cfg.run_id}: {state}\n{join_commands(runner.commands(cfg, sweep_dir, 29500))}")
        print("\n" + closing_count(counts))
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
        note(f"{len(configs) - len(records)} run(s) left to the other process running them (see above)")
    return EXIT_OK if len(records) == len(configs) and all(r["status"] in ("ok", "skipped") for r in records) \
        else EXIT_FAILED
