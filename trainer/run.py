"""One run on every rank: data -> model -> DeepSpeed engine(s) -> timed steps -> one record (rank 0).

Order matters: everything that can be wrong with the input (config, model reference, dataset) is
checked before the process group forms, so a bad row fails in seconds instead of leaving the
other ranks waiting in a collective.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bench import formulas, memory_model
from trainer import data as data_mod
from trainer import metrics, models, record
from trainer.config import TrainConfig
from trainer.errors import UserError

HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class Topology:
    rank: int
    world: int
    local_rank: int
    local_world: int

    @property
    def nodes(self) -> int:
        return max(1, self.world // self.local_world)

    @classmethod
    def from_env(cls) -> "Topology":
        env = os.environ
        world = int(env.get("WORLD_SIZE", 1))
        return cls(int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", world)))


def log(topo: Topology, msg: str) -> None:
    print(f"[{HOST}:{topo.rank}] {msg}", flush=True)


def resolve_dtype(name: str, device_type: str) -> str:
    if name == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    if device_type == "cpu" and name != "fp32":
        raise UserError(f"--dtype {name} on a CPU", where="--dtype",
                        fix="use fp32 on CPU (DeepSpeed refuses fp16 there and bf16 runs 15x slower without AVX512-BF16)")
    return name


def deepspeed_config(cfg: TrainConfig, world: int, dtype: str, device_type: str) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    pin = device_type == "cuda"
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if cfg.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch * cfg.grad_accum * world,
        # torch_adam: torch's AdamW, no compiled op. With offload DeepSpeed's CPU Adam does the
        # step on the host, as in production (compiled once, cached in TORCH_EXTENSIONS_DIR).
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "betas": [0.9, 0.95], "eps": 1e-8,
                                                  "weight_decay": 0.0, "torch_adam": not cfg.offload_optimizer}},
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {"enabled": dtype == "fp16", "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def reference_config(ds: dict[str, Any]) -> dict[str, Any]:
    """The frozen DPO reference runs as an inference-only engine: partitioned under ZeRO-3, plain
    otherwise (ZeRO 1/2 shard optimizer states and gradients, which a frozen model has none of).
    As TRL's `prepare_deepspeed` does."""
    ref = {k: v for k, v in ds.items() if k not in ("optimizer", "gradient_clipping")}
    stage = ds["zero_optimization"]["stage"]
    ref["zero_optimization"] = {"stage": 3, **({"offload_param": ds["zero_optimization"]["offload_param"]}
                                               if "offload_param" in ds["zero_optimization"] else {})} \
        if stage == 3 else {"stage": 0}
    return ref


# --- losses ------------------------------------------------------------------------------------

def sequence_logps(logits, labels):
    """Sum of log p(label) over the labelled tokens of each sequence, and the token count."""
    import torch.nn.functional as F

    logits, labels = logits[:, :-1, :].float(), labels[:, 1:]
    mask = labels != data_mod.IGNORE
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.clamp(min=0).reshape(-1),
                          reduction="none").view(labels.shape)
    return -(nll * mask).sum(-1), mask.sum(-1)


def lm_loss(engine, batch):
    logits = engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logp, count = sequence_logps(logits, batch.labels)
    return -logp.sum() / count.sum().clamp(min=1), {}


def dpo_loss(engine, reference, batch, beta: float):
    """Sigmoid DPO (Rafailov et al., arXiv 2305.18290): chosen rows first, rejected after."""
    import torch
    import torch.nn.functional as F

    b = batch.input_ids.size(0) // 2
    fwd = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    policy, _ = sequence_logps(engine(**fwd).logits, batch.labels)
    with torch.no_grad():
        ref, _ = sequence_logps(reference(**fwd).logits, batch.labels)
    chosen, rejected = beta * (policy[:b] - ref[:b]), beta * (policy[b:] - ref[b:])
    loss = -F.logsigmoid(chosen - rejected).mean()
    extra = {"reward_accuracy": (chosen > rejected).float().mean().detach(),
             "reward_margin": (chosen - rejected).mean().detach()}
    return loss, extra


# --- the run ------------------------------------------------------------------------------------

