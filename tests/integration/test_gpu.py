"""The GPU tier: the only tier allowed to skip (CI has no GPU). Run on a lent GPU machine."""

import pytest

from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.local import LocalLauncher
from stackbench.core.config import RunConfig

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="gpu: no CUDA device on this machine")]


@pytest.mark.parametrize("stage", [0, 3])
def test_bf16_run_on_gpu_reports_allocator_peaks_and_mfu(tmp_path, stage):
    spec = RunConfig(task="sft", model="qwen3-0.6b", zero_stage=stage, gpus_per_node=1, micro_batch=1, seq_len=2048,
                   steps=5, warmup_steps=2)
    rec = LocalLauncher(LaunchOptions(deadline_s=600)).launch(spec, tmp_path)
    assert rec["status"] == "ok", rec.get("error")
    m = rec["metrics"]
    assert rec["resolved"]["dtype"] == "bf16"
    assert m["memory"]["max_allocated_gib"] > 1 and m["memory"]["alloc_retries"] is not None
    if any(k in torch.cuda.get_device_name(0) for k in ("H100", "H200", "A100")):
        assert 0 < m["mfu"] < 1
