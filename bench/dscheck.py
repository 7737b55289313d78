"""Every run's effective DeepSpeed config, checked against the installed DeepSpeed before anything
is launched or queued: what would otherwise stop every rank after the queue (a typo inside a
strict section, a monitor whose package is missing) or be ignored without a word (a misspelled
top-level key) is an error here, exit 2, naming the file, the key and the nearest valid name.

What "the installed DeepSpeed" accepts is asked of it, never listed here:
  - the whole config goes through DeepSpeed's own `DeepSpeedConfig` (its pydantic models: ZeRO,
    offload, precision, monitors, tensor parallel, compile, ...; its removed-feature refusals; its
    batch arithmetic, with the run's world size); a refusal is traced to its section by trying
    the sections one at a time, and a pydantic error becomes one line: dotted key, what is wrong,
    the nearest name the model has (difflib);
  - the keys DeepSpeed reads are recorded while it reads them (a dict that notes each lookup),
    at the top level and inside the sections it reads key by key (aio, checkpoint, optimizer,
    scheduler, activation_checkpointing, ...): a key it never looks at is a key it ignores;
  - optimizer and scheduler types against what DeepSpeed would instantiate (its own optimizers,
    torch.optim; its lr_schedules, torch's);
  - monitors (tensorboard, wandb, comet) enabled without their package importable here.
Where DeepSpeed is not installed (a login node) the configs are read as JSON only; the ranks check
the rest. The bench host's DeepSpeed is the one checked against: the ranks should run the same."""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import inspect
import json
import logging
import re
import sys
import typing
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from stackbench.core.config import RunConfig, dtype_on, overrides_of
from stackbench.core.errors import ConfigError
from stackbench.core.host import has_nvidia_driver

# The monitors DeepSpeed starts with the engine and the package each imports there
# (deepspeed/monitor/utils.py: check_*_availability); csv_monitor needs none. A monitor a later
# DeepSpeed adds and this table lacks is left to the ranks.
MONITOR_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet": "comet_ml"}
# the RunConfig fields the effective config is built from (trainer/ds_config.py): runs that agree
# on them share one config, built and checked once
SHAPES_THE_CONFIG = ("deepspeed", "ds", "model", "zero_stage", "offload", "dtype", "micro_batch", "grad_accum",
                     "world_size", "max_grad_norm", "lr", "adam_beta1", "adam_beta2", "adam_eps", "weight_decay",
                     "total_steps")
BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
DOCS = "https://www.deepspeed.ai/docs/config-json/"
TYPO = 0.75  # difflib ratio above which an unread key is a misspelling of one read (zero_optimisation: 0.94)


@dataclass(frozen=True)
class Problem:
    key: str   # dotted, "" for the config as a whole
    what: str
    fix: str


def check(configs: list[RunConfig]) -> None:
    """Raise ConfigError (exit 2) for the first config the installed DeepSpeed would refuse or
    partly ignore; say on stderr which DeepSpeed the configs were checked against."""
    if not configs:
        return
    if importlib.util.find_spec("deepspeed") is None or importlib.util.find_spec("transformers") is None:
        from stackbench.trainer import ds_source

        print("warning: DeepSpeed (with transformers) is not installed here: the DeepSpeed configs are checked only "
              "as JSON here, and against DeepSpeed by the ranks (after the queue)", file=sys.stderr)
        for cfg in configs:
            ds_source.stated_for(cfg.deepspeed, cfg.ds)  # read and parsed (cached): a broken file stops here
        return
    from stackbench.trainer import ds_config

    version = deepspeed_version()
    device = "cuda" if has_nvidia_driver() else "cpu"
    models: dict[str, _LazyModelConfig] = {}
    built: set[tuple] = set()
    checked: set[str] = set()
    said: set[str] = set()
    for cfg in configs:
        shape = tuple(getattr(cfg, name) for name in SHAPES_THE_CONFIG)
        if shape in built:
            continue
        built.add(shape)
        model = models.setdefault(cfg.model, _LazyModelConfig(cfg.model))
        config, _ = ds_config.deepspeed_config(cfg, dtype_on(cfg.dtype, device), device, model)
        text = json.dumps(config, sort_keys=True)
        if text in checked:
            continue
        checked.add(text)
        problems, notes = validate(config, cfg.world_size)
        for note in notes:
            if note not in said:
                said.add(note)
                print(f"note: {source_name(cfg)}: DeepSpeed {version} says: {note}", file=sys.stderr)
        if problems:
            raise error(cfg, problems)
    print(f"deepspeed config: checked against DeepSpeed {version} ({len(checked)} configs)", file=sys.stderr)


