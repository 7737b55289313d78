"""The compiler side: nvcc against torch's CUDA (DeepSpeed and flash-attn compile with nvcc
against torch's headers: a major mismatch fails, a minor one warns), CUDA_HOME, gcc, ninja."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from stackbench.core.stack import torch_build
from stackbench.envcheck.check import Check, area

ok, warn, fail, skip = area("toolchain")


def _version_of(argv: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, out)
    return m.group(1) if m else None


def cuda_home() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return str(Path(nvcc).resolve().parent.parent)
    return "/usr/local/cuda" if Path("/usr/local/cuda/bin/nvcc").exists() else None


def check_nvcc() -> list[Check]:
    torch_cuda = torch_build().get("cuda")
    home = cuda_home()
    nvcc = str(Path(home) / "bin/nvcc") if home and (Path(home) / "bin/nvcc").exists() else shutil.which("nvcc")
    if not nvcc:
        if torch_cuda:
            return [warn("nvcc", "", f"no nvcc, torch is built for CUDA {torch_cuda}: DeepSpeed ops and flash-attn "
                         "cannot be compiled here", "install the CUDA toolkit matching torch, or use prebuilt ops")]
        return [skip("nvcc", "", "no nvcc and a CPU-only torch: nothing to compile against CUDA")]
    found = _version_of([nvcc, "--version"], r"release (\d+\.\d+)")
    out = [ok("CUDA_HOME", home or "", "where nvcc lives")] if home else []
    if not torch_cuda:
        return out + [ok("nvcc", found, "torch is a CPU build: nvcc is not used by it")]
    if found is None:
        return out + [warn("nvcc", "", f"{nvcc} --version gave no release", "check the CUDA toolkit install")]
    (nm, nn), (tm, tn) = (tuple(map(int, v.split(".")[:2])) for v in (found, torch_cuda))
    if nm != tm:
        return out + [fail("nvcc vs torch CUDA", f"{found} vs {torch_cuda}", "major versions differ: extensions "
                           "compiled here will not load", f"install CUDA toolkit {torch_cuda} and set CUDA_HOME")]
    if nn != tn:
        return out + [warn("nvcc vs torch CUDA", f"{found} vs {torch_cuda}", "minor versions differ (usually works)",
                           f"prefer CUDA toolkit {torch_cuda}")]
    return out + [ok("nvcc vs torch CUDA", found, "same as torch's CUDA")]


def check_compilers() -> list[Check]:
    out = []
    gcc = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if gcc:
        out.append(ok("c++ compiler", _version_of([gcc, "--version"], r"(\d+\.\d+\.\d+)"), gcc))
    else:
        out.append(warn("c++ compiler", "", "no C++ compiler: DeepSpeed cannot compile its ops on first use",
                        "apt-get install g++ (or use an image with prebuilt ops)"))
    ninja = shutil.which("ninja")
    if ninja:
        out.append(ok("ninja", _version_of([ninja, "--version"], r"(\S+)"), ninja))
    else:
        try:
            import ninja as ninja_py  # the pip wheel torch's cpp_extension also finds

            out.append(ok("ninja", getattr(ninja_py, "__version__", "pip"), "from the ninja wheel"))
        except ImportError:
            out.append(warn("ninja", "", "no ninja: torch extensions build slowly or not at all", "pip install ninja"))
    return out


CHECKS = [check_nvcc, check_compilers]
