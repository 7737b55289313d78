"""stackbench tasks: `./sb --list` (`python -m tasks`; plain `invoke` reads this file too). Each
task parses its flags and calls a library function."""

from __future__ import annotations

import inspect
import os
import shlex
import sys
from pathlib import Path

from invoke import Collection, Exit, ParseError, Program
from invoke import task as invoke_task


def task(*args, **kwargs):
    """invoke's @task without generated short flags: invoke hands out a flag's first free letter,
    and so gave -h (help's) to --hostfile and --preflight-deadline, and '--' to --dry-run. Every
    flag here is long (a one-letter name such as test's -k is its own); -h is help everywhere."""
    return invoke_task(*args, **{"auto_shortflags": False, **kwargs})


def _run(fn, **kwargs) -> None:
    """Call a library function; a user mistake prints its message and exits 2 (a build that failed:
    1), never a traceback."""
    from stackbench.core.errors import UserError

    try:
        code = fn(**kwargs)
    except UserError as e:
        print(f"error: {e.render()}", file=sys.stderr)
        raise Exit(code=e.exit_code)
    if code:
        raise Exit(code=code)


def _signature(options, defaults: dict[str, str] | None = None) -> tuple[inspect.Signature, dict[str, str], list[str]]:
    """A command's flags, derived: knobs of the run config (core/config.py; `defaults`: the command's
    own, by knob name, and only those knobs; None: every knob at the bench's defaults), then every
    field of its options dataclass (bench/options.py). Returns (signature, help, repeatable flags)."""
    from stackbench.core.config import knob_fields
    from stackbench.core.flags import bench_default, bench_flag, is_axis

    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    helps, iterable = {}, []
    for f in knob_fields():
        if defaults is not None and f.name not in defaults:
            continue
        # not given: None (so the command knows what was asked for), a boolean False, a repeatable one empty
        default = False if str(f.type) == "bool" else None
        params.append(inspect.Parameter(bench_flag(f), inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
        sweeps = defaults[f.name] if defaults is not None else ",".join(map(str, bench_default(f)))
        helps[bench_flag(f)] = f.metadata["help"] + (f" (comma list; default {sweeps})" if is_axis(f) else "")
        if f.metadata["repeatable"]:
            iterable.append(bench_flag(f))
    for f in options.fields():
        iterable += [f.name] if f.metadata["iterable"] else []
        # numbers as text: Options.from_flags reads them, and names the flag when one is mistyped
        default = None if f.metadata["iterable"] else str(f.default) if str(f.type) in ("int", "float") else f.default
        params.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
        helps[f.name] = f.metadata["help"]
    return inspect.Signature(params), helps, iterable


def _bench(c, **flags):
    """Sweep full-parameter SFT / DPO / PT across ZeRO stages and node counts; records under results/."""
    from stackbench.bench.main import bench as run_bench

    _run(run_bench, **{k: tuple(v or ()) if k in _BENCH_ITERABLE else v for k, v in flags.items()})


def _bench_options():
    from stackbench.bench.options import BenchOptions

    return BenchOptions


_bench.__signature__, _BENCH_HELP, _BENCH_ITERABLE = _signature(_bench_options())
bench = task(_bench, name="bench", help=_BENCH_HELP, iterable=_BENCH_ITERABLE, optional=["script_only"])


def _plan(c, **flags):
    """Will it fit? Predicted memory per GPU (and host) for every ZeRO stage and offload, ranked, before any GPU-hour."""
    from stackbench.bench.plan_cli import calibrate as run_calibrate
    from stackbench.bench.plan_cli import main as run_plan

    if flags.get("calibrate"):
        try:
            from stackbench.report.plots import calibration
        except ImportError as e:  # matplotlib (the report extra) missing: the tables still print
            print(f"warning: no prediction plot ({e}); pip install 'stackbench[report]' draws it", file=sys.stderr)
            calibration = None
        return _run(run_calibrate, results=flags["calibrate"], as_json=flags.get("json", False), figure=calibration,
                    plot=flags.get("plot") or str(Path(flags["calibrate"]) / "prediction.png"))
    _run(run_plan, **{k: tuple(v or ()) if k in _PLAN_ITERABLE else v for k, v in flags.items()})


def _plan_options():
    from stackbench.bench.options import PlanOptions
    from stackbench.bench.plan_cli import PLAN_DEFAULTS

    return PlanOptions, PLAN_DEFAULTS


_plan.__signature__, _PLAN_HELP, _PLAN_ITERABLE = _signature(*_plan_options())
plan = task(_plan, name="plan", help=_PLAN_HELP, iterable=_PLAN_ITERABLE)


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
def envcheck(c, json=False, strict=False, lock="", nodes=0, gpus_per_node=1, launcher="local", hostfile="",
             partition="", account="", out="", work_dir="results/envcheck"):
    """Check the training stack (versions, ABI, GPUs, toolchain, system, NCCL settings, drift) in about a second."""
    from stackbench.envcheck.main import envcheck as run_envcheck

    _run(run_envcheck, as_json=json, strict=strict, lock=lock, nodes=int(nodes), gpus_per_node=int(gpus_per_node),
         launcher=launcher, out=out, work_dir=work_dir, **({"hostfile": hostfile} if launcher == "torchrun" else {}),
         **({"partition": partition, "account": account} if launcher == "slurm" else {}))


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

    _run(run_build, profile=profile, cuda=cuda, torch=torch, deepspeed=deepspeed, flash_attn=flash_attn, base=base,
         wheelhouse_dir=wheelhouse, extra_ca=extra_ca, export=export, render_only=render_only, nocache=no_cache,
         results=results, no_registry=no_registry, no_flash_attn=no_flash_attn, git_source=tuple(git_source or ()))


_NO_REGISTRY = "the profile's registry-free variant ([no_registry])"


@task(help={"profile": "profile name", "cuda": "or the CUDA version's profile", "no_registry": _NO_REGISTRY})
def lock(c, profile="", cuda="", no_registry=False):
    """Resolve a profile into its hashed lock under docker/locks/ (needs PyPI)."""
    from stackbench.imagebuild.main import lock as run_lock

    _run(run_lock, profile=profile, cuda=cuda, no_registry=no_registry)


@task(help={"profile": "profile name", "cuda": "or the CUDA version's profile", "out": "directory",
            "no_registry": _NO_REGISTRY})
def wheelhouse(c, profile="", cuda="", out="", no_registry=False):
    """Fetch every locked wheel and sdist (on a connected machine) for builds with no network."""
    from stackbench.imagebuild.main import wheelhouse as run_wheelhouse

    _run(run_wheelhouse, profile=profile, cuda=cuda, out=out, no_registry=no_registry)


@task(help={"profile": "whose base to make (default cpu-small's)", "cuda": "or the CUDA version's profile",
            "no_registry": _NO_REGISTRY, "tag": "tag it differently from the profile's base"})
def base_image(c, profile="", cuda="", no_registry=False, tag=""):
    """Make a profile's Debian base here (debootstrap + docker import), for hosts without a registry."""
    from stackbench.imagebuild.main import base_image as run_base

    _run(run_base, profile=profile, cuda=cuda, no_registry=no_registry, tag=tag)


@task(help={"results": "directory of records, searched recursively; its reference/ folder (the committed reference "
                       "sweeps) only when named: --results results/reference",
            "out": "output directory (default: <results>/report)",
            "baseline": "a results directory to compare with: deltas, and regressions beyond the runs' own spread"})
def report(c, results="results", out="", baseline=""):
    """Your runs' records to Markdown, self-contained HTML and CSV, with plots and a baseline comparison."""
    from stackbench.report.main import report as run_report

    _run(run_report, results=results, out=out, baseline=baseline)


@task(help={"out": "the wheel folder (default .cache/gpu-wheels)",
            "python": "comma list of the Python versions a GPU host may have (default 3.10,3.11,3.12)"})
def gpu_wheels(c, out="", python=""):
    """The wheels a GPU host with torch needs to run stackbench offline (64 MiB at most), one command."""
    from stackbench.imagebuild import device_wheels

    pythons = tuple(v.strip() for v in python.split(",") if v.strip()) or device_wheels.PYTHONS
    _run(lambda: device_wheels.build(Path(out or ".cache/gpu-wheels"), pythons) and 0)


@task(help={"out": "folder for the results (default results/gpu-reference)",
            "wheels": "install this wheel folder (./sb gpu-wheels) offline first", "archive": "a .tgz of --out, "
            "re-packed after every step", "deadline": "seconds for every step together", "cpu": "the CPU rehearsal "
            "even where a GPU is visible"})
def gpu_reference(c, out="", wheels="", archive="", deadline=540.0, cpu=False):
    """The GPU reference run (envcheck, plans, qwen3 presets in bf16 at ZeRO 0-3, the hf backend), rehearsed on CPU."""
    from stackbench.bench import gpu_reference as ref

    argv = ["--out", out or "results/gpu-reference", "--deadline", str(deadline)] + (
        ["--wheels", wheels] if wheels else []) + (["--archive", archive] if archive else []) + (["--cpu"] if cpu else [])
    _run(lambda: ref.main(argv))


@task(help={"k": "only tests matching this pytest -k expression", "unit": "only the fast unit tests",
            "args": "extra pytest arguments"})
def test(c, k="", unit=False, args=""):
    """Run the test suite (unit, integration with real DeepSpeed, benchmarks once each)."""
    cmd = [sys.executable, "-m", "pytest", "tests/unit" if unit else "tests", "--benchmark-disable"]
    if k:
        cmd += ["-k", k]
    cmd += shlex.split(args)
    c.run(shlex.join(cmd), pty=sys.stdout.isatty(), env={"PYTHONPATH": os.getcwd()})


@task
def swift_env(c):
    """Set up ms-swift's own environment (.venv-swift; --backend swift runs there): its pins differ from the hf backend's."""
    from stackbench.bench.backends import SWIFT_VENV

    env = {"STACKBENCH_VENV": str(SWIFT_VENV), "STACKBENCH_EXTRAS": "train,gpu,swift"}
    c.run(shlex.join(["bash", "sb", "--version"]), env=env, pty=sys.stdout.isatty())
    print(f"ms-swift environment ready: {SWIFT_VENV}")


@task(help={"profile": "the image profile whose Python pins the environment takes (docker/profiles/)"})
def pinned_env(c, profile="cuda12.4"):
    """Set up .venv-pinned: an image profile's Python pins (CPU torch) to test the trainer with the stack users run."""
    from stackbench.imagebuild import pinned

    reqs = pinned.write_requirements(profile)
    print(reqs.read_text(), end="")
    env = {"STACKBENCH_VENV": str(pinned.VENV), "STACKBENCH_EXTRAS": "train,gpu",
           "STACKBENCH_REQUIREMENTS": str(reqs)}
    c.run(shlex.join(["bash", "sb", "--version"]), env=env, pty=sys.stdout.isatty())
    print(f"pinned environment ready ({profile}): {pinned.VENV}")


@task(help={"args": "extra pytest arguments"})
def benchmark(c, args=""):
    """Measure the harness itself (pytest-benchmark); saves JSON under results/benchmarks/."""
    c.run(f"{sys.executable} -m pytest tests/benchmarks --benchmark-only --benchmark-json results/benchmarks/"
          f"harness.json {args}", pty=sys.stdout.isatty(),
          env={"PYTHONPATH": os.getcwd(), "STACKBENCH_DATA_ROWS": os.environ.get("STACKBENCH_DATA_ROWS", "100000")})


class _Program(Program):
    """`./sb`'s command line: invoke's, except that a flag it cannot parse is a user mistake like
    any other, said in one line with exit 2 (invoke itself exits 1, or shows a traceback for a
    mistyped number)."""

    def parse_core(self, argv):
        self._bad_input(super().parse_core, argv)
        if self.core.remainder:  # invoke would hand it to no one: say so rather than drop it
            from stackbench.core.errors import EXIT_BAD_INPUT

            raise Exit(f"error: '-- {self.core.remainder}': stackbench reads no command after '--' yet; nothing was "
                       f"run\n  fix: drop it, and give stackbench's own flags ({self._help_hint()})",
                       code=EXIT_BAD_INPUT)

    def parse_tasks(self):
        self._bad_input(super().parse_tasks)

    def _bad_input(self, parse, *args):
        import re

        from stackbench.core.errors import EXIT_BAD_INPUT

        try:
            parse(*args)
        except (ParseError, ValueError) as e:
            where = ""
            if isinstance(e, ValueError):  # a number invoke could not read: name its flag
                value = re.search(r"'(.*)'$", str(e))
                argv = list(getattr(self, "argv", []) or [])
                where = next((f"{a.split('=')[0]}: " for i, a in enumerate(argv) if value and (
                    a.startswith("-") and (a.endswith("=" + value.group(1)) or argv[i + 1:i + 2] == [value.group(1)]))),
                    "")
            raise Exit(f"error: {where}{e}\n  fix: {self._help_hint()}", code=EXIT_BAD_INPUT) from None

    def _help_hint(self) -> str:
        """'./sb --help bench lists its flags' for the task on the command line."""
        names = set(self.namespace.task_names) if self.namespace else set()
        argv = list(getattr(self, "argv", []) or [])
        name = next((a.replace("_", "-") for a in argv[1:] if a in names or a.replace("-", "_") in names), None)
        if not name:
            return "./sb --list names the tasks; ./sb --help TASK their flags"
        import difflib

        flags = ["--" + n.replace("_", "-") for arg in self.namespace[name.replace("-", "_")].get_arguments()
                 for n in arg.names if len(n) > 1]
        unknown = next((a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in flags
                        and a not in ("--help", "--")), "")
        from stackbench.core.config import cli_flag, knob_fields
        from stackbench.core.flags import bench_flag

        # a knob typed by its field name (--zero-stage, --task) names its flag (--zero, --tasks)
        by_field = {cli_flag(f.name): cli_flag(bench_flag(f)) for f in knob_fields()}
        close = [by_field[unknown]] if by_field.get(unknown) in flags else \
            difflib.get_close_matches(unknown, flags, n=1) if unknown else []
        return (f"did you mean {close[0]}? " if close else "") + f"./sb --help {name} lists its flags"


program = _Program(namespace=Collection.from_module(sys.modules[__name__]), name="stackbench", binary="./sb",
                   version="0.1.0")

if __name__ == "__main__":
    try:
        program.run()
    except BrokenPipeError:  # `./sb ... | head`: the reader has what it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, what a shell reports for the same
