"""An image profile's Python pins as an environment on this machine (`./sb pinned-env` makes
.venv-pinned): the trainer and the backends tested with the versions the image installs.

The profile stays the one source of its pins; this reads them and leaves out, saying so, what a
CPU host cannot install: the profile's torch (PyPI's Linux torch is the CUDA build; the venv gets
the CPU build ./sb installs, torch 2.13.0 from this machine's disk: PyPI has no CPU wheel of 2.6),
and the CUDA-only packages (flash-attn, TransformerEngine, apex)."""

from __future__ import annotations

from pathlib import Path

from stackbench.imagebuild import profile as profile_mod
from stackbench.imagebuild.profile import ROOT

VENV = ROOT / ".venv-pinned"
NOT_ON_CPU = {"torch": "the CUDA build: the CPU build ./sb installs is used",
              "flash-attn": "CUDA only", "transformer-engine": "CUDA only", "transformer-engine-cu12": "CUDA only",
              "apex": "CUDA only"}


def requirements(name: str) -> tuple[list[str], dict[str, str]]:
    """(the profile's requirements this host installs, {left out: why})."""
    prof = profile_mod.load(name)
    kept, left = [], {}
    for req in prof.stack + prof.sdists + prof.overrides:
        dist = profile_mod.dist_name(req)
        if dist in NOT_ON_CPU:
            left[req] = NOT_ON_CPU[dist]
        else:
            kept.append(req)
    return kept, left


def write_requirements(name: str, dest: Path | None = None) -> Path:
    kept, left = requirements(name)
    dest = dest or ROOT / ".cache" / "pinned" / f"{name}.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    header = [f"# the Python pins of docker/profiles/{name}.toml for a CPU host (imagebuild/pinned.py)"]
    header += [f"# left out: {req} ({why})" for req, why in left.items()]
    dest.write_text("\n".join(header + kept) + "\n")
    return dest
