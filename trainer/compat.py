"""Where the stacks differ: the CUDA image's pins (docker/profiles/cuda12.4.toml: transformers
4.51.3, TRL 0.17.0, DeepSpeed 0.16.9, accelerate 1.6.0) and the development venv's (transformers
5.x, TRL 1.x, DeepSpeed 0.19.x). Every path that depends on a version is here, decided once from
the installed versions (package metadata, no imports); nothing else in the trainer checks one.
tests/integration/test_backends.py runs both stacks and compares their losses.

  transformers < 4.56   from_pretrained / from_config take `torch_dtype=`; 4.56 renamed it
                        `dtype=` (5.x warns on the old name)
  transformers < 5      Trainer.log rounds the loss to 4 decimals (4.51 through 4.57 at least): the
                        hf backend's per-step losses there carry 4 decimals, and its record says so
  TRL < 0.20            DPOConfig.loss_type is one string; from 0.20 a list of losses
  TRL < 0.29            DPOTrainer's batch is prompt / chosen / rejected tensors (prompt left-padded,
                        completions right-padded; it concatenates them itself and truncates to
                        max_length, 1024 by default); from 0.29 one input_ids batch with a
                        completion_mask, chosen rows then rejected rows (stackbench's own layout)
  TRL 0.17              DPOTrainer._prepare_deepspeed hands the frozen reference DeepSpeed's whole
                        training config, optimizer included; under ZeRO-3 DeepSpeed 0.16 then builds
                        an optimizer over no trainable parameter and fails (stage3 `defragment`:
                        "assert len(set(t.dtype for t in tensors)) == 1"). Later TRL prepares the
                        reference in trl.models.prepare_deepspeed and drops those blocks itself
  transformers 5        writes tokenizer_class "TokenizersBackend" into tokenizer_config.json, a name
                        4.x does not know ("Tokenizer class TokenizersBackend does not exist"); both
                        read "PreTrainedTokenizerFast": files stackbench writes say that
DeepSpeed 0.16.9 takes stackbench's DeepSpeed config and ZeRO-3 leaf modules as 0.19 does; its
deepspeed.comm has no all_gather_object, so the trainer's collectives go through torch.distributed
(the process group DeepSpeed made) in every version: no path here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from packaging.version import Version

from stackbench.core.errors import UserError
from stackbench.core.stack import version


@cache
def _at_least(dist: str, wanted: str) -> bool:
    have = version(dist)
    return have is not None and Version(have) >= Version(wanted)


def model_dtype(torch_dtype) -> dict[str, Any]:
    """The keyword that sets a model's dtype in from_pretrained / from_config."""
    return {"dtype": torch_dtype} if _at_least("transformers", "4.56") else {"torch_dtype": torch_dtype}


def portable_tokenizer_config(directory: Path) -> None:
    """Make a tokenizer saved by this transformers loadable by 4.x and 5.x alike."""
    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def portable_model_config(directory: Path) -> None:
    """Make a model config saved by transformers 5.x read the same by 4.x: 5.x writes RoPE's theta
    only inside `rope_parameters`, which 4.x does not read (it would take its default, 10,000)."""
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def logged_loss_decimals() -> int | None:
    """How many decimals transformers' Trainer keeps of the loss it logs (None: all)."""
    return None if _at_least("transformers", "5.0") else 4


def dpo_config(common: dict[str, Any]) -> dict[str, Any]:
    """DPOConfig's keywords for stackbench's DPO (sigmoid loss, no truncation: batches are already cut)."""
    out = dict(common, precompute_ref_log_probs=False)
    out["loss_type"] = ["sigmoid"] if _at_least("trl", "0.20") else "sigmoid"
    if not _at_least("trl", "0.29"):  # it truncates inside its forward otherwise
        out.update(max_length=None, max_prompt_length=None, max_completion_length=None)
    return out


def dpo_trainer(base):
    """TRL's DPOTrainer class, its reference taking DeepSpeed's inference blocks only where that TRL
    passes the training ones (see the module doc)."""
    if not hasattr(base, "_prepare_deepspeed"):
        return base

    class ReferenceWithoutOptimizer(base):
        def _prepare_deepspeed(self, model):
            config = self.accelerator.state.deepspeed_plugin.deepspeed_config
            saved = {k: config.pop(k) for k in ("optimizer", "scheduler") if k in config}
            offload = config["zero_optimization"].pop("offload_optimizer", None)
            try:
                return super()._prepare_deepspeed(model)
            finally:  # the policy is prepared later from the same config: as it was
                config.update(saved)
                if offload is not None:
                    config["zero_optimization"]["offload_optimizer"] = offload

    return ReferenceWithoutOptimizer


def dpo_batch(input_ids, attention_mask, labels, pad_id: int, ignore: int = -100) -> dict[str, Any]:
    """One of stackbench's DPO micro-batches (chosen rows then rejected rows, right-padded, labels
    on the final assistant turn) as the installed TRL's DPOTrainer takes it."""
    completion = (labels != ignore).long()
    if _at_least("trl", "0.29"):
        return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion}
    import torch

    pairs = input_ids.size(0) // 2
    rows = []
    for i in range(input_ids.size(0)):
        real = int(attention_mask[i].sum())
        start = int(completion[i].nonzero()[0])  # the first learned token: the completion starts here
        rows.append((input_ids[i, :start], input_ids[i, start:real]))
    for i in range(pairs):
        if not torch.equal(rows[i][0], rows[pairs + i][0]):
            raise UserError("a DPO pair's chosen and rejected prompts tokenize differently", where="--backend hf",
                            fix="use the native backend for this tokenizer, or TRL >= 0.29")

    def pad(seqs, left: bool):
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            cols = slice(width - len(s), width) if left else slice(0, len(s))
            ids[r, cols], mask[r, cols] = s, 1
        return ids, mask

    prompt_ids, prompt_mask = pad([p for p, _ in rows[:pairs]], left=True)  # as TRL's collator pads them
    chosen_ids, chosen_mask = pad([c for _, c in rows[:pairs]], left=False)
    rejected_ids, rejected_mask = pad([c for _, c in rows[pairs:]], left=False)
    return {"prompt_input_ids": prompt_ids, "prompt_attention_mask": prompt_mask,
            "chosen_input_ids": chosen_ids, "chosen_attention_mask": chosen_mask,
            "rejected_input_ids": rejected_ids, "rejected_attention_mask": rejected_mask}


def collective_timeout_for_every_group(timeout) -> None:
    """Make every process group the run creates wait at most `timeout`, not only the world group.

    DeepSpeed creates its own groups (data-parallel, expert, ZeRO++ groups: deepspeed.comm's
    new_group(ranks) passes no timeout), and torch gives a group without one its default: 30 min on
    gloo, 10 min on NCCL. Measured on the namespace cluster: with --collective-timeout 20 and a
    node's link cut mid-step, ZeRO-2's gradient all-reduce (on DeepSpeed's group) still waited
    after 150 s, while an all-reduce on the world group failed at 20 s. torch reads the default
    from these module globals (torch 2.6 to 2.13), so setting them covers every later new_group."""
    from torch.distributed import distributed_c10d as c10d

    c10d.default_pg_timeout = timeout
    if hasattr(c10d, "default_pg_nccl_timeout"):
        c10d.default_pg_nccl_timeout = timeout
