"""Measurement, shared by every backend: per-step timing with device synchronisation, memory
peaks, the heartbeat, start-up phases (one `Meter` per run), and the reduction over ranks into
the record's metrics.

Rules (README, "How it measures"): warm-up steps are run and excluded; each optimizer step is timed on its own
(CUDA events on GPU, a monotonic clock after a synchronise elsewhere); we report the median and
the spread, never a cumulative average. Memory is the peak of the whole run (the optimizer
states appear at the first step, inside warm-up) and is reduced across ranks by MAX.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from typing import Any, Callable

from stackbench.core import formulas
from stackbench.core.host import GIB
from stackbench.trainer.comms import CommsLog


class Phases:
    """Wall-clock marks of a rank's start-up, as seconds since the launcher started the processes
    (STACKBENCH_LAUNCHED_AT, epoch seconds; without it, since this interpreter started): where
    the time between "launch" and "first step" goes (imports, input, rendezvous, engines)."""

    def __init__(self, origin: float, started: float):
        self.origin = origin
        self.marks: dict[str, float] = {"python_started": started}

    @classmethod
    def from_env(cls) -> "Phases":
        from stackbench.trainer import STARTED_AT

        launched = os.environ.get("STACKBENCH_LAUNCHED_AT")
        return cls(float(launched) if launched else STARTED_AT, STARTED_AT)

    def mark(self, name: str) -> None:
        self.marks[name] = time.time()

    def since_launch(self) -> dict[str, float]:
        return {k: round(v - self.origin, 3) for k, v in self.marks.items()}


class StepTimer:
    """Times each optimizer step. On CUDA the events are read after the run, so timing adds no
    synchronisation inside the step beyond the one that closes it."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self._torch = torch
        self._events: list[tuple[Any, Any]] = []
        self._wall: list[float] = []
        self._t0 = 0.0

    def start(self) -> None:
        if self.cuda:
            ev = self._torch.cuda.Event(enable_timing=True)
            ev.record()
            self._events.append((ev, None))
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            ev = self._torch.cuda.Event(enable_timing=True)
            ev.record()
            ev.synchronize()
            self._events[-1] = (self._events[-1][0], ev)
        else:
            self._wall.append(time.perf_counter() - self._t0)

    def seconds(self) -> list[float]:
        if self.cuda:
            return [a.elapsed_time(b) / 1000 for a, b in self._events]
        return list(self._wall)


def spread(values: list[float]) -> dict[str, float | None]:
    """median, p10, p90 (linear interpolation) and coefficient of variation."""
    if not values:
        return {"median": None, "p10": None, "p90": None, "cv": None}
    q = statistics.quantiles(values, n=10, method="inclusive") if len(values) > 1 else [values[0]] * 9
    mean = statistics.fmean(values)
    cv = statistics.pstdev(values) / mean if mean and len(values) > 1 else 0.0
    return {"median": statistics.median(values), "p10": q[0], "p90": q[8], "cv": cv}


def host_rss_peak_gib() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GIB if sys.platform == "darwin" else peak * 1024 / GIB


def host_rss_now_gib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / GIB


