"""The run config's command lines, derived from its schema (core/config.py), never restated:
  - the trainer's (`python -m stackbench.trainer --help`): every RunConfig knob and Launch field as
    a flag, read back into a RunConfig and a Launch (RunConfig.to_argv writes what this reads);
  - the `invoke bench` / `invoke plan` flags: a knob's flag name and default comma list, the comma
    lists read as sweep axes (bench/matrix.py), `--axis KNOB=V1,V2`;
  - `--ds KEY=VALUE` items, read into the ds knob's values (one JSON object per combination).
What a value may be (types, choices, minimums, the ds knob's JSON) is the schema's: check_value."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections.abc import Iterable
from typing import Any

from stackbench.core.config import TYPES, Launch, RunConfig, check_value, cli_flag, knob_fields
from stackbench.core.errors import ConfigError

# --- the trainer's command line -------------------------------------------------------------------

def trainer_parser(prog: str = "python -m trainer", description: str = "") -> argparse.ArgumentParser:
    """Every RunConfig knob and Launch field as a flag. Knobs default to 'not given' (so the
    trainer knows what was asked for explicitly, e.g. the topology); --help shows their defaults."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for group, cls in (("what the run is", RunConfig), ("bookkeeping", Launch)):
        g = p.add_argument_group(group)
        for f in dataclasses.fields(cls):
            flag, kind = cli_flag(f.name), TYPES[str(f.type)]
            text = f"{f.metadata['help']} (default: {f.default!r})"
            if kind is bool:
                g.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
            else:
                g.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=text)
    return p


def parse_trainer_args(argv: list[str] | None = None, description: str = "") -> tuple[RunConfig, Launch, set[str]]:
    """(run config, bookkeeping, the knob names given explicitly)."""
    given = vars(trainer_parser(description=description).parse_args(argv))
    knobs = {f.name for f in dataclasses.fields(RunConfig)}
    cfg = RunConfig(**{k: v for k, v in given.items() if k in knobs})
    launch = Launch(**{k: v for k, v in given.items() if k not in knobs})
    return cfg, launch, set(given) & knobs


# --- the bench's view: flags and axes ---------------------------------------------------------------

def bench_flag(f: dataclasses.Field) -> str:
    """The `invoke bench` parameter name of a knob (a Python identifier: invoke makes it --kebab-case)."""
    return f.metadata["flag"] or f.name


def is_axis(f: dataclasses.Field) -> bool:
    """Every knob but the boolean and repeatable ones takes a comma list in its `invoke bench` flag
    (every knob, booleans too, can be swept with `--axis KNOB=V1,V2`)."""
    return str(f.type) != "bool" and not f.metadata["repeatable"]


def bench_default(f: dataclasses.Field) -> list:
    """What `invoke bench` sweeps when the flag is not given: the knob's default, or a wider list."""
    return parse_axis(f, f.metadata["sweep"]) if f.metadata["sweep"] else [f.default]


BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _read(kind: type, text: str) -> Any:
    if kind is bool:
        return BOOLS[text.lower()]  # KeyError: not a boolean
    return kind(text)


def parse_axis(f: dataclasses.Field, text: str) -> list:
    """'0,1,2' -> [0, 1, 2] for an int knob, 'true,false' for a boolean one; errors name the flag."""
    kind = TYPES[str(f.type)]
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items and f.default == "":  # a text knob whose default is empty (--data: the shipped samples)
        return [""]
    if not items:
        raise ConfigError(f"{cli_flag(bench_flag(f))} is empty", fix=f"give a value, e.g. {f.default}")
    try:
        return [_read(kind, v) for v in items]
    except (ValueError, KeyError):
        raise ConfigError(f"cannot read {text!r} as a comma list of {kind.__name__}",
                          where=cli_flag(bench_flag(f)),
                          fix="e.g. true,false" if kind is bool
                          else f"e.g. {f.metadata['sweep'] or f.default}") from None


def flag_values(f: dataclasses.Field, value: Any) -> list | None:
    """One knob's command-line value as the list of values it sweeps (None: not given): the one
    reading `invoke bench` and `invoke plan` share. A comma list for the axes, checked here so a
    wrong value names the flag it was typed in; a boolean flag given is True; repeatable flags
    (`--ds`, `--z3-leaf`) arrive as a tuple of items."""
    if f.metadata["repeatable"] == "overrides":
        return parse_overrides(value) if value else None
    if f.metadata["repeatable"] == "list":  # one value: the names given, joined
        return [",".join(dict.fromkeys(n.strip() for item in value for n in item.split(",") if n.strip()))] \
            if value else None
    if str(f.type) == "bool":
        return [True] if value else None  # --axis sweeps both
    if value is None:
        return None
    values = parse_axis(f, value)
    for v in values:
        check_value(f, v, flag=cli_flag(bench_flag(f)))
    return values


def parse_axis_flag(text: str) -> tuple[dataclasses.Field, list]:
    """`--axis KNOB=V1,V2` (KNOB: the field or its bench flag, - or _): (the knob, its values)."""
    name, eq, values = text.partition("=")
    key = name.strip().lstrip("-").replace("-", "_")
    f = next((f for f in knob_fields() if key in (f.name, bench_flag(f))), None)
    if not eq or f is None or f.metadata["repeatable"]:
        names = ", ".join(f.name for f in knob_fields() if not f.metadata["repeatable"])
        raise ConfigError(f"cannot read --axis {text!r}: {key!r} is not a knob" if eq else
                          f"cannot read --axis {text!r}", where="--axis",
                          fix=f"write KNOB=V1,V2 with KNOB one of {names}")
    return f, parse_axis(f, values)


# --- DeepSpeed overrides: --ds KEY=VALUE -------------------------------------------------------------

def parse_overrides(items: Iterable[str]) -> list[str]:
    """`--ds KEY=VALUE` items (VALUE is JSON; text that is not JSON is a string) -> the ds knob's
    values: one JSON object per combination. The same KEY given twice is an axis (two runs); a
    JSON list is a value, never an axis, so `optimizer.params.betas=[0.9,0.95]` is one setting."""
    alternatives: dict[str, list[Any]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key or "" in key.split("."):
            raise ConfigError(f"cannot read --ds {item!r}", where="--ds",
                              fix="write a dotted key and a JSON value, e.g. zero_optimization.overlap_comm=true")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a bare word: a string ("cpu", "nvme")
        seen = [json.dumps(v) for v in alternatives.setdefault(key, [])]
        if json.dumps(value) not in seen:  # by its JSON: 1 and true are two values
            alternatives[key].append(value)
    keys = sorted(alternatives)
    return [json.dumps(dict(zip(keys, combo)), sort_keys=True, separators=(",", ":"))
            for combo in itertools.product(*(alternatives[k] for k in keys))] if keys else [""]
