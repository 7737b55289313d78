"""local: N emulated nodes x P processes on this host, one torchrun per node over loopback.

Each "node" is its own torchrun (--nnodes N --node_rank R) meeting at 127.0.0.1, so the multi-node
code paths (node ranks, LOCAL_WORLD_SIZE, cross-node collectives) run for real.
"""

from __future__ import annotations

import socket

from stackbench.bench.launchers.contract import Launcher
from stackbench.core.config import RunConfig


class LocalLauncher(Launcher):
    name = "local"

    def hosts(self, nodes: int) -> list[str]:
        return ["127.0.0.1"] * nodes

    def node_names(self, nodes: int) -> list[str]:
        return [socket.gethostname()] * nodes

    def rendezvous(self, cfg: RunConfig, node: int, port: int) -> list[str]:
        return [f"--nnodes={cfg.nodes}", f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}",
                f"--rdzv-id={cfg.run_id}"]
