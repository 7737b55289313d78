"""envcheck --nodes through the bench launchers: every node runs the checks, fingerprints are
compared, and the preflight's all-reduce reports bandwidth; on the local launcher and on the
real Slurm test cluster (a distinct host per node)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.deepspeed


def _envcheck_nodes(tmp_path, *args, env=None):
    out = tmp_path / "report.json"
    p = subprocess.run([sys.executable, "-m", "invoke", "envcheck", "--nodes", "2", "--json", "--out", str(out),
                        "--work-dir", str(tmp_path / "work"), *args],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, **(env or {})),
                       timeout=600)
    return p, (json.loads(out.read_text()) if out.exists() else None)


def test_envcheck_across_two_local_nodes(tmp_path):
    p, report = _envcheck_nodes(tmp_path, "--gpus-per-node", "2")
    assert report, p.stderr[-2000:]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["same torch"]["status"] == "ok" and checks["same deepspeed"]["status"] == "ok"
    assert checks["all-reduce"]["status"] == "ok" and "over 4 ranks" in checks["all-reduce"]["detail"]
    assert set(report["nodes"]) == {"0", "1"}
    assert p.returncode == report["exit_code"]


@pytest.mark.slurm
def test_envcheck_across_the_slurm_cluster_compares_two_hosts(tmp_path, slurm_cluster):
    p, report = _envcheck_nodes(tmp_path, "--launcher", "slurm", env=slurm_cluster.env)
    assert report, p.stdout[-2000:] + p.stderr[-2000:]
    hosts = sorted(r["host"] for r in report["nodes"].values())
    assert hosts == ["sbnode0", "sbnode1"]  # each node checked itself
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["same python"]["status"] == "ok" and checks["same torch"]["status"] == "ok"
    assert checks["all-reduce"]["status"] == "ok" and "sbnode0, sbnode1" in checks["all-reduce"]["detail"]
