"""This host: units, a free TCP port, physical memory, whether an NVIDIA driver is present."""

from __future__ import annotations

import os
import socket
from pathlib import Path

GIB = 1024**3  # memory is reported in GiB (1024³ bytes) everywhere


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def host_memory_gib() -> float:
    """Physical RAM of this host (the fit check's capacity on CPU, envcheck's memory row)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def host_gib_per_rank(ranks_per_node: int) -> float:
    """Physical RAM of this host shared by the ranks of one node."""
    return host_memory_gib() / max(1, ranks_per_node)


def has_nvidia_driver() -> bool:
    """Cheap (no torch, no NVML): the device node the NVIDIA driver creates."""
    return Path("/dev/nvidiactl").exists()
