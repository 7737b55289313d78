"""python -m envcheck [--json] [--strict] [--lock FILE] [--out FILE]

Every check of the local stack, as a table (or JSON), with an exit code: 0 no failure, 1 warnings
with --strict, 2 failures. `invoke envcheck` is the same plus `--nodes N` across a launcher.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m envcheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the report as JSON (schema stackbench.envcheck/1)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings")
    p.add_argument("--lock", default=None, help="lock file to compare the installed packages with")
    p.add_argument("--out", default="", help="also write the JSON report to this file ({node} is replaced by "
                                             "$SLURM_NODEID / $NODE_RANK)")
    args = p.parse_args(argv)
    from stackbench.envcheck import runner

    report = runner.run(lock=args.lock)
    out = ""
    if args.out:  # one file per node when every node runs this command
        node = os.environ.get("SLURM_NODEID", os.environ.get("NODE_RANK", "0"))
        report["node"], out = int(node), args.out.replace("{node}", node)
    return runner.emit(report, strict=args.strict, as_json=args.json, out=out)

if __name__ == "__main__":
    sys.exit(main())
