"""torchrun: real hosts from a hostfile, one torchrun per host meeting by c10d rendezvous at the first.

`--dry-run` / `--script-only` print the exact per-node commands for users who start them
themselves; `invoke bench` runs them: directly on this host, over ssh (BatchMode, so a missing key
fails at once instead of prompting) on the others. The python and working directory are this
host's: the stack must sit at the same path on every host (a shared filesystem or the same image).

Hostfile: one host per line, DeepSpeed's format (`host slots=8`), `#` comments. The first host
runs node 0 and the rendezvous.
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path

from bench.launchers.contract import Launcher
from bench.launchers.options import LaunchOptions
from core.config import RunConfig
from core.errors import ConfigError


def read_hostfile(path: str) -> list[tuple[str, int | None]]:
    """[(host, slots or None)]; errors name file:line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"hostfile {path} does not exist", where="--hostfile",
                          fix="one host per line, e.g. 'node-a slots=8'")
    hosts = []
    for n, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        host, *rest = line.split()
        slots = None
        for item in rest:
            key, _, value = item.partition("=")
            if key != "slots" or not value.isdigit():
                raise ConfigError(f"cannot read {item!r}", where=f"{path}:{n}", fix="write 'HOST' or 'HOST slots=N'")
            slots = int(value)
        hosts.append((host, slots))
    if not hosts:
        raise ConfigError(f"hostfile {path} lists no hosts", where=path, fix="one host per line")
    return hosts


def is_local(host: str) -> bool:
    return host in {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}


class TorchrunLauncher(Launcher):
    name = "torchrun"

    def __init__(self, options: LaunchOptions | None = None, *, hostfile: str = "", ssh_options: str = ""):
        super().__init__(options)
        if not hostfile:
            raise ConfigError("the torchrun launcher needs a hostfile", where="--hostfile",
                              fix="write one host per line (node 0 first), e.g. 'node-a slots=8'")
        self.hostfile = hostfile
        self.entries = read_hostfile(hostfile)
        self.ssh_options = shlex.split(ssh_options) or ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                                                        "-o", "StrictHostKeyChecking=accept-new"]

    def hosts(self, nodes: int) -> list[str]:
        if nodes > len(self.entries):
            raise ConfigError(f"{nodes} nodes asked for but {self.hostfile} lists {len(self.entries)} hosts",
                              where="--nodes", fix=f"add hosts to {self.hostfile} or ask for fewer nodes")
        return [h for h, _ in self.entries[:nodes]]

    def check(self, cfg: RunConfig) -> None:
        for host, slots in self.entries[:cfg.nodes]:
            if slots is not None and slots < cfg.gpus_per_node:
                raise ConfigError(f"{host} has slots={slots} but --gpus-per-node is {cfg.gpus_per_node}",
                                  where=self.hostfile, fix="lower --gpus-per-node or raise the slots")

    def rendezvous(self, cfg: RunConfig, node: int, port: int) -> list[str]:
        self.check(cfg)
        master = self.hosts(cfg.nodes)[0]
        return [f"--nnodes={cfg.nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={master}:{port}",
                f"--rdzv-id={cfg.run_id}", f"--rdzv-conf=join_timeout={int(self.options.preflight_deadline_s)}"]

    def wrap(self, node_host: str, argv: list[str], env: dict[str, str]) -> list[str]:
        if is_local(node_host):
            return argv
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        remote = f"cd {shlex.quote(os.getcwd())} && env {exports} {shlex.join(argv)}"
        # -tt: when the local ssh is killed, the remote processes get SIGHUP and go too
        return ["ssh", "-tt", *self.ssh_options, node_host, remote]
