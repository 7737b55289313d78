"""DeepSpeed's fixed buffers, as the memory model sizes them (core.memory_model.buffer_bytes),
against the tensors DeepSpeed's engine actually allocates (their element counts and dtypes), not
against CPU RSS, where untouched pages of a 2 GB bucket do not show. The embedded model, 2 ranks,
fp32, one launch for every config: exact to the element."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stackbench.core import memory_model
from stackbench.trainer import models
from tests.conftest import ROOT

pytestmark = pytest.mark.deepspeed

CONFIGS = [{"stage": 1}, {"stage": 2}, {"stage": 2, "overlap_comm": True, "reduce_bucket_size": 1_000_000},
           {"stage": 2, "contiguous_gradients": False}, {"stage": 3}, {"stage": 3, "reduce_bucket_size": 2_000_000}]


def test_buffer_sizes_match_the_tensors_deepspeed_allocates(tmp_path):
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "tests" / "support" / "engine_buffers.py"), json.dumps(CONFIGS)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=300)
    found = [json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("BUFFERS ")]
    assert len(found) == len(CONFIGS), out.stdout[-3000:] + out.stderr[-3000:]
    shape = models.shape(models.resolve("tiny"))
    for got in found:
        zero = got["zero"]
        knobs = memory_model.ZeroKnobs.of(zero)
        assert all(dtype == "torch.float32" for _, dtype in got["buckets"]), got
        allocated = sum(n for n, _ in got["buckets"]) * 4
        if zero["stage"] == 3:
            kept = got["gathered"] - shape.largest_layer  # the layer being computed is in the model states
            allocated += max(0, kept) * 4
            assert got["gathered"] == got["params"] == shape.params, got  # DeepSpeed's cache kept every parameter
        predicted = memory_model.buffer_bytes(zero["stage"], shape.params, shape.largest_layer, 2, knobs, value_bytes=4)
        assert allocated == predicted, (zero, got, predicted)
