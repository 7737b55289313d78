"""The GPU reference run: the wheels a GPU host needs offline, and the rehearsed run itself
(recipes/gpu_reference.py, a script over this command line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stackbench.cli.program import run, task
from stackbench.core.options import read_number

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "gpu_reference.py"  # in the checkout, beside tasks.py

@task(help={"out": "the wheel folder (default .cache/gpu-wheels)",
            "python": "comma list of the Python versions a GPU host may have (default 3.10,3.11,3.12)"})
def wheels(c, out="", python=""):
    """The wheels a GPU host with torch needs to run stackbench offline (64 MiB at most), one command."""
    from stackbench.imagebuild import device_wheels

    pythons = tuple(v.strip() for v in python.split(",") if v.strip()) or device_wheels.PYTHONS
    run(lambda: device_wheels.build(Path(out or ".cache/gpu-wheels"), pythons) and 0)


@task(help={"out": "folder for the results (default results/gpu-reference)",
            "wheels": "install this wheel folder (./sb gpu-wheels) offline first", "archive": "a .tgz of --out, "
            "re-packed after every step", "deadline": "seconds for every step together", "cpu": "the CPU rehearsal "
            "even where a GPU is visible"})
def reference(c, out="", wheels="", archive="", deadline="540", cpu=False):
    """The GPU reference run (envcheck, plans, qwen3 presets in bf16 at ZeRO 0-3, the hf backend), rehearsed on CPU."""
    def recipe() -> int:  # a script over this command line, standard library only until its wheels are installed
        argv = ["--out", out or "results/gpu-reference", "--deadline", str(read_number("deadline", deadline, float))]
        argv += (["--wheels", wheels] if wheels else []) + (["--archive", archive] if archive else [])
        return subprocess.run([sys.executable, str(RECIPE), *argv, *(["--cpu"] if cpu else [])]).returncode

    run(recipe)
