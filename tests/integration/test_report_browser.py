"""The HTML report in a real headless browser (Debian's chromium, installed when missing): it
renders, and every embedded plot loads (the page's own script counts decoded images)."""

import os
import re
import shutil
import subprocess

import pytest

from stackbench.report import load, render
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def chromium():
    if not shutil.which("chromium"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, check=True, capture_output=True)
    return shutil.which("chromium")


def test_the_html_report_renders_with_every_image_loaded(chromium, tmp_path):
    df, skipped = load.load(ROOT / "results" / "reference")  # the committed CPU runs: 1 and 2 nodes, SFT and DPO
    html = render.write(df, skipped, tmp_path)["html"]
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "<h1>stackbench report" in dom and "tokens/s per device" in dom
    loaded, total = map(int, re.search(r'data-images="(\d+)/(\d+)"', dom).groups())
    assert total >= 4 and loaded == total
