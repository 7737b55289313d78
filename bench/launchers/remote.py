"""The far end of the torchrun launcher's ssh connection:

    ssh HOST 'cd DIR && exec PYTHON -m bench.launchers.remote -- ARGV...'

reads the rank environment from standard input (one JSON line: secrets never go on a command
line, where `ps` on either host would show them, and a stock sshd's AcceptEnv takes only LANG and
LC_*), runs ARGV with it, and stops ARGV's whole process tree when the connection closes (the
launcher killed its ssh, or the launcher died). Exits with ARGV's code, 128+N for a signal N.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from bench.launchers.processes import kill_tree


def main(argv: list[str]) -> int:
    argv = argv[1:] if argv[:1] == ["--"] else argv
    line = sys.stdin.buffer.readline()
    try:
        env = json.loads(line)
    except ValueError:
        print("bench.launchers.remote: expected the environment as one JSON line on standard input", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(*_):
        kill_tree(child.pid, signal.SIGTERM, wait_s=5)  # torchrun passes SIGTERM on to its ranks
        kill_tree(child.pid, signal.SIGKILL)

    def watch_connection():
        while sys.stdin.buffer.read(4096):
            pass
        stop()  # end of input: the launcher's side of the connection is gone

    threading.Thread(target=watch_connection, daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop)
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
