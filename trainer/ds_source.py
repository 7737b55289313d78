"""The user's own DeepSpeed config: where it comes from, what it states, and how it combines with
the run config's knobs. Read by the bench (before anything is launched: a contradiction is an
error there, exit 2) and by the trainer (which builds the effective config from it: ds_config.py).

Sources (`--deepspeed`):
  - a DeepSpeed JSON file, Hugging Face Trainer style ("auto" values) or plain;
  - an accelerate config YAML (distributed_type: DEEPSPEED): its `deepspeed_config` block becomes
    a config through accelerate's own DeepSpeedPlugin (or its `deepspeed_config_file` is read),
    its `mixed_precision` the dtype;
  - an ms-swift name (zero0 ... zero3_offload): the JSON ms-swift 4.6 ships under that name
    (trainer/assets/ds_configs/, checked against an installed ms-swift by the tests).

The rule, one for every source:
  1. A value the config states explicitly (a number or a boolean, not "auto") sets the knob it
     covers: ZeRO stage, offload, micro-batch, gradient accumulation, dtype, learning rate, Adam
     betas and epsilon, weight decay, gradient clipping. A knob given explicitly as well, with
     another value, is a contradiction: an error naming both, before anything runs.
  2. "auto" and absent values come from the knobs, through transformers' own resolver.
  3. Micro-batch and accumulation stay fixed across a node sweep; the global batch is derived per
     world size (micro x accumulation x ranks). A file's explicit train_batch_size fits one world
     size only: where it differs it is replaced, and the record and the console say so.
  4. --ds overrides apply last, to the effective config, and win over everything.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackbench.core.config import OFFLOADS, RunConfig, cli_flag, overrides_of
from stackbench.core.errors import ConfigError

SWIFT_NAMES = ("zero0", "zero1", "zero2", "zero3", "zero2_offload", "zero3_offload")
SWIFT_DIR = Path(__file__).resolve().parent / "assets" / "ds_configs"
SWIFT_VERSION = "4.6.0"  # the ms-swift release the shipped copies come from


@dataclass
class Source:
    kind: str                      # file | accelerate | swift
    ref: str                       # the path, or the ms-swift name
    config: dict[str, Any]         # as the source has it ("auto" values included)
    sha256: str = ""               # of the file read (the YAML's, and its config file's if it names one)
    notes: list[str] = field(default_factory=list)  # what of the source is not used, and why

    def describe(self) -> dict[str, Any]:
        """What a record keeps of where the config came from."""
        out = {"kind": self.kind, "ref": self.ref, "sha256": self.sha256 or None}
        if self.kind == "swift":
            out["ms_swift_version"] = SWIFT_VERSION
        return out


def canonical_ref(ref: str) -> str:
    """An ms-swift name as it is, a path made absolute (the ranks may start elsewhere)."""
    return ref if not ref or ref in SWIFT_NAMES else str(Path(ref).expanduser().resolve())


def load(ref: str) -> Source:
    """The source `--deepspeed` names; errors name the file (and the line, for JSON and YAML)."""
    if ref in SWIFT_NAMES:
        path = SWIFT_DIR / f"{ref}.json"
        return Source("swift", ref, _json(path), _sha256(path))
    path = Path(ref)
    if not path.is_file():
        raise ConfigError(f"{ref} is neither a file nor an ms-swift name", where="--deepspeed",
                          fix=f"give a DeepSpeed JSON, an accelerate YAML, or one of {', '.join(SWIFT_NAMES)}")
    if path.suffix.lower() in (".yaml", ".yml"):
        return _accelerate(path)
    return Source("file", str(path), _json(path), _sha256(path))


def _sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"not JSON: {e.msg}", where=f"{path}:{e.lineno}:{e.colno}",
                          fix="fix the file (DeepSpeed configs are JSON)") from None
    if not isinstance(obj, dict):
        raise ConfigError("a DeepSpeed config is a JSON object", where=str(path), fix="put the settings in {...}")
    return obj


# accelerate's deepspeed_config keys that shape the DeepSpeed config (DeepSpeedPlugin's arguments)
ACCELERATE_USED = ("gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
                   "offload_param_device", "offload_optimizer_nvme_path", "offload_param_nvme_path",
                   "zero3_save_16bit_model")
ACCELERATE_WHY = {
    "zero3_init_flag": "stackbench builds the model under zero.Init at ZeRO-3 itself (always)",
    "transformer_moe_cls_names": "MoE leaf modules are found from the model (resolved.moe_leaf_modules)",
}
# what an accelerate YAML says that the launcher decides here
ACCELERATE_TOPOLOGY = ("num_machines", "num_processes", "machine_rank", "main_process_ip", "main_process_port",
                       "rdzv_backend", "same_network", "gpu_ids", "main_training_function",
                       "deepspeed_multinode_launcher", "deepspeed_hostfile")


def _accelerate(path: Path) -> Source:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"not YAML: {getattr(e, 'problem', e)}",
                          where=f"{path}:{mark.line + 1}" if mark else str(path),
                          fix="fix the file (accelerate config files are YAML)") from None
    if str(doc.get("distributed_type", "")).upper() != "DEEPSPEED":
        raise ConfigError(f"distributed_type is {doc.get('distributed_type')!r}, not DEEPSPEED", where=str(path),
                          fix="give an accelerate config made with `accelerate config` choosing DeepSpeed")
    block = dict(doc.get("deepspeed_config") or {})
    topology = [k for k in ACCELERATE_TOPOLOGY if k in doc] + [f"deepspeed_config.{k}" for k in ACCELERATE_TOPOLOGY
                                                               if k in block]
    notes = [f"{path.name}: {', '.join(topology)} not used: the launcher and --nodes / --gpus-per-node decide the "
             "topology"] if topology else []
    file_ref = block.pop("deepspeed_config_file", None)
    from accelerate.utils import DeepSpeedPlugin

    precision = doc.get("mixed_precision")
    precision = None if precision is None else str(precision).lower()
    if precision not in (None, "no", "bf16", "fp16"):
        raise ConfigError(f"mixed_precision {precision!r}", where=str(path), fix="use no, bf16 or fp16")
    try:
        if file_ref:
            inner = Path(file_ref) if Path(file_ref).is_absolute() else path.parent / file_ref
            plugin = DeepSpeedPlugin(hf_ds_config=str(_existing(inner, path)))
            sha = _sha256(path, inner)
            if precision is not None:  # as accelerate: the config file decides its precision
                notes.append(f"{path.name}: mixed_precision {precision} not used: {inner.name} decides "
                             "(as in accelerate)")
            precision = None
        else:
            unused = sorted(set(block) - set(ACCELERATE_USED) - set(ACCELERATE_TOPOLOGY))
            if unused:
                notes.append(f"{path.name}: deepspeed_config.{', deepspeed_config.'.join(unused)} not used: "
                             + "; ".join(ACCELERATE_WHY.get(k, "not a DeepSpeed config setting") for k in unused))
            plugin = DeepSpeedPlugin(**{k: block[k] for k in ACCELERATE_USED if k in block})
            sha = _sha256(path)
        if precision in ("bf16", "fp16"):
            plugin.set_mixed_precision(precision)
    except ValueError as e:  # accelerate's own checks (a precision its config contradicts, ...)
        raise ConfigError(f"accelerate refuses it: {e}", where=str(path),
                          fix="make the YAML and its config agree") from None
    config = json.loads(json.dumps(plugin.deepspeed_config))  # a plain copy
    if precision == "no":  # accelerate's "no": full precision, stated
        config.setdefault("bf16", {})["enabled"] = False
        config.setdefault("fp16", {})["enabled"] = False
    return Source("accelerate", str(path), config, sha, notes)


def _existing(p: Path, yaml_path: Path) -> Path:
    if not p.is_file():
        raise ConfigError(f"deepspeed_config_file {p} does not exist", where=str(yaml_path),
                          fix="give its path relative to the YAML or absolute")
    return p


# --- what a config states, and the rule ------------------------------------------------------------

def _get(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of config with each dotted key set (parents made where absent)."""
    out = json.loads(json.dumps(config))
    for dotted, value in overrides.items():
        node = out
        *parents, last = dotted.split(".")
        for i, part in enumerate(parents):
            if not isinstance(node.setdefault(part, {}), dict):
                raise ConfigError(f"--ds {dotted}: {'.'.join(parents[:i + 1])} is {node[part]!r}, not a section",
                                  where="--ds", fix="override the section's keys, or the section as a JSON object")
            node = node[part]
        node[last] = value
    return out


