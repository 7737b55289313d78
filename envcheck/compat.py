"""The compatibility rules (core/compat.toml) as envcheck's checks of the installed stack."""

from __future__ import annotations

from stackbench.core.compat_rules import rules, violations
from stackbench.envcheck.check import Check


def checks(versions: dict[str, str | None]) -> list[Check]:
    found = violations(versions)
    if not found:
        return [Check("compat", "compatibility rules", "ok", f"{len(rules())} rules",
                      "no known-bad combination among " + ", ".join(sorted(k for k, v in versions.items() if v)))]
    return [Check("compat", r["id"], r["status"], "", r["message"], r["fix"], r.get("link", "")) for r in found]
