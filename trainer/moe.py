"""Sparse MoE blocks, found from a model's structure, registered as ZeRO-3 leaf modules.

Why: ZeRO-3 gathers a module's parameters when its forward is entered and prefetches in the order
the first step traced. A sparse MoE block runs only the experts its tokens were routed to, so two
ranks with different data enter different expert modules, gather different parameters and wait on
each other in the all-gathers until the collective times out (DeepSpeed issue 7461). A leaf
module's parameters are gathered at once when it is entered, whatever runs inside it. Most of
transformers 5's blocks keep their experts as one module entered once per forward whatever the
routing, which ZeRO-3 survives without a leaf (measured: OLMoE); DBRX enters an expert sub-module
once per expert hit and mismatches without one (tests/integration/test_moe.py). The finder
registers every block either way, as DeepSpeed's own defaults do (a layout can change between
releases of transformers).

What a sparse MoE block is here, from the structure alone (no table of model types): a module
with, among its direct children,
  - a router: a module with one [E, d] weight, its own or one nn.Linear's inside it, and no other
    parameter but per-expert values (a bias, ERNIE's score correction) (nn.Linear in transformers
    4.x, the TopKRouter classes of 5.x, the gatings of Granite, DBRX and JetMoE), E >= 2 and not an
    embedding;
  - experts: an nn.ModuleList of E modules of one class (transformers 4.x), or a module (not a
    Linear) whose every parameter is stacked by expert, at least 2-D with a leading dimension E
    (transformers 5.x, Llama 4, Granite, JetMoE) or a multiple of E (DBRX's flattened weights),
    held as raw parameters: a module built of torch layers (a Linear, a Conv1d, an Embedding, or a
    model's subclass of one: Falcon's FalconLinear, Gemma 4's scaled embedding) is one layer or a
    shared expert, never E experts. (Falcon's dense MLP, a FalconLinear [4d, d] and its [d, 4d]
    partner, looked like E = d experts and a router before subclasses counted as torch layers.)
How many experts each token goes to (k) is read from the block too: its router's (else the
block's own) integer attribute named like top_k (top_k, topk, moe_topk, num_experts_per_tok,
moe_k ...), not from a list of config keys (Aria's config says moe_topk, Llama 4's and Qwen3.5's
keep it in text_config); trainer/models.py asks the config only where the module keeps none.
The outermost such module is registered (the one whose forward picks the experts), never whole
decoder layers. DeepSpeed >= 0.18 registers a default list itself (zero_optimization.leaf_module,
default: the Mixtral and Qwen MoE blocks): those are left to it and recorded as its.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from stackbench.core.errors import ConfigError

NONE = "none"  # --z3-leaf none: register nothing (to measure what leaves change)


@dataclass(slots=True)
class Block:
    """One MoE block class of a model and how it is registered (a record's moe_leaf_modules entry)."""

    name: str                     # the class's name
    qualname: str                 # module.qualname: what DeepSpeed's leaf_module config matches
    instances: int = 0            # modules of this class in the model
    experts: int | None = None    # E (None for a class the user named that the finder does not see)
    layout: str | None = None     # "module list" (one module per expert) or "stacked" (3-D parameters)
    found_by: list[str] = field(default_factory=list)  # structure, user (--z3-leaf), deepspeed default / config
    registered_by: str = ""       # stackbench, deepspeed, or "" (--z3-leaf none)

    def to_dict(self) -> dict:
        return asdict(self)


def qualname(cls: type) -> str:
    """module.qualname: what DeepSpeed's leaf_module config matches, beside the bare name."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _shape(p) -> tuple[int, ...]:
    """A parameter's full shape, also when ZeRO-3 has partitioned it (its data is then empty)."""
    return tuple(getattr(p, "ds_shape", None) or p.shape)


def router_experts(module) -> int | None:
    """E when the module is a router: one [E, d] weight, its own or one Linear's inside it; any
    other parameter holds one value per expert (a bias, ERNIE's [1, E] score correction)."""
    import torch.nn as nn

    if isinstance(module, (nn.Embedding, nn.ModuleList)):
        return None
    shapes = [_shape(p) for p in module.parameters()]
    weights = [i for i, sh in enumerate(shapes) if len(sh) == 2 and min(sh) > 1]
    if len(weights) != 1:
        return None
    e = shapes[weights[0]][0]
    if e < 2 or any(i != weights[0] and math.prod(sh) != e for i, sh in enumerate(shapes)):
        return None
    return e


def _torch_layer(module) -> bool:
    """A torch layer (nn.Linear, nn.Conv1d, nn.Embedding ...) or a model's subclass of one (Falcon's
    FalconLinear, Gemma 4's scaled embedding): its class or a base other than nn.Module is torch.nn's."""
    from torch import nn

    return any(c.__module__.startswith("torch.nn") for c in type(module).__mro__ if c not in (nn.Module, object))


def _experts(module, e: int) -> str | None:
    """The layout when the module holds E experts: "module list" or "stacked"; else None."""
    import torch.nn as nn

    if isinstance(module, nn.ModuleList):
        kinds = {type(m) for m in module}
        filled = any(True for _ in module.parameters())
        return "module list" if len(module) == e and len(kinds) == 1 and filled else None
    if any(_torch_layer(m) and any(True for _ in m.parameters(recurse=False)) for m in module.modules()):
        return None  # built of torch layers (a Linear, a Conv1d, a subclass of one): one layer, or a shared expert
    shapes = [_shape(p) for p in module.parameters()]
    if not shapes or any(len(sh) < 2 or sh[0] % e for sh in shapes):
        return None
    return "stacked"


def _is_block(module) -> tuple[int, str, list] | None:
    """(E, layout, the expert children) when the module routes tokens to a subset of its experts."""
    children = list(module.children())
    for router in children:
        e = router_experts(router)
        if e is None:
            continue
        experts = [(c, layout) for c in children if c is not router and (layout := _experts(c, e))]
        if experts:
            return e, experts[0][1], [c for c, _ in experts]
    return None


def blocks(model):
    """(name, module, E, layout, expert children) of every sparse MoE block, outermost matches only
    (a match's descendants are not blocks of their own), in model order."""
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        hit = _is_block(module)
        if hit is not None:
            inside.append(name)
            yield name, module, *hit


def find(model) -> list[Block]:
    """The model's sparse MoE block classes."""
    found: dict[type, Block] = {}
    for _, module, e, layout, _ in blocks(model):
        block = found.setdefault(type(module), Block(type(module).__name__, qualname(type(module)),
                                                     experts=e, layout=layout, found_by=["structure"]))
        block.instances += 1
    return list(found.values())


# an attribute that says how many experts a token goes to; not "topk_group" (DeepSeek's group routing)
TOP_K_NAME = re.compile(r"(^|_)top_?k$|experts_per_tok(en)?$|^moe_k$")


def experts_per_token(block, e: int) -> int | None:
    """k of a block of E experts, as its router (else the block itself) keeps it: an integer
    attribute named like top_k, k >= 1 (trainer/models.py refuses a k above E). None where neither
    keeps one (transformers 4.x Aria's block reads its config's moe_topk in forward): the caller
    asks the config."""
    routers = [c for c in block.children() if router_experts(c) == e]
    for module in (*routers, block):
        for name, value in vars(module).items():
            if type(value) is int and value >= 1 and TOP_K_NAME.search(name):
                return value
    return None


def routed_parameters(model) -> tuple[list[tuple[int, int, int | None]], int | None]:
    """([(parameters of one block's experts, E, k or None where the block keeps no k)], the largest
    E or None for a dense model): what a token passes k of E of (shared experts, routers and
    everything else it passes whole)."""
    per_block = [(sum(math.prod(_shape(p)) for c in experts for p in c.parameters()), e, experts_per_token(block, e))
                 for _, block, e, _, experts in blocks(model)]
    return per_block, max((e for _, e, _ in per_block), default=None)


def deepspeed_leaf_classes(ds_config: dict) -> tuple[list[str], str] | None:
    """(the classes DeepSpeed registers itself, "deepspeed default" or "deepspeed config") where it
    has a leaf_module setting (0.18+); None where it has not (0.16.9, the image's pin)."""
    try:
        from deepspeed.runtime.zero.leaf_module_config import DEFAULT_LEAF_MODULE_CLASSES
    except ImportError:
        return None
    given = (ds_config.get("zero_optimization") or {}).get("leaf_module") or {}
    if "classes" in given:  # DeepSpeed: a config's list replaces the defaults
        classes = given["classes"]
        return ([classes] if isinstance(classes, str) else list(classes)), "deepspeed config"
    return list(DEFAULT_LEAF_MODULE_CLASSES), "deepspeed default"


def user_names(z3_leaf: str) -> list[str]:
    return [] if z3_leaf in ("", NONE) else [n.strip() for n in z3_leaf.split(",") if n.strip()]


def check_names(model, z3_leaf: str) -> None:
    """Every class --z3-leaf names is in the model (a meta-device build is enough)."""
    names = user_names(z3_leaf)
    if not names:
        return
    present = {c.__name__ for c in map(type, model.modules())} | {qualname(type(m)) for m in model.modules()}
    missing = [n for n in names if n not in present]
    if missing:
        found = ", ".join(b.name for b in find(model)) or "none found"
        raise ConfigError(f"--z3-leaf {', '.join(missing)}: no such module class in {type(model).__name__}",
                          where="--z3-leaf",
                          fix=f"name a class of the model (its MoE blocks: {found}); a class name or module.qualname")


def plan(model, ds_config: dict, z3_leaf: str = "") -> list[Block]:
    """What is registered as a ZeRO-3 leaf, by whom and why: the structural finder's blocks plus
    the classes --z3-leaf names, less what DeepSpeed registers itself."""
    check_names(model, z3_leaf)
    entries = {b.name: b for b in ([] if z3_leaf == NONE else find(model))}
    by_name = {}
    for m in model.modules():
        by_name.setdefault(type(m).__name__, type(m))
        by_name.setdefault(qualname(type(m)), type(m))
    for name in user_names(z3_leaf):
        cls = by_name[name]
        block = entries.setdefault(cls.__name__, Block(cls.__name__, qualname(cls)))
        block.found_by.append("user (--z3-leaf)")
    ds = deepspeed_leaf_classes(ds_config)
    if ds:
        listed, source = ds
        for cls in {c for c in map(type, model.modules()) if c.__name__ in listed or qualname(c) in listed}:
            block = entries.setdefault(cls.__name__, Block(cls.__name__, qualname(cls)))
            block.found_by.append(source)
            block.registered_by = "deepspeed"  # its engine sets the flag: not registered twice
    for block in entries.values():
        cls = by_name[block.name]
        block.instances = sum(type(m) is cls for m in model.modules())
        if not block.registered_by and z3_leaf != NONE:
            block.registered_by = "stackbench"
    return list(entries.values())


def register(model, ds_config: dict, z3_leaf: str = "") -> list[Block]:
    """Register the plan's stackbench blocks (deepspeed.utils.set_z3_leaf_modules: DeepSpeed 0.16's
    config has no leaf_module key); returns the whole plan for the record."""
    blocks = plan(model, ds_config, z3_leaf)
    ours = [b.name for b in blocks if b.registered_by == "stackbench"]
    if ours:
        from deepspeed.utils import set_z3_leaf_modules

        classes = {type(m) for m in model.modules() if type(m).__name__ in ours}
        set_z3_leaf_modules(model, sorted(classes, key=lambda c: c.__name__))
    return blocks


def describe(blocks: list[Block]) -> str:
    """One console line: what is a leaf and why."""
    if not blocks:
        return "ZeRO-3 leaf modules: none (no sparse MoE block found)"
    return "ZeRO-3 leaf modules: " + "; ".join(
        f"{b.name} x{b.instances}" + (f" ({b.experts} experts, {b.layout})" if b.experts else "")
        + f", found by {' + '.join(b.found_by)}, registered by {b.registered_by or 'nobody (--z3-leaf none)'}"
        for b in blocks)
