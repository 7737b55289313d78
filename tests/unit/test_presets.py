"""Every shipped preset's parameter count against the published figure, within 1%."""

import pytest

from stackbench.trainer import models


@pytest.mark.parametrize("name", models.preset_names())
def test_preset_matches_published_parameter_count(name):
    _, meta = models.load_preset(name)
    shape = models.shape(models.resolve(name))
    got = {"total": shape.params, "non_embedding": shape.non_embedding, "active": shape.active,
           "flops_active": shape.flops_params, "total_with_outside": shape.params + outside_preset(meta)}
    assert meta["published_params"], f"{name} has no published figure to check"
    for key, published in meta["published_params"].items():
        assert got[key] == pytest.approx(published, rel=0.01), f"{name} {key}: {got[key]:,} vs {published:,.0f}"


def outside_preset(meta) -> int:
    """Parameters a published total holds beside the text model a preset builds (Llama 4's vision
    encoder and projector), built on the meta device from the same config.json's vision_config."""
    outside = meta.get("outside_preset")
    if not outside:
        return 0
    import torch
    from transformers import Llama4Config
    from transformers.models.llama4.modeling_llama4 import Llama4MultiModalProjector, Llama4VisionModel

    config = Llama4Config(vision_config=outside["vision_config"], text_config={"hidden_size": 5120})
    with torch.device("meta"):
        parts = Llama4VisionModel(config.vision_config), Llama4MultiModalProjector(config)
    return sum(p.numel() for part in parts for p in part.parameters())


def test_required_presets_ship():
    assert {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "qwen3-30b-a3b",
            "qwen3-235b-a22b", "llama-3.1-8b", "llama-3.1-70b", "deepseek-v3", "gpt-oss-20b", "gpt-oss-120b",
            "mixtral-8x7b", "llama-4-scout", "qwen3-next-80b-a3b"} <= set(models.preset_names())


def test_moe_active_parameters_count_top_k_experts():
    s = models.shape(models.resolve("qwen3-235b-a22b"))
    assert {k: s.moe[k] for k in ("experts", "top_k")} == {"experts": 128, "top_k": 8}
    assert s.active == pytest.approx(22e9, rel=0.01)  # the card's "22B activated"
    assert s.active < s.params / 10


def test_unknown_model_names_the_presets():
    from stackbench.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        models.resolve("qwen9-1t")
    assert "qwen3-8b" in e.value.render() and "--model" in e.value.render()