def default_command(cfg: TrainConfig, topo: Topology) -> str:
    return shlex.join(["torchrun", f"--nproc_per_node={topo.local_world}", "-m", "trainer", *cfg.to_argv()])


def run(cfg: TrainConfig) -> dict:
    import torch

    topo = Topology.from_env()
    started = record.now()
    phases = metrics.Phases.from_env()
    run_id = cfg.run_id or f"{cfg.task}-z{cfg.zero_stage}-{int(time.time())}"

    # 1. everything that can be wrong with the input, before any collective
    ref = models.resolve(cfg.model)
    if cfg.backend == "swift":
        from trainer.swift_backend import check_installed

        check_installed()
    tokenizer = models.load_tokenizer(ref)
    dataset = data_mod.load(cfg.data, tokenizer, cfg.task, cfg.seq_len, cfg.too_long, cfg.packing)
    phases.mark("input_ready")
    global_batch = cfg.micro_batch * cfg.grad_accum * topo.world
    total_steps = cfg.warmup_steps + cfg.steps
    data_mod.check_enough(dataset, total_steps * global_batch, cfg.repeat_data,
                          f"{total_steps} steps x global batch {global_batch} ({cfg.micro_batch} x {cfg.grad_accum} "
                          f"x {topo.world} ranks)")
    shape = models.shape(ref)
    if shape.vocab < len(tokenizer):
        raise UserError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {shape.vocab}",
                        where=f"--model {cfg.model}", fix="use the tokenizer that belongs to the model")
    if dataset.dropped_too_long or dataset.truncated:
        log(topo, f"warning: {dataset.dropped_too_long} samples dropped and {dataset.truncated} truncated "
                  f"as longer than --seq-len {cfg.seq_len} (--too-long {cfg.too_long})")

    # 2. devices and the process group
    import deepspeed
    from deepspeed import comm as dist

    cuda = torch.cuda.is_available()
    device = torch.device("cuda", topo.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dtype = resolve_dtype(cfg.dtype, device.type)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    if "WORLD_SIZE" not in os.environ:  # started without a launcher: a world of one (DeepSpeed would look for MPI)
        from bench.launchers.base import free_port

        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    # A hang must fail in minutes, not after the 30-minute default.
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=cfg.collective_timeout_s))
    phases.mark("dist_ready")

    weights = ref.weights_dir
    if ref.kind == "tiny":
        from trainer import embedded

        if topo.local_rank == 0:
            embedded.materialize()
        dist.barrier()
        weights = str(embedded.materialize())

    # 3-4. models, engines and timed steps: stackbench's own loop, or a backend's trainer driven
    # with the same batches, DeepSpeed config and per-step timing
    rss_before_model = metrics.host_rss_now_gib()
    ds_config = deepspeed_config(cfg, topo.world, dtype, device.type)
    timer, memory = metrics.StepTimer(device), metrics.MemoryTracker(device, rss_before_model)
    batches = data_mod.micro_batches(dataset, rank=topo.rank, world=topo.world, micro_batch=cfg.micro_batch,
                                     grad_accum=cfg.grad_accum, pad_id=tokenizer.pad_token_id, seq_len=cfg.seq_len,
                                     padding=cfg.padding)
    log(topo, f"{cfg.task} ZeRO-{cfg.zero_stage} on {topo.world} ranks ({cfg.backend}): {cfg.warmup_steps} warm-up + "
              f"{cfg.steps} measured steps")
    setup = None  # how a backend's trainer was made to run, for the record
    if cfg.backend == "hf":
        from trainer import hf_backend

        per_step, leaves, setup = hf_backend.train(cfg, ref, tokenizer, ds_config, torch_dtype, weights, batches,
                                                   device, total_steps, timer, memory, phases)
    elif cfg.backend == "swift":
        from trainer import swift_backend

        per_step, leaves, setup = swift_backend.train(cfg, ref, dataset, ds_config, dtype, weights, topo, device,
                                                      total_steps, timer, memory, phases)
    else:
        engine, reference, leaves = _engines(cfg, ref, ds_config, torch_dtype, weights)
        phases.mark("engines_ready")
        per_step = []
        for step in range(total_steps):
            timer.start()
            stats = optimizer_step(engine, reference, batches, cfg, device)
            timer.stop()
            memory.sample()
            per_step.append({k: float(v) if hasattr(v, "item") else v for k, v in stats.items()})
            heartbeat(step, total_steps)
            if step == 0:
                phases.mark("first_step_done")

    # 5. gather and reduce
    mine = {"host": HOST, "rank": topo.rank, "times": timer.seconds(), "steps": per_step, "memory": memory.summary(),
            "startup_s": phases.since_launch(),
            "device": torch.cuda.get_device_name(device) if cuda else None}
    everyone: list[Any] = [None] * topo.world
    dist.all_gather_object(everyone, mine)
    result = None
    if topo.rank == 0:
        result = _record(cfg, topo, run_id, started, everyone, ref, shape, dataset, dtype, leaves, ds_config, setup)
    dist.barrier()
    return result or {}


