"""Model classes whose configs read differently, read right (trainer/models.py shape), and a model
stackbench cannot use refused before anything runs (bench/modelcheck.py), on tiny configs built
on the meta device (tests/support/moe_zoo.py CLASSES):
  - composite configs keep the text model's sizes in text_config (Qwen3.5 dense and MoE, Llama 4);
  - experts-per-token is read from the router, whatever the config calls it (Aria's moe_topk);
  - a dense model is not MoE because a subclass of a torch layer is shaped like stacked experts
    (Falcon's FalconLinear, Gemma 4's per-layer embedding);
  - a key a heterogeneous config varies per layer (Gemma 4's head_dim) is read per layer.
"""

from __future__ import annotations

import json

import pytest

from stackbench.bench import modelcheck
from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError
from stackbench.trainer import models
from tests.support import moe_zoo
from tests.support.cli import run_sb


def ref_of(name: str) -> models.ModelRef:
    return models.ModelRef("preset", name, "", moe_zoo.CLASSES[name][0])


@pytest.mark.parametrize("name", moe_zoo.available_classes())
def test_each_class_is_read_from_its_model_and_its_text_config(name):
    ref = ref_of(name)
    model = models.meta_model(ref)
    shape = models.shape(ref, model)
    text = models.text_config(models.hf_config(ref))
    assert shape.params == sum(p.numel() for p in dict(model.named_parameters()).values())
    assert (shape.hidden, shape.heads, shape.kv_heads, shape.layers, shape.vocab) == (
        text.hidden_size, text.num_attention_heads, text.num_key_value_heads, text.num_hidden_layers, text.vocab_size)
    top_k = moe_zoo.CLASSES[name][1]
    if top_k is None:
        assert shape.moe is None and shape.active == shape.params
    else:
        assert shape.moe["top_k"] == top_k
        experts, routed = shape.moe["experts"], shape.moe["routed_params"]
        assert shape.active == shape.params - routed + routed * top_k // experts


def test_a_composite_configs_layer_kinds_come_from_its_text_config():
    if "qwen3_5" not in moe_zoo.available_classes():
        pytest.skip("transformers 4.x has no Qwen3.5")
    shape = models.shape(ref_of("qwen3_5"))  # layer_types [linear_attention, full_attention] in text_config
    assert shape.attention_windows == [0, None] and "linear_attention" in shape.attention_note


def test_a_key_a_heterogeneous_config_varies_per_layer_is_read_per_layer():
    if "gemma4_text" not in moe_zoo.available_classes():
        pytest.skip("transformers 4.x has no Gemma 4")
    shape = models.shape(ref_of("gemma4_text"))  # head_dim per layer: reading config.head_dim raises
    assert shape.head_dim == 16 and shape.attention_windows[2] is None  # 16 in 2 of 3 layers; the last is full
    assert "head_dim: not the same in every layer" in shape.attention_note


def test_a_models_top_k_outranks_a_config_key_and_a_config_key_serves_where_the_model_keeps_none():
    from stackbench.trainer import moe

    if "aria_text" not in moe_zoo.available_classes():
        pytest.skip("this transformers has no Aria")
    model = models.meta_model(ref_of("aria_text"))
    _, block, e, *_ = next(moe.blocks(model))
    assert moe.experts_per_token(block, e) == 2  # AriaTextTopKRouter.top_k, its config says moe_topk
    assert models.config_top_k(models.hf_config(ref_of("aria_text"))) == 2  # moe_topk, for 4.x's routers
    assert models.config_top_k(models.hf_config(models.resolve("tiny"))) is None  # generation's top_k is no k


def test_more_experts_per_token_than_experts_is_refused_naming_the_model():
    config = {**moe_zoo.CLASSES["mixtral"][0], "num_local_experts": 4, "num_experts_per_tok": 8}
    with pytest.raises(ConfigError) as e:
        models.shape(models.ModelRef("preset", "too-many", "", config))
    assert "too-many (MixtralConfig)" in e.value.what and "num_experts_per_tok" in e.value.fix


def test_shapes_are_built_once_per_model(monkeypatch):
    config = {**moe_zoo.CLASSES["llama"][0], "intermediate_size": 96}  # a config no other test shaped
    builds = []
    real = models.meta_model
    monkeypatch.setattr(models, "meta_model", lambda ref, impl=None: builds.append(ref.name) or real(ref, impl))
    first = models.shape(models.ModelRef("preset", "once", "", config))
    assert models.shape(models.ModelRef("preset", "once", "", dict(config))) is first and builds == ["once"]


def test_the_model_check_refuses_a_model_at_every_zero_stage(tmp_path):
    """A model that only the shape refuses, in a ZeRO-1 run after a usable model's: stopped before run 1."""
    bad = tmp_path / "too-many-experts"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**moe_zoo.CLASSES["mixtral"][0], "num_local_experts": 4,
                                                 "num_experts_per_tok": 8}))
    configs = [RunConfig(model="tiny", zero_stage=1), RunConfig(model=str(bad), zero_stage=1)]
    with pytest.raises(ConfigError) as e:
        modelcheck.check(configs, set())
    assert "too-many-experts" in e.value.what


def test_a_model_list_with_an_unusable_model_exits_2_before_any_run(tmp_path, capfd, monkeypatch):
    bad = tmp_path / "no-such-arch"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no_such_arch", "hidden_size": 64}))
    results = tmp_path / "results"
    code, out, err = run_sb(["bench", "--dry-run", "--model", f"tiny,{bad}", "--zero", "1", "--results", str(results)],
                            capfd, monkeypatch)
    assert code == 2, out[-2000:] + err[-2000:]
    assert "Traceback" not in err and "no-such-arch" in err and "does not load" in err, err
    assert "--attn-impl" not in err.split("fix:")[0]  # not read as a refused attention implementation
    assert "# " not in out and not results.exists()  # no run listed, nothing written
