import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))


def pytest_sessionstart(session):
    """Byte-compile the checkout once, as pip does for what it installs: hundreds of processes (every
    rank, every `invoke bench`) import stackbench from here, and where PYTHONDONTWRITEBYTECODE is set
    (CI's machines) none keeps what it compiled, so each compiled the same sources again (a third of
    a second of CPU each). Reading bytecode is allowed there; a source edited later is recompiled by
    Python as usual (each file is checked against its source)."""
    import compileall
    import re

    compileall.compile_dir(ROOT, quiet=2, rx=re.compile(re.escape(str(ROOT)) + r"/(\.|results/|docker/)"))


@pytest.fixture(scope="session")
def tokenizer():
    from stackbench.trainer import models

    return models.load_tokenizer(models.resolve("tiny"))


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# the short native reference runs: SFT and DPO at ZeRO 2 and 3 on 2 ranks, 3 steps after 1 warm-up,
# the dtype left to the host (fp32 on a CPU); what test_backends compares hf and ms-swift with and
# test_bf16_cpu compares bf16 with
SHORT_STEPS, SHORT_WARMUP = 3, 1


@pytest.fixture(scope="session")
def short_native(tmp_path_factory):
    """The short native reference runs, launched once a session for every module that reads them:
    {(task, zero_stage): record} and their sweep folder (named `s`, as the sweeps that copy them in)."""
    from stackbench.bench.launchers import LaunchOptions
    from stackbench.bench.launchers.local import LocalLauncher
    from stackbench.bench.matrix import expand
    from stackbench.bench.sweep import run_sweep

    specs, invalid = expand(task=["sft", "dpo"], zero_stage=[2, 3], steps=SHORT_STEPS, warmup_steps=SHORT_WARMUP)
    assert not invalid and {s.backend for s in specs} == {"native"} and len(specs) == 4
    sweep_dir = tmp_path_factory.mktemp("native-short") / "s"
    records = run_sweep(specs, LocalLauncher(LaunchOptions(deadline_s=400, preflight=False)), sweep_dir, quiet=True)
    return {(r["config"]["task"], r["config"]["zero_stage"]): r for r in records}, sweep_dir


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real 2-node Slurm cluster on this machine (tests/support/slurm_cluster.py), always torn down.
    Its daemons run under strace for what they execute (test_secrets reads it): seccomp-bpf stops only
    execve, where attaching to them later stops every system call of every rank they start."""
    from tests.support.slurm_cluster import SlurmCluster

    with SlurmCluster(nodes=2, root=tmp_path_factory.mktemp("slurm"), trace_execs=True) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def swift_python():
    """ms-swift's own environment (`invoke swift-env` -> .venv-swift), made once: minutes on a fresh
    machine (pip), seconds when it is up to date. --backend swift runs its ranks with this python."""
    import subprocess

    from stackbench.bench.launchers import backends

    subprocess.run([sys.executable, "-m", "invoke", "swift-env"], cwd=ROOT, check=True, timeout=1200)
    python = backends.python_for("swift")
    assert backends.swift_version(python), f"ms-swift did not install for {python}"
    return python


@pytest.fixture(scope="session")
def pinned_python(request):
    """The CUDA image's Python pins on this machine (`invoke pinned-env` -> .venv-pinned, CPU torch),
    made once; every pin of the profile checked installed, the versions printed in the test output."""
    import json
    import subprocess

    from stackbench.imagebuild import pinned

    subprocess.run([sys.executable, "-m", "invoke", "pinned-env"], cwd=ROOT, check=True, timeout=1200)
    python = str(pinned.VENV / "bin" / "python")
    kept, left = pinned.requirements("cuda12.4")
    wanted = dict(r.split("==", 1) for r in kept if "==" in r)
    script = ("import json, sys; from importlib.metadata import version; "
              "print(json.dumps({d: version(d) for d in sys.argv[1:]}))")
    have = json.loads(subprocess.run([python, "-c", script, "torch", *wanted], capture_output=True, text=True,
                                     check=True).stdout)
    assert {d: have[d] for d in wanted} == wanted, f"{pinned.VENV} does not hold the profile's pins"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # into the test output, not the captured output
        print("\npinned stack (docker/profiles/cuda12.4.toml, CPU torch): "
              + ", ".join(f"{d} {v}" for d, v in have.items())
              + "; left out: " + ", ".join(f"{r} ({why})" for r, why in left.items()), flush=True)
    return python
