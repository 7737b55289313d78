"""core/perf_model.py against hand counts: ZeRO's bytes per step as DeepSpeed sends them, and
nccl-tests' bus-bandwidth conventions."""

import pytest

from core import perf_model as pm


def test_volumes_per_stage_by_hand():
    psi, n = 1000, 4
    assert pm.zero_volumes(0, psi, n, 8, grad_bytes=2, param_bytes=2) == {"all_reduce": pm.Volume("all_reduce", 2000, 2000)}
    one = pm.zero_volumes(1, psi, n, 8, grad_bytes=2, param_bytes=2)
    assert one["all_reduce"].low == 2000 and one["all_gather"].low == 500  # once per step, whatever the accumulation
    two = pm.zero_volumes(2, psi, n, 8, grad_bytes=2, param_bytes=2)
    assert two["all_reduce"].low == 16000 and two["all_gather"].low == 500  # every micro-batch's backward
    three = pm.zero_volumes(3, psi, n, 2, grad_bytes=4, param_bytes=2, tied_embedding=100, keeps_params=False)
    assert three["reduce_scatter"].low == 8000
    assert three["all_gather"].exact and three["all_gather"].low == 2 * 1100 * 2 * 2 / 4  # fwd + bwd, tied twice
    cached = pm.zero_volumes(3, psi, n, 2, grad_bytes=4, param_bytes=2, tied_embedding=100)
    assert (cached["all_gather"].low, cached["all_gather"].high) == (500, 2200) and not cached["all_gather"].exact
    assert pm.zero_volumes(3, psi, 1, 2, grad_bytes=4, param_bytes=2) == {}


def test_the_cache_is_off_only_when_nothing_is_kept():
    assert pm.keeps_params({}) and pm.keeps_params({"stage3_max_reuse_distance": 0})  # persistent params still kept
    assert not pm.keeps_params({"stage3_max_reuse_distance": 0, "stage3_param_persistence_threshold": 0})
    assert not pm.keeps_params({"stage3_max_live_parameters": 0, "stage3_param_persistence_threshold": 0})


def test_bus_bytes_follow_nccl_tests():
    # 8 ranks: all-reduce 2(n-1)/n of the buffer, reduce-scatter (n-1)/n of the input, all-gather (n-1) shards
    assert pm.bus_bytes("all_reduce", 800, 8) == pytest.approx(1400)
    assert pm.bus_bytes("reduce_scatter", 800, 8) == pytest.approx(700)
    assert pm.bus_bytes("all_gather", 100, 8) == pytest.approx(700)
    vols = pm.zero_volumes(2, 10**9, 8, 1, grad_bytes=2, param_bytes=2)  # 1B params, bf16, 8 ranks
    # all-reduce 2 GB -> 3.5 GB on the bus, all-gather 250 MB shard -> 1.75 GB: 5.25 GB at 100 GB/s
    assert pm.comm_seconds(vols, 8, 100e9) == pytest.approx(5.25e9 / 100e9)


def test_logged_volumes_read_deepspeeds_names_and_leave_scalars_out():
    logged = {"all_reduce": {"calls": 2, "bytes": 4004, "sizes": {"4": 1.0, "4000": 1.0}},
              "all_gather_into_tensor": {"calls": 1, "bytes": 500, "sizes": {"128": 1.0, "2000": 0.5}},
              "broadcast": {"calls": 1, "bytes": 8, "sizes": {"8": 1.0}}}
    assert pm.logged_volumes(logged) == {"all_reduce": 4000.0, "all_gather": 1128.0}
