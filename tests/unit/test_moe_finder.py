"""The structural finder (trainer/moe.py) against the lists other projects keep by hand, on tiny
random configs built on the meta device: the same class for every model type they name, nothing
in a dense model, and --z3-leaf checked against the model before anything runs.

The expected pairs are vendored (CI cannot reach their repositories), read from
  LLaMA-Factory  src/llamafactory/model/model_utils/moe.py::add_z3_leaf_module (main, ff6d4d12eeb0)
  ms-swift       swift/model/register.py::ModelLoader._deepspeed_set_z3_leaf_modules (3602360a5623)
Exceptions, and why:
  - deepseek_v2: both name the remote-code class "DeepseekV2MoE"; transformers' own is DeepseekV2Moe.
  - axolotl registers whole decoder layers for gpt_oss and glm4_moe (GptOssDecoderLayer,
    Glm4MoeDecoderLayer): the finder registers the MoE block inside, as LLaMA-Factory and ms-swift do.
  - JetMoE: its attention experts (JetMoeMoA, a router over attention heads) are a sparse block
    of their own; found, as LLaMA-Factory lists both.
"""

import pytest

from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError
from stackbench.trainer import models, moe
from tests.support import moe_zoo

LLAMA_FACTORY = {
    "dbrx": "DbrxFFN", "deepseek_v3": "DeepseekV3MoE", "ernie4_5_moe": "Ernie4_5_MoeSparseMoeBlock",
    "granitemoe": "GraniteMoeMoE", "glm4_moe": "Glm4MoeMoE", "gpt_oss": "GptOssMLP", "jamba": "JambaSparseMoeBlock",
    "llama4_text": "Llama4TextMoe", "mixtral": "MixtralSparseMoeBlock", "olmoe": "OlmoeSparseMoeBlock",
    "phimoe": "PhimoeSparseMoeBlock", "qwen2_moe": "Qwen2MoeSparseMoeBlock", "qwen3_moe": "Qwen3MoeSparseMoeBlock",
    "qwen3_next": "Qwen3NextSparseMoeBlock",
}
MS_SWIFT = {
    "qwen2_moe": "Qwen2MoeSparseMoeBlock", "qwen3_moe": "Qwen3MoeSparseMoeBlock", "glm4_moe": "Glm4MoeMoE",
    "gpt_oss": "GptOssMLP", "llama4_text": "Llama4TextMoe", "qwen3_next": "Qwen3NextSparseMoeBlock",
    "olmoe": "OlmoeSparseMoeBlock",
}
EXCEPTIONS = {"deepseek_v2": "DeepseekV2Moe"}  # their lists: the remote-code "DeepseekV2MoE"


def meta(config: dict):
    return models.meta_model(models.ModelRef("preset", config["model_type"], "", config))


@pytest.mark.parametrize("model_type", moe_zoo.available())
def test_the_finder_picks_the_class_the_hand_kept_lists_name(model_type):
    expected = {LLAMA_FACTORY.get(model_type), MS_SWIFT.get(model_type), EXCEPTIONS.get(model_type)} - {None}
    assert len(expected) == 1, f"the vendored lists disagree on {model_type}: {expected}"
    assert [b.name for b in moe.find(meta(moe_zoo.config(model_type)))] == list(expected)


def test_jetmoe_attention_experts_are_a_block_of_their_own():
    config = {**moe_zoo.BASE, "model_type": "jetmoe", "num_local_experts": 8, "num_experts_per_tok": 2,
              "kv_channels": 16}
    assert sorted(b.name for b in moe.find(meta(config))) == ["JetMoeMoA", "JetMoeMoE"]


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "qwen2", "mistral", "gemma", "gemma2", "gpt2", "olmo2",
                                        "granite", "mamba"])
def test_nothing_in_a_dense_model(model_type):
    assert moe.find(meta({**moe_zoo.BASE, "model_type": model_type})) == []


def test_shared_experts_and_convolutions_are_not_routed_experts():
    """Qwen3-Next's linear attention (a Conv1d and a [heads, d] projection) is no MoE block, and
    DeepSeek's shared expert is not counted among the routed ones (active parameters)."""
    blocks = moe.find(meta(moe_zoo.config("qwen3_next")))
    assert [b.name for b in blocks] == ["Qwen3NextSparseMoeBlock"]
    shape = models.shape(models.resolve("deepseek-v3"))
    assert shape.active == pytest.approx(37.5e9, rel=0.01)  # top-8 of 256 routed + the shared expert


def test_deepspeed_defaults_are_left_to_deepspeed_and_the_rest_registered_by_us():
    plan = {b.name: b for b in moe.plan(meta(moe_zoo.config("mixtral")), {})}
    block = plan["MixtralSparseMoeBlock"]
    if moe.deepspeed_leaf_classes({}) is None:  # DeepSpeed < 0.18: no defaults of its own
        assert block.registered_by == "stackbench" and block.found_by == ["structure"]
    else:
        assert block.registered_by == "deepspeed" and block.found_by == ["structure", "deepspeed default"]
        # a user's leaf_module list replaces DeepSpeed's defaults: then stackbench registers it
        ours = moe.plan(meta(moe_zoo.config("mixtral")), {"zero_optimization": {"leaf_module": {"classes": []}}})
        assert [b.registered_by for b in ours] == ["stackbench"]
    other = moe.plan(meta(moe_zoo.config("olmoe")), {})
    assert [(b.name, b.registered_by) for b in other] == [("OlmoeSparseMoeBlock", "stackbench")]


def test_z3_leaf_adds_a_class_and_refuses_one_the_model_lacks():
    model = meta(moe_zoo.config("olmoe"))
    plan = {b.name: b for b in moe.plan(model, {}, "OlmoeDecoderLayer")}
    assert plan["OlmoeDecoderLayer"].found_by == ["user (--z3-leaf)"] and plan["OlmoeDecoderLayer"].instances == 2
    assert moe.plan(model, {}, moe.NONE) == []  # OLMoE is no DeepSpeed default: nothing registers it
    with pytest.raises(ConfigError) as e:
        moe.check_names(model, "MixtralSparseMoeBlock")
    assert "no such module class in OlmoeForCausalLM" in e.value.render()
    assert "OlmoeSparseMoeBlock" in e.value.fix  # names the blocks it has


@pytest.mark.parametrize("bad", ["a b", "../x", "Foo;rm", "Foo,,Bar", "-x"])
def test_z3_leaf_takes_class_names_only(bad):
    with pytest.raises(ConfigError):
        RunConfig(z3_leaf=bad)
    assert RunConfig(z3_leaf="Qwen3MoeSparseMoeBlock,transformers.models.x.Y").z3_leaf


def test_attention_falls_back_where_the_model_has_no_sdpa_and_refuses_when_asked_for():
    ref = models.ModelRef("preset", "tiny-gpt-oss", "", moe_zoo.config("gpt_oss"))
    fallback, built = models.attention(ref, "sdpa", explicit=False)
    assert (fallback.used, fallback.asked) == ("eager", "sdpa") and "does not support" in fallback.why
    assert built.config._attn_implementation == "eager"  # the meta model handed back is the one built with it
    with pytest.raises(ConfigError) as e:
        models.attention(ref, "sdpa", explicit=True)
    assert "give one it supports (eager)" in e.value.fix
    same, _ = models.attention(models.resolve("tiny"), "sdpa", explicit=True)
    assert (same.used, same.why) == ("sdpa", "")
