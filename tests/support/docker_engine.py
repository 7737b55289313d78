"""A real Docker engine for the tests: installed (Debian's docker.io) and started when there is
none, stopped afterwards if the tests started it. The base image is made here too (debootstrap,
no registry needed: ../shared/NOTES-MACHINE.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager


def _answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means no engine yet
        return False


@contextmanager
def engine(timeout: float = 60):
    if _answers():
        yield None
        return
    if not shutil.which("dockerd") or not shutil.which("debootstrap"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "-q", "docker.io", "debootstrap"], env=env,
                          capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "docker.io", "debootstrap"], env=env, check=True,
                           capture_output=True)
    log = open("/tmp/stackbench-dockerd.log", "w")
    proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.monotonic()
    while not _answers():
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            raise RuntimeError(f"dockerd did not start: {open('/tmp/stackbench-dockerd.log').read()[-2000:]}")
        time.sleep(0.3)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
