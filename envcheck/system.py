"""The host: /dev/shm (NCCL and DataLoader workers live there), locked-memory and open-file
limits, InfiniBand devices and nvidia_peermem (GPUDirect RDMA), free disk where models and
outputs go, CPUs and memory."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

from stackbench.core.host import GIB, host_memory_gib
from stackbench.envcheck.check import Check, area

ok, warn, fail, skip = area("system")
SHM_MIN_GIB = 1.0   # NCCL's shared-memory transport and DataLoader workers; docker's default is 64 MiB
DISK_MIN_GIB = 50.0  # one 8B checkpoint with optimizer states is ~100 GiB; below this, warn


def check_shm(path: str = "/dev/shm") -> list[Check]:
    if not Path(path).exists():
        return [fail("shm", "", f"{path} does not exist", "mount a tmpfs there, or run the container with --ipc=host")]
    st = os.statvfs(path)
    size = st.f_blocks * st.f_frsize / GIB
    if size < SHM_MIN_GIB:
        return [warn("shm", f"{size:.2f} GiB", f"{path} is smaller than {SHM_MIN_GIB:.0f} GiB: NCCL and DataLoader "
                     "workers fail with 'No space left on device' or bus errors",
                     "docker run --shm-size=16g (or --ipc=host); in Kubernetes mount an emptyDir of medium Memory")]
    return [ok("shm", f"{size:.1f} GiB", path)]


def check_limits() -> list[Check]:
    out = []
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        out.append(ok("memlock", "unlimited", "ulimit -l"))
    else:
        ib = Path("/dev/infiniband").exists()
        make = warn if ib else ok
        out.append(make("memlock", f"{soft // 1024} KiB", "RDMA needs to pin memory: low limits break NCCL over IB"
                        if ib else "no InfiniBand here, so pinned memory limits matter little",
                        "ulimit -l unlimited (docker: --ulimit memlock=-1)" if ib else ""))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 65536:
        out.append(warn("open files", soft, "many ranks, data workers and NCCL sockets need descriptors",
                        "ulimit -n 1048576 (docker: --ulimit nofile=1048576)"))
    else:
        out.append(ok("open files", soft, "ulimit -n"))
    return out


def check_infiniband() -> list[Check]:
    ib = Path("/sys/class/infiniband")
    if not ib.exists() or not any(ib.iterdir()):
        return [skip("infiniband", "", "no InfiniBand devices (multi-node traffic goes over TCP sockets)")]
    devices = sorted(p.name for p in ib.iterdir())
    out = [ok("infiniband", ", ".join(devices), "/sys/class/infiniband")]
    if not Path("/dev/infiniband").exists():
        out.append(fail("/dev/infiniband", "", "HCAs exist but /dev/infiniband is absent (a container without them)",
                        "docker run --device=/dev/infiniband (or --privileged), or the k8s RDMA device plugin"))
    modules = Path("/proc/modules").read_text() if Path("/proc/modules").exists() else ""
    if "nvidia_peermem" in modules:
        out.append(ok("nvidia_peermem", "loaded", "GPUDirect RDMA"))
    else:
        out.append(warn("nvidia_peermem", "not loaded", "NCCL copies through host memory instead of GPUDirect RDMA",
                        "modprobe nvidia_peermem"))
    return out


def check_disk(paths: tuple[str, ...] = ()) -> list[Check]:
    out = []
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache/huggingface"))
    for label, path in (("disk (outputs)", paths[0] if paths else os.getcwd()), ("disk (HF cache)", hf_home)):
        p = Path(path)
        while not p.exists() and p != p.parent:
            p = p.parent
        free = shutil.disk_usage(p).free / GIB
        make = ok if free >= DISK_MIN_GIB else warn
        out.append(make(label, f"{free:.0f} GiB free", str(path),
                        "" if free >= DISK_MIN_GIB
                        else "checkpoints of an 8B model with optimizer states take ~100 GiB"))
    return out


def check_host() -> list[Check]:
    mem = host_memory_gib()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [ok("cpus", cpus, f"usable by this process (of {os.cpu_count()})"),
            ok("memory", f"{mem:.0f} GiB", "physical")]


CHECKS = [check_shm, check_limits, check_infiniband, check_disk, check_host]
