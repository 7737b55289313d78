"""Will a run fit? The memory model's prediction for a run config against the memory one rank has.

Runs predicted not to fit are recorded as `skipped` with the prediction instead of spending
minutes to find the OOM (`--run-anyway` runs them). The capacity per rank is, in this order: the
user's `--gpu-mem` (planning for a cluster from a login node), the local GPU's memory (NVML),
or, on a CPU-only host, its RAM divided among the ranks of one node (then device and host are one
pool: what offload moves to the host is counted once, in the same RAM).
What offload keeps on the host is checked against a node's RAM: `--host-mem`, else the Slurm
partition's RealMemory (sinfo) for the slurm launcher, else this host's RAM for the local launcher;
never the login host's RAM for other nodes. Where it is unknown the run is not skipped, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from stackbench.core import memory_model
from stackbench.core.config import RunConfig, dtype_on
from stackbench.core.host import GIB, host_gib_per_rank

GPU_MEM_HELP = "GiB of one GPU for the fit check (H100 80, H200 141)"
HOST_MEM_HELP = ("GiB of RAM of one node, for what offload keeps on the host (pinned included); default: read from "
                 "Slurm (sinfo RealMemory) with --partition or the slurm launcher, else unchecked")

HEADROOM = 0.9  # leave 10% of a GPU for the allocator's fragmentation, NCCL buffers, the CUDA context
HOST_HEADROOM = 0.9  # and 10% of a node's RAM for the OS and the ranks' own processes


def local_gpu_gib() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total / GIB
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML library or no GPU: not a GPU host
        return None


def node_memory(host_mem: float, *, partition: str | None = None,
                this_host: bool = False) -> tuple[float | None, str]:
    """(RAM of one node in GiB or None, where it came from): what the nodes the runs land on offer.
    --host-mem, else a Slurm partition's RealMemory (partition given: "" is every partition), else this
    host's RAM where the runs go to this host; never the login host's RAM for other nodes."""
    if host_mem > 0:
        return host_mem, "--host-mem"
    if partition is not None:
        from stackbench.bench.launchers.slurm import partition_memory_gib

        return partition_memory_gib(partition)
    if this_host:
        from stackbench.core.host import host_memory_gib

        return host_memory_gib(), "this host's RAM"
    return None, "unknown: --host-mem GiB per node, or a Slurm partition's RealMemory, checks it"


@dataclass
class FitCheck:
    gpu_gib: float | None = None
    """Memory of one GPU; None: this host's GPU, else host RAM per rank."""
    run_anyway: bool = False
    host_gib: float | None = None
    """RAM of one node for what offload keeps on the host (None: unknown, unchecked)."""
    host_source: str = ""
    _shapes: dict = field(default_factory=dict)
    _verdicts: dict = field(default_factory=dict)  # run id -> why_not's answer: the autotuner asks every decision

    @cached_property
    def local_gpu(self) -> float | None:
        """This host's GPU memory, probed once per sweep (NVML init is not free)."""
        return local_gpu_gib()

    def capacity(self, cfg: RunConfig) -> tuple[float, str]:
        """What one rank may use: a GPU less HEADROOM (as `invoke plan` counts it), else host RAM per rank."""
        if self.gpu_gib:
            return self.gpu_gib * HEADROOM, f"{HEADROOM:.0%} of --gpu-mem {self.gpu_gib:g}"
        if self.local_gpu:
            return self.local_gpu * HEADROOM, f"{HEADROOM:.0%} of this host's GPU (NVML)"
        return host_gib_per_rank(cfg.gpus_per_node), f"host RAM / {cfg.gpus_per_node} ranks per node"

    def predict(self, cfg: RunConfig) -> memory_model.MemoryPrediction:
        from stackbench.trainer import models

        if cfg.model not in self._shapes:
            self._shapes[cfg.model] = models.shape(models.resolve(cfg.model))
        gib, _ = self.capacity(cfg)
        gpu = bool(self.gpu_gib) or self.local_gpu is not None
        dtype = dtype_on(cfg.dtype, "cuda" if gpu else "cpu")  # the runs may start elsewhere (a login node)
        host = self.host_gib * HOST_HEADROOM if self.host_gib else None
        return memory_model.predict_for(self._shapes[cfg.model], cfg, dtype=dtype, device_gib=gib,
                                        zero_optimization=self._zero(cfg, dtype), device_type="cuda" if gpu else "cpu",
                                        host_node_gib=host)

    def _zero(self, cfg: RunConfig, dtype: str) -> dict | None:
        """The zero_optimization section the run will get (its buffer sizes), as far as it can be
        known before launch: the user's config with its --ds overrides; "auto" stays for ZeroKnobs."""
        from stackbench.trainer import ds_config

        try:
            config, _ = ds_config.deepspeed_config(cfg, dtype, "cpu")
        except Exception:  # noqa: BLE001 - the run's own launch reports a bad config; DeepSpeed's defaults here
            return None
        return config.get("zero_optimization")

    def why_not(self, cfg: RunConfig) -> tuple[dict, str | None]:
        """(prediction, reason to skip or None), worked out once per run."""
        if cfg.run_id not in self._verdicts:
            self._verdicts[cfg.run_id] = self._why_not(cfg)
        return self._verdicts[cfg.run_id]

    def host_note(self, cfg: RunConfig) -> str:
        """What the dry-run says of a run whose host share is unchecked ("" when checked or none)."""
        pred = self.why_not(cfg)[0]
        if pred["host_fits"] is not None:
            return ""
        return (f"host memory unchecked: offload keeps {pred['host_gib'] * cfg.gpus_per_node:,.0f} GiB per node on "
                f"the host ({self.host_source}; --host-mem GiB checks it)")

    def _why_not(self, cfg: RunConfig) -> tuple[dict, str | None]:
        pred = self.predict(cfg)
        if pred.host_fits is False and not self.run_anyway:
            return pred.to_dict(), (f"offload keeps {pred.host_gib:.1f} GiB per rank on the host, "
                                    f"{pred.host_gib * cfg.gpus_per_node:,.0f} GiB per node (pinned "
                                    f"{pred.host_pinned_gib * cfg.gpus_per_node:,.0f}) > {HOST_HEADROOM:.0%} of "
                                    f"{self.host_gib:,.0f} GiB ({self.host_source}); use more nodes, offload less, or "
                                    f"--run-anyway")
        if pred.fits is False and not self.run_anyway:
            gib, source = self.capacity(cfg)
            tries = (["a higher ZeRO stage"] if cfg.zero_stage < 3 else []) + \
                (["offload"] if cfg.offload != "optimizer+params" else []) + ["more nodes", "a smaller micro-batch"]
            pool = (f" + host share {pred.host_gib:.1f} (one pool on a CPU)" if pred.host_gib and
                    source.startswith("host RAM") else "")
            return pred.to_dict(), (f"predicted {pred.total_gib:.1f} GiB per rank (model states "
                                    f"{pred.model_states_gib:.1f}, DeepSpeed's buffers {pred.buffers_gib:.1f}, "
                                    f"activations {pred.activations_gib:.1f}, logits "
                                    f"{pred.logits_gib:.1f}, reference {pred.reference_gib:.1f}){pool} > {gib:.1f} "
                                    f"GiB ({source}); try {', '.join(tries[:-1])} or {tries[-1]}, or --run-anyway")
        return pred.to_dict(), None