def _explicit(value: Any) -> bool:
    return value is not None and value != "auto"


def _offload_device(config: dict, key: str) -> str:
    device = _get(config, f"zero_optimization.{key}.device")
    return str(device).lower() if _explicit(device) else "none"


def stated_knobs(config: dict[str, Any], whole: bool = True) -> dict[str, Any]:
    """The knob values a config states explicitly (rule 1). whole: a user's config, whose silence
    on fp16 with bf16 off means fp32; else --ds overrides of the generated config, which state
    only what they say."""
    out: dict[str, Any] = {}
    stage = _get(config, "zero_optimization.stage")
    if _explicit(stage):
        out["zero_stage"] = int(stage)
    opt, par = (_offload_device(config, "offload_optimizer") != "none",
                _offload_device(config, "offload_param") != "none")
    if any(_get(config, f"zero_optimization.{k}") is not None for k in ("offload_optimizer", "offload_param")):
        out["offload"] = next(name for name, o in OFFLOADS.items() if (o.optimizer, o.params) == (opt, par))
    for knob, key in (("micro_batch", "train_micro_batch_size_per_gpu"), ("grad_accum", "gradient_accumulation_steps")):
        if _explicit(v := _get(config, key)):
            out[knob] = int(v)
    bf16, fp16 = _get(config, "bf16.enabled"), _get(config, "fp16.enabled")
    if bf16 is True or fp16 is True:
        out["dtype"] = "bf16" if bf16 is True else "fp16"
    elif (bf16, fp16) == (False, False) or whole and False in (bf16, fp16) and None in (bf16, fp16):
        out["dtype"] = "fp32"
    for knob, key in (("lr", "optimizer.params.lr"), ("adam_eps", "optimizer.params.eps"),
                      ("weight_decay", "optimizer.params.weight_decay"), ("max_grad_norm", "gradient_clipping")):
        if _explicit(v := _get(config, key)):
            out[knob] = float(v)
    betas = _get(config, "optimizer.params.betas")
    if isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_explicit(b) for b in betas):
        out["adam_beta1"], out["adam_beta2"] = float(betas[0]), float(betas[1])
    return out


