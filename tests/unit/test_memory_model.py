"""core/memory_model.py: model states against DeepSpeed's own estimators, each offload mode's
placement, activations by hand, whether a prediction fits (device and host), NVMe."""

import pytest

from stackbench.core import memory_model

SHAPES = [(596_049_920, 155_582_464), (8_190_735_360, 622_329_856), (70_553_706_496, 1_050_673_152)]

@pytest.mark.parametrize("params, largest", SHAPES)
@pytest.mark.parametrize("gpus", [1, 8, 64])
def test_model_states_agree_with_deepspeed_estimators(params, largest, gpus):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs as zero3
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs as zero2

    def ours(stage, opt=False, par=False):
        return memory_model.model_states_bytes(params, largest, gpus, stage, opt, par)

    assert ours(2).device == pytest.approx(zero2(params, gpus, 1, cpu_offload=False)[1], abs=1)
    assert ours(2, opt=True).device == zero2(params, gpus, 1, cpu_offload=True)[1]
    assert ours(3).device == pytest.approx(zero3(params, largest, gpus, 1, cpu_offload=False)[1], abs=1)
    assert ours(3, opt=True).device == pytest.approx(
        zero3(params, largest, gpus, 1, cpu_offload=True, cpu_offload_params=False)[1], abs=1)
    assert ours(3, opt=True, par=True).device == zero3(params, largest, gpus, 1)[1]
    # the host: DeepSpeed's estimator counts a node (gpus per node = gpus here) with a 1.5x buffer factor;
    # ours, derived from stage3.py, lies between the estimator without its factor and with it
    for opt_par, est in (((True, False), zero3(params, largest, gpus, 1, cpu_offload_params=False)[0]),
                         ((True, True), zero3(params, largest, gpus, 1)[0])):
        assert est / 1.5 <= ours(3, *opt_par).host * gpus <= est
    assert ours(3).host == ours(2).host == 0


def test_parameter_offload_alone_moves_only_the_16_bit_partition():
    """DeepSpeed has no estimator for offload_param without offload_optimizer: stage3.py keeps the fp32
    partition, Adam's moments and the gradient partitions where self.device says (the GPU) and puts
    the 16-bit partition in pinned host memory (_create_param_groups_fp16_flat_cpu_memory)."""
    psi, largest, n = 8_000_000_000, 600_000_000, 16
    full = memory_model.model_states_bytes(psi, largest, n, 3, False, False)
    par = memory_model.model_states_bytes(psi, largest, n, 3, False, True)
    assert par.host == par.pinned == 2 * psi / n
    assert par.device == full.device - 2 * psi / n and par.device >= 4 * largest + 14 * psi / n
    both = memory_model.model_states_bytes(psi, largest, n, 3, True, True, pin_memory=False)
    assert both.host == 20 * psi / n and both.pinned == 2 * psi / n  # the parameters are pinned whatever the flag
    assert memory_model.model_states_bytes(psi, largest, n, 2, True, False).host == 18 * psi / n


def test_a_cpu_counts_device_and_host_once_and_a_gpu_node_checks_its_ram():
    kw = dict(params=8_190_735_360, largest_layer=622_329_856, layers=36, hidden=4096, heads=32, vocab=151936,
              task="sft", ranks=8, micro_batch=1, seq_len=4096, stage=3, offload_optimizer=True)
    gpu = memory_model.predict(device_gib=80, **kw)
    assert gpu.fits and gpu.host_fits is None  # the node's RAM unknown: unchecked, never assumed
    assert memory_model.predict(device_gib=80, host_node_gib=1, ranks_per_node=8, **kw).host_fits is False
    assert memory_model.predict(device_gib=80, host_node_gib=1000, ranks_per_node=8, **kw).host_fits is True
    pool = memory_model.predict(device_gib=gpu.total_gib + gpu.host_gib / 2, one_pool=True, **kw)
    assert pool.fits is False and pool.host_fits is True  # the host share counted in the same RAM


def test_paper_figures_and_activations_by_hand():
    assert memory_model.paper_model_states_bytes(1000, 8, 2) == 2000 + 14000 / 8
    assert memory_model.paper_model_states_bytes(1000, 8, 3) == 2000
    # Korthikanti: s*b*h*(34 + 5*a*s/h) per layer, 16-bit: s=2048, b=1, h=4096, a=32, 1 layer
    assert memory_model.activation_bytes(2048, 1, 4096, 32, 1, fused_attention=False, recompute=False) == \
        2048 * 4096 * (34 + 5 * 32 * 2048 / 4096)
    assert memory_model.activation_bytes(2048, 1, 4096, 32, 1, fused_attention=True, recompute=False) == \
        2048 * 4096 * 34
    assert memory_model.activation_bytes(2048, 1, 4096, 32, 1, True, recompute=True) == 2 * 2048 * 4096


def test_prediction_says_whether_it_fits():
    kw = dict(params=8_190_735_360, largest_layer=622_329_856, layers=36, hidden=4096, heads=32, vocab=151936,
              task="sft", ranks=8, micro_batch=1, seq_len=4096)
    assert memory_model.predict(stage=0, device_gib=80, **kw).fits is False  # 20 bytes/param = 152 GiB
    assert memory_model.predict(stage=3, device_gib=80, **kw).fits is True
    assert memory_model.predict(stage=3, **kw).fits is None
    dpo = memory_model.predict(stage=3, **dict(kw, task="dpo"))
    assert (dpo.reference_gib > 0
            and dpo.activations_gib == pytest.approx(2 * memory_model.predict(stage=3, **kw).activations_gib))


def test_nvme_offload_leaves_ram_but_for_its_pinned_swap_buffers():
    """ZeRO-Infinity: with both offloads on NVMe a node needs RAM for the 16-bit gradient partition,
    up to max_in_cpu parameters and the swap buffers, not for the optimizer states (module doc)."""
    psi, n = 70_000_000_000, 16
    kw = dict(params=psi, largest_layer=1_000_000_000, layers=80, hidden=8192, heads=64, vocab=128256, task="sft",
              stage=3, ranks=n, micro_batch=1, seq_len=4096, offload_optimizer=True, offload_param=True)
    cpu = memory_model.predict(**kw)
    zero = {"offload_optimizer": {"device": "nvme", "nvme_path": "/nvme"},
            "offload_param": {"device": "nvme", "nvme_path": "/nvme", "max_in_cpu": 0}}
    nvme = memory_model.predict(knobs=memory_model.ZeroKnobs.of(zero), **kw)
    part = psi / n
    expected_host = 2 * part + 4 * min(1e9, part) * 4 + 5 * 1e8 * 2  # 16-bit grads, optimizer and param buffers
    assert nvme.host_gib * 2**30 == pytest.approx(expected_host)
    assert nvme.nvme_gib * 2**30 == pytest.approx(18 * part) and nvme.host_gib < cpu.host_gib / 3
    assert nvme.total_gib == cpu.total_gib  # the GPU's share does not change
