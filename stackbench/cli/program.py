"""What every task shares: the @task without short flags, calling a library function with user
mistakes said in one line (exit 2), flags derived from the run config and an options dataclass,
and `./sb`'s command line (invoke's Program, refusing what it would silently drop)."""

from __future__ import annotations

import difflib
import inspect
import sys
from typing import Callable

from invoke import Exit, ParseError, Program
from invoke import Task as InvokeTask
from invoke import task as invoke_task

from stackbench.core.config import cli_flag, knob_fields
from stackbench.core.errors import EXIT_BAD_INPUT, UserError
from stackbench.core.flags import bench_default, bench_flag, is_axis


class Task(InvokeTask):
    def get_arguments(self, ignore_unknown_help: bool | None = None):
        """invoke's, leaving each flag's help in place: invoke pops it as it reads it, so a second
        reader (the CLI reference after a parse, `--help` after the reference) found none."""
        helps = dict(self.help)
        try:
            return super().get_arguments(ignore_unknown_help)
        finally:
            self.help.update(helps)


def task(*args, **kwargs):
    """invoke's @task without generated short flags: invoke hands out a flag's first free letter,
    and so gave -h (help's) to --hostfile and --preflight-deadline, and '--' to --dry-run. Every
    flag here is long (a one-letter name such as test's -k is its own); -h is help everywhere."""
    return invoke_task(*args, **{"auto_shortflags": False, "klass": Task, **kwargs})


def run(fn: Callable[..., int | None], **kwargs) -> None:
    """Call a library function; a user mistake prints its message and exits 2 (a build that failed:
    1), never a traceback."""
    try:
        code = fn(**kwargs)
    except UserError as e:
        refuse(e)
    if code:
        raise Exit(code=code)


def refuse(error: UserError):
    """Say a user mistake in one line (what, where, the fix) and exit with its code."""
    print(f"error: {error.render()}", file=sys.stderr)
    raise Exit(code=error.exit_code)


def signature(options, defaults: dict[str, str] | None = None) -> tuple[inspect.Signature, dict[str, str], list[str]]:
    """A command's flags, derived: knobs of the run config (core/config.py; `defaults`: the command's
    own, by knob name, and only those knobs; None: every knob at the bench's defaults), then every
    field of its options dataclass (core/options.py). Returns (signature, help, repeatable flags)."""
    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    helps, iterable = {}, []
    for f in knob_fields():
        if defaults is not None and f.name not in defaults:
            continue
        # not given: None (so the command knows what was asked for), a boolean False, a repeatable one empty
        default = False if str(f.type) == "bool" else None
        params.append(inspect.Parameter(bench_flag(f), inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
        sweeps = defaults[f.name] if defaults is not None else ",".join(map(str, bench_default(f)))
        helps[bench_flag(f)] = f.metadata["help"] + (f" (comma list; default {sweeps})" if is_axis(f) else "")
        if f.metadata["repeatable"]:
            iterable.append(bench_flag(f))
    for f in options.fields():
        iterable += [f.name] if f.metadata["iterable"] else []
        # numbers as text: Options.from_flags reads them, and names the flag when one is mistyped
        default = None if f.metadata["iterable"] else str(f.default) if str(f.type) in ("int", "float") else f.default
        params.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
        helps[f.name] = f.metadata["help"]
    return inspect.Signature(params), helps, iterable


def derived(fn: Callable, name: str, options, defaults: dict[str, str] | None = None, **kwargs):
    """An invoke task of `fn(c, **flags)` whose flags are derived by `signature`; repeatable flags
    arrive as tuples."""
    sig, helps, iterable = signature(options, defaults)

    def body(c, **flags):
        return fn(c, **{k: tuple(v or ()) if k in iterable else v for k, v in flags.items()})

    body.__signature__, body.__doc__, body.__name__ = sig, fn.__doc__, fn.__name__
    return task(body, name=name, help=helps, iterable=iterable, **kwargs)


class StackbenchProgram(Program):
    """`./sb`'s command line: invoke's, except that a flag it cannot parse is a user mistake like
    any other, said in one line with exit 2 (invoke itself exits 1), and a command after `--` is
    refused rather than dropped."""

    def parse_core(self, argv):
        self._bad_input(super().parse_core, argv)
        if self.core.remainder:  # invoke would hand it to no one: say so rather than drop it
            raise Exit(f"error: '-- {self.core.remainder}': stackbench reads no command after '--' yet; nothing was "
                       f"run\n  fix: drop it, and give stackbench's own flags ({self._help_hint()})",
                       code=EXIT_BAD_INPUT)

    def parse_tasks(self):
        self._bad_input(super().parse_tasks)

    def _bad_input(self, parse, *args):
        try:
            parse(*args)
        except ParseError as e:
            raise Exit(f"error: {e}\n  fix: {self._help_hint()}", code=EXIT_BAD_INPUT) from None

    def _help_hint(self) -> str:
        """'./sb --help bench lists its flags' for the task on the command line."""
        names = set(self.namespace.task_names) if self.namespace else set()
        argv = list(getattr(self, "argv", []) or [])
        name = next((a.replace("_", "-") for a in argv[1:] if a in names or a.replace("-", "_") in names), None)
        if not name:
            return "./sb --list names the tasks; ./sb --help TASK their flags"
        flags = ["--" + n.replace("_", "-") for arg in self.namespace[name.replace("-", "_")].get_arguments()
                 for n in arg.names if len(n) > 1]
        unknown = next((a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in flags
                        and a not in ("--help", "--")), "")
        # a knob typed by its field name (--zero-stage, --task) names its flag (--zero, --tasks)
        by_field = {cli_flag(f.name): cli_flag(bench_flag(f)) for f in knob_fields()}
        close = [by_field[unknown]] if by_field.get(unknown) in flags else \
            difflib.get_close_matches(unknown, flags, n=1) if unknown else []
        return (f"did you mean {close[0]}? " if close else "") + f"./sb --help {name} lists its flags"
