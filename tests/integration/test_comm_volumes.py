"""What ZeRO sends, predicted (core/perf_model.py) against what DeepSpeed actually sends (its
comms logger, read into each record by trainer/comms.py): the embedded model on 2 ranks, ZeRO 0-3,
with and without gradient accumulation, in one sweep. On a CPU this is exact, however slow the CPU:
bytes per step per collective type must match to the byte (tolerance 0), scalars (one number, <= 8 bytes:
losses, flags, norms) left out; ZeRO-3 with DeepSpeed's parameter cache (its defaults) inside the
range the model gives."""

from __future__ import annotations

import json

import pytest

from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.local import LocalLauncher
from stackbench.bench.sweep import run_sweep
from stackbench.core import perf_model
from stackbench.core.config import RunConfig

pytestmark = pytest.mark.deepspeed

LOGGER = {"comms_logger.enabled": True, "comms_logger.prof_all": True}
NO_CACHE = {"zero_optimization.stage3_max_reuse_distance": 0, "zero_optimization.stage3_max_live_parameters": 0,
            "zero_optimization.stage3_param_persistence_threshold": 0}
# (stage, accumulation, overrides): one sweep, 7 launches
RUNS = [(0, 2, {}), (1, 2, {}), (2, 1, {}), (2, 2, {}), (3, 1, NO_CACHE), (3, 2, NO_CACHE), (3, 2, {})]


def test_zero_communication_volumes_match_deepspeeds_comms_logger(tmp_path):
    specs = [RunConfig(task="sft", model="tiny", zero_stage=stage, grad_accum=ga, gpus_per_node=2, steps=1,
                       warmup_steps=1, ds=json.dumps({**LOGGER, **extra})) for stage, ga, extra in RUNS]
    records = run_sweep(specs, LocalLauncher(LaunchOptions(deadline_s=300, preflight=False)), tmp_path / "s",
                        quiet=True)
    checked = 0
    for (stage, ga, extra), rec in zip(RUNS, records):
        assert rec["status"] == "ok", rec["error"]
        model = rec["resolved"]["model"]
        logged = perf_model.logged_volumes(rec["metrics"]["comms_per_step"])
        predicted = perf_model.zero_volumes(
            stage, model["params"], rec["resolved"]["world_size"], ga, grad_bytes=4, param_bytes=4,
            tied_embedding=model["embedding"] if model["lm_head"] == 0 else 0,
            keeps_params=perf_model.keeps_params(rec["resolved"]["deepspeed"]["zero_optimization"]))
        assert set(logged) == set(predicted), (stage, ga, logged, predicted)
        for op, volume in predicted.items():
            if volume.exact:
                assert logged[op] == volume.low, (stage, ga, op, logged[op], volume)
                checked += 1
            else:
                assert volume.low <= logged[op] <= volume.high, (stage, ga, op, logged[op], volume)
    assert checked == 1 + 2 + 2 + 2 + 2 + 2 + 1  # every exact figure was compared
