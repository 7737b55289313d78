"""`invoke report`: load, aggregate, write; say what was skipped."""

from __future__ import annotations

from pathlib import Path

from report import load, render
from core.errors import ConfigError


def report(results: str = "results", out: str = "", baseline: str = "") -> int:
    if not Path(results).is_dir():
        raise ConfigError(f"no results directory {results}", where="--results", fix="run invoke bench first, or point "
                          "--results at a directory of records")
    df, skipped = load.load(results)
    if df.empty:
        raise ConfigError(f"no result records under {results}", where="--results",
                          fix="run invoke bench first (records are results/<sweep>/<run_id>.json)")
    base = None
    if baseline:
        base, _ = load.load(baseline)
        if base.empty:
            raise ConfigError(f"no result records under {baseline}", where="--baseline", fix="point at a results directory")
    paths = render.write(df, skipped, Path(out or Path(results) / "report"), base)
    for path, why in skipped:
        print(f"skipped {path}: {why}")
    print(f"{len(df)} runs -> " + ", ".join(str(p) for p in paths.values()))
    return 0
