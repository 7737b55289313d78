"""Per-node liveness: which host vanished, and a node that ends itself when it is cut off.

A dropped link gives the surviving ranks a receive timeout without an address ("Timed out waiting
20000ms for recv"), so the collective cannot say which node went away. Each node's local rank 0
beats a counter in the job's TCP store (MASTER_ADDR:MASTER_PORT, hosted on node 0) once a second,
over a client connection of its own; global rank 0 reads every node's counter and knows, on its
own clock, which one stopped. When a rank raises, its error file carries those hosts
(trainer/__main__.py), and the launcher records the run `node_lost` with them
(bench/launchers/outcomes.py).

The other side of a cut: a node that cannot reach the store keeps its torchrun agent retrying the
rendezvous for many minutes, and a launcher cannot kill it (an ssh or slurmctld cannot reach a host
whose link is down). So a node that has not reached the store for longer than the collective
timeout, or whose rank fails while the store is unreachable, stops its own torchrun agent and
ranks (`end_this_node`).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from datetime import timedelta

BEAT_S = 1.0
STALE_S = 10.0  # a node whose counter has not moved for this long is lost (beats are 1 s apart)
PREFIX = "stackbench/liveness"

_monitor: "Liveness | None" = None


class Liveness:
    def __init__(self, node: int, nodes: int, *, watch: bool, isolate_after_s: float):
        self.node, self.nodes, self.watch, self.isolate_after_s = node, nodes, watch, isolate_after_s
        self.last_reached = time.monotonic()
        self._seen: dict[int, tuple[int, float]] = {}  # node -> (counter, when it last moved)
        self._hosts: dict[int, str] = {}
        self._lock = threading.Lock()
        self._store = None

    def _connect(self):
        import torch.distributed as dist

        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                             timeout=timedelta(seconds=5), wait_for_workers=False)

    def beat_once(self) -> None:
        if self._store is None:
            self._store = self._connect()
            self._store.set(f"{PREFIX}/host/{self.node}", socket.gethostname())
        self._store.add(f"{PREFIX}/beat/{self.node}", 1)
        self.last_reached = time.monotonic()
        if self.watch:
            now = time.monotonic()
            for n in range(self.nodes):
                count = self._store.add(f"{PREFIX}/beat/{n}", 0)
                with self._lock:
                    if self._seen.get(n, (None,))[0] != count:
                        self._seen[n] = (count, now)
                if n not in self._hosts and self._store.check([f"{PREFIX}/host/{n}"]):
                    self._hosts[n] = self._store.get(f"{PREFIX}/host/{n}").decode()

    def loop(self) -> None:
        while True:
            try:
                self.beat_once()
            except Exception:  # noqa: BLE001 - unreachable: the store is on node 0, across the link
                self._store = None  # a new connection once the link is back
                if time.monotonic() - self.last_reached > self.isolate_after_s:
                    end_this_node(f"the job's store at {os.environ.get('MASTER_ADDR')} has not answered for "
                                  f"{self.isolate_after_s:.0f} s")
            time.sleep(BEAT_S)

    def lost(self) -> list[str]:
        """Hosts (node index when a host never said its name) whose beats stopped: read on rank 0."""
        now = time.monotonic()
        with self._lock:
            stale = [n for n in range(self.nodes) if n not in self._seen or now - self._seen[n][1] > STALE_S]
        return [self._hosts.get(n, f"node {n}") for n in stale] if self._seen else []

    def isolated(self) -> bool:
        return time.monotonic() - self.last_reached > 3 * BEAT_S + 5


def start(collective_timeout_s: float) -> None:
    """On each node's local rank 0 of a multi-node run started by torchrun, after the process group."""
    global _monitor
    env = os.environ
    nodes = int(env.get("WORLD_SIZE", 1)) // max(1, int(env.get("LOCAL_WORLD_SIZE", 1)))
    if nodes < 2 or env.get("LOCAL_RANK", "0") != "0" or "GROUP_RANK" not in env or "MASTER_ADDR" not in env:
        return
    _monitor = Liveness(int(env["GROUP_RANK"]), nodes, watch=env.get("RANK") == "0",
                        isolate_after_s=collective_timeout_s + 30)
    threading.Thread(target=_monitor.loop, name="stackbench-liveness", daemon=True).start()


def lost_hosts() -> list[str]:
    return _monitor.lost() if _monitor and _monitor.watch else []


def isolated() -> bool:
    return bool(_monitor and _monitor.isolated())


def end_this_node(why: str) -> None:
    """Stop this node's torchrun agent and every rank under it (this one last): nothing else can."""
    from stackbench.core.proctree import kill_trees

    print(f"[{socket.gethostname()}] stackbench: {why}: ending this node's torchrun and ranks", file=sys.stderr,
          flush=True)
    agent = os.getppid()  # torchrun starts each rank as its child
    if "TORCHELASTIC_RUN_ID" in os.environ and agent > 1:
        import psutil

        siblings = [p.pid for p in psutil.Process(agent).children() if p.pid != os.getpid()]
        kill_trees([agent, *siblings])
    os._exit(1)
