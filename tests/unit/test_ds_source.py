"""The user's DeepSpeed config without launching: every source resolved (the ms-swift names
included), what each states, the rule against the knobs, "auto" values filled by transformers'
resolver, --ds overrides and their alternatives, --axis for every knob, NVMe paths checked."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError
from stackbench.core.flags import parse_axis_flag, parse_overrides
from stackbench.trainer import ds_source
from stackbench.trainer.ds_config import deepspeed_config
from tests.conftest import ROOT

CONFIGS = ROOT / "tests" / "support" / "ds_configs"
HIDDEN = SimpleNamespace(hidden_size=64)


def _effective(cfg: RunConfig, given: set[str] = frozenset(), dtype: str = "fp32"):
    cfg = ds_source.reconcile(cfg, set(given))
    return cfg, *deepspeed_config(cfg, dtype, "cpu", HIDDEN)


@pytest.mark.parametrize("name, stage, offload", [
    ("zero0", 0, "none"), ("zero1", 1, None), ("zero2", 2, "none"), ("zero3", 3, None),
    ("zero2_offload", 2, "optimizer"), ("zero3_offload", 3, "optimizer+params")])
def test_every_ms_swift_name_resolves_with_no_auto_left(name, stage, offload):
    cfg, ds, prov = _effective(RunConfig(deepspeed=name, gpus_per_node=2))
    assert cfg.zero_stage == stage and (offload is None or cfg.offload == offload)
    assert "auto" not in json.dumps(ds) and ds["zero_optimization"]["stage"] == stage
    assert ds["train_batch_size"] == cfg.micro_batch * cfg.grad_accum * 2
    assert prov["source"] == {"kind": "swift", "ref": name, "sha256": prov["source"]["sha256"],
                              "ms_swift_version": "4.6.0"}


def test_hidden_size_autos_follow_transformers_rule():
    cfg, ds, _ = _effective(RunConfig(deepspeed=str(CONFIGS / "hf_zero3_offload_auto.json")))
    zero = ds["zero_optimization"]
    assert zero["reduce_bucket_size"] == 64 * 64 and zero["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64)
    assert zero["stage3_param_persistence_threshold"] == 640
    assert ds["optimizer"]["params"]["lr"] == cfg.lr and ds["gradient_clipping"] == cfg.max_grad_norm
    assert ds["scheduler"]["params"]["warmup_max_lr"] == cfg.lr  # the scheduler's autos too


def test_a_plain_json_states_its_knobs_and_its_global_batch_follows_the_world():
    path = str(CONFIGS / "plain_zero2_explicit.json")
    cfg, ds, prov = _effective(RunConfig(deepspeed=path, nodes=2, gpus_per_node=2), {"nodes", "gpus_per_node"})
    assert (cfg.zero_stage, cfg.micro_batch, cfg.grad_accum, cfg.max_grad_norm, cfg.lr) == (2, 2, 2, 0.2, 3e-5)
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay) == (0.9, 0.999, 0.01)
    assert ds["train_batch_size"] == 2 * 2 * 4
    (tbs,) = [c for c in prov["changed"] if c["key"] == "train_batch_size"]
    assert tbs["was"] == 4 and tbs["now"] == 16 and "4 ranks" in tbs["why"]
    assert ds["optimizer"]["params"]["torch_adam"] is True  # a CPU: said in prov["changed"]
    assert "optimizer.params.torch_adam" in {c["key"] for c in prov["changed"]}


@pytest.mark.parametrize("given, expect", [
    ({"zero_stage": 2}, "--zero 2 but zero3 says zero_optimization.stage = 3"),
    ({"micro_batch": 4}, None), ({"offload": "optimizer"}, "--offload optimizer but zero3 says"),
])
def test_a_knob_given_against_the_config_is_an_error_naming_both(given, expect):
    cfg = RunConfig(deepspeed="zero3", **given)
    if expect is None:  # zero3 says micro-batch "auto": the knob fills it
        assert ds_source.reconcile(cfg, set(given)).micro_batch == 4
        return
    with pytest.raises(ConfigError, match=expect.replace("+", r"\+")):
        ds_source.reconcile(cfg, set(given))
    assert ds_source.reconcile(RunConfig(deepspeed="zero3"), set()).zero_stage == 3  # not given: the config's


def test_an_accelerate_yaml_becomes_accelerates_own_config(tmp_path):
    cfg, ds, prov = _effective(RunConfig(deepspeed=str(CONFIGS / "accelerate_zero3.yaml")))
    assert cfg.zero_stage == 3 and cfg.grad_accum == 1 and cfg.dtype == "fp32" and cfg.offload == "none"
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # zero3_save_16bit_model
    assert prov["source"]["kind"] == "accelerate" and "num_processes" in prov["notes"][0]
    inner = tmp_path / "ds.json"
    inner.write_text(json.dumps({"zero_optimization": {"stage": 1}, "train_micro_batch_size_per_gpu": "auto"}))
    yaml_file = tmp_path / "acc.yaml"
    yaml_file.write_text("distributed_type: DEEPSPEED\nmixed_precision: bf16\n"
                         "deepspeed_config:\n  deepspeed_config_file: ds.json\n  zero3_init_flag: false\n")
    cfg = ds_source.reconcile(RunConfig(deepspeed=str(yaml_file)), set())
    assert cfg.zero_stage == 1 and cfg.dtype == "auto"  # as in accelerate: the config file decides its precision
    assert "mixed_precision bf16 not used" in ds_source.load(str(yaml_file)).notes[0]


def test_broken_sources_are_errors_that_name_the_place(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "zero_optimization": {"stage": 2,}\n}\n')
    with pytest.raises(ConfigError) as e:
        ds_source.load(str(bad))
    assert e.value.where.startswith(f"{bad}:2:")
    with pytest.raises(ConfigError, match="neither a file nor an ms-swift name"):
        ds_source.load("zero4")
    ddp = tmp_path / "ddp.yaml"
    ddp.write_text("distributed_type: MULTI_GPU\n")
    with pytest.raises(ConfigError, match="not DEEPSPEED"):
        ds_source.load(str(ddp))


def test_ds_overrides_the_same_key_twice_is_an_axis_and_json_lists_are_values():
    runs = parse_overrides(["zero_optimization.overlap_comm=true", "zero_optimization.reduce_bucket_size=5e8",
                            "zero_optimization.reduce_bucket_size=2e8", "optimizer.params.betas=[0.9,0.95]"])
    assert len(runs) == 2 and all(json.loads(r)["optimizer.params.betas"] == [0.9, 0.95] for r in runs)
    assert {json.loads(r)["zero_optimization.reduce_bucket_size"] for r in runs} == {5e8, 2e8}
    assert json.loads(parse_overrides(["zero_optimization.offload_optimizer.device=cpu"])[0]) == \
        {"zero_optimization.offload_optimizer.device": "cpu"}  # a bare word is a string
    cfgs = [RunConfig(ds=r) for r in runs]
    assert len({c.run_id for c in cfgs}) == 2
    _, ds, prov = _effective(cfgs[0])  # on the generated config too
    assert (ds["zero_optimization"]["overlap_comm"] is True
            and prov["overrides"]["zero_optimization.overlap_comm"] is True)
    cfg = ds_source.reconcile(RunConfig(ds='{"zero_optimization.stage": 3}'), set())
    assert cfg.zero_stage == 3  # an override that sets a knob's value sets the knob (the run id says so)
    with pytest.raises(ConfigError, match="cannot read --ds"):
        parse_overrides(["overlap_comm"])


def test_every_knob_is_an_axis_booleans_too():
    f, values = parse_axis_flag("grad_checkpointing=true,false")
    assert f.name == "grad_checkpointing" and values == [True, False]
    assert parse_axis_flag("attn-impl=sdpa,eager")[1] == ["sdpa", "eager"]
    assert parse_axis_flag("max_grad_norm=1,0.2")[1] == [1.0, 0.2]
    with pytest.raises(ConfigError, match="not a knob") as e:
        parse_axis_flag("flash=yes")
    assert "attn_impl" in e.value.fix and "grad_checkpointing" in e.value.fix  # the valid ones, listed


def test_bench_says_what_a_config_sets_and_refuses_fp16_on_this_cpu(tmp_path):
    def bench(*args):
        return subprocess.run([sys.executable, "-m", "tasks", "bench", "--dry-run", "--tasks", "sft", "--nodes", "1",
                               "--results", str(tmp_path), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    p = bench("--deepspeed", str(CONFIGS / "plain_zero2_explicit.json"))
    assert p.returncode == 0 and "sets zero_stage=2, micro_batch=2, grad_accum=2" in p.stderr, p.stderr
    assert p.stdout.count("# sft-z2-") == 1  # the ZeRO sweep collapses to the config's stage
    p = bench("--dtype", "fp16")
    assert p.returncode == 2 and "fp16 on a CPU" in p.stderr and "Traceback" not in p.stderr
    p = bench("--axis", "grad_checkpointing=true,false", "--zero", "2")
    assert p.returncode == 0 and p.stdout.count("# sft-z2-") == 2


def test_nvme_offload_paths_are_checked_before_a_rank_starts(tmp_path):
    def nvme(path: str) -> dict:
        return {"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": path}}}

    assert ds_source.nvme_paths(nvme("/x")) == {"offload_param": "/x"}
    with pytest.raises(ConfigError, match="not a directory"):
        ds_source.check_nvme(nvme(str(tmp_path / "missing")), need_bytes=1)
    with pytest.raises(ConfigError, match="free"):
        ds_source.check_nvme(nvme(str(tmp_path)), need_bytes=1 << 60)
    from deepspeed.ops.op_builder import AsyncIOBuilder

    if AsyncIOBuilder().is_compatible(verbose=False):  # libaio here: a local disk passes (O_DIRECT probed for real)
        ds_source.check_nvme(nvme(str(tmp_path)), need_bytes=1)
    else:
        with pytest.raises(ConfigError, match="libaio"):
            ds_source.check_nvme(nvme(str(tmp_path)), need_bytes=1)


def test_what_a_config_leaves_out_comes_from_the_knobs_and_is_listed(tmp_path):
    path = tmp_path / "terse.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 2,
                                "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
                                "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 5,
                                                                                  "total_num_steps": 100,
                                                                                  "warmup_max_lr": "auto"}}}))
    cfg, ds, prov = _effective(RunConfig(deepspeed=str(path), grad_accum=4, max_grad_norm=0.5), {"grad_accum"})
    assert ds["gradient_accumulation_steps"] == 4 and ds["gradient_clipping"] == 0.5
    assert ds["optimizer"]["params"]["betas"] == [0.9, 0.95] and ds["optimizer"]["params"]["weight_decay"] == 0.0
    assert ds["scheduler"]["params"]["total_num_steps"] == 100  # the user's schedule, not refused
    listed = {c["key"] for c in prov["changed"]}
    assert {"gradient_accumulation_steps", "gradient_clipping", "optimizer.params.betas"} <= listed


def test_dtype_offload_and_overrides_edge_cases(tmp_path):
    off = tmp_path / "bf16off.json"
    off.write_text(json.dumps({"bf16": {"enabled": False}, "fp16": {"enabled": "auto"},
                               "zero_optimization": {"stage": 2}}))
    with pytest.raises(ConfigError, match="bf16.enabled = false"):  # a GPU's auto dtype against the file
        deepspeed_config(ds_source.reconcile(RunConfig(deepspeed=str(off)), set()), "bf16", "cuda", HIDDEN)
    assert ds_source.reconcile(RunConfig(ds='{"fp16.enabled": false}'), set()).dtype == "auto"  # says nothing of bf16
    par = tmp_path / "par.json"
    par.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}))
    cfg, ds, _ = _effective(RunConfig(deepspeed=str(par)))
    assert cfg.offload == "params" and "offload_optimizer" not in ds["zero_optimization"]
    _, ds, _ = _effective(RunConfig(deepspeed="zero2", ds='{"optimizer.params.weight_decay": 0.1}'))
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["weight_decay"] == 0.1
    assert len(parse_overrides(["a.b=1", "a.b=true"])) == 2  # by their JSON, not Python's 1 == True


def test_a_combination_a_config_rules_out_is_left_out_naming_the_config():
    from stackbench.bench.matrix import expand

    configs, invalid = expand(zero_stage=[0, 2, 3], ds=['{"zero_optimization.offload_param.device": "cpu"}'])
    assert [c.zero_stage for c in configs] == [3]
    assert invalid and all("parameter offload needs ZeRO-3" in why and "--ds" not in why for _, why in invalid)
    assert all("zero_optimization.offload_param" in combo for combo, _ in invalid)
