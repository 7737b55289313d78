"""core/perf_model.py against hand counts: ZeRO's bytes per step as DeepSpeed sends them, and
nccl-tests' bus-bandwidth conventions."""

import pytest

from stackbench.core import perf_model as pm


def test_volumes_per_stage_by_hand():
    psi, n = 1000, 4
    assert pm.zero_volumes(0, psi, n, 8, grad_bytes=2, param_bytes=2) == {
        "all_reduce": pm.Volume("all_reduce", 2000, 2000)}
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


def test_the_cache_keeps_parameters_only_under_its_limits():
    assert pm.keeps_params({}, 6 * 10**8) and not pm.keeps_params({}, 8 * 10**9)  # 1e9 each by default
    assert not pm.keeps_params({"stage3_max_live_parameters": 1e10}, 8 * 10**9)  # the reuse distance still 1e9
    assert pm.keeps_params({"stage3_max_live_parameters": 1e10, "stage3_max_reuse_distance": 1e10}, 8 * 10**9)


def test_offload_and_cross_node_links_in_the_step_time_by_hand():
    k = pm.StepCoefficients(flops_per_s=1e12, busbw_bytes_per_s=100e9, fixed_s={"sft ZeRO-2": 0.5},
                            inter_busbw_bytes_per_s=10e9, pcie_bytes_per_s=20e9, cpu_adam_params_per_s=1e9)
    assert pm.step_seconds(2e12, 1e10, "sft ZeRO-2", k, nodes=1) == pytest.approx(2 + 0.1 + 0.5)
    assert pm.step_seconds(2e12, 1e10, "sft ZeRO-2", k, nodes=2) == pytest.approx(2 + 1.0 + 0.5)  # the NIC, not NVLink
    # 8e9 params on 8 ranks, bf16: 1e9 each, a 2 GB partition. Optimizer offload at ZeRO-3, 4 micro-batches:
    # each backward's 2 GB gradients down, the updated 2 GB up once (10 GB over 20 GB/s), 1e9 params of host Adam
    assert pm.offload_seconds(True, False, 8 * 10**9, 8, 4, 2, k) == pytest.approx(0.5 + 1.0)
    # at the boundary
    assert pm.offload_seconds(True, False, 8 * 10**9, 8, 4, 2, k, stage=1) == pytest.approx(0.2 + 1.0)
    # parameter offload also brings the partition up for each of 4 micro-batches' forward and backward (16 GB)
    assert pm.offload_seconds(True, True, 8 * 10**9, 8, 4, 2, k) == pytest.approx(0.5 + 0.8 + 1.0)
    # parameters alone: no host Adam, but the fetches, and the updated partition written back down (18 GB)
    assert pm.offload_seconds(False, True, 8 * 10**9, 8, 4, 2, k) == pytest.approx(0.9)
    assert pm.offload_seconds(False, False, 8 * 10**9, 8, 4, 2, k) == 0


def test_plan_ranks_what_fits_by_predicted_speed():
    from stackbench.bench.planning.plan import plan

    rows = plan(model="qwen3-8b", gpus_per_node=8, gpu_mem_gib=80, nodes=[1, 2], seq_len=4096)
    fitting = [r for r in rows if r["device_fits"]]
    assert rows[: len(fitting)] == fitting  # what the GPUs hold first
    for n in (1, 2):
        # per node count: the host checked first (no offload: nothing on the host), then the host unchecked
        verdicts = [r["verdict"] for r in fitting if r["nodes"] == n]
        assert verdicts == sorted(verdicts, key=lambda v: v != "yes") and "host unchecked" in verdicts
        speeds = [r["predicted_tokens_per_s_per_device"] for r in fitting if r["nodes"] == n and r["fits"]]
        assert speeds == sorted(speeds, reverse=True) and all(s > 0 for s in speeds)
    by = {(r["nodes"], r["zero_stage"], r["offload"]): r for r in rows}
    assert by[(1, 3, "optimizer")]["predicted_step_s"] > by[(1, 3, "none")]["predicted_step_s"]  # PCIe + host Adam
    # ZeRO-3's traffic crosses the 45 GB/s NICs at 2 nodes: slower per GPU than inside one node
    assert (by[(2, 3, "none")]["predicted_tokens_per_s_per_device"]
            < by[(1, 3, "none")]["predicted_tokens_per_s_per_device"])
    faster_link = plan(model="qwen3-8b", gpus_per_node=8, gpu_mem_gib=80, nodes=[2], busbw_inter_gbps=400)
    assert next(r for r in faster_link if r["zero_stage"] == 3 and r["offload"] == "none")["predicted_step_s"] < \
        by[(2, 3, "none")]["predicted_step_s"]


