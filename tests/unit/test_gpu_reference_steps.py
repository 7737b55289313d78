"""The rehearsal's step runner (recipes/gpu_reference.py): each step under its own deadline, killed
whole when it passes it, written out as it ends; a step the total deadline leaves less than
min(its own deadline, 30 s) for is recorded not run, with the reason; exit 1 when a step did not end ok."""

from __future__ import annotations

import json
import sys
import tarfile

from recipes import gpu_reference as ref


def test_failed_and_timed_out_steps_are_recorded_and_the_rest_is_said(tmp_path, monkeypatch):
    steps = [ref.Step("fails", [sys.executable, "-c", "raise SystemExit(3)"], 5),
             ref.Step("hangs", [sys.executable, "-c", "import time; time.sleep(60)"], 2),
             ref.Step("ok", [sys.executable, "-c", "print('{\"x\": 1}')"], 5, stdout_to="x.json"),
             ref.Step("too late", [sys.executable, "-c", "pass"], 600)]
    monkeypatch.setattr(ref, "plan_steps", lambda out, gpu, gib: list(steps))
    monkeypatch.setattr(ref, "_gpu_gib", lambda env: None)
    code = ref.main(["--out", str(tmp_path / "r"), "--deadline", "12", "--archive", str(tmp_path / "r.tgz")])
    assert code == 1
    done = {s["step"]: s for s in json.loads((tmp_path / "r" / "steps.json").read_text())}
    assert done["fails"]["status"] == "failed" and done["fails"]["rc"] == 3
    assert done["hangs"]["status"] == "timeout" and done["hangs"]["seconds"] < 10  # killed at its own deadline
    assert done["ok"]["status"] == "ok" and json.loads((tmp_path / "r" / "x.json").read_text()) == {"x": 1}
    assert done["too late"]["status"] == "not run" and "deadline left" in done["too late"]["why"]
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "| hangs | timeout |" in readme and "raise SystemExit(3)" in readme
    with tarfile.open(tmp_path / "r.tgz") as tar:
        assert "r/steps.json" in tar.getnames()
