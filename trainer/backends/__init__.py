"""Backends behind one contract (base.py): `train(ctx: Context) -> Result`. A new backend is one
module here with a `train` function, one line in REGISTRY and its name in core.config.BACKENDS."""

from trainer.backends import hf, native, swift

REGISTRY = {"native": native.train, "hf": hf.train, "swift": swift.train}
PREFLIGHT = {"swift": swift.check_installed}  # what a backend checks before any collective
