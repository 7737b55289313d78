"""A base image made here, for hosts that reach no container registry: Debian minbase
(debootstrap) with the Python and C++ compiler a profile builds on, imported into the engine
(`docker import`). A profile names its base and, in [bootstrap], how `invoke base-image` makes it:
cpu-small on bookworm, cuda12.4-debian on trixie with contrib and non-free (where Debian keeps
NVIDIA's CUDA toolkit)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from stackbench.core.errors import UserError

MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Bootstrap:
    """How a local base is made: debootstrap <suite> with these components and packages."""
    suite: str = "bookworm"
    components: tuple[str, ...] = ("main",)
    packages: tuple[str, ...] = ("python3", "python3-venv", "python3-dev", "ca-certificates", "g++")
    mirror: str = MIRROR

    def describe(self) -> str:
        return f"debootstrap {self.suite} ({','.join(self.components)}) from {self.mirror}"


def exists(tag: str) -> bool:
    from stackbench.imagebuild import engine

    try:
        engine.connect().images.get(tag)
        return True
    except engine.errors().ImageNotFound:
        return False


def make(tag: str, how: Bootstrap = Bootstrap()) -> dict:
    from stackbench.imagebuild import engine

    client = engine.connect()
    if exists(tag):
        return {"tag": tag, "id": client.images.get(tag).id, "cached": True, "made_by": how.describe()}
    if not shutil.which("debootstrap"):
        raise UserError("debootstrap is not installed", where="invoke base-image",
                        fix="apt-get install -y debootstrap (or pass --base an image from your registry)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sb-rootfs-") as rootfs:
        argv = ["debootstrap", "--variant=minbase", f"--components={','.join(how.components)}",
                f"--include={','.join(how.packages)}", how.suite, rootfs, how.mirror]
        p = subprocess.run(argv, capture_output=True, text=True)
        if p.returncode != 0:
            raise UserError(f"debootstrap failed: {p.stdout[-1500:]}{p.stderr[-1500:]}", where=how.mirror,
                            fix="check that the Debian mirror is reachable (or pass --base)")
        tarball = f"{rootfs}.tar"
        subprocess.run(["tar", "-C", rootfs, "--numeric-owner", "-cf", tarball, "."], check=True)
        repo, _, version = tag.partition(":")
        try:
            client.api.import_image(src=tarball, repository=repo, tag=version or "latest")
        finally:
            Path(tarball).unlink(missing_ok=True)
    return {"tag": tag, "id": client.images.get(tag).id, "cached": False, "made_by": how.describe(),
            "seconds": round(time.monotonic() - t0, 1)}
