"""`invoke plan`: will it fit, and what should I run? For a model, GPUs per node and GPU memory,
node counts, task, sequence length and micro-batch: the memory model's prediction per device for
every ZeRO stage and offload (core/memory_model.py: where DeepSpeed keeps each tensor for each
offload choice), whether the device and the node's host RAM hold it, and the step-time model's
prediction (core/perf_model.py: compute at an assumed MFU of the device's peak, ZeRO's communication
at nominal bus bandwidths within and across nodes, every offload's PCIe traffic and the host's Adam;
every assumption a flag, stated on the output) with an upper bound on tokens/s at 100% MFU beside it.
Ranked: what fits first (the host checked before the host unchecked), then predicted tokens/s per
device, then the most headroom. bench's fit check uses the same memory model; `invoke plan
--calibrate` fits the step-time model to measured runs."""

from __future__ import annotations

from stackbench.bench.planning.fit import HEADROOM, HOST_HEADROOM
from stackbench.core import formulas, memory_model, perf_model
from stackbench.core.config import OFFLOADS, ZERO_STAGES, RunConfig, offload_problem, stage_label
from stackbench.core.errors import ConfigError


def fit_label(row: dict) -> str:
    """'yes', 'no', 'host unchecked' (the device holds it; the node's RAM for its offloaded share is
    unknown) or 'no (host)'."""
    if not row["device_fits"]:
        return "no"
    return {True: "yes", None: "host unchecked", False: "no (host)"}[row["host_fits"]]