def test_plan_refuses_an_impossible_assumption_naming_the_flag():
    from stackbench.bench.planning.main import main as plan_cli
    from stackbench.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        plan_cli(model="qwen3-0.6b", nodes="1", seq_len="2048", json=True, mfu="1.5")
    assert e.value.where == "--mfu"


GIB = 2**30


def test_qwen3_235b_on_three_nodes_is_planned_as_deepspeed_would_hold_it():
    """The case a user hit: 3 x 8 H100 (80 GiB), Qwen3-235B-A22B SFT at seq 4096, micro-batch 1. ZeRO-3
    with parameter offload alone keeps the fp32 master weights, Adam's moments and the gradient
    partitions on the GPU (>= 14 bytes/param / 24 GPUs ~ 128 GiB): it cannot fit. Optimizer +
    parameter offload can, with its host share checked against a node's RAM."""
    from stackbench.bench.planning.plan import plan, recommend
    from stackbench.trainer import models

    psi = models.shape(models.resolve("qwen3-235b-a22b")).params
    kw = dict(model="qwen3-235b-a22b", gpus_per_node=8, gpu_mem_gib=80, nodes=[3, 4, 8], seq_len=4096, micro_batch=1)
    rows = plan(**kw)
    by = {(r["nodes"], r["zero_stage"], r["offload"]): r for r in rows}
    for n in (3, 4, 8):
        params_only = by[(n, 3, "params")]
        assert params_only["model_states_gib"] * GIB >= 14 * psi / (8 * n)
        assert params_only["host_gib_per_rank"] * GIB == pytest.approx(2 * psi / (8 * n))  # only the bf16 partition
        none = by[(n, 3, "none")]["predicted_step_s"]
        for offload in ("params", "optimizer", "optimizer+params"):  # every offload costs PCIe (and host Adam)
            assert by[(n, 3, offload)]["predicted_step_s"] > none, offload
        for stage in (1, 2):
            assert by[(n, stage, "optimizer")]["predicted_step_s"] > by[(n, stage, "none")]["predicted_step_s"]
    assert not by[(3, 3, "params")]["device_fits"] and not by[(3, 3, "none")]["device_fits"]
    first = next(r for r in rows if r["nodes"] == 3)
    assert (first["zero_stage"], first["offload"], first["verdict"]) == (3, "optimizer+params", "host unchecked")
    assert not first["fits"] and "host unchecked" in recommend(rows)[0]
    # (2w + 16) bytes/param / 24 ranks on the host, x 8 ranks a node: about 1.4 TiB per node
    assert first["host_gib_per_node"] * GIB == pytest.approx(20 * psi / 24 * 8)
    roomy = next(r for r in plan(**kw, host_mem_gib=2048) if r["nodes"] == 3)
    assert (roomy["offload"], roomy["verdict"], roomy["fits"]) == ("optimizer+params", "yes", True)
    small = [r for r in plan(**kw, host_mem_gib=1024) if r["nodes"] == 3]
    assert not any(r["fits"] for r in small) and any(r["verdict"] == "no (host)" for r in small)


def test_bench_dry_run_marks_the_runs_plan_says_fit(capfd, monkeypatch):
    """The same memory model, capacities and host check behind `bench --dry-run` and `plan`: at 3
    nodes only ZeRO-3 with optimizer + parameter offload is to run, with a node's 2 TiB of RAM."""
    import json

    from tests.support.cli import run_sb

    common = ["--model", "qwen3-235b-a22b", "--nodes", "3", "--gpus-per-node", "8", "--gpu-mem", "80", "--host-mem",
              "2048", "--seq-len", "4096", "--micro-batch", "1", "--zero", "2,3", "--tasks", "sft"]
    code, out, err = run_sb(["plan", *common, "--json"], capfd, monkeypatch)
    assert code == 0, err[-2000:]
    fits = {(r["zero_stage"], r["offload"]) for r in json.loads(out) if r["fits"]}
    assert fits == {(3, "optimizer+params")}
    code, out, err = run_sb(["bench", *common, "--offload", "none,optimizer,params,optimizer+params", "--repeat-data",
                             "--launcher", "slurm", "--dry-run"], capfd, monkeypatch)
    assert code == 0, err[-2000:]
    to_run = [line for line in out.splitlines() if line.startswith("# ") and ": to run" in line]
    assert len(to_run) == 1 and "-z3-offall-" in to_run[0], out
    # ZeRO-2 none/opt, ZeRO-3 none/opt/params
    assert out.rstrip().endswith("1 to run, 5 skipped (5 too big for the GPU)")
