"""Which python starts a backend's ranks.

native and hf run in stackbench's own environment. ms-swift pins older transformers / trl / peft
than the hf backend's TRL, so it gets its own virtualenv (`./sb swift-env` makes .venv-swift:
the same torch, DeepSpeed and stackbench, plus the `swift` extra); its runs are started with that
environment's python, on every launcher (the same path on every host, as for the main one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path

from stackbench.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SWIFT_VENV = ROOT / ".venv-swift"
SETUP_HINT = "run `./sb swift-env` (about 2 minutes, once), or set STACKBENCH_SWIFT_PYTHON to a python with ms-swift"


def python_for(backend: str) -> str:
    if backend != "swift":
        return sys.executable
    return os.environ.get("STACKBENCH_SWIFT_PYTHON") or str(SWIFT_VENV / "bin" / "python")


def env_for(backend: str) -> dict[str, str]:
    """What a backend's ranks need in their environment beyond the launcher's."""
    if backend != "swift":
        return {}
    # DeepSpeed's JIT op cache is keyed by op name only: ops built against the other environment's
    # torch must not be loaded here
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or str(ROOT / ".cache" / "torch_extensions")
    return {"TORCH_EXTENSIONS_DIR": base + "-swift"}


@cache
def swift_version(python: str) -> str | None:
    """ms-swift's version in that interpreter's environment (None: not there)."""
    try:
        out = subprocess.run([python, "-c", "from importlib.metadata import version; print(version('ms-swift'))"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def check(backends: list[str], tasks: tuple[str, ...] = ()) -> None:
    """Before a sweep starts: every backend asked for can run here (for the tasks asked of it)."""
    if "hf" in backends and "dpo" in tasks:
        import importlib.util

        missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"--backend hf --tasks dpo runs TRL's DPOTrainer, and {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not installed here", where="--backend",
                            fix="pip install 'trl>=1.0' (./sb gpu-wheels leaves TRL out: on such a host, "
                                "--backend hf runs SFT)")
    if "swift" in backends:
        python = python_for("swift")
        if not Path(python).exists():
            raise UserError(f"--backend swift needs ms-swift's environment, and {python} does not exist",
                            where="--backend", fix=SETUP_HINT)
        if swift_version(python) is None:
            raise UserError(f"ms-swift is not installed for {python}", where="--backend", fix=SETUP_HINT)
