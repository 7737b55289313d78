"""GPUs through NVML (nvidia-ml-py): driver, per-device memory, ECC, persistence, clocks, power,
compute capability, NVLink; and whether torch's compiled arch list covers each device (the
only GPU check that imports torch). No NVML or no GPU: skips with the reason."""

from __future__ import annotations

from stackbench.envcheck.check import Check, area

ok, warn, fail, skip = area("gpu")


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def nvml():
    """The initialised pynvml module, or the reason there is none."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound / DriverNotLoaded / NoPermission
        return None, f"NVML unavailable: {e} (no NVIDIA driver on this host)"
    return pynvml, ""


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - a field this device or driver does not report
        return None


def check_gpus() -> list[Check]:
    pynvml, why = nvml()
    if pynvml is None:
        return [skip("devices", "", why)]
    try:
        return _devices(pynvml)
    finally:
        pynvml.nvmlShutdown()


def _devices(pynvml) -> list[Check]:
    count = pynvml.nvmlDeviceGetCount()
    driver = _text(pynvml.nvmlSystemGetDriverVersion())
    cuda = _try(pynvml.nvmlSystemGetCudaDriverVersion)
    cuda_text = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else "?"
    out = [ok("driver", driver, f"supports CUDA up to {cuda_text}; {count} device(s)")]
    if count == 0:
        return out + [warn("devices", 0, "NVML sees no GPU", "check CUDA_VISIBLE_DEVICES and the container's --gpus")]
    torch_cuda = _torch_cuda()
    if cuda and torch_cuda and tuple(map(int, torch_cuda.split(".")[:2])) > (cuda // 1000, cuda % 1000 // 10):
        out.append(fail("driver vs torch CUDA", f"{cuda_text} < {torch_cuda}",
                        f"torch is built for CUDA {torch_cuda}, the driver supports up to {cuda_text}",
                        "upgrade the driver, or use a torch built for an older CUDA"))
    archs = _torch_archs()
    for i in range(count):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        name = _text(pynvml.nvmlDeviceGetName(h))
        mem = pynvml.nvmlDeviceGetMemoryInfo(h).total / 1024**3
        major, minor = _try(pynvml.nvmlDeviceGetCudaComputeCapability, h) or (0, 0)
        ecc = _try(pynvml.nvmlDeviceGetEccMode, h)
        persistence = _try(pynvml.nvmlDeviceGetPersistenceMode, h)
        sm = _try(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM)
        power = _try(pynvml.nvmlDeviceGetPowerManagementLimit, h)
        detail = (f"{mem:.0f} GiB, sm_{major}{minor}, ECC {'on' if ecc and ecc[0] else 'off' if ecc else '?'}, "
                  f"persistence {'on' if persistence else 'off'}, max SM clock {sm or '?'} MHz, "
                  f"power limit {power / 1000 if power else '?'} W")
        out.append(ok(f"gpu{i}", name, detail))
        if not persistence:
            out.append(warn(f"gpu{i} persistence", "off", "the driver re-initialises the GPU for each process",
                            "nvidia-smi -pm 1 (as root)"))
        if archs is not None and f"sm_{major}{minor}" not in archs and f"compute_{major}{minor}" not in archs:
            out.append(fail(f"gpu{i} arch", f"sm_{major}{minor}", f"torch was compiled for {' '.join(archs)}",
                            "install a torch build that includes this architecture"))
    out += _nvlink(pynvml, count)
    return out


def _nvlink(pynvml, count: int) -> list[Check]:
    links = 0
    for i in range(count):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
            if _try(pynvml.nvmlDeviceGetNvLinkState, h, link) == 1:
                links += 1
    if count < 2:
        return [skip("nvlink", "", "one GPU: no peer links to check")]
    if links == 0:
        return [warn("nvlink", 0, "no active NVLink: GPUs talk over PCIe", "expected on PCIe cards; on SXM "
                     "nodes check nvidia-smi topo -m and the fabric manager")]
    return [ok("nvlink", links, f"active links over {count} GPUs")]


def _torch_cuda() -> str | None:
    from stackbench.core.stack import torch_build

    return torch_build().get("cuda")


def _torch_archs() -> list[str] | None:
    try:
        import torch

        return torch.cuda.get_arch_list() or None
    except Exception:  # noqa: BLE001 - torch absent or broken: the versions checks say so
        return None


CHECKS = [check_gpus]
