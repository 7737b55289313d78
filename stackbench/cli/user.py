"""The user's tasks: bench, plan, calibrate, envcheck, build, report (`./sb --help TASK`)."""

from __future__ import annotations

import sys
from pathlib import Path

from stackbench.bench.options import BenchOptions
from stackbench.bench.planning.main import PLAN_DEFAULTS, PlanOptions
from stackbench.cli.program import derived, refuse, run, task
from stackbench.core.errors import ConfigError
from stackbench.core.options import read_number


def _bench(c, **flags):
    """Sweep full-parameter SFT / DPO / PT across ZeRO stages and node counts; records under results/."""
    from stackbench.bench.main import bench as run_bench

    run(run_bench, **flags)


bench = derived(_bench, "bench", BenchOptions, optional=["script_only"])


def _figure():
    try:
        from stackbench.report.plots import calibration
    except ImportError as e:  # matplotlib (the report extra) missing: the tables still print
        print(f"warning: no prediction plot ({e}); pip install 'stackbench[report]' draws it", file=sys.stderr)
        return None
    return calibration


def _calibrate(sweep: str, as_json: bool, plot: str) -> None:
    from stackbench.bench.planning.main import calibrate as run_calibrate

    run(run_calibrate, results=sweep, as_json=as_json, figure=_figure(),
        plot=plot or str(Path(sweep) / "prediction.png"))


def _plan(c, **flags):
    """Will it fit? Predicted memory per GPU (and host) for every ZeRO stage and offload, ranked, before any GPU-hour."""  # noqa: E501
    from stackbench.bench.planning.main import main as run_plan

    if flags.get("calibrate"):  # `plan --calibrate SWEEP` is `calibrate SWEEP`
        return _calibrate(flags["calibrate"], flags.get("json", False), flags.get("plot") or "")
    run(run_plan, **flags)


plan = derived(_plan, "plan", PlanOptions, PLAN_DEFAULTS)


@task(help={"sweep": "a sweep's folder (results/<sweep>): its ok runs are what the step-time model is fitted to",
            "json": "print JSON (stdout) instead of the tables",
            "plot": "where the prediction plot goes (default <sweep>/prediction.png)"})
def calibrate(c, sweep="", json=False, plot=""):
    """Fit the step-time model to a sweep's runs: measured vs predicted for each, predictions up to 512 nodes."""
    if not sweep:
        refuse(ConfigError("which sweep?", where="--sweep", fix="./sb calibrate --sweep results/<sweep>"))
    _calibrate(sweep, json, plot)


@task(help={
    "json": "print JSON (schema stackbench.envcheck/1) instead of the table",
    "strict": "exit 1 on warnings (failures always exit 2)",
    "lock": "lock file to compare installed packages with (default: $STACKBENCH_LOCK in images)",
    "nodes": "run the checks on N nodes through --launcher, compare them, time an all-reduce",
    "gpus_per_node": "ranks per node for the all-reduce",
    "launcher": "local, torchrun (--hostfile) or slurm",
    "hostfile": "torchrun launcher: hosts, node 0 first",
    "partition": "slurm: partition", "account": "slurm: account",
    "out": "also write the JSON report to this file",
    "work_dir": "with --nodes: where node reports and logs go",
})
def envcheck(c, json=False, strict=False, lock="", nodes="0", gpus_per_node="1", launcher="local", hostfile="",
             partition="", account="", out="", work_dir="results/envcheck"):
    """Check the training stack (versions, ABI, GPUs, toolchain, system, NCCL settings, drift) in about a second."""
    from stackbench.envcheck.main import envcheck as run_envcheck

    by_launcher = {"torchrun": {"hostfile": hostfile}, "slurm": {"partition": partition, "account": account}}
    run(lambda: run_envcheck(as_json=json, strict=strict, lock=lock, nodes=read_number("nodes", nodes),
                             gpus_per_node=read_number("gpus_per_node", gpus_per_node), launcher=launcher, out=out,
                             work_dir=work_dir, **by_launcher.get(launcher, {})))


@task(help={
    "cuda": "CUDA version: picks the profile for it (12.4)",
    "profile": "a profile by name (docker/profiles/*.toml), e.g. cpu-small, cuda12.4-megatron",
    "torch": "override torch's version (a derived profile; its lock is resolved first)",
    "deepspeed": "override DeepSpeed's version", "flash_attn": "override flash-attn's version",
    "base": "override the base image (your registry, NGC)",
    "no_registry": "build the profile's registry-free variant (a Debian base made here with debootstrap; CUDA from "
                   "Debian's toolkit); also what a build falls back to, saying so, when its base cannot be pulled",
    "no_flash_attn": "build without flash-attn (its wheels are on GitHub; a source build takes hours): the image's "
                     "labels, tag and envcheck say it is left out, and attention runs on sdpa",
    "wheelhouse": "build with no network from this directory (invoke wheelhouse fills it); a wheel in it of a piece "
                  "the profile compiles (flash-attn's prebuilt one) is installed instead of compiling",
    "git_source": "NAME=DIR: a [git] piece (apex) from a checkout fetched beforehand at the locked commit; repeat "
                  "for several. Without it the URL must answer, or the build is refused before it starts",
    "extra_ca": "directory of *.crt CA certificates the image must trust (TLS-inspecting proxies)",
    "export": "also write the image as a tar (docker save) here",
    "render_only": "write the Dockerfile and context, build nothing",
    "no_cache": "build every step again",
    "results": "where the image manifest goes (<results>/images/)",
}, iterable=["git_source"])
def build(c, cuda="12.4", profile="", torch="", deepspeed="", flash_attn="", base="", wheelhouse="", extra_ca="",
          export="", render_only=False, no_cache=False, results="results", no_registry=False, no_flash_attn=False,
          git_source=None):
    """Build a pinned, verified training image (profile -> rules -> lock -> Docker engine)."""
    from stackbench.imagebuild.main import build as run_build

    run(run_build, profile=profile, cuda=cuda, torch=torch, deepspeed=deepspeed, flash_attn=flash_attn, base=base,
         wheelhouse_dir=wheelhouse, extra_ca=extra_ca, export=export, render_only=render_only, nocache=no_cache,
         results=results, no_registry=no_registry, no_flash_attn=no_flash_attn, git_source=tuple(git_source or ()))


@task(help={"results": "directory of records, searched recursively; its reference/ folder (the committed reference "
                       "sweeps) only when named: --results results/reference",
            "out": "output directory (default: <results>/report)",
            "baseline": "a results directory to compare with: deltas, and regressions beyond the runs' own spread"})
def report(c, results="results", out="", baseline=""):
    """Your runs' records to Markdown, self-contained HTML and CSV, with plots and a baseline comparison."""
    from stackbench.report.main import report as run_report

    run(run_report, results=results, out=out, baseline=baseline)
