"""Where tables are printed: rich's Console, sized for a terminal, unbounded for a pipe or a log."""

from __future__ import annotations

import sys

# rich assumes 80 columns when stdout is not a terminal and cuts cells short with "…": a log, a pipe
# or a CI job gets every value whole, each row on one line (tables only grow to their content)
UNBOUNDED = 100_000


def stdout_console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=UNBOUNDED)


def note(message: str) -> None:
    """A diagnostic (what was read, checked, left out, assumed): stderr, so stdout carries only what
    was asked for (a table, JSON, a script) and `> job.sbatch` or `| jq` get nothing else."""
    print(message, file=sys.stderr, flush=True)
