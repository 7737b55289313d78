"""`invoke plan`: will it fit, and what should I run? For a model, GPUs per node and GPU memory,
node counts, task, sequence length and micro-batch: the memory model's prediction per device for
every ZeRO stage and offload, whether it fits, and an upper bound on tokens/s from the device's
peak FLOPs (100% MFU; real runs reach 30-50%). Ranked: what fits first; then no offload (offload
moves traffic to PCIe and the CPU's Adam); then the lowest stage that fits (less communication
per step); then the most headroom. bench's fit check uses the same memory model."""

from __future__ import annotations

from core import formulas, memory_model
from core.config import OFFLOADS, RunConfig, offload_problem
from core.errors import ConfigError

HEADROOM = 0.9  # leave 10% of the device for the allocator's fragmentation, NCCL buffers, the CUDA context


def plan(*, model: str, gpus_per_node: int, gpu_mem_gib: float, nodes: list[int], task: str = "sft",
         seq_len: int = 4096, micro_batch: int = 1, device: str = "H100", dtype: str = "bf16",
         grad_checkpointing: bool = False) -> list[dict]:
    from trainer import models

    if gpu_mem_gib <= 0:
        raise ConfigError("--gpu-mem must be the memory of one GPU in GiB", where="--gpu-mem", fix="e.g. 80 for H100")
    shape = models.shape(models.resolve(model))
    peak = formulas.peak_flops(device, dtype)
    fpt, _ = formulas.task_flops_per_token(task, shape.flops_params, shape.attention, seq_len, grad_checkpointing)
    rows = []
    for n in nodes:
        for stage in (0, 1, 2, 3):
            for offload in OFFLOADS:
                if offload_problem(stage, offload):
                    continue
                cfg = RunConfig(model=model, task=task, nodes=n, gpus_per_node=gpus_per_node, micro_batch=micro_batch,
                                seq_len=seq_len, zero_stage=stage, offload=offload, dtype=dtype,
                                grad_checkpointing=grad_checkpointing)
                pred = memory_model.predict_for(shape, cfg, dtype=dtype, device_gib=gpu_mem_gib * HEADROOM)
                rows.append({
                    "nodes": n, "world_size": cfg.world_size, "zero_stage": stage, "offload": offload,
                    "predicted_gib": pred.total_gib, "model_states_gib": pred.model_states_gib,
                    "activations_gib": pred.activations_gib + pred.logits_gib, "reference_gib": pred.reference_gib,
                    "host_gib_per_rank": pred.host_gib, "fits": bool(pred.fits),
                    "headroom_gib": gpu_mem_gib - pred.total_gib,
                    "max_tokens_per_s_per_device": peak / fpt if peak else None,
                })
    rows.sort(key=lambda r: (not r["fits"], r["nodes"], r["offload"] != "none", r["zero_stage"], -r["headroom_gib"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def recommend(rows: list[dict]) -> list[str]:
    """One line per node count: the first configuration that fits."""
    out = []
    for n in sorted({r["nodes"] for r in rows}):
        fit = next((r for r in rows if r["nodes"] == n and r["fits"]), None)
        if fit is None:
            out.append(f"{n} node(s): nothing fits; use more nodes, a shorter --seq-len, a smaller micro-batch or "
                       f"--grad-checkpointing")
        else:
            out.append(f"{n} node(s): ZeRO-{fit['zero_stage']}" + ("" if fit["offload"] == "none" else
                       f" with {fit['offload']} offload") + f", {fit['predicted_gib']:.1f} GiB per GPU predicted")
    return out
