"""A profile: the data that names a stack (docker/profiles/<name>.toml). `extends` merges a
parent: scalars are replaced, lists appended, tables merged. Overrides from the command line
(--torch, --base, ...) replace a pin by its distribution name.

A profile whose base comes from a registry may carry a [no_registry] table: the same stack on a
base made here (`invoke base-image`, debootstrap). Loading with no_registry=True merges that
table over the profile the same way, and the result is its own profile (name + "-" + suffix, its
own lock: the Python may differ). A profile that extends one inherits its [no_registry] too."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from stackbench.core.errors import ConfigError
from stackbench.core.lockfile import normalize
from stackbench.imagebuild.base_image import Bootstrap

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
    sdist_env: dict[str, dict[str, str]] = field(default_factory=dict)  # sdist -> env for its build only
    overrides: list[str] = field(default_factory=list)
    git: dict[str, dict] = field(default_factory=dict)
    verify: list[str] = field(default_factory=list)
    cuda_arch: str = ""
    verify_ops: list[str] = field(default_factory=list)        # verify statements run with verify_env and build_hide
    verify_env: dict[str, str] = field(default_factory=dict)
    build_hide: dict[str, str] = field(default_factory=dict)   # module -> why it is unimportable while building
    estimates: dict[str, dict] = field(default_factory=dict)   # sdist -> {units, unit_seconds, measured}
    system_packages: list[str] = field(default_factory=list)   # Debian/Ubuntu packages, apt-installed first
    system_env: dict[str, str] = field(default_factory=dict)   # image ENV (the toolchain JIT builds use too)
    from_host: list[str] = field(default_factory=list)         # sonames the host's driver provides, kept out
    bootstrap: Bootstrap | None = None                         # how `invoke base-image` makes a local base
    has_no_registry: bool = False                              # a [no_registry] variant can be loaded
    left_out: dict[str, str] = field(default_factory=dict)     # sdist -> why it is not built (--no-flash-attn)
    base_given: bool = False                                   # --base replaced the profile's base

    @property
    def lock_dir(self) -> Path:
        return LOCKS / self.name

    def description_of_base(self) -> str:
        made = f", made by {self.bootstrap.describe()}" if self.bootstrap else ""
        return f"{self.base}{made}, Python {self.python}"

    def leave_out(self, dist: str, why: str) -> None:
        """Build without one of the sdists (its verify statements go too); the image says so."""
        kept = [r for r in self.sdists if dist_name(r) != normalize(dist)]
        if len(kept) == len(self.sdists):
            raise ConfigError(f"profile {self.name} does not build {dist}", where=f"leaving out {dist}",
                              fix=f"it builds {', '.join(self.sdists) or 'no sdists'}")
        module = normalize(dist).replace("-", "_")
        self.sdists = kept
        self.verify = [stmt for stmt in self.verify if module not in stmt]
        self.verify_ops = [stmt for stmt in self.verify_ops if module not in stmt]
        self.left_out[normalize(dist)] = why

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


def load(name: str, overrides: dict[str, str] | None = None, *, no_registry: bool = False) -> Profile:
    """The profile, with command-line overrides: {"torch": "2.6.0", "base": "...", ...}; its
    [no_registry] variant with no_registry=True."""
    d = _raw(name)
    variant = d.pop("no_registry", None)
    if no_registry:
        if not variant:
            raise ConfigError(f"profile {name} has no [no_registry] variant", where=str(PROFILES / f"{name}.toml"),
                              fix="drop --no-registry, or pass --base an image your engine has")
        variant = dict(variant)
        d = _merge(d, {k: v for k, v in variant.items() if k != "suffix"})
        d["name"] = f"{d['name']}-{variant.get('suffix', 'local')}"
    for key in ("name", "base", "python", "stack"):
        if key not in d:
            raise ConfigError(f"profile {name} has no {key!r}", where=str(PROFILES / f"{name}.toml"),
                              fix=f"add {key} = ...")
    prof = Profile(name=d["name"], description=d.get("description", ""), base=d["base"], python=str(d["python"]),
                   cuda=str(d.get("cuda", "")), platforms=list(d.get("platforms", [])),
                   stack=list(d["stack"]["requirements"]), sdists=list(d.get("build", {}).get("sdists", [])),
                   build_env={k: str(v) for k, v in d.get("build", {}).get("env", {}).items()},
                   sdist_env={normalize(n): {k: str(v) for k, v in e.items()}
                              for n, e in d.get("build", {}).get("sdist_env", {}).items()},
                   overrides=list(d.get("overrides", {}).get("requirements", [])), git=dict(d.get("git", {})),
                   verify=list(d.get("verify", {}).get("python", [])), cuda_arch=str(d.get("cuda_arch", "")),
                   verify_ops=list(d.get("verify", {}).get("ops", [])),
                   verify_env={k: str(v) for k, v in d.get("verify", {}).get("env", {}).items()},
                   build_hide={k: str(v) for k, v in d.get("build", {}).get("hide", {}).items()},
                   estimates={normalize(k): dict(v) for k, v in d.get("build", {}).get("estimates", {}).items()},
                   system_packages=list(d.get("system", {}).get("packages", [])),
                   system_env={k: str(v) for k, v in d.get("system", {}).get("env", {}).items()},
                   from_host=list(d.get("system", {}).get("from_host", [])),
                   bootstrap=_bootstrap(d.get("bootstrap")), has_no_registry=bool(variant))
    for dist in d.get("from_source", []):  # no wheel for this Python: built from its sdist after the stack
        moved = [r for r in prof.stack if dist_name(r) == normalize(dist)]
        prof.stack = [r for r in prof.stack if r not in moved]
        prof.sdists += moved
    for key, value in {**d.get("pins", {}), **(overrides or {})}.items():  # the profile's, then the command line's
        if key == "base":
            prof.base, prof.bootstrap, prof.base_given = value, None, True
        elif key == "name":
            prof.name = value
        else:  # a package pin: replace it wherever it is
            prof.stack, prof.sdists = (_replace(reqs, key, value) for reqs in (prof.stack, prof.sdists))
            if normalize(key) not in (dist_name(r) for r in prof.stack + prof.sdists):
                prof.stack.append(f"{key}=={value}")
    return prof


def dist_name(requirement: str) -> str:
    """The normalized distribution a requirement names ("flash-attn==2.7.4.post1" -> "flash-attn")."""
    return normalize(re.split(r"[=<>!~;\[ ]", requirement.strip(), maxsplit=1)[0])


def _bootstrap(table: dict | None) -> Bootstrap | None:
    if not table:
        return None
    return Bootstrap(suite=table.get("suite", Bootstrap.suite),
                     components=tuple(table.get("components", Bootstrap.components)),
                     packages=tuple(table.get("packages", Bootstrap.packages)))


def _replace(reqs: list[str], dist: str, version: str) -> list[str]:
    return [f"{dist}=={version}" if dist_name(r) == normalize(dist) else r for r in reqs]


def for_cuda(cuda: str) -> str:
    """The plain profile (no `extends`) for --cuda X.Y."""
    plain = {p.stem: tomllib.loads(p.read_text()) for p in sorted(PROFILES.glob("*.toml"))}
    plain = {n: d for n, d in plain.items() if "extends" not in d}
    matches = [n for n, d in plain.items() if str(d.get("cuda", "")) == cuda]
    if not matches:
        have = sorted(str(d["cuda"]) for d in plain.values() if d.get("cuda"))
        raise ConfigError(f"no profile for CUDA {cuda}", where="--cuda",
                          fix=f"use one of {', '.join(have)} or --profile")
    return matches[0]
