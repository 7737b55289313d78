"""Environment variables that decide multi-node behaviour, checked against this machine: does
NCCL_SOCKET_IFNAME name an interface that exists, do the NCCL_IB_HCA devices exist, do
CUDA_VISIBLE_DEVICES and PYTORCH_CUDA_ALLOC_CONF parse, are HF offline settings and
TORCH_EXTENSIONS_DIR what the user thinks."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from stackbench.envcheck.check import Check, area

ok, warn, fail, skip = area("environment")


def interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def _names(value: str) -> tuple[bool, bool, list[str]]:
    """NCCL's list syntax: optional ^ (exclude) and = (exact) prefixes, comma separated, port suffixes."""
    exclude = value.startswith("^")
    value = value.lstrip("^")
    exact = value.startswith("=")
    return exclude, exact, [v.split(":")[0] for v in value.lstrip("=").split(",") if v]


def check_socket_ifname() -> list[Check]:
    value = os.environ.get("NCCL_SOCKET_IFNAME")
    have = interfaces()
    if not value:
        return [ok("NCCL_SOCKET_IFNAME", "unset", f"NCCL picks an interface itself (here: {', '.join(have)})")]
    exclude, exact, names = _names(value)
    if exclude:
        return [ok("NCCL_SOCKET_IFNAME", value, "excludes " + ", ".join(names))]
    matched = [n for n in names if any(i == n if exact else i.startswith(n) for i in have)]
    if not matched:
        return [fail("NCCL_SOCKET_IFNAME", value, f"no interface here matches; this host has {', '.join(have)}",
                     f"set NCCL_SOCKET_IFNAME to one of {', '.join(i for i in have if i != 'lo') or 'lo'} "
                     "(a prefix such as eth or ib also works), or unset it")]
    return [ok("NCCL_SOCKET_IFNAME", value, "matches " + ", ".join(i for i in have if any(
        i == n if exact else i.startswith(n) for n in matched)))]


def check_ib_hca() -> list[Check]:
    value = os.environ.get("NCCL_IB_HCA")
    if not value:
        return []
    exclude, exact, names = _names(value)
    have = (sorted(p.name for p in Path("/sys/class/infiniband").glob("*"))
            if Path("/sys/class/infiniband").exists() else [])
    if exclude:
        return [ok("NCCL_IB_HCA", value, "excludes " + ", ".join(names))]
    missing = [n for n in names if not any(h == n if exact else h.startswith(n) for h in have)]
    if missing:
        return [fail("NCCL_IB_HCA", value,
                     f"no such HCA: {', '.join(missing)}; this host has {', '.join(have) or 'none'}",
                     "list devices from ibv_devinfo / /sys/class/infiniband, or unset NCCL_IB_HCA")]
    return [ok("NCCL_IB_HCA", value, "devices exist")]


def check_nccl_settings() -> list[Check]:
    out = []
    for key in sorted(k for k in os.environ if k.startswith(("NCCL_", "TORCH_NCCL_"))):
        if key in ("NCCL_SOCKET_IFNAME", "NCCL_IB_HCA"):
            continue
        value = os.environ[key]
        if key == "NCCL_IB_DISABLE" and value == "1" and Path("/sys/class/infiniband").exists():
            out.append(warn(key, value, "InfiniBand exists but NCCL is told not to use it", "unset NCCL_IB_DISABLE"))
        elif key == "NCCL_DEBUG" and value.upper() in ("INFO", "TRACE"):
            out.append(warn(key, value, "verbose NCCL logging slows start-up and floods logs", "use WARN for runs"))
        else:
            out.append(ok(key, value, "set"))
    if "TORCH_NCCL_BLOCKING_WAIT" in os.environ and os.environ["TORCH_NCCL_BLOCKING_WAIT"] == "1":
        out.append(warn("TORCH_NCCL_BLOCKING_WAIT", "1", "blocking waits cost throughput",
                        "prefer TORCH_NCCL_ASYNC_ERROR_HANDLING=1 with a collective timeout"))
    return out


def check_visible_devices() -> list[Check]:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return [ok("CUDA_VISIBLE_DEVICES", "unset", "every GPU is visible")]
    if value.strip() in ("", "-1", "none", "NoDevFiles"):
        return [warn("CUDA_VISIBLE_DEVICES", repr(value), "no GPU is visible to this process",
                     "unset it, or list device indices / UUIDs")]
    return [ok("CUDA_VISIBLE_DEVICES", value, f"{len(value.split(','))} device(s) visible")]


def check_alloc_conf() -> list[Check]:
    value = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    if not value:
        return []
    known = {"expandable_segments", "max_split_size_mb", "garbage_collection_threshold", "roundup_power2_divisions",
             "backend", "pinned_use_cuda_host_register", "pinned_num_register_threads", "release_lock_on_cudamalloc"}
    bad = [kv for kv in value.split(",") if kv.split(":")[0].strip() not in known]
    if bad:
        return [fail("PYTORCH_CUDA_ALLOC_CONF", value, f"unknown option(s) {', '.join(bad)}: torch refuses to start "
                     "CUDA", "use key:value pairs such as expandable_segments:True")]
    return [ok("PYTORCH_CUDA_ALLOC_CONF", value, "parses")]


def check_hf_and_extensions() -> list[Check]:
    out = []
    offline = [k for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(k) == "1"]
    out.append(ok("HF offline", ", ".join(offline) if offline else "online",
                  "models must be in the cache or local directories" if offline else "downloads allowed"))
    ext = os.environ.get("TORCH_EXTENSIONS_DIR")
    if ext and not os.access(Path(ext).parent if not Path(ext).exists() else ext, os.W_OK):
        out.append(fail("TORCH_EXTENSIONS_DIR", ext, "not writable: DeepSpeed cannot cache its compiled ops",
                        "point it to a writable directory (one per environment: the cache is keyed by op name)"))
    else:
        out.append(ok("TORCH_EXTENSIONS_DIR", ext or "unset (~/.cache/torch_extensions)",
                      "one per environment: the cache is keyed by op name only"))
    return out


CHECKS = [check_socket_ifname, check_ib_hca, check_nccl_settings, check_visible_devices, check_alloc_conf,
          check_hf_and_extensions]