class MemoryTracker:
    """Device allocator peaks and retries (CUDA), NVML per-process peak, host RSS peak.

    torch on CPU returns 0 from torch.cuda.max_memory_allocated() without complaint: that is wrong,
    not absent, so device figures are None unless the device is CUDA. NVML is sampled at every
    step end (a per-process reading; None where NVML or the process entry is missing)."""

    def __init__(self, device, host_baseline_gib: float | None = None):
        import torch

        self.device, self._torch = device, torch
        # RSS before the model was built (interpreter, torch, DeepSpeed): what the run itself adds is
        # the peak minus this, the figure the memory model predicts on CPU
        self.host_baseline_gib = host_baseline_gib
        self.nvml_peak: float | None = None
        self._nvml = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(self._physical_index(device.index or 0)))
            except Exception:  # no NVML library, no permission: leave the NVML figure empty
                self._nvml = None

    @staticmethod
    def _physical_index(index: int) -> int:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v for v in visible.split(",") if v.strip()]
        return int(ids[index]) if index < len(ids) and ids[index].strip().isdigit() else index

    def sample(self) -> None:
        if not self._nvml:
            return
        pynvml, handle = self._nvml
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except pynvml.NVMLError:
            return
        used = [p.usedGpuMemory for p in procs if p.pid == os.getpid() and p.usedGpuMemory]
        if used:
            self.nvml_peak = max(self.nvml_peak or 0.0, used[0] / GIB)

    def summary(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {"max_allocated_gib": None, "max_reserved_gib": None,
                                               "nvml_peak_gib": self.nvml_peak, "alloc_retries": None,
                                               "host_rss_peak_gib": host_rss_peak_gib(),
                                               "host_rss_baseline_gib": self.host_baseline_gib}
        if self.host_baseline_gib is not None:
            out["host_training_gib"] = out["host_rss_peak_gib"] - self.host_baseline_gib
        if self.device.type == "cuda":
            stats = self._torch.cuda.memory_stats(self.device)
            out.update(max_allocated_gib=stats.get("allocated_bytes.all.peak", 0) / GIB,
                       max_reserved_gib=stats.get("reserved_bytes.all.peak", 0) / GIB,
                       alloc_retries=stats.get("num_alloc_retries", 0))
        return out


def max_over_ranks(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise MAX over ranks (None where no rank has a value). Memory is never summed."""
    keys = per_rank[0].keys()
    out = {}
    for k in keys:
        vals = [r[k] for r in per_rank if r.get(k) is not None]
        out[k] = max(vals) if vals else None
    return out


def heartbeat(step: int, total: int) -> None:
    """Rank 0 touches the file the launcher's watchdog follows."""
    path = os.environ.get("STACKBENCH_HEARTBEAT")
    if path and os.environ.get("RANK", "0") == "0":
        with open(path, "w") as f:
            f.write(f"{step + 1}/{total} {time.time():.3f}\n")


class Meter:
    """What every backend calls around each optimizer step: the step timer, memory sampling, the
    heartbeat and the start-up phases, and each step's figures (loss, real / padded tokens and
    sequences fed; DPO adds reward_accuracy and reward_margin)."""

    def __init__(self, device, phases: Phases, total_steps: int, host_baseline_gib: float | None = None,
                 comms: CommsLog | None = None):
        self.timer, self.memory = StepTimer(device), MemoryTracker(device, host_baseline_gib)
        self.phases, self.total_steps = phases, total_steps
        self.comms = comms  # DeepSpeed's comms logger over the measured steps, when the config enables it
        self.steps: list[dict[str, Any]] = []

    def engines_ready(self) -> None:
        self.phases.mark("engines_ready")
        if self.comms and self.comms.warmup_steps == 0:
            self.comms.window_opens()

    def step_begin(self) -> None:
        self.timer.start()

    def step_end(self, figures: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        """Closes the step's clock first; the figures (or the function that gives them) and
        reading device values back (float()) come after, outside the timed window."""
        self.timer.stop()
        self.memory.sample()
        figures = figures() if callable(figures) else figures
        self.steps.append({k: float(v) if hasattr(v, "item") else v for k, v in figures.items()})
        heartbeat(len(self.steps) - 1, self.total_steps)
        if self.comms:
            self.comms.step_done(len(self.steps) - 1)
        if len(self.steps) == 1:
            self.phases.mark("first_step_done")

    def mine(self, host: str, rank: int, device_name: str | None, steps: list[dict[str, Any]]) -> dict[str, Any]:
        """This rank's share of the record (steps: the backend's per-step figures), gathered on rank 0."""
        measured = len(steps) - (self.comms.warmup_steps if self.comms else 0)
        return {"host": host, "rank": rank, "times": self.timer.seconds(), "steps": steps,
                "memory": self.memory.summary(), "startup_s": self.phases.since_launch(), "device": device_name,
                "comms": self.comms.per_step(measured) if self.comms else None}


def reduce(everyone: list[dict[str, Any]], *, task: str, warmup: int, flops_per_token: tuple[int, int],
           peak: float | None) -> dict[str, Any]:
    """The record's metrics from every rank's share: a step lasts as long as its slowest rank,
    tokens are summed over ranks, losses averaged, memory is the MAX over ranks."""
    world = len(everyone)
    times = [max(r["times"][i] for r in everyone) for i in range(len(everyone[0]["times"]))][warmup:]
    measured = [r["steps"][warmup:] for r in everyone]
    total_s = sum(times)
    real = sum(s["real"] for r in measured for s in r)
    padded = sum(s["padded"] for r in measured for s in r)
    seqs = sum(s["seqs"] for r in measured for s in r)

    def rank_mean(key: str) -> list[float]:  # per step, the mean of each rank's value
        return [sum(r["steps"][i][key] for r in everyone) / world for i in range(len(everyone[0]["steps"]))]

    losses = rank_mean("loss")
    tokens_per_s = real / total_s
    per_device = tokens_per_s / world
    padded_per_device = padded / total_s / world
    model_fpt, hw_fpt = flops_per_token
    out: dict[str, Any] = {
        "step_time_s": spread(times),
        "step_times_s": times,
        "tokens_per_s": tokens_per_s,
        "padded_tokens_per_s": padded / total_s,
        "tokens_per_s_per_device": per_device,
        "samples_per_s": seqs / total_s,
        "flops_per_token": model_fpt,
        # model FLOPs are counted on the real tokens (useful work); hardware FLOPs on every token fed
        "tflops_per_device": model_fpt * per_device / 1e12,
        "mfu": formulas.utilization(model_fpt, per_device, peak),
        "hfu": formulas.utilization(hw_fpt, padded_per_device, peak),
        "peak_flops": peak,
        "memory": max_over_ranks([r["memory"] for r in everyone]),
        "memory_per_rank": [dict(r["memory"], rank=r["rank"], host=r["host"]) for r in everyone],
        # seconds from the launcher starting the processes to each phase; the slowest rank counts
        "startup_s": {k: max(r["startup_s"][k] for r in everyone) for k in everyone[0]["startup_s"]},
        "loss": {"first": losses[0], "last": losses[-1], "per_step": losses},
    }
    if everyone[0].get("comms"):  # DeepSpeed's comms logger: rank 0's collectives (every rank makes the same calls)
        out["comms_per_step"] = everyone[0]["comms"]
    if task == "dpo":
        for key in ("reward_accuracy", "reward_margin"):
            series = rank_mean(key)
            out[key] = {"first": series[0], "last": series[-1], "per_step": series}
    return out