def error(cfg: RunConfig, problems: list[Problem]) -> ConfigError:
    """The first problem as the error; the others listed under it (one fix at a time is slow)."""
    first, *rest = problems
    fix = first.fix + "".join(f"\n  also {where(cfg, p.key)}: {p.what} ({p.fix})" for p in rest)
    return ConfigError(first.what, where=where(cfg, first.key), fix=fix)


def source_name(cfg: RunConfig) -> str:
    return cfg.deepspeed or ("--ds" if cfg.ds else "stackbench's DeepSpeed config (from --zero, --offload, ...)")


def where(cfg: RunConfig, key: str) -> str:
    """The file (or ms-swift name) and the key; a key an override set names the --ds item."""
    for item in overrides_of(cfg.ds) if cfg.ds else {}:
        if key and (key == item or key.startswith(item + ".") or item.startswith(key + ".")):
            return f"--ds {item}"
    return f"{source_name(cfg)}: {key}" if key else source_name(cfg)


# --- the check of one effective config ------------------------------------------------------------

def validate(config: dict[str, Any], world_size: int) -> tuple[list[Problem], list[str]]:
    """(what the installed DeepSpeed would refuse or ignore in config, what it warns about). config:
    an effective config ("auto" values filled); world_size: the data-parallel ranks it runs on."""
    recorded = _wrap(config)
    with _deepspeed_says() as notes:
        failure = _build(recorded, world_size)
    problems = [*_unread(config, recorded, failure is None), *_types(config)]
    if failure is not None:
        problems += _attribute(config, world_size, failure)
    problems += _monitors(config)
    return problems, list(dict.fromkeys(notes))


def _unread(config: dict, recorded: _Reads, complete: bool) -> list[Problem]:
    """Keys DeepSpeed never looks at: top-level ones always; inside a section it reads key by key
    (not one it hands whole to a model: the model judges those) when the read ran to its end."""
    version = deepspeed_version()
    known = deepspeed_reads() | recorded.read
    out = []
    for key in config:
        if key not in known:
            near = (f"zero_optimization.{key}" if key in _zero_names(deprecated=True) else  # a ZeRO setting at the top
                    _nearest(key, sorted(known), cutoff=TYPO)
                    or _nearest(key, _zero_names(), "zero_optimization.", TYPO))
            out.append(Problem(key, f"DeepSpeed {version} reads no top-level key {key!r}: it would ignore it without a "
                                    "word (its top level is not strict)",
                               (f"did you mean {near}? Otherwise remove it" if near else "remove it")
                               + f" (the settings DeepSpeed takes: {DOCS})"))
    zero = config.get("zero_optimization")
    for key, value in zero.items() if isinstance(zero, dict) else ():
        # DeepSpeed's models drop an "auto" before they validate: a misspelled key whose "auto"
        # transformers did not fill (it knows only the right names) is ignored without a word
        if value == "auto" and key not in _zero_names(deprecated=True):
            near = _nearest(key, _zero_names())
            out.append(Problem(f"zero_optimization.{key}", f"DeepSpeed {version} has no such setting: its 'auto' is "
                                                           "filled by no one and the key is ignored without a word",
                               f"did you mean zero_optimization.{near}?" if near else "remove it"))
    for section, node in dict.items(recorded):
        if not complete or not isinstance(node, _Reads) or node.whole or not node.read:
            continue
        for key in dict.keys(node):
            # only a near miss of a key it reads: some keys are read only when another is set
            # (optimizer.params, when optimizer.type is), and those are not typos
            if key not in node.read and (near := _nearest(key, sorted(node.read), cutoff=TYPO)):
                out.append(Problem(f"{section}.{key}", f"DeepSpeed {version} does not read {key!r} in {section}: it "
                                                       "would ignore it without a word",
                                   f"did you mean {section}.{near}?"))
    return out


