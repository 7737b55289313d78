"""python -m trainer [--task sft|dpo|pt] [--model ...] [--zero-stage N] ... — the rank worker.

Start it under a distributed launcher (torchrun, srun + torchrun); `invoke bench` does that and
fills in --run-id, --out, --launcher and --command. Every flag is a field of core.config.RunConfig
(what the run is) or core.config.Launch (bookkeeping). Exit codes: 0 ok, 2 bad input (a record
with status failed / kind bad_input is written by rank 0), 3 out of memory, 1 anything else: its
exception goes to torch elastic's error file (@record), with this rank and host, where the
launcher reads it for the record (bench/launchers/outcomes.py).
"""

from __future__ import annotations

import os
import socket
import sys

from stackbench.core.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_OOM, OUT_OF_MEMORY, UserError


def _failure_record(cfg, launch, status: str, kind: str, message: str) -> None:
    """Rank 0 records what stopped the run, so a sweep keeps it as a result."""
    if int(os.environ.get("RANK", 0)) != 0 or cfg is None or launch is None:
        return
    from stackbench.core import record
    from stackbench.core.files import ResultsUnwritable

    rec = record.new(status, cfg, launch, started_at=record.now(),
                     error=record.error(kind, message, rank=0, host=socket.gethostname()))
    try:
        record.write(record.path(launch.out, rec["run_id"]), rec)
    except ResultsUnwritable as e:  # the error above may be this one: said once, on the console
        print(f"error: {e.render()}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    prefix = f"[{socket.gethostname()}:{os.environ.get('RANK', 0)}]"
    cfg = launch = None
    try:
        from stackbench.core.flags import parse_trainer_args

        cfg, launch, given = parse_trainer_args(argv, description=__doc__)
        from stackbench.trainer import ds_source
        from stackbench.trainer.backends.base import Topology
        from stackbench.trainer.run import run, with_topology

        cfg = with_topology(cfg, given, Topology.from_env())  # before anything can fail: records say what ran
        cfg = ds_source.reconcile(cfg, given)  # what a --deepspeed config states (the bench has done this already)
        launch = launch.replace(run_id=launch.run_id or cfg.run_id)
        run(cfg, launch, frozenset(given))
        return EXIT_OK
    except UserError as e:
        print(f"{prefix} error: {e.render()}", file=sys.stderr, flush=True)
        _failure_record(cfg, launch, "failed", e.kind, e.render())
        return EXIT_BAD_INPUT
    except Exception as e:  # OOM is a result, not a crash; anything else keeps its traceback
        if OUT_OF_MEMORY.search(f"{type(e).__name__}: {e}"):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"{prefix} error: out of memory: {first}", file=sys.stderr, flush=True)
            _failure_record(cfg, launch, "oom", "oom", first)
            return EXIT_OOM
        raise


def entry() -> int:
    """main under torch elastic's @record: an exception main lets through is written to the error
    file torchrun gives each rank (TORCHELASTIC_ERROR_FILE, under --log-dir), its extraInfo naming
    this rank and host besides torch's traceback and timestamp."""
    import json

    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, record

    from stackbench.trainer import liveness

    class RankErrorHandler(ErrorHandler):
        def record_exception(self, e: BaseException) -> None:
            super().record_exception(e)
            path = self._get_error_file_path()
            if not path or not os.path.isfile(path):
                return
            with open(path) as fh:
                data = json.load(fh)
            data["message"]["extraInfo"].update(rank=os.environ.get("RANK", "0"), host=socket.gethostname(),
                                                lost_hosts=",".join(liveness.lost_hosts()))
            with open(path, "w") as fh:
                json.dump(data, fh)
            if liveness.isolated():  # its torchrun agent would retry the rendezvous for many minutes
                liveness.end_this_node("this rank failed while the job's store was unreachable")

    return record(main, error_handler=RankErrorHandler())()


def exit_now(code: int) -> None:
    """End the rank once its work is done, without the interpreter's teardown. After the last
    barrier nothing is left to do, yet Python's finalization (freeing torch, DeepSpeed and
    transformers module by module, the process group's destructors) took 1.5-2 s of every rank of
    every run on a 2-core host. What a normal exit does that matters is kept, in its order: wait for
    non-daemon threads, run the atexit handlers (logging's flush among them), flush stdout and
    stderr. Only a return reaches here: an exception (torch elastic's error file) or SystemExit
    ends the process the usual way."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more can be said on it
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(entry())
