"""One run on every rank: input checked -> process group -> the backend trains, measured -> one
record (rank 0).

Order matters: everything that can be wrong with the input (config, model reference, dataset) is
checked before the process group forms, so a bad row fails in seconds instead of leaving the
other ranks waiting in a collective.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from stackbench.core import formulas, memory_model, record, secrets
from stackbench.core.config import CPU_BF16_WARNING, Launch, RunConfig, cli_flag, resolve_dtype
from stackbench.core.errors import UserError
from stackbench.core.fingerprint import fingerprint
from stackbench.core.host import free_port, host_gib_per_rank
from stackbench.trainer import compat, ds_source, liveness, metrics, models, moe
from stackbench.trainer.backends import REGISTRY
from stackbench.trainer.backends.base import Context, Topology
from stackbench.trainer.comms import CommsLog
from stackbench.trainer.data import checks
from stackbench.trainer.data import dataset as dataset_mod
from stackbench.trainer.data.batches import micro_batches
from stackbench.trainer.ds_config import deepspeed_config, describe

HOST = socket.gethostname()


def log(topo: Topology, msg: str) -> None:
    print(f"[{HOST}:{topo.rank}] {msg}", flush=True)


def default_command(cfg: RunConfig, launch: Launch, topo: Topology) -> str:
    return shlex.join(["torchrun", f"--nproc_per_node={topo.local_world}", "-m", "stackbench.trainer", *cfg.to_argv(),
                       *launch.to_argv()])


def with_topology(cfg: RunConfig, given: set[str], topo: Topology) -> RunConfig:
    """The run config with the nodes and GPUs per node the launcher actually started. Asked for
    explicitly and started otherwise is a launch mistake, said before any collective."""
    started = {"nodes": topo.nodes, "gpus_per_node": topo.local_world}
    for name, value in started.items():
        if name in given and getattr(cfg, name) != value:
            raise UserError(f"{cli_flag(name)} {getattr(cfg, name)} but the launcher started {topo.nodes} "
                            f"node(s) x {topo.local_world} rank(s)", where=f"rank {topo.rank} on {HOST}",
                            fix="start as many ranks as the run config says, or drop the flag")
    return cfg.replace(**started)


def run(cfg: RunConfig, launch: Launch, given: frozenset[str] = frozenset()) -> dict:
    """The run on this rank (cfg already says the topology it was started with: with_topology);
    given: the knobs set on the command line (an --attn-impl given is not replaced by a fallback)."""
    import torch

    topo = Topology.from_env()
    launch = launch.replace(run_id=launch.run_id or cfg.run_id)
    started = record.now()
    phases = metrics.Phases.from_env()

    # 1. everything that can be wrong with the input, before any collective
    ref = models.resolve(cfg.model)
    backend = REGISTRY[cfg.backend]
    if backend.check:
        backend.check()
    tokenizer, tokenizer_choice = models.tokenizer_for(cfg, ref)  # the bench process's choice too
    dataset = dataset_mod.load(cfg, tokenizer)
    phases.mark("input_ready")
    checks.check_enough(dataset, cfg.total_steps * cfg.global_batch, cfg.repeat_data,
                          f"{cfg.total_steps} steps x global batch {cfg.global_batch} ({cfg.micro_batch} x "
                          f"{cfg.grad_accum} x {cfg.world_size} ranks)")
    attention, meta = models.attention(ref, cfg.attn_impl, explicit="attn_impl" in given)
    shape = models.shape(ref, meta)
    moe.check_names(meta, cfg.z3_leaf)  # a class --z3-leaf names that the model lacks: said before any collective
    if shape.vocab < len(tokenizer):
        raise UserError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {shape.vocab}",
                        where=f"--model {cfg.model}", fix="use the tokenizer that belongs to the model")
    if topo.rank == 0:
        log(topo, f"data: {checks.drop_line(dataset)}" + ("" if dataset.cache_hit else " (tokenized now)"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", topo.local_rank) if cuda else torch.device("cpu")
    dtype = resolve_dtype(cfg.dtype, device.type)
    if dtype == "bf16" and device.type == "cpu":
        log(topo, f"warning: {CPU_BF16_WARNING}")
    ds_config, ds_provenance = deepspeed_config(cfg, dtype, device.type, SimpleNamespace(hidden_size=shape.hidden))
    ds_source.check_nvme(ds_config, need_bytes=18 * shape.params)  # fp32 master + Adam moments + a 16-bit copy
    if topo.rank == 0:
        for note in describe(ds_provenance):
            log(topo, f"note: {note}")
        if attention.why:
            log(topo, f"note: attention {attention.used}, not {attention.asked}: {attention.why}")
        if cfg.zero_stage == 3:
            log(topo, f"note: {moe.describe(moe.plan(meta, ds_config, cfg.z3_leaf))}")

    # 2. devices and the process group
    import deepspeed
    import torch.distributed as dist  # the group DeepSpeed makes; DeepSpeed 0.16's comm has no all_gather_object

    if cuda:
        torch.cuda.set_device(device)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    if "WORLD_SIZE" not in os.environ:  # started without a launcher: a world of one (DeepSpeed would look for MPI)
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    weights = ref.weights_dir
    if ref.kind == "tiny":  # before the process group: transformers 5 saves on global rank 0 only once there is one
        from stackbench.trainer import embedded

        weights = str(embedded.materialize())  # one rank per host builds it (a lock), the others wait
    # A hang must fail in minutes, not after the 30-minute default.
    collective_timeout = timedelta(seconds=launch.collective_timeout_s)
    compat.collective_timeout_for_every_group(collective_timeout)  # DeepSpeed's own groups too
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", timeout=collective_timeout)
    liveness.start(launch.collective_timeout_s)  # which node vanished, if one does; a cut-off node ends itself
    phases.mark("dist_ready")


    # 3. the backend trains; the shared meter times every optimizer step
    meter = metrics.Meter(device, phases, cfg.total_steps, host_baseline_gib=metrics.host_rss_now_gib(),
                          comms=CommsLog(ds_config, cfg.warmup_steps))
    batches = micro_batches(dataset, rank=topo.rank, world=topo.world, micro_batch=cfg.micro_batch,
                            grad_accum=cfg.grad_accum, pad_id=tokenizer.pad_token_id, seq_len=cfg.seq_len,
                            padding=cfg.padding, packed=cfg.packing and cfg.task != "pt", dtype=torch_dtype,
                            varlen=attention.used == "flash_attention_2")
    log(topo, f"{cfg.task} ZeRO-{cfg.zero_stage} on {topo.world} ranks ({cfg.backend}): {cfg.warmup_steps} warm-up + "
              f"{cfg.steps} measured steps")
    ctx = Context(cfg=cfg, launch=launch, ref=ref, attention=attention, tokenizer=tokenizer, dataset=dataset,
                  ds_config=ds_config, ds_provenance=ds_provenance, dtype=dtype, torch_dtype=torch_dtype,
                  weights=weights, topo=topo, device=device, batches=batches, meter=meter)
    result = backend.train(ctx)

    # 4. gather and reduce on rank 0
    everyone: list[Any] = [None] * topo.world
    device_name = torch.cuda.get_device_name(device) if cuda else None
    dist.all_gather_object(everyone, {**meter.mine(HOST, topo.rank, device_name, result.steps),
                                      "secrets": secrets.fingerprints()})  # that each rank saw them, never what
    rec = None
    if topo.rank == 0:
        rec = _record(ctx, started, everyone, shape, result, tokenizer_choice)
    dist.barrier()
    return rec or {}


def _record(ctx: Context, started: str, everyone: list[dict], shape: models.ModelShape, result,
            tokenizer: models.TokenizerChoice) -> dict:
    cfg, launch, topo = ctx.cfg, ctx.launch, ctx.topo
    flops = formulas.task_flops_per_token(cfg.task, shape.flops_params, shape.attention, cfg.seq_len,
                                          cfg.grad_checkpointing)
    metrics_out = metrics.reduce(everyone, task=cfg.task, warmup=cfg.warmup_steps, flops_per_token=flops,
                                 peak=formulas.peak_flops(everyone[0]["device"], ctx.dtype))
    env = fingerprint()
    env["ranks"] = [{"rank": r["rank"], "host": r["host"], "device": r["device"], "secrets": r["secrets"]}
                    for r in everyone]
    env["hosts"] = sorted({r["host"] for r in everyone})
    device_gib = env["devices"].get("memory_gib") or host_gib_per_rank(topo.local_world)
    prediction = memory_model.predict_for(shape, cfg.replace(attn_impl=ctx.attention.used), dtype=ctx.dtype,
                                          device_gib=device_gib,
                                          zero_optimization=(ctx.ds_config or {}).get("zero_optimization"),
                                          device_type="cuda" if everyone[0]["device"] else "cpu").to_dict()
    resolved = {
        "model": {"name": ctx.ref.name, "path": ctx.ref.path or None, "kind": ctx.ref.kind,
                  "weights": ctx.weights, **shape.to_dict()},  # weights: the directory loaded; None: random init
        "tokenizer": tokenizer.to_dict(),  # which tokenizer counted the tokens; fallback: the embedded one stood in
        "dtype": ctx.dtype, "world_size": topo.world, "global_batch": cfg.global_batch,
        "ref_zero_stage": cfg.ref_zero_stage if cfg.task == "dpo" else None,
        "attention": ctx.attention.to_dict(), "moe_leaf_modules": result.leaves, "data": ctx.dataset.summary(),
        "deepspeed": ctx.ds_config,
        "deepspeed_from": ctx.ds_provenance, "engine": result.engine,
    }
    if topo.world == 1 and cfg.zero_stage > 0:
        resolved["caveats"] = [record.ONE_DEVICE]
    if result.setup:  # how the harness made the backend's trainer run (trainer/backends/)
        resolved["backend_setup"] = result.setup
    launch = launch.replace(command=launch.command or default_command(cfg, launch, topo))
    rec = record.new("ok", cfg, launch, started_at=started, resolved=resolved, metrics=metrics_out,
                     prediction=prediction, environment=env, trainer_argv=sys.argv[1:])
    record.write(record.path(launch.out, rec["run_id"]), rec)
    return rec
