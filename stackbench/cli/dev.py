"""Developer tasks, run from a checkout: the tests, the harness benchmarks, the other stacks' environments."""

from __future__ import annotations

import os
import shlex
import sys

from invoke import Exit

from stackbench.cli.program import task


@task(help={"k": "only tests matching this pytest -k expression", "unit": "only the fast unit tests",
            "args": "extra pytest arguments"})
def test(c, k="", unit=False, args=""):
    """Lint (ruff, configured in pyproject.toml), then the test suite (unit, integration with real DeepSpeed,
    benchmarks once each); either failing fails the command."""
    lint = c.run(shlex.join([sys.executable, "-m", "ruff", "check", "."]), warn=True, pty=sys.stdout.isatty())
    cmd = [sys.executable, "-m", "pytest", "tests/unit" if unit else "tests", "--benchmark-disable"]
    if k:
        cmd += ["-k", k]
    cmd += shlex.split(args)
    tests = c.run(shlex.join(cmd), warn=True, pty=sys.stdout.isatty(), env={"PYTHONPATH": os.getcwd()})
    failed = next((r.exited for r in (tests, lint) if r.exited), 0)
    if failed:
        raise Exit(code=failed)


@task
def swift_env(c):
    """Set up ms-swift's own environment (.venv-swift; --backend swift runs there): its pins differ from the hf backend's."""  # noqa: E501
    from stackbench.bench.launchers.backends import SWIFT_VENV

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
