"""What a process runs on, in a form that compares across ranks and hosts.

Cheap: versions come from package metadata (no imports of heavy packages), devices from torch
when it is already imported by the caller.
"""

from __future__ import annotations

import os
import platform
import socket
import sys

from stackbench.core.stack import NVIDIA_WHEELS, package_versions, torch_build, version


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices() -> dict:
    """Accelerators visible to this process (torch must be importable)."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        props = torch.cuda.get_device_properties(0)
        return {"type": "cuda", "names": names, "memory_gib": props.total_memory / 1024**3,
                "torch_cuda": torch.version.cuda, "nccl": ".".join(map(str, torch.cuda.nccl.version())),
                "driver": _nvml_driver()}
    return {"type": "cpu", "names": [cpu_model()], "memory_gib": None, "cpus": os.cpu_count()}


def _nvml_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else v
    except Exception:  # NVML absent: the driver is unknown, not an error here
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - not initialised
            pass


def fingerprint(with_devices: bool = True) -> dict:
    """This process's host, Python, packages, devices, and the image it claims to be.
    with_devices=False reads no torch (envcheck's one-second budget): the driver from NVML only."""
    return {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "torch_cuda": torch_build().get("cuda"),
        "nccl": version(NVIDIA_WHEELS["nccl"]),
        "devices": devices() if with_devices else {"driver": _nvml_driver()},
        # set by images built by `invoke build` (labels copied into the environment)
        "image": os.environ.get("STACKBENCH_IMAGE"),
        "lock_hash": os.environ.get("STACKBENCH_LOCK_HASH"),
    }
