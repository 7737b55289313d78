"""What a command takes beside the run config's knobs (core.config.RunConfig): one frozen
dataclass per command (bench's BenchOptions, plan's PlanOptions), its flags derived from the fields
(tasks.py) and read back by `from_flags`."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from stackbench.core.errors import ConfigError


def option(default: Any, help: str, *, iterable: bool = False) -> Any:
    meta = {"help": help, "iterable": iterable}
    return field(default_factory=tuple, metadata=meta) if iterable else field(default=default, metadata=meta)


def read_number(name: str, value: Any, kind: type = int, example: Any = 2) -> Any:
    """A number flag given as text, read; a mistyped one is an error naming its flag (--name)."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"cannot read {value!r} as {'an integer' if kind is int else 'a number'}",
                          where="--" + name.replace("_", "-"), fix=f"e.g. {example}") from None


class Options:
    """What a command takes beside the run config's knobs: one dataclass per command, its flags
    derived from its fields (tasks.py), read from invoke's keyword arguments by `from_flags`."""

    command = ""

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def from_flags(cls, flags: dict[str, Any]):
        """From invoke's keyword arguments: numbers arrive as text (so a mistyped one is an error
        naming its flag, not invoke's traceback), the rest as they are."""
        kinds = {"float": float, "int": int}
        values = {}
        for f in cls.fields():
            if f.name not in flags:
                continue
            value, kind = flags[f.name], kinds.get(str(f.type))
            if kind and isinstance(value, str):
                value = read_number(f.name, value, kind, example=f.default)
            values[f.name] = value
        unknown = set(flags) - set(values)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}", fix=f"see ./sb --help {cls.command}")
        return cls(**values)
