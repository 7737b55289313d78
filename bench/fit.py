"""Will a run fit? The memory model's prediction for a run config against the memory one rank has.

Runs predicted not to fit are recorded as `skipped` with the prediction instead of spending
minutes to find the OOM (`--run-anyway` runs them). The capacity per rank is, in this order: the
user's `--gpu-mem` (planning for a cluster from a login node), the local GPU's memory (NVML),
or, on a CPU-only host, its RAM divided among the ranks of one node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from core import memory_model
from core.config import RunConfig, dtype_on
from core.host import GIB, host_gib_per_rank


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


@dataclass
class FitCheck:
    gpu_gib: float | None = None
    """Memory of one GPU; None: this host's GPU, else host RAM per rank."""
    run_anyway: bool = False
    _shapes: dict = field(default_factory=dict)
    _verdicts: dict = field(default_factory=dict)  # run id -> why_not's answer: the autotuner asks every decision

    @cached_property
    def local_gpu(self) -> float | None:
        """This host's GPU memory, probed once per sweep (NVML init is not free)."""
        return local_gpu_gib()

    def capacity(self, cfg: RunConfig) -> tuple[float, str]:
        if self.gpu_gib:
            return self.gpu_gib, "--gpu-mem"
        if self.local_gpu:
            return self.local_gpu, "this host's GPU (NVML)"
        return host_gib_per_rank(cfg.gpus_per_node), f"host RAM / {cfg.gpus_per_node} ranks per node"

    def predict(self, cfg: RunConfig) -> memory_model.MemoryPrediction:
        from trainer import models

        if cfg.model not in self._shapes:
            self._shapes[cfg.model] = models.shape(models.resolve(cfg.model))
        gib, _ = self.capacity(cfg)
        gpu = bool(self.gpu_gib) or self.local_gpu is not None
        dtype = dtype_on(cfg.dtype, "cuda" if gpu else "cpu")  # the runs may start elsewhere (a login node)
        return memory_model.predict_for(self._shapes[cfg.model], cfg, dtype=dtype, device_gib=gib,
                                        zero_optimization=self._zero(cfg, dtype), device_type="cuda" if gpu else "cpu")

    def _zero(self, cfg: RunConfig, dtype: str) -> dict | None:
        """The zero_optimization section the run will get (its buffer sizes), as far as it can be
        known before launch: the user's config with its --ds overrides; "auto" stays for ZeroKnobs."""
        from trainer import ds_config

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

    def _why_not(self, cfg: RunConfig) -> tuple[dict, str | None]:
        pred = self.predict(cfg)
        if pred.fits is False and not self.run_anyway:
            gib, source = self.capacity(cfg)
            return pred.to_dict(), (f"predicted {pred.total_gib:.1f} GiB per rank (model states "
                                    f"{pred.model_states_gib:.1f}, DeepSpeed's buffers {pred.buffers_gib:.1f}, "
                                    f"activations {pred.activations_gib:.1f}, logits "
                                    f"{pred.logits_gib:.1f}, reference {pred.reference_gib:.1f}) > {gib:.1f} GiB "
                                    f"({source}); try a higher ZeRO stage, offload, more nodes or a smaller "
                                    f"micro-batch, or --run-anyway")
        return pred.to_dict(), None
