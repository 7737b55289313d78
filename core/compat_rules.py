"""The compatibility rules (compat.toml beside this file) applied to a set of versions: the
installed stack (envcheck) or a profile's pins (invoke build, before anything is built)."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RULES_FILE = Path(__file__).with_name("compat.toml")


@lru_cache(maxsize=None)
def rules(path: str = str(RULES_FILE)) -> tuple[dict, ...]:
    with open(path, "rb") as f:
        return tuple(tomllib.load(f)["rule"])


def _matches(version: str, spec: str) -> bool:
    try:
        v = Version(version)
    except InvalidVersion:
        return False
    return SpecifierSet(spec).contains(Version(v.public), prereleases=True)


def violations(versions: dict[str, str | None]) -> list[dict]:
    """The rules that apply to these versions (None or missing: not installed)."""
    hits = []
    for rule in rules():
        if all(versions.get(pkg) and _matches(versions[pkg], spec) for pkg, spec in rule["when"].items()):
            message = rule["message"]
            for pkg in rule["when"]:
                message = message.replace("{" + pkg + "}", str(versions[pkg]))
            hits.append(dict(rule, message=message))
    return hits
