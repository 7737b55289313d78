"""The command line, frozen (as torchtitan freezes its config's CLI): every task name `./sb`
accepts and every flag with its kind and default, against tests/support/cli_surface.txt. A
failure here means the surface changed; when that is deliberate, regenerate the file and say so
in the change:

    python -m stackbench.cli.reference > tests/support/cli_surface.txt
"""

from __future__ import annotations

import difflib

from stackbench.cli import program, reference
from tests.conftest import ROOT

FROZEN = ROOT / "tests" / "support" / "cli_surface.txt"


def test_the_command_line_is_what_was_frozen():
    now, frozen = reference.surface(), FROZEN.read_text()
    diff = "".join(difflib.unified_diff(frozen.splitlines(True), now.splitlines(True), "frozen", "now"))
    assert now == frozen, (f"the command line changed; if deliberate: python -m stackbench.cli.reference > {FROZEN}\n"
                           f"{diff}")


def test_every_task_that_worked_before_the_collections_still_answers_to_its_name():
    """Tasks moved into the image, gpu and dev collections keep their flat names."""
    names = set(program.namespace.task_names)
    before = {"bench", "plan", "envcheck", "build", "report", "lock", "wheelhouse", "base-image", "gpu-wheels",
              "gpu-reference", "test", "swift-env", "pinned-env", "benchmark"}
    assert before <= names, before - names
    assert {"calibrate", "image.lock", "gpu.reference", "dev.test"} <= names
    for flat, dotted in (("gpu-reference", "gpu.reference"), ("test", "dev.test"), ("lock", "image.lock")):
        assert program.namespace[flat] is program.namespace[dotted]  # one task, two names


def test_every_knob_of_the_run_config_is_a_bench_flag():
    from stackbench.core.config import cli_flag, knob_fields
    from stackbench.core.flags import bench_flag

    bench = next(t for t in reference.tasks() if t["name"] == "bench")
    flags = {f["flag"] for f in bench["flags"]}
    assert {cli_flag(bench_flag(f)) for f in knob_fields()} <= flags