def _types(config: dict) -> list[Problem]:
    """optimizer.type and scheduler.type: what DeepSpeed's engine instantiates by name on every rank
    (its own optimizers, else torch.optim's class; its lr_schedules, else torch's)."""
    import torch
    from deepspeed.runtime import config as ds_runtime
    from deepspeed.runtime import lr_schedules

    version = deepspeed_version()
    out = []
    own = list(getattr(ds_runtime, "DEEPSPEED_OPTIMIZERS", []))
    tables = {
        "optimizer": (lambda name: name.lower() in own or isinstance(getattr(torch.optim, name, None), type),
                      own + [n for n, v in vars(torch.optim).items() if isinstance(v, type)]),
        "scheduler": (lambda name: hasattr(lr_schedules, name) or hasattr(torch.optim.lr_scheduler, name),
                      list(getattr(lr_schedules, "VALID_LR_SCHEDULES", []))
                      + [n for n, v in vars(torch.optim.lr_scheduler).items() if isinstance(v, type)]),
    }
    for section, (known, names) in tables.items():
        name = (config.get(section) or {}).get("type") if isinstance(config.get(section), dict) else None
        if isinstance(name, str) and not known(name):
            near = _nearest(name, names, cutoff=0.5)
            out.append(Problem(f"{section}.type", f"DeepSpeed {version} knows no {section} {name!r}: every rank "
                                                  "would fail creating it",
                               f"did you mean {near}?" if near else f"use one of {', '.join(names[:12])}, ..."))
    return out


def _attribute(config: dict, world_size: int, failure: Exception) -> list[Problem]:
    """DeepSpeed refused the whole config: try the batch keys alone, then each section beside them
    (and beside zero_optimization, which others depend on, where it passes), so the refusal names
    its section; a refusal no section makes alone is the combination's."""
    version = deepspeed_version()
    base = {k: config[k] for k in BATCH_KEYS if k in config}
    out = []
    with _deepspeed_says():
        if (alone := _build(base, world_size)) is not None:
            return _explain(alone, "", base)
        if "zero_optimization" in config:
            zero = {**base, "zero_optimization": config["zero_optimization"]}
            if (e := _build(zero, world_size)) is None:
                base = zero
            else:
                out += _explain(e, "zero_optimization", config)
        for key, value in config.items():
            if key not in base and key != "zero_optimization" \
                    and (e := _build({**base, key: value}, world_size)) is not None:
                out += _explain(e, key, config)
    return out or [Problem("", f"DeepSpeed {version} refuses this combination of settings: {_said(failure)}",
                           "make the sections agree (DeepSpeed's words above say which)")]


def _explain(e: Exception, section: str, config: dict) -> list[Problem]:
    """One Problem per error DeepSpeed raised for section ("" for the batch keys)."""
    from pydantic import ValidationError

    version = deepspeed_version()
    if not isinstance(e, ValidationError):
        keys = [section] if section else [k for k in BATCH_KEYS if k in config]
        return [Problem(keys[0], f"DeepSpeed {version} refuses it: {_said(e)}",
                        f"change or remove {' / '.join(keys)}" + (f" ({DOCS})" if section else ""))]
    out = []
    model = _model_named(e.title)
    for err in e.errors(include_url=False):
        path, fields = _path(config, section, err["loc"])
        dotted = ".".join(path)
        parent = ".".join(path[:-1])
        if err["type"] == "extra_forbidden":
            near = _nearest(path[-1], _field_names(model, fields[:-1]))
            out.append(Problem(dotted, f"DeepSpeed {version} has no such setting: {parent or 'its config'} "
                                       f"({e.title}) refuses unknown keys, so every rank would stop in "
                                       "deepspeed.initialize",
                               f"did you mean {parent + '.' if parent else ''}{near}?" if near else
                               f"remove it (what {parent or 'DeepSpeed'} takes: {DOCS})"))
        else:
            expected = (err.get("ctx") or {}).get("expected")
            out.append(Problem(dotted, f"DeepSpeed {version} refuses {err.get('input')!r} here: {err['msg']}",
                               f"set it to {expected}" if expected else f"give it a value DeepSpeed {version} takes"))
    return out


