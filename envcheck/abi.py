"""Compiled extensions load, checked the way a run would meet them: DeepSpeed's prebuilt op
libraries are dlopened with RTLD_NOW after torch (so their libc10 / libtorch / libcudart needs are
met by torch's own libraries), which resolves every symbol at once. An "undefined symbol" (ops
built against another torch, or with another C++ ABI) fails here, before a launch, instead of at
the first optimizer step of a 64-GPU job. No GPU is needed: loading resolves symbols, it runs no
kernel."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from stackbench.core.stack import package_dir
from stackbench.envcheck.check import Check, area

ok, warn, fail, skip = area("abi")


def op_libraries() -> list[Path]:
    """The shared libraries DeepSpeed's install prebuilt (DS_BUILD_*=1), under deepspeed/ops."""
    root = package_dir("deepspeed")
    return sorted((root / "ops").rglob("*.so")) if root and (root / "ops").is_dir() else []


def _op_name(lib: Path) -> str:
    return lib.name.split(".", 1)[0]


def load_all(libs: list[Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """(names that loaded, [(name, loader error)]) after importing torch."""
    import torch  # noqa: F401 - its libraries satisfy the ops' DT_NEEDED entries

    loaded, failed = [], []
    for lib in libs:
        try:
            ctypes.CDLL(str(lib), mode=os.RTLD_NOW | os.RTLD_LOCAL)
            loaded.append(_op_name(lib))
        except OSError as e:
            failed.append((_op_name(lib), str(e).splitlines()[0].replace(str(lib.parent) + "/", "")))
    return loaded, failed


def check_op_libraries() -> list[Check]:
    libs = op_libraries()
    if not libs:
        return [skip("deepspeed op libraries", "", "no prebuilt op libraries (DS_BUILD_OPS=0): DeepSpeed compiles "
                     "each op on first use")]
    if package_dir("torch") is None:
        return [skip("deepspeed op libraries", "", "torch is not installed: nothing to load them against")]
    loaded, failed = load_all(libs)
    if failed:
        listed = "; ".join(f"{name}: {err}" for name, err in failed)
        undefined = any("undefined symbol" in err for _, err in failed)
        fix = ("an ABI mismatch: the ops were built against another torch (or C++ ABI); rebuild DeepSpeed against "
               "this torch (DS_BUILD_OPS=1 pip install --no-build-isolation deepspeed, or invoke build)" if undefined
               else "a library the op links is missing: install it (libaio for async_io) or rebuild DeepSpeed")
        return [fail("deepspeed op libraries", f"{len(failed)} of {len(libs)} fail to load", listed, fix)]
    return [ok("deepspeed op libraries", f"{len(loaded)} of {len(libs)} load", ", ".join(loaded))]


CHECKS = [check_op_libraries]
