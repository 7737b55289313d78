"""The harness's own cost: the trainer's optimizer step against a bare DeepSpeed loop doing the same
work (same engine, same batches, forward + backward + step) in one process, ZeRO-2, fp32, CPU.

`invoke benchmark` measures both (pytest-benchmark, results/benchmarks/harness.json); the ratio
of their medians is the overhead (target: at most 3%). `invoke test` runs each once, to keep the
comparison working.
"""

from __future__ import annotations

import itertools
import os

import pytest

pytestmark = pytest.mark.deepspeed


@pytest.fixture(scope="module")
def setup():
    # a world of one in this process; put back afterwards, or later subprocesses would inherit it
    from stackbench.core.host import free_port

    world = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1",
                 LOCAL_WORLD_SIZE="1")
    saved = {k: os.environ.get(k) for k in world}
    os.environ.update(world)
    import deepspeed
    import torch

    from stackbench.core.config import RunConfig
    from stackbench.trainer import embedded, models
    from stackbench.trainer.backends.native import engines
    from stackbench.trainer.data import dataset
    from stackbench.trainer.data.batches import micro_batches
    from stackbench.trainer.ds_config import deepspeed_config

    deepspeed.init_distributed(dist_backend="gloo")
    cfg = RunConfig(task="sft", zero_stage=2, micro_batch=4, seq_len=128, gpus_per_node=1)
    ref = models.resolve("tiny")
    tok = models.load_tokenizer(ref)
    ds = dataset.load(cfg, tok)
    engine, _, _ = engines(cfg, ref, deepspeed_config(cfg, "fp32", "cpu")[0], torch.float32,
                           str(embedded.materialize()), cfg.attn_impl)
    batches = micro_batches(ds, rank=0, world=1, micro_batch=cfg.micro_batch, grad_accum=1,
                            pad_id=tok.pad_token_id, seq_len=cfg.seq_len, padding="fixed")
    fixed = [next(batches) for _ in range(len(ds) // cfg.micro_batch)]
    yield engine, cfg, batches, fixed
    torch.distributed.destroy_process_group()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_trainer_step(benchmark, setup):
    import torch

    from stackbench.trainer.backends.native import optimizer_step
    from stackbench.trainer.metrics import Meter, Phases

    engine, cfg, batches, _ = setup
    device = torch.device("cpu")
    meter = Meter(device, Phases.from_env(), total_steps=10**6)

    def step():  # what the native loop does per step: timed, sampled, heartbeat, losses read back
        meter.step_begin()
        meter.step_end(optimizer_step(engine, None, batches, cfg, device))
        return meter.steps[-1]

    benchmark.group = "step: trainer vs bare DeepSpeed"
    out = benchmark.pedantic(step, rounds=30, warmup_rounds=3)
    assert out["loss"] > 0 and out["real"] > 0


def test_bare_deepspeed_step(benchmark, setup):
    engine, _, _, fixed = setup
    cycle = itertools.cycle(fixed)

    def step():  # the least a DeepSpeed user writes: HF's own loss, no timing, no token counting
        b = next(cycle)
        out = engine(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels)
        engine.backward(out.loss)
        engine.step()
        return float(out.loss.detach())

    benchmark.group = "step: trainer vs bare DeepSpeed"
    assert benchmark.pedantic(step, rounds=30, warmup_rounds=3) > 0
