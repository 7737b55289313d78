"""The training stack's packages, defined once, and their versions read without importing them
(importing torch alone takes 1.5-3 s): package metadata, torch's own version.py and
TorchConfig.cmake.

Each package says where it shows: envcheck's versions table, a record's fingerprint, an image's
labels, and whether every node of a multi-node run must have the same version.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Package:
    dist: str                 # the distribution name (pip's)
    role: str                 # what it is for, in a few words
    checked: bool = True      # a row of envcheck's versions table
    recorded: bool = True     # in every record's environment.packages
    labelled: bool = True     # an image label stackbench.version.<dist>
    same_on_every_node: bool = False  # envcheck --nodes fails when nodes differ


PACKAGES = (
    Package("torch", "PyTorch", same_on_every_node=True),
    Package("deepspeed", "ZeRO", same_on_every_node=True),
    Package("transformers", "models", same_on_every_node=True),
    Package("accelerate", "HF launcher"),
    Package("flash-attn", "attention kernels", same_on_every_node=True),
    Package("trl", "DPO trainer"),
    Package("peft", "adapters"),
    Package("ms-swift", "ms-swift CLI", labelled=False),
    Package("megatron-core", "Megatron"),
    Package("transformer-engine", "FP8 / fused layers", labelled=False),
    Package("transformer-engine-cu12", "TransformerEngine's CUDA 12 build", checked=False, recorded=False),
    Package("apex", "fused optimizers", recorded=False, labelled=False),
    Package("nvidia-ml-py", "NVML bindings", labelled=False),
    Package("nvidia-cudnn-cu12", "cuDNN (torch's wheel)", checked=False, recorded=False),
    Package("nvidia-nccl-cu12", "NCCL (torch's wheel)", checked=False, recorded=False),
    Package("triton", "kernel compiler", checked=False, recorded=False),
)
NVIDIA_WHEELS = {"nccl": "nvidia-nccl-cu12", "cudnn": "nvidia-cudnn-cu12"}


def dists(flag: str) -> tuple[str, ...]:
    """The distributions with `flag` set: dists("labelled"), dists("same_on_every_node") ..."""
    return tuple(p.dist for p in PACKAGES if getattr(p, flag))


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def package_versions(flag: str = "recorded") -> dict[str, str | None]:
    return {dist: version(dist) for dist in dists(flag)}


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def torch_build() -> dict:
    """torch's version, CUDA build and C++ ABI from its files (no import)."""
    root = package_dir("torch")
    if root is None:
        return {}
    out: dict = {"version": version("torch")}
    text = (root / "version.py").read_text() if (root / "version.py").exists() else ""
    m = re.search(r"^cuda\s*(?::\s*\S+)?\s*=\s*'([^']*)'", text, re.M)
    out["cuda"] = m.group(1) if m else None
    out["cxx11_abi"] = None
    cmake = root / "share/cmake/Torch/TorchConfig.cmake"
    m = re.search(r"_GLIBCXX_USE_CXX11_ABI=(\d)", cmake.read_text()) if cmake.exists() else None
    if m:  # torch <= 2.6 wheels say it here (pre-C++11 ABI: flash-attn wheels tagged cxx11abiFALSE)
        out["cxx11_abi"] = bool(int(m.group(1)))
    else:  # torch >= 2.7 is always built with the C++11 ABI and says so in Python
        init = (root / "__init__.py").read_text()
        m = re.search(r"def compiled_with_cxx11_abi\(\).*?return (True|False)\b", init, re.S)
        out["cxx11_abi"] = (m.group(1) == "True") if m else None
    return out
