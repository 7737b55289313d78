"""MoE under ZeRO-3 for every MoE class the installed transformers ships, proven by training.

The zoo (tests/support/moe_zoo.py) trains each tiny model for 3 ZeRO-3 steps on 2 ranks given
different data, in one launch per environment: the development venv (transformers 5: experts as
stacked 3-D parameters) and the image's pinned stack (transformers 4.51, DeepSpeed 0.16.9: experts
as a ModuleList, no DeepSpeed leaf defaults). A router hook shows the ranks sent their tokens to
different experts, the very condition of DeepSpeed issue 7461. Then, through `invoke bench`: one
model across 2 emulated nodes (its record says the attention fallback and the leaves), and the
pinned stack with no leaves at all.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from stackbench.core import record
from tests.conftest import ROOT
from tests.support import moe_zoo


def _zoo(python: str, out, extensions: str, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / extensions))
    p = subprocess.run([python, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "tests.support.moe_zoo",
                        "--out", str(out), *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(out.read_text())


def _available(python: str) -> list[str]:
    code = "import json; from tests.support import moe_zoo; print(json.dumps(moe_zoo.available()))"
    return json.loads(subprocess.run([python, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                     capture_output=True, text=True, check=True).stdout)


def _check_zoo(zoo: dict, members: list[str], layouts: dict[str, str], deepspeed_defaults: set[str]) -> None:
    results = zoo["results"]
    assert list(results) == members, {k: v.get("error") for k, v in results.items() if v["status"] != "ok"}
    for name, r in results.items():
        assert r["status"] == "ok", f"{name}: {r.get('error')}"
        blocks = [b for b in r["leaves"] if "structure" in b["found_by"]]
        assert blocks, f"{name}: no sparse MoE block found from the structure"
        for b in blocks:
            assert b["experts"] == moe_zoo.EXPERTS and b["instances"] == 2, (name, b)
            assert b["layout"] == layouts.get(name, "stacked"), (name, b)
            assert b["registered_by"] == ("deepspeed" if name in deepspeed_defaults else "stackbench"), (name, b)
        rank0, rank1 = ({tuple(x) for x in fired} for fired in r["fired"])
        assert rank0 and rank1 and rank0 != rank1, f"{name}: the ranks' tokens went to the same experts"
        finite = all(math.isfinite(x) for x in r["losses"])
        # transformers 4.51's Llama 4 text model gives NaN on this CPU (its eager path does standalone
        # too): the run and its leaves work; its numbers are that release's
        assert finite or (name == "llama4_text" and zoo["transformers"].startswith("4.")), (name, r["losses"])


def test_the_zoo_trains_under_zero3_with_its_leaves_in_the_development_stack(tmp_path):
    """transformers 5: every block keeps its experts as stacked parameters; DeepSpeed >= 0.18
    registers its three defaults itself and stackbench agrees with them, the rest are found by
    structure. gpt-oss has no sdpa kernel: it falls back to eager, said in its result."""
    zoo = _zoo(sys.executable, tmp_path / "zoo.json", "torch_extensions")
    import deepspeed

    defaults = ({"mixtral", "qwen2_moe", "qwen3_moe"}
                if tuple(map(int, deepspeed.__version__.split(".")[:2])) >= (0, 18) else set())
    _check_zoo(zoo, moe_zoo.available(), {}, defaults)
    assert zoo["results"]["gpt_oss"]["attention"]["used"] == "eager"
    assert "does not support" in zoo["results"]["gpt_oss"]["attention"]["why"]


def test_the_zoo_trains_under_zero3_with_its_leaves_in_the_pinned_stack(tmp_path, pinned_python):
    """transformers 4.51: the classic ModuleList experts (Mixtral, Qwen, DeepSeek-V3, OLMoE, Phi,
    Jamba), stacked ones (Llama 4, Granite, DBRX); DeepSpeed 0.16.9 has no defaults: stackbench
    registers every block itself through set_z3_leaf_modules."""
    zoo = _zoo(pinned_python, tmp_path / "zoo.json", "torch_extensions-pinned")
    listed = {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "olmoe", "phimoe", "jamba"}
    _check_zoo(zoo, _available(pinned_python), {m: "module list" for m in listed}, set())


def _bench(python: str, results, sweep: str, *flags: str, extensions: str = "torch_extensions") -> tuple[list, str]:
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / extensions))
    p = subprocess.run([python, "-m", "invoke", "bench", "--tasks", "pt", "--packing", "--seq-len", "64",
                        "--micro-batch", "1", "--steps", "2", "--warmup", "1", "--zero", "3", "--no-preflight",
                        "--results", str(results), "--sweep", sweep, *flags], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    recs = [r for r in map(record.read, sorted((results / sweep).glob("*.json"))) if "schema" in r]
    assert recs, p.stdout[-3000:] + p.stderr[-3000:]
    return recs, p.stderr  # what the checks before launch said (diagnostics: stderr)


def _model_dir(tmp_path, model_type: str):
    path = tmp_path / model_type
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": [], **moe_zoo.config(model_type)}))
    return path


def test_gpt_oss_across_two_emulated_nodes_records_its_attention_and_leaves(tmp_path):
    """Through the bench, 2 nodes x 1 rank: the console and the record say eager (gpt-oss has no
    sdpa in transformers), and GptOssMLP as the leaf, found from the structure."""
    model = _model_dir(tmp_path, "gpt_oss")
    (rec,), out = _bench(sys.executable, tmp_path / "r", "two-nodes", "--model", str(model), "--nodes", "2",
                         "--gpus-per-node", "1")
    assert rec["status"] == "ok", rec.get("error")
    assert rec["resolved"]["world_size"] == 2 and len(rec["environment"]["ranks"]) == 2
    assert rec["resolved"]["attention"]["asked"] == "sdpa" and rec["resolved"]["attention"]["used"] == "eager"
    assert "note: gpt_oss: attention eager, not sdpa" in out
    (leaf,) = rec["resolved"]["moe_leaf_modules"]
    assert (leaf["name"], leaf["found_by"], leaf["registered_by"]) == ("GptOssMLP", ["structure"], "stackbench")
    assert "GptOssMLP x2 (64 experts, stacked), found by structure" in out


def test_without_leaves_the_pinned_stack_on_cpu_does_not_hang(tmp_path, pinned_python):
    """The 4.x story of issue 7461, on gloo: Mixtral's ModuleList experts with --z3-leaf none and
    every parameter partitioned (persistence threshold 0: tiny experts would otherwise stay whole),
    a 20 s collective timeout. Measured here: no hang, the same losses as with the leaf (DeepSpeed
    re-fetches module by module once the trace breaks), only slower steps. The record keeps the
    step times of both (results/reference/cpu-2core-moe-zero/ has the comparison)."""
    model = _model_dir(tmp_path, "mixtral")
    flags = ("--model", str(model), "--nodes", "1", "--collective-timeout", "20", "--deadline", "300",
             "--ds", "zero_optimization.stage3_param_persistence_threshold=0")
    (without,), _ = _bench(pinned_python, tmp_path / "r", "none", *flags, "--z3-leaf", "none",
                           extensions="torch_extensions-pinned")
    (with_leaf,), _ = _bench(pinned_python, tmp_path / "r", "leaf", *flags, extensions="torch_extensions-pinned")
    assert without["status"] == "ok" and with_leaf["status"] == "ok", (without.get("error"), with_leaf.get("error"))
    assert without["resolved"]["moe_leaf_modules"] == []
    assert [b["name"] for b in with_leaf["resolved"]["moe_leaf_modules"]] == ["MixtralSparseMoeBlock"]
    losses = [r["metrics"]["loss"]["per_step"] for r in (without, with_leaf)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_without_leaves_stacked_experts_need_none_unless_a_sub_module_runs_per_expert(tmp_path):
    """Do leaves still matter for transformers 5's stacked layout? Measured, --z3-leaf none (OLMoE
    and DBRX are no DeepSpeed defaults, so nothing registers them): OLMoE's experts module is
    entered once per forward on every rank, whatever the routing, and trains; DBRX's enters its
    expert sub-module once per expert hit, so ranks routing differently issue different numbers
    of all-gathers and one aborts (gloo: "collective mismatch"). With DbrxFFN a leaf it trains
    (the zoo test above)."""
    zoo = _zoo(sys.executable, tmp_path / "zoo.json", "torch_extensions", "--only", "olmoe,dbrx", "--z3-leaf", "none")
    results = zoo["results"]
    assert results["olmoe"]["status"] == "ok" and results["olmoe"]["leaves"] == []
    rank0, rank1 = ({tuple(x) for x in fired} for fired in results["olmoe"]["fired"])
    assert rank0 != rank1
    assert results.get("dbrx", {}).get("status") != "ok", results.get("dbrx")