def _monitors(config: dict) -> list[Problem]:
    """A monitor enabled whose package this Python cannot import: DeepSpeed imports it when the
    engine starts and the run stops there (ModuleNotFoundError), minutes after the queue."""
    version = deepspeed_version()
    out = []
    for section in _monitor_sections():
        package = MONITOR_PACKAGES.get(section)
        node = config.get(section)
        if package and isinstance(node, dict) and node.get("enabled") is True \
                and importlib.util.find_spec(package) is None:
            out.append(Problem(f"{section}.enabled", f"the {section} monitor is on but the {package} package is not "
                                                     f"installed: DeepSpeed {version} imports it when the engine "
                                                     "starts, and the run would stop there",
                               f"install {package} where the ranks run (the image or environment), or set "
                               f"{section}.enabled to false (--ds {section}.enabled=false)"))
    return out


# --- asking the installed DeepSpeed -----------------------------------------------------------------

@functools.cache
def deepspeed_version() -> str:
    # its import-time lines (the accelerator it chose) to stderr: stdout carries --script-only's scripts
    with contextlib.redirect_stdout(sys.stderr):
        import deepspeed

    return deepspeed.__version__


class _Keys:
    """A section's keys() as DeepSpeed uses them: `k in d.keys()` is a read, iterating is taking all."""

    def __init__(self, node: _Reads):
        self.node = node

    def __contains__(self, key: object) -> bool:
        return key in self.node

    def __iter__(self):
        self.node.whole = True
        return dict.__iter__(self.node)

    def __len__(self) -> int:
        return dict.__len__(self.node)


class _Reads(dict):
    """A config section that notes the keys DeepSpeed looks up in it, and whether it took it whole
    (** into a model, iterated: then the model, not the lookups, says what is valid)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()
        self.whole = False

    def __contains__(self, key: object) -> bool:
        self.read.add(key)
        return super().__contains__(key)

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def keys(self):
        return _Keys(self)

    def __iter__(self):
        self.whole = True
        return super().__iter__()

    def items(self):
        self.whole = True
        return super().items()

    def values(self):
        self.whole = True
        return super().values()

    def __copy__(self):  # DeepSpeedConfig reads a copy.copy of the dict it is given: the same notes
        return self


def _wrap(config: dict) -> _Reads:
    """A copy whose top level and sections note DeepSpeed's lookups."""
    return _Reads({k: _Reads(json.loads(json.dumps(v))) if isinstance(v, dict) else v for k, v in config.items()})


def _build(config: dict, world_size: int) -> Exception | None:
    """DeepSpeedConfig(config) as a rank of world_size would build it; the exception, or None.
    Outside torch.distributed DeepSpeed takes the world as 1: its `dist` is told the run's size."""
    from deepspeed.runtime import config as ds_runtime

    real = getattr(ds_runtime, "dist", None)
    ds_runtime.dist = SimpleNamespace(get_rank=lambda *a, **k: 0, get_world_size=lambda *a, **k: world_size)
    try:
        ds_runtime.DeepSpeedConfig(config)
    except Exception as e:  # noqa: BLE001 - any refusal (pydantic, DeepSpeedConfigError, assert, ...) stops a rank
        return e
    finally:
        ds_runtime.dist = real
    return None