def source_config(cfg: RunConfig) -> tuple[Source | None, dict[str, Any]]:
    """(the source or None, its config with the --ds overrides applied: without --deepspeed, the
    overrides alone)."""
    src = load(cfg.deepspeed) if cfg.deepspeed else None
    return src, apply_overrides(src.config if src else {}, overrides_of(cfg.ds) if cfg.ds else {})


@functools.lru_cache(maxsize=64)  # a matrix asks once per combination; the files are read once
def stated_for(deepspeed: str, ds: str) -> tuple[str, dict[str, Any]]:
    """(how to name the config in a message, the knob values it and the overrides state)."""
    src = load(deepspeed) if deepspeed else None
    config = apply_overrides(src.config if src else {}, overrides_of(ds) if ds else {})
    return (src.ref if src else f"--ds {ds}"), stated_knobs(config, whole=src is not None)


def contradiction(knob: str, asked: Any, ref: str, value: Any) -> ConfigError:
    what = {"zero_stage": "zero_optimization.stage", "offload": "zero_optimization.offload_*.device",
            "micro_batch": "train_micro_batch_size_per_gpu", "grad_accum": "gradient_accumulation_steps",
            "dtype": "bf16/fp16.enabled", "max_grad_norm": "gradient_clipping"}.get(knob, "optimizer.params")
    flag = {"zero_stage": "--zero", "grad_accum": "--grad-accum"}.get(knob, cli_flag(knob))
    return ConfigError(f"{flag} {asked} but {ref} says {what} = {value}", where="--deepspeed / --ds",
                       fix=f"drop {flag} (the config's value is used), or change the config")


