"""torchrun: real hosts from a hostfile, one torchrun per host meeting by c10d rendezvous at the first.

`--dry-run` / `--script-only` print the exact per-node commands for users who start them
themselves; `invoke bench` runs them: directly on this host, over ssh (BatchMode, so a missing key
fails at once instead of prompting) on the others. The python and working directory are this
host's: the stack must sit at the same path on every host (a shared filesystem or the same image).
Over ssh the rank environment, secrets included, travels on the connection's standard input to
bench/launchers/remote.py, never on the command line; closing the connection stops the command.

Hostfile: one host per line, DeepSpeed's format (`host slots=8`), `#` comments. The first host
runs node 0 and the rendezvous.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from stackbench.bench.launchers.contract import Launcher
from stackbench.bench.launchers.options import LaunchOptions
from stackbench.bench.launchers.processes import NodeCommand
from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError


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
        if not HOSTNAME.fullmatch(host):
            raise ConfigError(f"{host!r} is not a host name or address", where=f"{path}:{n}",
                              fix="letters, digits, '.', '-', '_' (or an IPv4 / IPv6 address); no user@ or options")
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


# what ssh and torchrun's rendezvous take as a host: a name, an IPv4 or an IPv6 address; never an
# option ("-oProxyCommand=...") or anything a shell would read
HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,252})|\[?[0-9A-Fa-f:.]+\]?")


def is_local(host: str) -> bool:
    return host in {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}


@dataclass(frozen=True)
class TorchrunSettings:
    """The torchrun launcher's own settings (bench's --hostfile, --ssh-options); a hostfile is needed."""

    hostfile: str = ""
    """one host per line ('host slots=8'), node 0 first"""
    ssh_options: str = ""
    """options for ssh, as one shell-quoted string (default: BatchMode, ConnectTimeout=10, ServerAliveInterval=10)"""

    def __post_init__(self) -> None:
        if not self.hostfile:
            raise ConfigError("the torchrun launcher needs a hostfile", where="--hostfile",
                              fix="write one host per line (node 0 first), e.g. 'node-a slots=8'")


class TorchrunLauncher(Launcher):
    name = "torchrun"

    def __init__(self, options: LaunchOptions | None = None, settings: TorchrunSettings | None = None, **fields):
        """settings, or its fields by name (hostfile=..., ssh_options=...)."""
        super().__init__(options)
        self.settings = settings if settings is not None else TorchrunSettings(**fields)
        self.hostfile = self.settings.hostfile
        self.entries = read_hostfile(self.hostfile)
        self.dead: set[str] = set()
        self.ssh_options = shlex.split(self.settings.ssh_options) or [
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10",
            "-o", "ServerAliveCountMax=3", "-o", "StrictHostKeyChecking=accept-new"]

    def hosts(self, nodes: int) -> list[str]:
        return [h for h, _ in self.live(nodes)]

    def live(self, nodes: int) -> list[tuple[str, int | None]]:
        """The first `nodes` hostfile entries not found dead in this sweep."""
        live = [e for e in self.entries if e[0] not in self.dead]
        if nodes > len(live):
            dead = (f", {len(self.dead)} of them found dead in this sweep ({', '.join(sorted(self.dead))})"
                    if self.dead else "")
            raise ConfigError(f"{nodes} nodes asked for but {self.hostfile} lists {len(self.entries)} hosts{dead}",
                              where="--nodes", fix=f"add hosts to {self.hostfile} or ask for fewer nodes")
        return live[:nodes]

    def exclude(self, hosts: set[str]) -> set[str]:
        # a lost host names itself by its hostname; the hostfile may list it by address
        def address(h: str) -> str:
            try:
                return socket.gethostbyname(h)
            except OSError:
                return h
        wanted = hosts | {address(h) for h in hosts}
        found = {h for h, _ in self.entries if h in wanted or address(h) in wanted}
        self.dead |= found
        return found

    def check(self, cfg: RunConfig) -> None:
        for host, slots in self.live(cfg.nodes):
            if slots is not None and slots < cfg.gpus_per_node:
                raise ConfigError(f"{host} has slots={slots} but --gpus-per-node is {cfg.gpus_per_node}",
                                  where=self.hostfile, fix="lower --gpus-per-node or raise the slots")

    def rendezvous(self, cfg: RunConfig, node: int, port: int) -> list[str]:
        self.check(cfg)
        master = self.hosts(cfg.nodes)[0]
        return [f"--nnodes={cfg.nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={master}:{port}",
                f"--rdzv-id={cfg.run_id}", f"--rdzv-conf=join_timeout={int(self.options.preflight_deadline_s)}"]

    def wrap(self, node_host: str, argv: list[str], env: dict[str, str]) -> NodeCommand:
        if is_local(node_host):
            return NodeCommand(argv)
        remote = shlex.join(["cd", os.getcwd()]) + " && exec " + shlex.join(
            [sys.executable, "-m", "stackbench.bench.launchers.remote", "--", *argv])
        # no tty (-T): a tty would echo the environment sent on standard input into the log
        environment = json.dumps({**env, **self.secret_env()}).encode() + b"\n"
        return NodeCommand(["ssh", "-T", *self.ssh_options, "--", node_host, remote], stdin=environment)
