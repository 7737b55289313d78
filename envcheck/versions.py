"""Versions of the stack (the packages of core/stack.py), read without importing it where possible
(importing torch alone takes 1.5-3 s): package metadata, torch's own files (core.stack.torch_build),
DeepSpeed's git_version_info_installed.py, the NVIDIA wheels torch loads (NCCL, cuDNN). Compiled extensions
(flash-attn) are imported for real: metadata says nothing about an undefined symbol."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from stackbench.core.stack import NVIDIA_WHEELS, PACKAGES, package_dir, torch_build, version
from stackbench.envcheck import compat
from stackbench.envcheck.check import Check, area
from stackbench.envcheck.drift import left_out

ok, warn, fail, skip = area("versions")

STACK = {p.dist: p.role for p in PACKAGES if p.checked}  # distribution -> what it is for (the table's detail)


def deepspeed_ops() -> dict | None:
    """DeepSpeed's build-time op table (what ds_report calls 'installed' / 'compatible')."""
    root = package_dir("deepspeed")
    if root is None or not (root / "git_version_info_installed.py").exists():
        return None
    values = {}
    for node in ast.parse((root / "git_version_info_installed.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return values


def jit_cached_ops() -> list[str]:
    """DeepSpeed ops already compiled on first use and cached (TORCH_EXTENSIONS_DIR)."""
    base = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache/torch_extensions"))
    return sorted({so.parent.name for so in base.glob("*/*/*.so")}) if base.exists() else []


def stack_versions() -> dict[str, str | None]:
    """What the compatibility rules compare: distributions plus torch's CUDA and cuDNN."""
    out = {dist: version(dist) for dist in STACK}
    tb = torch_build()
    out["cuda"] = tb.get("cuda")
    out["cudnn"] = version(NVIDIA_WHEELS["cudnn"])
    out["nccl"] = version(NVIDIA_WHEELS["nccl"])
    return out


def check_python() -> list[Check]:
    v = sys.version_info
    value = f"{v.major}.{v.minor}.{v.micro}"
    if v < (3, 10):
        return [fail("python", value, "stackbench needs 3.10+", "use Python 3.10-3.12")]
    return [ok("python", value, sys.executable)]


def check_packages() -> list[Check]:
    out = []
    for dist, what in STACK.items():
        v = version(dist)
        out.append(ok(dist, v, what) if v else skip(dist, "", f"not installed ({what})"))
    return out


def check_torch() -> list[Check]:
    tb = torch_build()
    if not tb:
        return [fail("torch build", "", "torch is not installed", "install the stack (invoke build, or ./sb)")]
    cuda = tb.get("cuda")
    abi = tb.get("cxx11_abi")
    detail = f"CUDA {cuda}" if cuda else "CPU-only build"
    detail += {True: ", C++11 ABI", False: ", pre-C++11 ABI", None: ", ABI unknown"}[abi]
    out = [ok("torch build", tb["version"], detail)]
    for key, dist in NVIDIA_WHEELS.items():
        v = version(dist)
        out.append(ok(key, v, f"from {dist}") if v else
                   skip(key, "", "no NVIDIA wheel (CPU build, or the system library is used)"))
    return out


def check_deepspeed() -> list[Check]:
    info = deepspeed_ops()
    if info is None:
        return [skip("deepspeed ops", "", "DeepSpeed is not installed")]
    installed = info.get("installed_ops", {})
    prebuilt = sorted(k for k, v in installed.items() if v)
    cached = jit_cached_ops()
    compatible = info.get("compatible_ops")
    detail = (f"prebuilt: {', '.join(prebuilt) or 'none (ops are compiled on first use)'}; "
              f"JIT-compiled and cached: {', '.join(cached) or 'none'}")
    if compatible:
        bad = sorted(k for k, v in compatible.items() if not v and k != "deepspeed_not_implemented")
        detail += f"; not compatible here (at install): {', '.join(bad) or 'none'}"
    torch_info = info.get("torch_info", {})
    out = [ok("deepspeed ops", info.get("version"), detail)]
    built_for = torch_info.get("version")
    current = ".".join((version("torch") or "").split(".")[:2])
    if prebuilt and built_for and built_for != "0.0" and built_for != current:
        out.append(fail("deepspeed ops torch", built_for, f"prebuilt ops were compiled against torch {built_for}, "
                        f"torch {current} is installed: loading them fails with 'undefined symbol'",
                        "reinstall deepspeed with DS_BUILD_OPS=1 against this torch (invoke build does)"))
    return out


def check_flash_attn() -> list[Check]:
    if version("flash-attn") is None:
        why = left_out().get("flash-attn")
        if why:
            return [warn("flash-attn import", "left out", f"this image was built without it ({why})",
                         "build without --no-flash-attn (with flash-attn's wheel in the wheelhouse) to have it")]
        return [skip("flash-attn import", "", "flash-attn is not installed (sdpa attention is used)")]
    try:  # its compiled module: this is where ABI mismatches show
        import flash_attn_2_cuda  # noqa: F401
    except ImportError as e:
        msg = str(e).splitlines()[0]
        fix = ("an ABI mismatch: flash-attn was built for another torch; reinstall the wheel built for this "
               "torch/CUDA/ABI (see compat rules)" if "undefined symbol" in msg else "reinstall flash-attn")
        return [fail("flash-attn import", version("flash-attn"), msg, fix,
                     "https://github.com/huggingface/open-r1/issues/684")]
    return [ok("flash-attn import", version("flash-attn"), "flash_attn_2_cuda loads")]


def check_compat() -> list[Check]:
    return compat.checks(stack_versions())


CHECKS = [check_python, check_packages, check_torch, check_deepspeed, check_flash_attn, check_compat]
