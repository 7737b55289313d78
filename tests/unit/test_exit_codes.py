"""The exit-code table (docs/exit-codes.md), pinned: each command is run into each code it documents (the
ones that need real training or a Docker engine are pinned by the integration test named), and
the table lists no code the commands do not have."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from stackbench.core.host import free_port
from tests.conftest import ROOT

TASKS = [sys.executable, "-m", "tasks"]
PREFLIGHT = [sys.executable, "-m", "stackbench.bench.launchers.preflight", "--nnodes=1", "--nproc=1", "--deadline=10"]

# (command, code) -> how to get it here, in seconds
PROBES = {
    ("./sb bench", 0): [*TASKS, "bench", "--dry-run"],
    ("./sb bench", 2): [*TASKS, "bench", "--dry-run", "--no-such-flag"],
    ("./sb envcheck", 2): [*TASKS, "envcheck", "--nodes", "two"],
    ("./sb build", 2): [*TASKS, "build", "--profile", "no-such-profile", "--render-only"],
    ("./sb report", 0): [*TASKS, "report", "--results", "results/reference", "--out", "{tmp}/report"],
    ("./sb report", 2): [*TASKS, "report", "--results", "{tmp}/no-such-dir"],
    ("./sb plan", 0): [*TASKS, "plan", "--model", "qwen3-8b"],
    ("./sb plan", 2): [*TASKS, "plan", "--gpus-per-node", "eight"],
    ("./sb gpu-reference", 2): [*TASKS, "gpu-reference", "--wheels", "{tmp}/no-such-wheels", "--out", "{tmp}/ref"],
    ("python -m stackbench.trainer", 2): [sys.executable, "-m", "stackbench.trainer", "--zero-stage", "9"],
    ("python -m stackbench.bench.launchers.preflight", 0): [*PREFLIGHT, "--master=127.0.0.1:{port}"],
    ("python -m stackbench.bench.launchers.preflight", 2): [*PREFLIGHT, "--master=127.0.0.1:{port}", "--no-such-flag"],
    ("python -m stackbench.bench.launchers.preflight", 4): [*PREFLIGHT, "--master=127.0.0.1:{port}",
                                                            "--env=GLOO_SOCKET_IFNAME=nosuchif0"],
}
# codes that need a real run, a machine state or an engine: where they are pinned
ELSEWHERE = {
    ("./sb bench", 1): "tests/integration/test_launchers.py::test_a_failed_preflight_inside_a_slurm_job_...",
    ("./sb envcheck", 0): "tests/integration/test_build.py::test_envcheck_and_a_one_rank_bench_... (in the image)",
    ("./sb envcheck", 1): "tests/unit/test_envcheck.py (--strict on warnings, through envcheck.runner.emit)",
    ("./sb build", 0): "tests/integration/test_build.py::built",
    ("./sb build", 1): "tests/integration/test_build.py::test_a_tampered_lock_fails_the_build (BuildFailed.exit_code)",
    ("./sb gpu-reference", 0): "tests/integration/test_gpu_reference.py (the CPU rehearsal, every step ok)",
    ("./sb gpu-reference", 1): "tests/unit/test_gpu_reference_steps.py (a failed and a timed-out step)",
    ("python -m stackbench.trainer", 0): "tests/integration/test_trainer_deepspeed.py",
    ("python -m stackbench.trainer", 1): "tests/unit/test_exit_codes.py::test_the_trainer_keeps_a_crash_as_1",
    ("python -m stackbench.trainer", 3): "tests/integration/test_trainer_deepspeed.py "
                                         "(the RLIMIT_AS out-of-memory run)",
}


def documented_table() -> dict[tuple[str, int], str]:
    text = (ROOT / "docs" / "exit-codes.md").read_text()
    section = text[text.index("## Exit codes"):]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| command"))
    codes = [int(c.strip()) for c in header.strip("|").split("|")[1:]]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        command = cells[0].strip("`")
        table.update({(command, code): cell for code, cell in zip(codes, cells[1:]) if cell})
    return table


def test_the_table_and_the_probes_cover_each_other():
    table = documented_table()
    assert set(table) == set(PROBES) | set(ELSEWHERE), set(table) ^ (set(PROBES) | set(ELSEWHERE))


@pytest.mark.parametrize("key", sorted(PROBES), ids=lambda k: f"{k[0]}->{k[1]}")
def test_each_command_exits_with_the_documented_code(key, tmp_path):
    command, code = key
    argv = [a.format(tmp=tmp_path, port=free_port()) for a in PROBES[key]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if "--env=GLOO_SOCKET_IFNAME=nosuchif0" in argv:  # the preflight's gloo told to use an interface that is not there
        argv.remove("--env=GLOO_SOCKET_IFNAME=nosuchif0")
        env["GLOO_SOCKET_IFNAME"] = "nosuchif0"
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert p.returncode == code, f"{command}: {p.returncode} != {code}\n{p.stdout[-1500:]}{p.stderr[-1500:]}"
    if code == 2:
        assert "Traceback" not in p.stderr and ("error" in p.stderr.lower() or "usage" in p.stderr.lower())


def test_the_trainer_keeps_a_crash_as_1(tmp_path):
    """Anything that is not a user mistake or out of memory keeps its traceback, exits 1 and, under
    torch elastic's @record, lands in the rank's error file with its rank and host (the launcher's
    record takes it from there: bench/launchers/outcomes.rank_errors)."""
    script = ("import sys, stackbench.trainer.__main__ as m, stackbench.trainer.run as r\n"
              "def boom(cfg, launch, given=None): raise RuntimeError('a bug')\n"
              "r.run = boom\n"
              "sys.argv = ['trainer', '--model', 'tiny']\n"
              "sys.exit(m.entry())")
    error_file = tmp_path / "ranks" / "attempt_0" / "1" / "error.json"
    error_file.parent.mkdir(parents=True)
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), RANK="3", TORCHELASTIC_ERROR_FILE=str(error_file)))
    assert p.returncode == 1 and "RuntimeError: a bug" in p.stderr, p.stderr[-2000:]
    assert re.search(r"Traceback", p.stderr)
    info = json.loads(error_file.read_text())["message"]
    assert info["message"] == "RuntimeError: a bug" and info["extraInfo"]["rank"] == "3"
    from stackbench.bench.launchers.outcomes import rank_errors

    (cause,) = rank_errors(tmp_path)
    assert cause["rank"] == 3 and cause["message"] == "RuntimeError: a bug" and "boom" in cause["where"]
