"""Run under torch.distributed.run (2 ranks, gloo): build DeepSpeed engines for the embedded model at
the ZeRO configs given as JSON (argv[1]), train 2 steps each, and print, from rank 0, one JSON line
per config with the buffers DeepSpeed allocated: its reduce buckets (shapes and dtypes, captured
while they exist: ZeRO-1/2 allocate them for each backward and drop them at the step) and, at
ZeRO-3, the parameters still gathered when the forward has ended. tests/integration/test_memory_buffers.py
compares them with core.memory_model.buffer_bytes."""

from __future__ import annotations

import json
import sys

import deepspeed
import torch

from stackbench.trainer import models


def probe(zero: dict) -> dict:
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    model = models.build(models.resolve("tiny"), dtype=torch.float32, attn_impl="sdpa", seed=0, weights_dir=None)
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": zero, "zero_allow_untested_optimizer": True,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}}, "steps_per_print": 1 << 30}
    engine, _, _, _ = deepspeed.initialize(model=model, config=config, model_parameters=model.parameters())
    opt, seen = engine.optimizer, {"buckets": []}
    if hasattr(opt, "setup_buckets"):  # ZeRO-1/2
        setup = opt.setup_buckets

        def capture():
            setup()
            seen["buckets"] = [[t.numel(), str(t.dtype)] for b in opt.ipg_buckets.values() for t in b.buffer]
        opt.setup_buckets = capture

    def after_forward(module, args, output):
        seen["gathered"] = sum(p.ds_numel for p in module.parameters()
                               if getattr(p, "ds_status", None) == ZeroParamStatus.AVAILABLE)
    model.register_forward_hook(after_forward)
    x = torch.randint(0, 100, (1, 32))
    for _ in range(2):
        engine.backward(engine(input_ids=x, labels=x).loss)
        engine.step()
    if zero["stage"] == 3:
        seen["buckets"] = [[b.buffer.numel(), str(b.buffer.dtype)] for b in opt.ipg_buckets.values()
                           if b.buffer is not None]
    seen["params"] = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    return seen


if __name__ == "__main__":
    deepspeed.init_distributed("gloo")
    for zero in json.loads(sys.argv[1]):
        out = probe(zero)
        if torch.distributed.get_rank() == 0:
            print("BUFFERS", json.dumps({"zero": zero, **out}), flush=True)