def optimizer_step(engine, reference, batches, cfg: TrainConfig, device) -> dict[str, Any]:
    """One optimizer step: grad_accum micro-batches forward + backward, DeepSpeed steps at the
    boundary. Losses stay on the device (no synchronisation here); token counts are host ints."""
    import torch

    real = padded = seqs = 0
    losses, extras = [], []
    for _ in range(cfg.grad_accum):
        b = next(batches)
        batch = data_mod.Batch(b.input_ids.to(device), b.attention_mask.to(device), b.labels.to(device),
                               real_tokens=b.real_tokens, padded_tokens=b.padded_tokens, sequences=b.sequences)
        if cfg.task == "dpo":
            loss, extra = dpo_loss(engine, reference, batch, cfg.beta)
        else:
            loss, extra = lm_loss(engine, batch)
        engine.backward(loss)
        engine.step()
        losses.append(loss.detach())
        extras.append(extra)
        real, padded, seqs = real + b.real_tokens, padded + b.padded_tokens, seqs + b.sequences
    out: dict[str, Any] = {"loss": torch.stack(losses).mean(), "real": real, "padded": padded, "seqs": seqs}
    for key in extras[0]:
        out[key] = torch.stack([e[key] for e in extras]).mean()
    return out


def heartbeat(step: int, total: int) -> None:
    """Rank 0 touches the file the launcher's watchdog follows."""
    path = os.environ.get("STACKBENCH_HEARTBEAT")
    if path and os.environ.get("RANK", "0") == "0":
        with open(path, "w") as f:
            f.write(f"{step + 1}/{total} {time.time():.3f}\n")


def build_model(cfg: TrainConfig, ref: models.ModelRef, torch_dtype, weights: str | None, frozen: bool = False):
    """(model, MoE leaf classes): the policy, or with frozen=True DPO's reference. Under ZeRO-3
    the caller keeps a HfDeepSpeedConfig alive so this builds inside zero.Init, and MoE blocks
    become leaf modules (DeepSpeed issue 7461)."""
    model = models.build(ref, dtype=torch_dtype, attn_impl=cfg.attn_impl, seed=cfg.seed, weights_dir=weights)
    leaves = models.set_moe_leaves(model, model.config.model_type) if cfg.zero_stage == 3 else []
    if frozen:
        model.requires_grad_(False)
    return model, leaves


def _engines(cfg: TrainConfig, ref: models.ModelRef, ds_config: dict, torch_dtype, weights: str | None):
    import deepspeed

    keep_alive = None
    if cfg.zero_stage == 3:  # transformers builds the model inside deepspeed.zero.Init while this lives
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)
    model, leaves = build_model(cfg, ref, torch_dtype, weights)
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_config)
    reference = None
    if cfg.task == "dpo":
        ref_config = reference_config(ds_config)
        if cfg.zero_stage == 3:
            keep_alive = HfDeepSpeedConfig(ref_config)
        ref_model, _ = build_model(cfg, ref, torch_dtype, weights, frozen=True)
        reference, *_ = deepspeed.initialize(model=ref_model, config=ref_config)
        reference.eval()
    del keep_alive
    return engine, reference, leaves


