"""local: N emulated nodes x P processes on this host, one torchrun per node over loopback.

Each "node" is its own torchrun (--nnodes N --node_rank R) meeting at 127.0.0.1, so the multi-node
code paths (node ranks, LOCAL_WORLD_SIZE, cross-node collectives) run for real.
"""

from __future__ import annotations

import socket

from bench.launchers import base
from bench.spec import RunSpec


class LocalLauncher(base.Launcher):
    name = "local"

    def hosts(self, nodes: int) -> list[str]:
        return ["127.0.0.1"] * nodes

    def node_names(self, nodes: int) -> list[str]:
        return [socket.gethostname()] * nodes

    def rendezvous(self, spec: RunSpec, node: int, port: int) -> list[str]:
        return [f"--nnodes={spec.nodes}", f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}",
                f"--rdzv-id={spec.run_id}"]
