"""What `pip install stackbench` puts in site-packages: one top-level name, `stackbench` (and its
dist-info), holding every module and data file of the repository's rooms (pyproject.toml maps
bench/, core/, ... under it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

ROOMS = ("bench", "core", "envcheck", "imagebuild", "report", "trainer")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools stages into <checkout>/build/ and never empties it: a module moved away would
    # still be packed from there (the folder is git-ignored; made here, removed here)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    # the venv's setuptools, no index: the build the image and ./sb make, without a download
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert p.returncode == 0, p.stderr[-3000:]
    return zipfile.ZipFile(next(out.glob("stackbench-*.whl")))


def test_the_wheel_installs_one_top_level_name(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"stackbench", "stackbench-0.1.0.dist-info"}, tops


def test_every_module_and_data_file_of_the_rooms_is_in_the_wheel(wheel):
    names = set(wheel.namelist())
    tracked = subprocess.run(["git", "ls-files", *ROOMS], cwd=ROOT, capture_output=True, text=True, check=True)
    want = {f"stackbench/{path}" for path in tracked.stdout.split()} | {"stackbench/__init__.py"}
    assert not want - names, f"left out of the wheel (add the package to pyproject.toml): {sorted(want - names)[:10]}"
