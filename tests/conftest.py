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
