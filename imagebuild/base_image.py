"""A base image made here, for hosts that reach no container registry: Debian bookworm minbase
(debootstrap) with the Python and C++ compiler the CPU profile builds on, imported into the
engine (`docker import`). `invoke base-image`; the CUDA profiles use NVIDIA's images instead."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from core.errors import UserError

PACKAGES = "python3,python3-venv,python3-dev,ca-certificates,g++"


def make(tag: str = "local/bookworm:minbase", suite: str = "bookworm", mirror: str = "http://deb.debian.org/debian") -> dict:
    from imagebuild import engine

    client = engine.connect()
    try:
        return {"tag": tag, "id": client.images.get(tag).id, "cached": True}
    except engine.errors().ImageNotFound:
        pass
    if not shutil.which("debootstrap"):
        raise UserError("debootstrap is not installed", where="invoke base-image",
                        fix="apt-get install -y debootstrap (or pass --base an image from your registry)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sb-rootfs-") as rootfs:
        p = subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, rootfs, mirror],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise UserError(f"debootstrap failed: {p.stdout[-1500:]}{p.stderr[-1500:]}", where=mirror,
                            fix="check that the Debian mirror is reachable (or pass --base)")
        tarball = f"{rootfs}.tar"
        subprocess.run(["tar", "-C", rootfs, "--numeric-owner", "-cf", tarball, "."], check=True)
        repo, _, version = tag.partition(":")
        try:
            client.api.import_image(src=tarball, repository=repo, tag=version or "latest")
        finally:
            Path(tarball).unlink(missing_ok=True)
    return {"tag": tag, "id": client.images.get(tag).id, "cached": False, "seconds": round(time.monotonic() - t0, 1)}
