"""The GPU run rehearsed on this CPU (issue: GPU readiness without a GPU): the wheel folder a GPU
host with torch needs (`invoke gpu-wheels`), resolved for every Python version a device may have,
within the 64 MiB the device tool carries; installed offline into a fresh --target folder; and the
rehearsal (`python3 recipes/gpu_reference.py --cpu`) run end to end with it: envcheck, the plans, the
embedded model in bf16 at ZeRO 0-3, qwen3-0.6b's and qwen3-1.7b's real shapes cut to one layer, the
hf backend. Needs the package index (as CI's own setup does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from stackbench.imagebuild import device_wheels
from tests.conftest import ROOT

pytestmark = pytest.mark.deepspeed


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-wheels")
    return out, device_wheels.build(out)


def test_the_wheel_folder_fits_the_budget_for_every_python(wheels):
    out, manifest = wheels
    assert manifest["bytes"] == sum(w.stat().st_size for w in out.glob("*.whl")) <= device_wheels.BUDGET
    for py in device_wheels.PYTHONS:
        pins = dict(line.split("==") for line in (out / f"requirements-{py}.txt").read_text().split())
        assert {"deepspeed", "transformers", "invoke", "pydantic", "hjson"} <= set(pins), py
        assert not {"torch", "numpy", "pandas", "pyarrow", "datasets"} & set(pins), py  # the host's, or left out
    assert next(out.glob("deepspeed-*-py3-none-any.whl"))  # pure Python: its ops compile where they run
    assert set(manifest["left_out"]) >= {"pandas", "pyarrow", "datasets", "trl"}


def test_the_rehearsal_runs_every_step_from_the_offline_wheels(wheels, tmp_path):
    out, _ = wheels
    ref, archive = tmp_path / "ref", tmp_path / "ref.tgz"
    # The rehearsal's DeepSpeed is the wheel folder's copy, at another path than this environment's:
    # its JIT-built ops get a cache of their own (one cache for both would be rebuilt by each in turn,
    # a minute each time, here and in the next test that trains). And its processes may keep the
    # bytecode of what they import from the --target folder (pip wrote none there): else each of them
    # compiles transformers and DeepSpeed from source again.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["TORCH_EXTENSIONS_DIR"] = str(ROOT / ".cache" / "torch_extensions-gpu-reference")
    p = subprocess.run([sys.executable, "recipes/gpu_reference.py", "--out", str(ref), "--wheels", str(out), "--cpu",
                        "--archive", str(archive), "--deadline", "1500"], cwd=ROOT, capture_output=True, text=True,
                       timeout=1800, env=env)
    steps = json.loads((ref / "steps.json").read_text())
    assert p.returncode == 0, (steps, p.stdout[-2000:], p.stderr[-3000:])
    assert [s["status"] for s in steps] == ["ok"] * len(steps) and len(steps) == 6
    assert "installed requirements-3." in p.stdout
    # what the wheels provide comes from the offline --target folder, not from this environment
    site = ref / "site"
    probe = subprocess.run([sys.executable, "-c", "import deepspeed, transformers, invoke, pydantic, hjson; "
                            "print(*('FROM ' + m.__file__ "
                            "for m in (deepspeed, transformers, invoke, pydantic, hjson)))"],
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "DS_ACCELERATOR": "cpu"},
                           capture_output=True, text=True)
    found = [w for line in probe.stdout.splitlines() if line.startswith("FROM ") for w in line.split()[1::2]]
    assert probe.returncode == 0 and len(found) == 5 and all(f.startswith(str(site)) for f in found), probe
    readme = (ref / "README.md").read_text()
    assert "One GPU proves less than a node" in readme and "recipes/gpu_reference.py" in readme
    assert all(f"`{s['command']}`" in readme for s in steps)
    records = [json.loads(f.read_text()) for f in (ref / "results").glob("*/*.json") if f.name != "sweep.json"]
    assert all(r["status"] == "ok" for r in records) and len(records) == 4 + 2 + 1
    tiny = [r for r in records if r["config"]["model"] == "tiny" and r["config"]["backend"] == "native"]
    assert sorted(r["config"]["zero_stage"] for r in tiny) == [0, 1, 2, 3]
    assert all(r["resolved"]["dtype"] == "bf16" for r in records)
    shapes = {r["resolved"]["model"]["hidden"]: r["resolved"]["model"] for r in records
              if "1layer" in r["config"]["model"]}
    assert set(shapes) == {1024, 2048} and all(m["vocab"] == 151936 and m["layers"] == 1 for m in shapes.values())
    assert json.loads((ref / "plans.json").read_text())["qwen3-1.7b"]["fits"]  # the planner's pick for the GPU run
    with tarfile.open(archive) as tar:
        assert any(n.endswith("steps.json") for n in tar.getnames())
