"""`./sb ARGV` run through its own invoke program inside the test process: the exit code, stdout
and stderr as a user sees them, without paying the stack's imports (torch, transformers,
DeepSpeed: seconds) once per command. A real process is still what a few tests use, to pin the
exit code and the absence of a traceback end to end."""

from __future__ import annotations

import deepspeed  # noqa: F401 - imported first here: its logger keeps the stream it found (not a test's capture)

from tests.conftest import ROOT


def run_sb(argv: list[str], capfd, monkeypatch=None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `./sb ARGV`: from the repository root, or, without monkeypatch,
    from the working directory the test chose (a checkout-like folder of its own)."""
    import tasks

    if monkeypatch is not None:
        monkeypatch.chdir(ROOT)
    capfd.readouterr()  # what came before is not this command's
    try:
        tasks.program.run(["sb", *argv])
        code = 0
    except SystemExit as stopped:
        code = stopped.code if isinstance(stopped.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err

