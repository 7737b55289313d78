"""A profile: the data that names a stack (docker/profiles/<name>.toml). `extends` merges a
parent: scalars are replaced, lists appended, tables merged. Overrides from the command line
(--torch, --base, ...) replace a pin by its distribution name."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from envcheck.drift import normalize
from core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "docker" / "profiles"
LOCKS = ROOT / "docker" / "locks"


@dataclass
class Profile:
    name: str
    description: str
    base: str
    python: str
    cuda: str
    platforms: list[str]
    stack: list[str]
    sdists: list[str]
    build_env: dict[str, str]
    overrides: list[str] = field(default_factory=list)
    git: dict[str, dict] = field(default_factory=dict)
    verify: list[str] = field(default_factory=list)
    cuda_arch: str = ""

    @property
    def lock_dir(self) -> Path:
        return LOCKS / self.name

    def pins(self) -> dict[str, str]:
        """name -> version for every `name==version` of the profile (what the rules can check before a lock exists)."""
        out = {}
        for req in self.stack + self.sdists + self.overrides:
            m = re.match(r"^([A-Za-z0-9._-]+)==([^;\s]+)$", req.strip())
            if m:
                out[normalize(m.group(1))] = m.group(2)
        return out


def _merge(parent: dict, child: dict) -> dict:
    out = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + value
        else:
            out[key] = value
    return out


def _raw(name: str, seen: tuple[str, ...] = ()) -> dict:
    path = PROFILES / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise ConfigError(f"no profile {name!r}", where=str(PROFILES), fix=f"use one of {known}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"cannot read {path.name}: {e}", where=str(path), fix="fix the TOML syntax") from None
    if "extends" in data:
        if data["extends"] in seen:
            raise ConfigError(f"profiles extend each other in a loop: {' -> '.join(seen + (name,))}", where=str(path),
                              fix="remove the loop")
        data = _merge(_raw(data["extends"], seen + (name,)), {k: v for k, v in data.items() if k != "extends"})
    return data


def load(name: str, overrides: dict[str, str] | None = None) -> Profile:
    """The profile, with command-line overrides: {"torch": "2.6.0", "base": "...", ...}."""
    d = _raw(name)
    for key in ("name", "base", "python", "stack"):
        if key not in d:
            raise ConfigError(f"profile {name} has no {key!r}", where=str(PROFILES / f"{name}.toml"),
                              fix=f"add {key} = ...")
    prof = Profile(name=d["name"], description=d.get("description", ""), base=d["base"], python=str(d["python"]),
                   cuda=str(d.get("cuda", "")), platforms=list(d.get("platforms", [])),
                   stack=list(d["stack"]["requirements"]), sdists=list(d.get("build", {}).get("sdists", [])),
                   build_env={k: str(v) for k, v in d.get("build", {}).get("env", {}).items()},
                   overrides=list(d.get("overrides", {}).get("requirements", [])), git=dict(d.get("git", {})),
                   verify=list(d.get("verify", {}).get("python", [])), cuda_arch=str(d.get("cuda_arch", "")))
    for key, value in (overrides or {}).items():
        if key == "base":
            prof.base = value
        elif key == "name":
            prof.name = value
        else:  # a package pin: replace it wherever it is
            prof.stack, prof.sdists = (_replace(reqs, key, value) for reqs in (prof.stack, prof.sdists))
            if normalize(key) not in (normalize(r.split("=")[0]) for r in prof.stack + prof.sdists):
                prof.stack.append(f"{key}=={value}")
    return prof


def _replace(reqs: list[str], dist: str, version: str) -> list[str]:
    return [f"{dist}=={version}" if normalize(re.split(r"[=<>!~;\[ ]", r, 1)[0]) == normalize(dist) else r for r in reqs]


def for_cuda(cuda: str) -> str:
    """The plain profile (no `extends`) for --cuda X.Y."""
    plain = {p.stem: tomllib.loads(p.read_text()) for p in sorted(PROFILES.glob("*.toml"))}
    plain = {n: d for n, d in plain.items() if "extends" not in d}
    matches = [n for n, d in plain.items() if str(d.get("cuda", "")) == cuda]
    if not matches:
        have = sorted(str(d["cuda"]) for d in plain.values() if d.get("cuda"))
        raise ConfigError(f"no profile for CUDA {cuda}", where="--cuda", fix=f"use one of {', '.join(have)} or --profile")
    return matches[0]
