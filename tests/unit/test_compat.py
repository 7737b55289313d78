"""trainer/compat.py's paths without the other stack installed: the DPO batch in TRL < 0.29's
layout (tests/integration/test_backends.py runs it for real in the pinned environment)."""

import torch

from stackbench.trainer import compat

IGNORE = -100


def test_dpo_batch_for_old_trl_splits_prompt_and_completions(monkeypatch):
    monkeypatch.setattr(compat, "_at_least", lambda dist, wanted: not (dist == "trl" and wanted == "0.29"))
    pad = 0
    # two pairs, right-padded to 7: prompt [5 6] / [5 6 7], chosen and rejected completions after it
    ids = torch.tensor([[5, 6, 1, 2, 0, 0, 0], [5, 6, 7, 3, 0, 0, 0],     # chosen
                        [5, 6, 4, 4, 4, 0, 0], [5, 6, 7, 8, 9, 9, 0]])  # rejected
    mask = (ids != pad).long()
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[:, :2] = IGNORE
    labels[1, 2] = labels[3, 2] = IGNORE  # the second pair's prompt is one token longer
    out = compat.dpo_batch(ids, mask, labels, pad)
    assert out["prompt_input_ids"].tolist() == [[0, 5, 6], [5, 6, 7]]  # left-padded, as TRL's collator does
    assert out["prompt_attention_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert (out["chosen_input_ids"].tolist() == [[1, 2], [3, 0]]
            and out["chosen_attention_mask"].tolist() == [[1, 1], [1, 0]])
    assert out["rejected_input_ids"].tolist() == [[4, 4, 4], [8, 9, 9]]


def test_new_trl_takes_the_native_layout_and_the_dtype_keyword_follows_transformers(monkeypatch):
    monkeypatch.setattr(compat, "_at_least", lambda dist, wanted: True)
    ids = torch.tensor([[1, 2], [1, 3]])
    out = compat.dpo_batch(ids, torch.ones_like(ids), torch.tensor([[IGNORE, 2], [IGNORE, 3]]), 0)
    assert out["completion_mask"].tolist() == [[0, 1], [0, 1]] and out["input_ids"] is ids
    assert compat.model_dtype(torch.float32) == {"dtype": torch.float32}
    assert compat.dpo_config({"beta": 0.1})["loss_type"] == ["sigmoid"]
    monkeypatch.setattr(compat, "_at_least", lambda dist, wanted: False)
    assert compat.model_dtype(torch.float32) == {"torch_dtype": torch.float32}
    old = compat.dpo_config({"beta": 0.1})
    assert old["loss_type"] == "sigmoid" and old["max_length"] is None and old["beta"] == 0.1


def test_old_trl_prepares_the_reference_without_the_training_blocks():
    from types import SimpleNamespace

    config = {"optimizer": {"type": "AdamW"}, "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}
    seen = {}

    class OldDPOTrainer:  # TRL 0.17's shape: the reference is prepared by a method, from the plugin's config
        accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config)))

        def _prepare_deepspeed(self, model):
            seen.update(optimizer="optimizer" in config, offload="offload_optimizer" in config["zero_optimization"])
            return model

    assert compat.dpo_trainer(OldDPOTrainer)()._prepare_deepspeed("ref") == "ref"
    assert seen == {"optimizer": False, "offload": False}
    assert config["optimizer"] and config["zero_optimization"]["offload_optimizer"]  # the policy's config, as it was

    class NewDPOTrainer:
        pass

    assert compat.dpo_trainer(NewDPOTrainer) is NewDPOTrainer


def test_a_model_config_saved_by_transformers_5_keeps_its_rope_theta_for_4x(tmp_path):
    """5.x writes RoPE's theta only inside rope_parameters; 4.51 would take 10,000 instead (the tiny
    model's 1e6): its logits differed between the two stacks until the saved config said both."""
    import json

    from stackbench.trainer import compat

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3", "rope_parameters": {
        "rope_theta": 1000000.0, "rope_type": "default"}}))
    compat.portable_model_config(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["rope_theta"] == 1000000.0 and saved["rope_parameters"]["rope_theta"] == 1000000.0
