"""Backends behind one contract (base.py): `train(ctx: Context) -> Result`, and optionally a
check that runs before any collective (is the backend's own stack installed?). A new backend is
one module here (with its names for the knobs it renames or does not take, if it takes any: see
hf.KEYWORDS, swift.FLAGS and base.named_knobs), one line in REGISTRY, and its name in
core.config.BACKENDS (which validates configs before anything imports a backend; a test keeps the
two equal)."""

from dataclasses import dataclass
from typing import Callable

from stackbench.trainer.backends import hf, native, swift
from stackbench.trainer.backends.base import Context, Result


@dataclass(frozen=True)
class Backend:
    train: Callable[[Context], Result]
    check: Callable[[], object] | None = None  # raises a UserError that says how to get what is missing


REGISTRY = {
    "native": Backend(native.train),
    "hf": Backend(hf.train),
    "swift": Backend(swift.train, check=swift.check_installed),
}