def _record(cfg, topo, run_id, started, everyone, ref, shape, dataset, dtype, leaves, ds_config, setup) -> dict:
    from envcheck.fingerprint import fingerprint

    warm = cfg.warmup_steps
    # a step lasts as long as its slowest rank
    times = [max(r["times"][i] for r in everyone) for i in range(len(everyone[0]["times"]))][warm:]
    measured = [r["steps"][warm:] for r in everyone]
    total_s = sum(times)
    real = sum(s["real"] for r in measured for s in r)
    padded = sum(s["padded"] for r in measured for s in r)
    seqs = sum(s["seqs"] for r in measured for s in r)
    def rank_mean(key: str) -> list[float]:  # per step, the mean of each rank's value
        return [sum(r["steps"][i][key] for r in everyone) / topo.world for i in range(len(everyone[0]["steps"]))]

    losses = rank_mean("loss")
    device_name = everyone[0]["device"]
    tokens_per_s = real / total_s
    per_device = tokens_per_s / topo.world
    padded_per_device = padded / total_s / topo.world
    model_fpt, hw_fpt = formulas.task_flops_per_token(cfg.task, shape.flops_params, shape.layers, shape.heads,
                                                      shape.head_dim, cfg.seq_len, cfg.grad_checkpointing)
    peak = formulas.peak_flops(device_name, dtype)
    metrics_out: dict[str, Any] = {
        "step_time_s": metrics.spread(times),
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
        "memory": metrics.max_over_ranks([r["memory"] for r in everyone]),
        "memory_per_rank": [dict(r["memory"], rank=r["rank"], host=r["host"]) for r in everyone],
        # seconds from the launcher starting the processes to each phase; the slowest rank counts
        "startup_s": {k: max(r["startup_s"][k] for r in everyone) for k in everyone[0]["startup_s"]},
        "loss": {"first": losses[0], "last": losses[-1], "per_step": losses},
    }
    if cfg.task == "dpo":
        for key in ("reward_accuracy", "reward_margin"):
            series = rank_mean(key)
            metrics_out[key] = {"first": series[0], "last": series[-1], "per_step": series}
    env = fingerprint()
    env["ranks"] = [{"rank": r["rank"], "host": r["host"], "device": r["device"]} for r in everyone]
    env["hosts"] = sorted({r["host"] for r in everyone})
    from bench import fit

    prediction = memory_model.predict_for(
        shape, task=cfg.task, stage=cfg.zero_stage, ranks=topo.world, micro_batch=cfg.micro_batch,
        seq_len=cfg.seq_len, offload_optimizer=cfg.offload_optimizer, offload_param=cfg.offload_param, dtype=dtype,
        attn_impl=cfg.attn_impl, grad_checkpointing=cfg.grad_checkpointing,
        device_gib=env["devices"].get("memory_gib") or fit.host_gib_per_rank(topo.local_world)).to_dict()
    config = {
        "task": cfg.task, "backend": cfg.backend,
        "model": {"name": ref.name, "path": ref.path or None, "kind": ref.kind, **shape.to_dict()},
        "zero_stage": cfg.zero_stage, "offload_optimizer": cfg.offload_optimizer, "offload_param": cfg.offload_param,
        "nodes": topo.nodes, "gpus_per_node": topo.local_world, "world_size": topo.world,
        "micro_batch": cfg.micro_batch, "grad_accum": cfg.grad_accum,
        "global_batch": cfg.micro_batch * cfg.grad_accum * topo.world, "seq_len": cfg.seq_len, "dtype": dtype,
        "attn_impl": cfg.attn_impl, "grad_checkpointing": cfg.grad_checkpointing, "launcher": cfg.launcher,
        "steps": cfg.steps, "warmup_steps": cfg.warmup_steps, "padding": cfg.padding, "packing": cfg.packing,
        "lr": cfg.lr, "beta": cfg.beta if cfg.task == "dpo" else None, "seed": cfg.seed,
        "moe_leaf_modules": leaves, "data": dataset.summary(), "deepspeed": ds_config,
    }
    if setup:  # how the harness made the backend's trainer run (trainer/hf_backend.py, swift_backend.py)
        config["backend_setup"] = setup
    rec = record.new(run_id, cfg.sweep_id, "ok", config=config, command=cfg.command or default_command(cfg, topo),
                     started_at=started, metrics=metrics_out, prediction=prediction, environment=env,
                     trainer_argv=sys.argv[1:])
    record.write(os.path.join(cfg.out, f"{run_id}.json"), rec)
    return rec
