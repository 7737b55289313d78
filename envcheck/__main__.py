"""python -m envcheck [--json] [--strict] [--lock FILE] [--out FILE]

Every check of the local stack, as a table (or JSON), with an exit code: 0 no failure, 1 warnings
with --strict, 2 failures. `invoke envcheck` is the same plus `--nodes N` across a launcher.
"""

from __future__ import annotations

import argparse
import json
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
    from envcheck import runner

    report = runner.run(lock=args.lock)
    code = runner.exit_code(report, args.strict)
    report["exit_code"] = code
    if args.out:
        import os

        from trainer import record

        node = os.environ.get("SLURM_NODEID", os.environ.get("NODE_RANK", "0"))
        record.write(args.out.replace("{node}", node), dict(report, node=int(node)))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        runner.print_table(report)
    return code


if __name__ == "__main__":
    sys.exit(main())
