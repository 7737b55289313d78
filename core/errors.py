"""Errors meant for people: what was wrong, where, and what to do. Never shown as a traceback.
And the exit codes every entry point shares, and the words that mean a run ran out of memory."""

import re

EXIT_OK = 0
EXIT_FAILED = 1      # bench: some run failed (still recorded); anything unexpected
EXIT_BAD_INPUT = 2   # a user mistake, said before anything is launched
EXIT_OOM = 3         # the trainer ran out of memory (recorded as status oom)
EXIT_PREFLIGHT = 4   # a node did not join the preflight, or its all-reduce failed

# out of memory, in an exception's message or a log: CUDA's and torch's words, torch's CPU
# allocator's ("DefaultCPUAllocator: can't allocate memory", "not enough memory"), the kernel's
OUT_OF_MEMORY = re.compile(r"out of memory|OutOfMemoryError|oom-kill|not enough memory|can't allocate memory|"
                           r"Cannot allocate memory", re.I)


class UserError(Exception):
    """A mistake in the user's input or setup. `where` names the place (file:line, field, rank, host)."""

    kind = "bad_input"
    exit_code = EXIT_BAD_INPUT

    def __init__(self, what: str, *, where: str = "", fix: str = "", kind: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        if kind:
            self.kind = kind
        super().__init__(self.render())

    def __reduce__(self):  # raised in a worker process, it arrives whole (what, where, fix, kind)
        return _rebuild, (type(self), self.what, self.where, self.fix, self.kind)

    def render(self) -> str:
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head}\n  fix: {self.fix}" if self.fix else head


def _rebuild(cls, what: str, where: str, fix: str, kind: str) -> "UserError":
    return cls(what, where=where, fix=fix, kind=kind)


class DataError(UserError):
    """A dataset row or file that cannot be used."""


class ConfigError(UserError):
    """An invalid setting (ZeRO stage, batch sizes, model reference...)."""


class BuildFailed(UserError):
    """An image build that ran and failed (a step's error, pip refusing a hash): said like a user
    error, with its stage and last lines, but exit 1: the input was read, the work failed."""

    kind = "build_failed"
    exit_code = EXIT_FAILED
