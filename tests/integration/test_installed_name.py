"""stackbench run from a training repository that has its own `trainer/` and `core/` (and the other
room names) as packages: the embedded default still trains, ok, and no process of the run — the
sweep's, torchrun's, the preflight's, each rank — loads a top-level `core`, `trainer`, `bench`,
`envcheck`, `imagebuild` or `report`: ours are only ever `stackbench.<room>`, and the user's are
never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.deepspeed

ROOMS = ("bench", "core", "envcheck", "imagebuild", "report", "trainer")
# every python process of the run writes its top-level module names when it exits
SITECUSTOMIZE = """
import atexit, json, os, sys

def _dump():
    with open(os.path.join(os.environ["STACKBENCH_TEST_MODULES"], f"{os.getpid()}.json"), "w") as f:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        json.dump({"main": spec.name if spec else sys.argv[0], "rank": os.environ.get("RANK"),
                   "top": sorted({m.split(".")[0] for m in list(sys.modules)})}, f)

atexit.register(_dump)
"""


def test_the_embedded_default_runs_beside_a_users_own_trainer_and_core(tmp_path):
    user = tmp_path / "their-training-repo"
    for name in ROOMS:
        (user / name).mkdir(parents=True)
        (user / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name}/ was imported')\n")
    site, dumps, results = tmp_path / "site", tmp_path / "modules", tmp_path / "results"
    site.mkdir()
    dumps.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"PYTHONPATH": str(site), "STACKBENCH_TEST_MODULES": str(dumps)}
    argv = ["bench", "--tasks", "sft,dpo", "--zero", "3", "--nodes", "2", "--steps", "2", "--warmup", "1",
            "--results", str(results), "--sweep", "beside"]
    p = subprocess.run([sys.executable, str(ROOT / "tasks.py"), *argv], cwd=user, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(f.read_text()) for f in (results / "beside").glob("*.json") if f.name != "sweep.json"]
    assert sorted(r["config"]["task"] for r in records) == ["dpo", "sft"]
    assert all(r["status"] == "ok" for r in records), [(r["run_id"], r["status"], r.get("error")) for r in records]

    seen = [json.loads(f.read_text()) for f in dumps.glob("*.json")]
    ranks = [s for s in seen if s["main"] == "stackbench.trainer.__main__" and s["rank"] is not None]
    world = sum(r["config"]["nodes"] * r["config"]["gpus_per_node"] for r in records)
    assert len(ranks) >= world, f"{len(ranks)} rank processes reported their modules, {world} ranks ran"
    assert any("stackbench" in s["top"] for s in seen)
    bad = {f"{s['main']}: {sorted(set(ROOMS) & set(s['top']))}" for s in seen if set(ROOMS) & set(s["top"])}
    assert not bad, "processes that loaded a bare room name:\n  " + "\n  ".join(sorted(bad))