@functools.cache
def deepspeed_reads() -> frozenset[str]:
    """The top-level keys the installed DeepSpeed looks up: recorded while DeepSpeedConfig reads a
    minimal config, and the ones deepspeed.initialize reads before it (found in its source)."""
    import deepspeed

    recorded = _Reads({"train_micro_batch_size_per_gpu": 1})
    with _deepspeed_says():
        _build(recorded, 1)
    try:
        source = inspect.getsource(deepspeed.initialize)
    except (OSError, TypeError):  # no source shipped: the recorded keys alone
        source = ""
    found = re.findall(r"""["'](\w+)["']\s+in\s+config\b|\bconfig\[["'](\w+)["']\]|\bconfig\.get\(["'](\w+)["']""",
                       source)
    return frozenset(recorded.read | {name for group in found for name in group if name})


@functools.cache
def _zero_names(deprecated: bool = False) -> tuple[str, ...]:
    """The settings of zero_optimization (a top-level key that belongs inside it gets that hint);
    deprecated: with the deprecated ones DeepSpeed still takes."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    return tuple(_field_names(DeepSpeedZeroConfig, (), deprecated))


@functools.cache
def _monitor_sections() -> tuple[str, ...]:
    try:
        from deepspeed.monitor.config import DeepSpeedMonitorConfig
    except ImportError:
        return tuple(MONITOR_PACKAGES)
    return tuple(DeepSpeedMonitorConfig.model_fields)


@contextlib.contextmanager
def _deepspeed_says():
    """DeepSpeed's log lines while it reads a config, kept (deprecations worth a note), not printed."""
    from deepspeed.utils import logger

    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    handlers = logger.handlers[:]
    logger.handlers = [Keep(logging.WARNING)]
    try:
        yield said
    finally:
        logger.handlers = handlers


def _model_named(title: str):
    """DeepSpeed's pydantic model class a ValidationError names (its title)."""
    from pydantic import BaseModel

    todo, seen = [BaseModel], set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__name__ == title and cls.__module__.startswith("deepspeed"):
            return cls
        todo.extend(cls.__subclasses__())
    return None


def _submodel(annotation: Any):
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in typing.get_args(annotation) if (m := _submodel(a)) is not None), None)


def _field_names(model: Any, fields: tuple[str, ...] | list[str], deprecated: bool = False) -> list[str]:
    """The names (aliases first: the JSON spelling) a model takes at fields below it; deprecated
    ones only if asked (not as hints); [] where the path leaves DeepSpeed's models."""
    for part in fields:
        if model is None:
            return []
        info = model.model_fields.get(part) or next((f for f in model.model_fields.values() if f.alias == part), None)
        model = _submodel(info.annotation) if info is not None else None
    if model is None:
        return []
    names = []
    for name, info in model.model_fields.items():
        if deprecated or not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("deprecated")):
            names += [info.alias, name] if info.alias else [name]
    return names


def _path(config: dict, section: str, loc: tuple) -> tuple[list[str], list[str]]:
    """(the dotted key in the user's config, the same below the model's root) for a pydantic loc.
    A section's model sees either the section (ZeRO) or the top level (the monitors); union tags
    in loc that are no key of the config are dropped."""
    node: Any = config
    path: list[str] = []
    if section:
        inner = config.get(section)
        if not (loc and loc[0] == section and not (isinstance(inner, dict) and section in inner)):
            node, path = inner, [section]
    fields: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) \
                and part < len(node):
            node = node[part]
        elif i < len(loc) - 1:
            continue  # a union member's tag
        path.append(str(part))
        fields.append(part)
    return path, fields


def _nearest(name: str, names: list[str] | tuple[str, ...], prefix: str = "", cutoff: float = 0.6) -> str:
    match = difflib.get_close_matches(name, [n for n in names if n != name], n=1, cutoff=cutoff)
    return prefix + match[0] if match else ""


def _said(e: Exception) -> str:
    text = " ".join(str(e).split()) or "(no message)"
    return text if isinstance(e, (ValueError, AssertionError)) else f"{type(e).__name__}: {text}"


class _LazyModelConfig:
    """The model's HF config, loaded only when an "auto" needs its hidden size (most configs
    have none): transformers' resolver asks for hidden_size, hidden_sizes or text_config."""

    def __init__(self, model: str):
        self.model = model

    @functools.cached_property
    def _config(self) -> Any:
        from stackbench.trainer import models

        return models.hf_config(models.resolve(self.model))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._config, name)