def plan(*, model: str, gpus_per_node: int, gpu_mem_gib: float, nodes: list[int], task: str = "sft",
         seq_len: int = 4096, micro_batch: int = 1, device: str = "H100", dtype: str = "bf16",
         grad_checkpointing: bool = False, mfu: float = perf_model.NOMINAL_MFU,
         busbw_intra_gbps: float = perf_model.NOMINAL_BUSBW_INTRA / 1e9,
         busbw_inter_gbps: float = perf_model.NOMINAL_BUSBW_INTER / 1e9, host_mem_gib: float | None = None,
         zero_stages: tuple[int, ...] = ZERO_STAGES, offloads: tuple[str, ...] = tuple(OFFLOADS),
         grad_accum: int = 1, attn_impl: str = "sdpa") -> list[dict]:
    """One row per node count x ZeRO stage x offload (the combinations DeepSpeed takes), ranked.
    host_mem_gib: RAM of one node (None: unknown, offload rows say 'host unchecked')."""
    from stackbench.trainer import models

    if gpu_mem_gib <= 0:
        raise ConfigError("--gpu-mem must be the memory of one GPU in GiB", where="--gpu-mem", fix="e.g. 80 for H100")
    if host_mem_gib is not None and host_mem_gib <= 0:
        raise ConfigError("--host-mem must be the RAM of one node in GiB", where="--host-mem", fix="e.g. 2048")
    shape = models.shape(models.resolve(model))
    peak = formulas.peak_flops(device, dtype)
    fpt, hfu_fpt = formulas.task_flops_per_token(task, shape.flops_params, shape.attention, seq_len, grad_checkpointing)
    k = perf_model.nominal(peak, mfu=mfu, busbw_intra=busbw_intra_gbps * 1e9, busbw_inter=busbw_inter_gbps * 1e9) \
        if peak else None
    value_bytes = 4 if dtype == "fp32" else 2
    tokens = micro_batch * seq_len * (2 if task == "dpo" else 1)  # per rank per micro-batch, no padding
    host_node = host_mem_gib * HOST_HEADROOM if host_mem_gib else None
    rows = []
    for n in nodes:
        for stage in zero_stages:
            for offload in offloads:
                if offload_problem(stage, offload):
                    continue
                cfg = RunConfig(model=model, task=task, nodes=n, gpus_per_node=gpus_per_node, micro_batch=micro_batch,
                                seq_len=seq_len, zero_stage=stage, offload=offload, dtype=dtype,
                                grad_checkpointing=grad_checkpointing, grad_accum=grad_accum, attn_impl=attn_impl)
                pred = memory_model.predict_for(shape, cfg, dtype=dtype, device_gib=gpu_mem_gib * HEADROOM,
                                                host_node_gib=host_node)
                step = None
                if k is not None:
                    bus = perf_model.step_bus_bytes(
                        cfg.world_size, stage=stage, task=task, ref_stage=cfg.ref_zero_stage or 0, params=shape.params,
                        grad_accum=cfg.grad_accum, dtype_bytes=value_bytes,
                        tied=shape.embedding if shape.lm_head == 0 else 0,
                        keeps=perf_model.keeps_params({}, shape.params))
                    off = perf_model.offload_seconds(cfg.offload_optimizer, cfg.offload_param, shape.params,
                                                     cfg.world_size, cfg.grad_accum, value_bytes, k, stage)
                    # hfu_fpt: what the device computes, recomputation included
                    step = perf_model.step_seconds(tokens * cfg.grad_accum * hfu_fpt, bus, "", k, nodes=n,
                                                   offload_s=off)
                row = {
                    "nodes": n, "world_size": cfg.world_size, "zero_stage": stage, "offload": offload,
                    "predicted_gib": pred.total_gib, "model_states_gib": pred.model_states_gib,
                    "buffers_gib": pred.buffers_gib, "activations_gib": pred.activations_gib + pred.logits_gib,
                    "reference_gib": pred.reference_gib,
                    "host_gib_per_rank": pred.host_gib, "host_pinned_gib_per_rank": pred.host_pinned_gib,
                    "host_gib_per_node": pred.host_gib * gpus_per_node,
                    "device_fits": bool(pred.fits), "host_fits": pred.host_fits,
                    "fits": bool(pred.fits) and pred.host_fits is True,
                    "headroom_gib": gpu_mem_gib - pred.total_gib,
                    "max_tokens_per_s_per_device": peak / fpt if peak else None,
                    "predicted_step_s": step,
                    "predicted_tokens_per_s_per_device": tokens * cfg.grad_accum / step if step else None,
                    "label": stage_label(stage, offload),
                }
                row["verdict"] = fit_label(row)
                rows.append(row)
    # without a peak (an unlisted device) no speed is predicted: the lower stage, no offload, goes first
    order = {"yes": 0, "host unchecked": 1, "no (host)": 2, "no": 3}
    rows.sort(key=lambda r: (order[r["verdict"]] > 1, r["nodes"], order[r["verdict"]],
                             -(r["predicted_tokens_per_s_per_device"] or 0), r["offload"] != "none", r["zero_stage"],
                             -r["headroom_gib"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def recommend(rows: list[dict]) -> list[str]:
    """One line per node count: the first configuration the device holds (and whether the host was checked)."""
    out = []
    for n in sorted({r["nodes"] for r in rows}):
        fit = next((r for r in rows if r["nodes"] == n and r["verdict"] in ("yes", "host unchecked")), None)
        if fit is None:
            host = any(r["nodes"] == n and r["verdict"] == "no (host)" for r in rows)
            out.append(f"{n} node(s): nothing fits; use more nodes, a shorter --seq-len, a smaller micro-batch or "
                       f"--grad-checkpointing"
                       + ("; what the GPUs hold needs more host RAM than --host-mem" if host else ""))
            continue
        speed = (f", {fit['predicted_tokens_per_s_per_device']:,.0f} tokens/s per GPU predicted"
                 if fit["predicted_tokens_per_s_per_device"] else "")
        host = ""
        if fit["host_gib_per_rank"]:
            host = f", {fit['host_gib_per_node']:,.0f} GiB of host RAM per node" + (
                " (host unchecked: give --host-mem, or --partition to read it from Slurm)"
                if fit["verdict"] == "host unchecked" else "")
        offload = "" if fit["offload"] == "none" else f" with {fit['offload']} offload"
        out.append(f"{n} node(s): ZeRO-{fit['zero_stage']}{offload}, {fit['predicted_gib']:.1f} GiB per GPU predicted"
                   + host + speed)
    return out
