"""python -m trainer [--task sft|dpo|pt] [--model ...] [--zero-stage N] ... — the rank worker.

Start it under a distributed launcher (torchrun, srun + torchrun); `invoke bench` does that and
fills in --run-id, --out, --launcher and --command. Exit codes: 0 ok, 2 bad input (a record with
status failed / kind bad_input is written by rank 0), 3 out of memory, 1 anything else.
"""

from __future__ import annotations

import os
import socket
import sys

from trainer.errors import UserError


def _failure_record(cfg, kind: str, message: str, status: str = "failed") -> None:
    """Rank 0 records what stopped the run, so a sweep keeps it as a result."""
    if int(os.environ.get("RANK", 0)) != 0 or cfg is None or not cfg.run_id:
        return
    from trainer import record

    rec = record.new(cfg.run_id, cfg.sweep_id, status, config={"task": cfg.task, "trainer": cfg.to_dict()},
                     command=cfg.command, started_at=record.now(),
                     error=record.error(kind, message, rank=0, host=socket.gethostname()))
    record.write(os.path.join(cfg.out, f"{cfg.run_id}.json"), rec)


def main(argv: list[str] | None = None) -> int:
    prefix = f"[{socket.gethostname()}:{os.environ.get('RANK', 0)}]"
    cfg = None
    try:
        from trainer.config import parse_args

        cfg = parse_args(argv)
        from trainer.run import run

        run(cfg)
        return 0
    except UserError as e:
        print(f"{prefix} error: {e.render()}", file=sys.stderr, flush=True)
        _failure_record(cfg, e.kind, e.render())
        return 2
    except Exception as e:  # OOM is a result, not a crash; anything else keeps its traceback
        if type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower():
            print(f"{prefix} error: out of memory: {str(e).splitlines()[0]}", file=sys.stderr, flush=True)
            _failure_record(cfg, "oom", str(e).splitlines()[0], status="oom")
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
