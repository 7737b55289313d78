"""Every ```bash block of README.md and docs/ that is not marked needs=... runs here as written:
from the repository root, `bash -euo pipefail`, with the test environment's python first on PATH
(as after `source .venv/bin/activate`), exiting 0 (or the block's exit=N) and writing nothing into
the checkout's results/. The README's first block is the exception: `./sb test` is this suite and
`./sb bench`'s default sweep is tests/integration/test_trainer_deepspeed.py's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support import docs

RUN = [b for page in docs.pages() for b in docs.blocks(page)[(1 if page.name == "README.md"
                                                                 and page.parent == ROOT else 0):] if b.runs]


def _results() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / "results").rglob("*")}


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.where)
def test_the_docs_commands_run_as_written(block, tmp_path):
    before = _results()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(ROOT))
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == block.exit_code, f"{block.where}:\n{block.body}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    assert _results() == before, f"{block.where} wrote into results/: {sorted(_results() - before)}"
