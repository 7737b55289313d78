"""What each field of a result record means: its unit, how it is aggregated across ranks, when it is
there. The record is built in several places (core/record.py's factory, trainer/run.py, trainer/
metrics.py, bench/sweep.py); this table is where its fields are explained, and tests hold it to real
records both ways (tests/unit/test_docs.py reads the committed reference records, tests/integration/
test_trainer_deepspeed.py a fresh sweep's): a field a record has and this table lacks fails.

    python -m stackbench.core.record_doc > docs/record.md

`config` and `launch` are not listed here: they are generated from the run config's own fields
(core/config.py), so their help is the flags' help.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from stackbench.core import record
from stackbench.core.config import Launch, knob_fields


class Field(NamedTuple):
    unit: str  # "" where it has none
    ranks: str  # across ranks: "max", "sum", "mean", "rank 0", "each", "" (not per rank)
    meaning: str
    when: str = ""  # "" = every record of its status; otherwise the condition


ALWAYS = "every record"
OK = "ok records"

# dotted paths; "[]" marks the items of a list
FIELDS: dict[str, Field] = {
    "schema": Field("", "", f"`{record.SCHEMA}`; `/1` records are read through one upgrade (`upgraded_from`)"),
    "method_version": Field("", "", "bumped when what a metric means changes, so old and new figures are "
                            "not compared blindly"),
    "run_id": Field("", "", "the run's name: task, stage, nodes x ranks, micro-batch, seq_len and a hash of "
                    "the run config's non-default knobs; a resumed sweep finds its runs by it"),
    "sweep_id": Field("", "", "the sweep's name: a hash of its launcher and its run ids (or `--sweep`)"),
    "status": Field("", "", " | ".join(record.STATUSES) + ": see [failures](failures.md)"),
    "error": Field("", "", "null for ok; otherwise what stopped the run"),
    "error.kind": Field("", "", "; ".join(f"{s}: {', '.join(k for k in kinds if k)}" for s, kinds in
                                         record.KINDS.items() if any(kinds)), "not ok"),
    "error.message": Field("", "", "one paragraph: what, where, the fix where there is one", "not ok"),
    "error.rank": Field("", "", "the rank that failed first, where known", "not ok"),
    "error.host": Field("", "", "the host of that rank, or the node that was lost", "not ok"),
    "error.log": Field("", "", "the last lines of every node's log (secrets redacted)", "not ok"),
    "command": Field("", "", "the exact command that reproduces the run (secret values never in it)"),
    "started_at": Field("ISO 8601", "", "when the run started (a Slurm job: its first start, not its submission)"),
    "finished_at": Field("ISO 8601", "", "when the record was written"),
    "trainer_argv": Field("", "rank 0", "the trainer's own arguments", OK),
    "excluded_hosts": Field("", "", "hosts found dead earlier in the sweep and left out of this run",
                            "a host was found dead"),
    "slurm_job_id": Field("", "", "the Slurm job that ran it: its own, or the allocation its steps ran in",
                          "--launcher slurm"),
    "slurm_steps": Field("", "", "how it ran inside the allocation", "--launcher slurm inside an allocation"),
    "upgraded_from": Field("", "", "the schema the file was written with", "read from a `/1` file"),
    "preflight": Field("", "", "the links this run's nodes measured in its node count's preflight", "ok, after a "
                       "preflight"),
    "preflight.backend": Field("", "", "gloo (CPU) or nccl", "after a preflight"),
    "preflight.spans_nodes": Field("", "", "whether the measured group crossed nodes", "after a preflight"),
    "preflight.collectives": Field("GB/s", "", "per collective: message size, time, algorithm and bus bandwidth "
                                   "(nccl-tests' busbw)", "after a preflight"),
    # resolved: what the run config became
    "resolved": Field("", "", "what the config became when it ran"),
    "resolved.model": Field("", "", "the model that was built", OK),
    "resolved.model.name": Field("", "", "preset, directory or hub id as resolved", OK),
    "resolved.model.path": Field("", "", "the directory or config it was read from (null: a preset's shapes)", OK),
    "resolved.model.kind": Field("", "", "tiny, preset, directory or hub", OK),
    "resolved.model.weights": Field("", "", "the directory its weights were loaded from; null: random init", OK),
    "resolved.model.params": Field("parameters", "", "total parameters (every expert)", OK),
    "resolved.model.active": Field("parameters", "", "parameters a token goes through (MoE: the routed experts)",
                                   OK),
    "resolved.model.embedding": Field("parameters", "", "input embedding", OK),
    "resolved.model.lm_head": Field("parameters", "", "output projection (0 when tied to the embedding)", OK),
    "resolved.model.non_embedding": Field("parameters", "", "params - embedding - lm_head", OK),
    "resolved.model.largest_layer": Field("parameters", "", "the largest single parameter (ZeRO-3's live buffers)",
                                          OK),
    "resolved.model.layers": Field("", "", "decoder layers", OK),
    "resolved.model.hidden": Field("", "", "hidden size", OK),
    "resolved.model.heads": Field("", "", "attention heads", OK),
    "resolved.model.kv_heads": Field("", "", "key/value heads", OK),
    "resolved.model.head_dim": Field("", "", "width of one head", OK),
    "resolved.model.qk_head_dim": Field("", "", "query/key width per head (MLA differs from head_dim)", OK),
    "resolved.model.v_head_dim": Field("", "", "value width per head", OK),
    "resolved.model.vocab": Field("tokens", "", "vocabulary size", OK),
    "resolved.model.moe": Field("", "", "null for dense; experts, experts per token and expert width for MoE", OK),
    "resolved.model.attention_windows": Field("tokens", "", "per layer: keys a query sees (full, a sliding window, "
                                              "a chunk, or none for linear attention)", OK),
    "resolved.model.attention_note": Field("", "", "why the attention FLOPs are approximate, where they are", OK),
    "resolved.tokenizer": Field("", "", "which tokenizer counted the tokens; `fallback`: the embedded one stood in",
                                OK),
    "resolved.dtype": Field("", "", "fp32, bf16 or fp16 as run (`--dtype auto` resolved)", OK),
    "resolved.world_size": Field("ranks", "", "nodes x GPUs (ranks) per node", OK),
    "resolved.global_batch": Field("samples", "", "micro-batch x accumulation x world size", OK),
    "resolved.ref_zero_stage": Field("", "", "ZeRO stage of DPO's frozen reference model (null for SFT / PT)", OK),
    "resolved.attention": Field("", "", "the attention kernel asked for, used, and why they differ", OK),
    "resolved.attention.asked": Field("", "", "`--attn-impl`", OK),
    "resolved.attention.used": Field("", "", "the kernel the model was built with", OK),
    "resolved.attention.why": Field("", "", "the model's reason when it is not the one asked for", OK),
    "resolved.moe_leaf_modules": Field("", "", "MoE blocks registered as ZeRO-3 leaves ([models](models.md))", OK),
    "resolved.moe_leaf_modules[].name": Field("", "", "the block's class", "MoE under ZeRO-3"),
    "resolved.moe_leaf_modules[].qualname": Field("", "", "where the class is defined", "MoE under ZeRO-3"),
    "resolved.moe_leaf_modules[].instances": Field("", "", "how many blocks", "MoE under ZeRO-3"),
    "resolved.moe_leaf_modules[].experts": Field("", "", "E, experts per block", "MoE under ZeRO-3"),
    "resolved.moe_leaf_modules[].layout": Field("", "", "ModuleList of experts or stacked [E, ...] parameters",
                                                "MoE under ZeRO-3"),
    "resolved.moe_leaf_modules[].found_by": Field("", "", "structure, DeepSpeed default, config or --z3-leaf",
                                                  "MoE under ZeRO-3"),
    "resolved.moe_leaf_modules[].registered_by": Field("", "", "stackbench or DeepSpeed itself", "MoE under ZeRO-3"),
    "resolved.data": Field("", "", "the data as read, checked and tokenized ([data](data.md))", OK),
    "resolved.data.path": Field("", "", "the file", OK),
    "resolved.data.sha256": Field("", "", "its content hash", OK),
    "resolved.data.format": Field("", "", "`--data-format` (auto: detected per row)", OK),
    "resolved.data.layouts": Field("rows", "", "rows per layout detected (messages, sharegpt, alpaca, ...)", OK),
    "resolved.data.rows": Field("rows", "", "rows read", OK),
    "resolved.data.samples": Field("samples", "", "samples kept", OK),
    "resolved.data.dropped_too_long": Field("rows", "", "rows longer than seq_len, dropped (`--too-long drop`)", OK),
    "resolved.data.truncated": Field("rows", "", "rows cut to seq_len (`--too-long truncate`)", OK),
    "resolved.data.longest_tokens": Field("tokens", "", "the longest row", OK),
    "resolved.data.seq_len_keeping_95pct": Field("tokens", "", "the seq_len that keeps 95% of the rows", OK),
    "resolved.data.unused_keys": Field("", "", "keys of the rows that no layout reads", OK),
    "resolved.data.tokens": Field("tokens", "", "tokens in the kept samples", OK),
    "resolved.data.learned_tokens": Field("tokens", "", "of those, tokens the loss mask learns", OK),
    "resolved.data.too_long": Field("", "", "the policy: drop or truncate", OK),
    "resolved.data.seq_len": Field("tokens", "", "the sequence length the data was fitted to", OK),
    "resolved.data.cache": Field("", "", "the tokenized cache: its key, whether it was a hit, seconds to fill", OK),
    "resolved.deepspeed": Field("", "rank 0", "the DeepSpeed config as DeepSpeed received it", OK),
    "resolved.deepspeed_from": Field("", "", "where that config came from ([DeepSpeed config](deepspeed-config.md))",
                                     OK),
    "resolved.deepspeed_from.source": Field("", "", "generated, a file (path, sha256) or an ms-swift name", OK),
    "resolved.deepspeed_from.overrides": Field("", "", "`--ds KEY=VALUE` applied last", OK),
    "resolved.deepspeed_from.changed": Field("", "", "each change stackbench made: key, was, now, why", OK),
    "resolved.engine": Field("", "rank 0", "what the built DeepSpeed engine reports", OK),
    "resolved.engine.zero_stage": Field("", "rank 0", "ZeRO stage", OK),
    "resolved.engine.micro_batch": Field("samples", "rank 0", "micro-batch per rank", OK),
    "resolved.engine.grad_accum": Field("", "rank 0", "gradient accumulation steps", OK),
    "resolved.engine.train_batch_size": Field("samples", "rank 0", "global batch", OK),
    "resolved.engine.gradient_clipping": Field("", "rank 0", "max gradient norm", OK),
    "resolved.engine.bf16": Field("", "rank 0", "bf16 enabled", OK),
    "resolved.engine.fp16": Field("", "rank 0", "fp16 enabled", OK),
    "resolved.engine.offload_optimizer": Field("", "rank 0", "none, cpu or nvme", OK),
    "resolved.engine.offload_param": Field("", "rank 0", "none, cpu or nvme", OK),
    "resolved.engine.reduce_bucket_size": Field("elements", "rank 0", "ZeRO's reduce bucket", OK),
    "resolved.engine.overlap_comm": Field("", "rank 0", "communication overlapped with backward", OK),
    "resolved.engine.optimizer": Field("", "rank 0", "the optimizer's class", OK),
    "resolved.engine.optimizer_module": Field("", "rank 0", "the module of that class (torch, deepspeed.ops ...)",
                                              OK),
    "resolved.engine.optimizer_kernel": Field("", "rank 0", "which kernel steps it (fused, foreach, CPU Adam ...)",
                                              OK),
    "resolved.engine.lr": Field("", "rank 0", "learning rate", OK),
    "resolved.engine.betas": Field("", "rank 0", "Adam betas", OK),
    "resolved.engine.eps": Field("", "rank 0", "Adam epsilon", OK),
    "resolved.engine.weight_decay": Field("", "rank 0", "weight decay", OK),
    "resolved.engine.param_dtype": Field("", "rank 0", "the dtype the parameters train in", OK),
    "resolved.caveats": Field("", "", "what the figures cannot show (one device: ZeRO partitions nothing)",
                              "one rank with ZeRO 1-3"),
    "resolved.backend_setup": Field("", "rank 0", "how the hf / swift trainer was run: the command, accelerate's "
                                    "state, the timing callback, what the loss is", "--backend hf or swift"),
    # metrics: from every rank's share (trainer/metrics.py reduce)
    "metrics": Field("", "", "the measurement; null when the run did not reach it"),
    "metrics.step_time_s": Field("s", "max", "median, p10, p90 and coefficient of variation of the measured steps; "
                                 "a step lasts as long as its slowest rank", OK),
    "metrics.step_time_s.median": Field("s", "max", "the median measured step", OK),
    "metrics.step_time_s.p10": Field("s", "max", "10th percentile", OK),
    "metrics.step_time_s.p90": Field("s", "max", "90th percentile", OK),
    "metrics.step_time_s.cv": Field("fraction", "max", "standard deviation / mean", OK),
    "metrics.step_times_s": Field("s", "max", "every measured step (warm-up left out)", OK),
    "metrics.tokens_per_s": Field("tokens/s", "sum", "real (non-padding) tokens of the measured steps / their total "
                                  "time: the one throughput convention", OK),
    "metrics.padded_tokens_per_s": Field("tokens/s", "sum", "every token fed, padding included", OK),
    "metrics.tokens_per_s_per_device": Field("tokens/s", "sum / ranks", "tokens_per_s / world size", OK),
    "metrics.samples_per_s": Field("samples/s", "sum", "sequences per second (DPO: pairs)", OK),
    "metrics.flops_per_token": Field("FLOPs", "", "model FLOPs per real token: 6N + 12·L·H·Q·T (PaLM app. B), "
                                     "DPO's reference forward added", OK),
    "metrics.tflops_per_device": Field("TFLOP/s", "sum / ranks", "flops_per_token x tokens_per_s_per_device", OK),
    "metrics.mfu": Field("fraction", "", "model FLOP/s per device / the device's dense peak; null on CPU, fp32 or an "
                         "unknown GPU", OK),
    "metrics.hfu": Field("fraction", "", "the same on every token fed (padding included)", OK),
    "metrics.peak_flops": Field("FLOP/s", "", "the peak MFU divides by (a table with sources, core/formulas.py)", OK),
    "metrics.memory": Field("GiB", "max", "the largest value of any rank, field by field", OK),
    "metrics.memory.max_allocated_gib": Field("GiB", "max", "torch's allocator peak (GPU)", OK),
    "metrics.memory.max_reserved_gib": Field("GiB", "max", "torch's reserved peak (GPU)", OK),
    "metrics.memory.nvml_peak_gib": Field("GiB", "max", "the process's peak as NVML sees it", OK),
    "metrics.memory.alloc_retries": Field("", "max", "allocator retries (cudaMalloc failed, cache flushed)", OK),
    "metrics.memory.host_rss_peak_gib": Field("GiB", "max", "the process's resident set, peak", OK),
    "metrics.memory.host_rss_baseline_gib": Field("GiB", "max", "resident set before the model was built", OK),
    "metrics.memory.host_training_gib": Field("GiB", "max", "peak - baseline: what training added on the host", OK),
    "metrics.memory_per_rank": Field("GiB", "each", "the same fields for every rank, with its rank and host", OK),
    "metrics.memory_per_rank[].rank": Field("", "each", "global rank", OK),
    "metrics.memory_per_rank[].host": Field("", "each", "its host", OK),
    "metrics.memory_per_rank[].max_allocated_gib": Field("GiB", "each", "as in metrics.memory", OK),
    "metrics.memory_per_rank[].max_reserved_gib": Field("GiB", "each", "as in metrics.memory", OK),
    "metrics.memory_per_rank[].nvml_peak_gib": Field("GiB", "each", "as in metrics.memory", OK),
    "metrics.memory_per_rank[].alloc_retries": Field("", "each", "as in metrics.memory", OK),
    "metrics.memory_per_rank[].host_rss_peak_gib": Field("GiB", "each", "as in metrics.memory", OK),
    "metrics.memory_per_rank[].host_rss_baseline_gib": Field("GiB", "each", "as in metrics.memory", OK),
    "metrics.memory_per_rank[].host_training_gib": Field("GiB", "each", "as in metrics.memory", OK),
    "metrics.startup_s": Field("s", "max", "seconds from the launcher starting the processes to each mark, slowest "
                               "rank", OK),
    "metrics.startup_s.python_started": Field("s", "max", "the interpreter running", OK),
    "metrics.startup_s.input_ready": Field("s", "max", "input checked, the data mapped", OK),
    "metrics.startup_s.dist_ready": Field("s", "max", "the process group ready", OK),
    "metrics.startup_s.engines_ready": Field("s", "max", "DeepSpeed engines built", OK),
    "metrics.startup_s.first_step_done": Field("s", "max", "the first optimizer step done", OK),
    "metrics.loss": Field("", "mean", "first, last and every step's loss (warm-up included), mean over ranks", OK),
    "metrics.loss.first": Field("", "mean", "the first step's", OK),
    "metrics.loss.last": Field("", "mean", "the last step's", OK),
    "metrics.loss.per_step": Field("", "mean", "every step's", OK),
    "metrics.reward_accuracy": Field("fraction", "mean", "DPO: pairs whose chosen reward beats the rejected",
                                     "ok DPO records"),
    "metrics.reward_accuracy.first": Field("fraction", "mean", "the first step's", "ok DPO records"),
    "metrics.reward_accuracy.last": Field("fraction", "mean", "the last step's", "ok DPO records"),
    "metrics.reward_accuracy.per_step": Field("fraction", "mean", "every step's", "ok DPO records"),
    "metrics.reward_margin": Field("", "mean", "DPO: chosen - rejected reward", "ok DPO records"),
    "metrics.reward_margin.first": Field("", "mean", "the first step's", "ok DPO records"),
    "metrics.reward_margin.last": Field("", "mean", "the last step's", "ok DPO records"),
    "metrics.reward_margin.per_step": Field("", "mean", "every step's", "ok DPO records"),
    "metrics.comms_per_step": Field("bytes", "rank 0", "DeepSpeed's comms logger per collective and step (every rank "
                                    "makes the same calls)", "--ds comms_logger.enabled=true"),
    # prediction: the memory model (core/memory_model.py) and the sweep's step-time model
    "prediction": Field("GiB", "", "what the models predicted before the run (per rank)"),
    "prediction.model_states_gib": Field("GiB", "", "parameters, gradients and optimizer states where DeepSpeed "
                                         "keeps them"),
    "prediction.paper_model_states_gib": Field("GiB", "", "the ZeRO paper's formula, for comparison"),
    "prediction.activations_gib": Field("GiB", "", "activations (Korthikanti et al.)"),
    "prediction.logits_gib": Field("GiB", "", "fp32 logits"),
    "prediction.reference_gib": Field("GiB", "", "DPO's frozen reference model"),
    "prediction.buffers_gib": Field("GiB", "", "DeepSpeed's fixed buffers (reduce buckets, ZeRO-3's kept "
                                    "parameters)"),
    "prediction.total_gib": Field("GiB", "", "the device's total"),
    "prediction.host_gib": Field("GiB", "", "what offload keeps in the host's RAM, per rank"),
    "prediction.host_pinned_gib": Field("GiB", "", "of host_gib, page-locked (pinned), per rank"),
    "prediction.host_fits": Field("", "", "the node's RAM holds every rank's host share with 10% headroom; null when "
                                  "the RAM is unknown"),
    "prediction.nvme_gib": Field("GiB", "", "what ZeRO-Infinity keeps on NVMe, per rank"),
    "prediction.fits": Field("", "", "the device holds it with 10% headroom; null when the device's memory is "
                                "unknown; on a CPU (one pool) the host share is included"),
    "prediction.step_time_s": Field("s", "", "the step time the sweep's step-time model predicted",
                                    "the sweep had earlier ok runs of the shape"),
    "prediction.step_time_fitted_on": Field("", "", "the runs that model was fitted on",
                                            "the sweep had earlier ok runs of the shape"),
    # environment: where it ran (core/fingerprint.py)
    "environment": Field("", "", "where the run ran", OK),
    "environment.host": Field("", "rank 0", "rank 0's host", OK),
    "environment.hosts": Field("", "each", "every host of the run", OK),
    "environment.os": Field("", "rank 0", "platform string", OK),
    "environment.python": Field("", "rank 0", "Python version", OK),
    "environment.packages": Field("", "rank 0", "versions of the training stack's packages (core/stack.py)", OK),
    "environment.torch_cuda": Field("", "rank 0", "the CUDA torch was built with (null on a CPU build)", OK),
    "environment.nccl": Field("", "rank 0", "NCCL's version", OK),
    "environment.devices": Field("", "rank 0", "the accelerator", OK),
    "environment.devices.type": Field("", "rank 0", "cuda or cpu", OK),
    "environment.devices.names": Field("", "rank 0", "device names", OK),
    "environment.devices.memory_gib": Field("GiB", "rank 0", "memory per device", OK),
    "environment.devices.cpus": Field("", "rank 0", "CPU cores of the host", OK),
    "environment.image": Field("", "rank 0", "the stackbench image it ran in, if any", OK),
    "environment.lock_hash": Field("", "rank 0", "that image's lock hash", OK),
    "environment.ranks": Field("", "each", "one entry per rank", OK),
    "environment.ranks[].rank": Field("", "each", "global rank", OK),
    "environment.ranks[].host": Field("", "each", "its host", OK),
    "environment.ranks[].device": Field("", "each", "its device", OK),
    "environment.ranks[].secrets": Field("", "each", "a keyed hash (HMAC-SHA256) of each secret it saw, never the "
                                         "value ([secrets](secrets.md))", OK),
}
# dicts whose keys are data, not fields: not walked into
OPAQUE = {"config", "resolved.deepspeed", "resolved.model.moe", "resolved.model.attention_windows",
          "resolved.tokenizer", "resolved.data.layouts", "resolved.data.cache", "resolved.deepspeed_from.source",
          "resolved.deepspeed_from.overrides", "resolved.deepspeed_from.changed", "resolved.backend_setup",
          "resolved.caveats", "environment.packages", "environment.devices.names", "environment.ranks[].device",
          "environment.ranks[].secrets", "metrics.comms_per_step", "preflight.collectives", "launch",
          "prediction.step_time_fitted_on"}


def paths(rec: dict) -> set[str]:
    """The dotted field paths a record holds, down to what FIELDS documents."""
    out: set[str] = set()

    def walk(value, prefix: str):
        if isinstance(value, dict):
            for key, inner in value.items():
                path = f"{prefix}{key}"
                out.add(path)
                if path not in OPAQUE:
                    walk(inner, path + ".")
        elif isinstance(value, list) and prefix and any(isinstance(v, dict) for v in value):
            for item in value:
                walk(item, prefix[:-1] + "[].")

    walk(rec, "")
    return out


def undocumented(rec: dict) -> set[str]:
    return {p for p in paths(rec) if p not in FIELDS and not p.startswith(("config.", "launch."))
            and p not in ("config", "launch")}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    lines = [
        "# The result record",
        "",
        "<!-- generated by `python -m stackbench.core.record_doc > docs/record.md` from core/record_doc.py and the "
        "run config; a test fails when this file is stale -->",
        "",
        f"One JSON file per run, `<results>/<sweep>/<run_id>.json`, schema `{record.SCHEMA}`, whatever the run's "
        "outcome (built by one factory, `core/record.py`). Every field below, its unit, and how the value is "
        "aggregated across ranks: *max* (the slowest rank / the largest memory), *sum* (tokens of every rank), "
        "*mean* (losses), *rank 0* (rank 0 reports it; every rank would report the same), *each* (one entry per "
        "rank). A field whose *present* cell is empty is in every record of its kind.",
        "",
        "Statuses and error kinds: " + "; ".join(f"`{s}` ({', '.join(f'`{k}`' for k in kinds if k) or 'no error'})"
                                                  for s, kinds in record.KINDS.items())
        + ". What each means and what to do: [failures](failures.md). How the figures are measured: "
        "[measurement](measurement.md).",
        "",
    ]
    sections = [("Top level", ""), ("resolved: what the run became", "resolved"), ("metrics", "metrics"),
                ("prediction", "prediction"), ("environment", "environment")]
    for title, prefix in sections:
        rows = [(p, f) for p, f in FIELDS.items()
                if (p.split(".")[0].split("[")[0] == prefix if prefix else
                    p.split(".")[0] not in {s for _, s in sections if s})]
        lines += [f"## {title}", "", "| field | unit | across ranks | present | meaning |", "|---|---|---|---|---|"]
        lines += [f"| `{p}` | {_cell(f.unit)} | {_cell(f.ranks)} | {_cell(f.when)} | {_cell(f.meaning)} |"
                  for p, f in rows]
        lines.append("")
    lines += ["## config: the run config", "",
              "Every knob of the run as it ran (`RunConfig.from_dict` reads it back). Each is an `./sb bench` flag "
              "([CLI reference](cli.md)) and a trainer flag.", "",
              "| field | default | meaning |", "|---|---|---|"]
    lines += [f"| `config.{f.name}` | `{_cell(repr(f.default))}` | {_cell(f.metadata['help'])} |"
              for f in knob_fields()]
    recorded = Launch().recorded()
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Launch)}
    lines += ["", "## launch: bookkeeping", "", "Not part of the run id.", "", "| field | meaning |", "|---|---|"]
    lines += [f"| `launch.{k}` | {_cell(helps.get(k, ''))} |" for k in recorded]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
