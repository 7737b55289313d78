"""The far end of the torchrun launcher's ssh connection:

    ssh HOST 'cd DIR && exec PYTHON -m bench.launchers.remote -- ARGV...'

reads the rank environment from standard input (one JSON line: secrets never go on a command
line, where `ps` on either host would show them, and a stock sshd's AcceptEnv takes only LANG and
LC_*), runs ARGV with it, and stops ARGV's whole process tree when the connection closes (the
launcher killed its ssh, or the launcher died) or a signal arrives. Exits with ARGV's code,
128+N for a signal N.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from stackbench.core.proctree import kill_trees

GRACE_S = 5.0  # torchrun passes SIGTERM on to its ranks, which get this long before SIGKILL


def main(argv: list[str]) -> int:
    argv = argv[1:] if argv[:1] == ["--"] else argv
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # before the child exists: none is orphaned
        signal.signal(sig, lambda *_: stop.set())
    try:
        env = json.loads(sys.stdin.buffer.readline())
    except ValueError:
        print("bench.launchers.remote: expected the environment as one JSON line on standard input", file=sys.stderr)
        return 2
    if stop.is_set():
        return 128 + signal.SIGTERM
    child = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL, start_new_session=True)

    def watch_connection() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        stop.set()  # end of input: the launcher's side of the connection is gone

    threading.Thread(target=watch_connection, daemon=True).start()
    while child.poll() is None:
        if stop.wait(0.2):
            kill_trees([child.pid], grace_s=GRACE_S)  # here, not in the watcher: it finishes before we exit
            break
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