def apply_stated(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """Knob values (a run config's, as a dict) with what their DeepSpeed config and overrides state
    (rule 1); a knob in `given` with another value is a contradiction, raised."""
    if not values.get("deepspeed") and not values.get("ds"):
        return values
    ref, stated = stated_for(values.get("deepspeed", ""), values.get("ds", ""))
    for knob, value in stated.items():
        asked = values.get(knob)
        if knob in given and asked != value and not (knob == "dtype" and asked == "auto"):
            raise contradiction(knob, asked, ref, value)
    return {**values, **stated}


def reconcile(cfg: RunConfig, given: set[str]) -> RunConfig:
    """The run config with what its DeepSpeed config states (the trainer's view of apply_stated)."""
    values = apply_stated(cfg.to_dict(), given)
    return cfg if values == cfg.to_dict() else RunConfig(**values)


# --- NVMe offload: what must hold before a run starts ------------------------------------------------

def nvme_paths(config: dict[str, Any]) -> dict[str, str]:
    """{offload_optimizer | offload_param: nvme_path} for the parts a config offloads to NVMe."""
    return {key: str(_get(config, f"zero_optimization.{key}.nvme_path") or "")
            for key in ("offload_optimizer", "offload_param") if _offload_device(config, key) == "nvme"}


def check_nvme(config: dict[str, Any], need_bytes: int) -> None:
    """NVMe offload needs DeepSpeed's async_io op (libaio) and, at each nvme_path, a writable
    directory with room that takes O_DIRECT (tmpfs does not): said here, not deep in a rank."""
    import os
    import shutil

    paths = nvme_paths(config)
    for key, path in paths.items():
        where = f"zero_optimization.{key}.nvme_path"
        if not path or not Path(path).is_dir():
            raise ConfigError(f"nvme_path {path!r} is not a directory", where=where,
                              fix="give a directory on an NVMe drive")
        free = shutil.disk_usage(path).free
        if free < need_bytes:
            raise ConfigError(f"{path} has {free / 2**30:.1f} GiB free; "
                              f"offloading needs about {need_bytes / 2**30:.1f} GiB",
                              where=where, fix="free space or choose another nvme_path")
        probe = Path(path) / f".stackbench-odirect-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_WRONLY | getattr(os, "O_DIRECT", 0), 0o600)
            try:
                import mmap

                block = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
                os.write(fd, block)
            finally:
                os.close(fd)
        except OSError as e:
            raise ConfigError(f"{path} does not take O_DIRECT writes ({e.strerror}): "
                              "DeepSpeed's NVMe offload needs them (tmpfs and some overlay filesystems refuse them)",
                              where=where,
                              fix="give a directory on a local disk (ext4, xfs) as nvme_path") from None
        finally:
            probe.unlink(missing_ok=True)
    if paths:
        from deepspeed.ops.op_builder import AsyncIOBuilder

        if not AsyncIOBuilder().is_compatible(verbose=False):
            raise ConfigError("NVMe offload needs DeepSpeed's async_io op, which cannot be built here (no libaio "
                              "headers)", where="zero_optimization.offload_*.device: nvme",
                              fix="install libaio (apt install libaio-dev; dnf install libaio-devel), "
                                  "or offload to cpu")
