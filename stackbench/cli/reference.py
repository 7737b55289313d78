"""The command line as data: every task, its flags, their kinds and defaults, derived from the
assembled program (which derives bench's and plan's flags from the run config). It is what
tests/unit/test_cli_surface.py freezes, so a change to the surface is a deliberate one:

    python -m stackbench.cli.reference > tests/support/cli_surface.txt
"""

from __future__ import annotations

from invoke import Collection


def tasks(namespace: Collection | None = None) -> list[dict]:
    """[{name, help, flags: [{flag, kind, default, help}]}] for every task name `./sb` accepts."""
    if namespace is None:
        from stackbench.cli import program

        namespace = program.namespace
    out = []
    for name in sorted(namespace.task_names):
        task = namespace[name]
        flags = []
        for arg in sorted(task.get_arguments(), key=lambda a: a.name):
            kind = arg.kind.__name__ if arg.kind else "str"
            flags.append({"flag": "--" + arg.name.replace("_", "-"), "kind": kind, "default": arg.default,
                          "positional": bool(arg.positional), "help": task.help.get(arg.name, "") or ""})
        out.append({"name": name, "help": (task.__doc__ or "").strip().splitlines()[0] if task.__doc__ else "",
                    "flags": flags})
    return out


def surface(namespace: Collection | None = None) -> str:
    """One line per task and per flag: name, kind, default (help left out: wording may change freely)."""
    lines = []
    for t in tasks(namespace):
        lines.append(t["name"])
        lines += [f"  {f['flag']} {f['kind']}{' positional' if f['positional'] else ''} = {f['default']!r}"
                  for f in t["flags"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(surface(), end="")
