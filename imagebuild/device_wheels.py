"""`invoke gpu-wheels`: the wheel directory a GPU host needs to run stackbench offline, when that
host already has torch (a lent GPU machine, a cluster node image) and no network.

What goes in: the runtime closure of what a GPU run imports (DeepSpeed, transformers, accelerate,
invoke, rich ...) at the versions this environment runs (the ones the tests passed with), minus
what every torch host has (torch, its own requirements, numpy, NVIDIA's libraries), minus what does
not fit the budget (LEFT_OUT, each with its reason), one binary wheel per Python version a device
may have (`pip download --python-version`). DeepSpeed is built here as a pure-Python wheel
(DS_BUILD_OPS=0: its ops compile on first use where they run). requirements.txt names each
package once, so `pip install --no-index --find-links DIR -r DIR/requirements.txt` takes the one
wheel of each that fits the Python installing it (recipes/gpu_reference.py does, into --target).

Budget: 64 MiB, what the device tool carries beside the working tree.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

from stackbench.core.errors import UserError

BUDGET = 64 * 2**20
PYTHONS = ("3.10", "3.11", "3.12")
ROOTS = ("deepspeed", "transformers", "accelerate", "tokenizers", "safetensors", "invoke", "rich", "psutil",
         "packaging", "nvidia-ml-py")
# these + torch's own requirements (read below), nvidia-*, cuda-*
ON_A_TORCH_HOST = {"torch", "numpy", "triton", "setuptools"}
LEFT_OUT = {
    "pandas": "12 MB per Python version: over the budget; only CSV / Parquet data and the report need it "
              "(render the report where the records land)",
    "pyarrow": "40 MB per Python version: Parquet data and datasets only",
    "datasets": "pulls pyarrow and pandas (TRL's needs): the GPU run's hf comparison is SFT through "
                "transformers' Trainer",
    "trl": "needs datasets: left out with it (--backend hf DPO)",
    "matplotlib": "the report's plots: rendered where the records land",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _requires(name: str) -> list[str]:
    from packaging.requirements import Requirement

    out = []
    for text in md.requires(name) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(_norm(req.name))
    return out


def closure() -> dict[str, str]:
    """{package: version installed here} for ROOTS and what they need, minus the torch host's own."""
    host = set(ON_A_TORCH_HOST) | set(_requires("torch"))
    todo, found = [_norm(r) for r in ROOTS], {}
    while todo:
        name = todo.pop()
        if (name in found or name in host or name in LEFT_OUT
                or name.startswith(("nvidia-", "cuda-")) and name != "nvidia-ml-py"):
            continue
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            continue  # an optional need this environment does not install: the device does without it too
        todo += _requires(name)
    return dict(sorted(found.items()))


def build(out: Path, pythons: tuple[str, ...] = PYTHONS, say=print) -> dict:
    """Fill `out` (emptied of wheels first) with each Python version's resolution, and write
    requirements-<python>.txt per version and manifest.json."""
    here = closure()
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.whl"), *out.glob("requirements-*.txt")]:
        old.unlink()
    ds = here["deepspeed"]
    say(f"building deepspeed {ds} as a pure-Python wheel (DS_BUILD_OPS=0)")
    _pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(out), f"deepspeed=={ds}"],
         env={"DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu"})
    # each Python resolves the roots itself, capped at the versions tested here (a newer Python gets
    # them; an older one, the newest release that still supports it)
    (out / "constraints.txt").write_text("".join(f"{n}<={v}\n" for n, v in here.items()))
    resolved = {}
    for py in pythons:
        pins = _resolve(py, out / "constraints.txt", ds)
        say(f"Python {py}: {len(pins)} packages, downloading")
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        _pip(["download", "--no-deps", "--only-binary=:all:", "--python-version", py, "--implementation", "cp",
              *platforms, "-d", str(out), *(f"{n}=={v}" for n, v in pins.items() if n != "deepspeed")])
        (out / f"requirements-{py}.txt").write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
        resolved[py] = pins
    wheels = sorted(out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    manifest = {"pythons": list(pythons), "packages": resolved, "left_out": LEFT_OUT,
                "expected_on_the_host": sorted(ON_A_TORCH_HOST | set(_requires("torch"))) + ["nvidia-*"],
                "wheels": [w.name for w in wheels], "bytes": size, "budget_bytes": BUDGET}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if size > BUDGET:
        biggest = sorted(wheels, key=lambda w: -w.stat().st_size)[:5]
        raise UserError(f"the wheels come to {size / 2**20:.1f} MiB, over the {BUDGET / 2**20:.0f} MiB budget",
                        where=str(out), fix="leave out a package or a Python version; the largest: " + ", ".join(
                            f"{w.name} {w.stat().st_size / 2**20:.1f} MiB" for w in biggest))
    say(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB of {BUDGET / 2**20:.0f} in {out}")
    return manifest


def _resolve(python: str, constraints: Path, deepspeed: str) -> dict[str, str]:
    """{package: version} pip resolves for the roots on that Python (metadata only, nothing installed),
    minus the torch host's own and LEFT_OUT. What requires torch (DeepSpeed, accelerate) is resolved
    without its requirements, which join the roots instead: else pip would fetch a torch wheel
    (hundreds of MB) only to read what the host already has."""
    host = set(ON_A_TORCH_HOST) | set(_requires("torch"))
    needs_torch = [r for r in ROOTS if "torch" in _requires(r)]
    roots = [r for r in ROOTS if r not in needs_torch]
    roots += [d for r in needs_torch for d in _requires(r) if d not in host and d not in roots]
    found = {}
    for args in ([*roots], ["--no-deps", *(f"{r}<={md.version(r)}" for r in needs_torch if r != "deepspeed"),
                            f"deepspeed=={deepspeed}"]):
        report = constraints.parent / f".resolve-{python}.json"
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        _pip(["install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--python-version", python,
              "--implementation", "cp", *platforms, "--target", str(constraints.parent / ".none"),
              "--report", str(report), "--find-links", str(constraints.parent), "-c", str(constraints), *args])
        for item in json.loads(report.read_text())["install"]:
            name = _norm(item["metadata"]["name"])
            if not (name in host or name in LEFT_OUT
                    or name.startswith(("nvidia-", "cuda-")) and name != "nvidia-ml-py"):
                found[name] = item["metadata"]["version"]
        report.unlink()
    return dict(sorted(found.items()))


def _pip(args: list[str], env: dict[str, str] | None = None) -> None:
    p = subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"],
                       env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if p.returncode != 0:
        raise UserError(f"pip {args[0]} failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}",
                        where="pip", fix="check the network to the package index (this step needs it)")
