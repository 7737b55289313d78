"""A real Slurm cluster on this machine: slurmctld on a private bridge, one slurmd per node, each
node in its own network namespace with its own hostname and address (10.250.0.0/24).

For tests (a fixture brings it up and always tears it down) and for trying the slurm launcher:

    python -m tests.support.slurm_cluster up [--nodes 2] [--dir /tmp/sbslurm]   # prints SLURM_CONF
    python -m tests.support.slurm_cluster down [--dir /tmp/sbslurm]

Each node also runs an sshd on its address (key-only, root, a key made here), so the torchrun
launcher's ssh path runs for real against hosts that are not this one: `cluster.hostfile(path)`
and `cluster.ssh_options` are what `invoke bench --launcher torchrun` takes.

Needs root, Debian's slurm-wlm, munge, openssh-server, iproute2 and iptables (installed when missing). How it is
done and why (../shared/NOTES-MACHINE.md): nodes are entered with `nsenter --net=` (not `ip netns
exec`, which remounts /sys and breaks slurmd), `unshare --uts --mount` gives each a hostname and a
bind-mounted hosts file, and Docker's FORWARD policy DROP gets an ACCEPT rule for the bridge.
Only addresses of namespaces created here are used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BRIDGE, SUBNET, GATEWAY = "sbbr0", "10.250.0", "10.250.0.1"
PACKAGES = {"slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "munged": "munge", "ip": "iproute2",
            "iptables": "iptables", "nsenter": "util-linux", "unshare": "util-linux", "sshd": "openssh-server",
            "ssh": "openssh-client", "ssh-keygen": "openssh-client", "strace": "strace"}


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def ensure_packages() -> None:
    missing = sorted({pkg for tool, pkg in PACKAGES.items()
                      if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin"))})
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if sh("apt-get", "install", "-y", "-q", *missing, check=False, env=env).returncode != 0:
        sh("apt-get", "update", "-q", env=env)
        sh("apt-get", "install", "-y", "-q", *missing, env=env)


def ensure_munge() -> None:
    if sh("pgrep", "-x", "munged", check=False).returncode == 0:
        return
    Path("/run/munge").mkdir(exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    sh("runuser", "-u", "munge", "--", "/usr/sbin/munged")
    for _ in range(50):
        if Path("/run/munge/munge.socket.2").exists():
            return
        time.sleep(0.1)
    raise RuntimeError("munged did not start (no /run/munge/munge.socket.2)")


class SlurmCluster:
    def __init__(self, nodes: int = 2, root: str | Path = "/tmp/sbslurm", cpus: int | None = None,
                 trace_execs: bool = False):
        self.nodes, self.root = nodes, Path(root)
        self.trace_execs = trace_execs  # every node's slurmd and sshd run under strace: exec_traces_since()
        self.cpus = cpus or max(2, os.cpu_count() or 2)
        self.ctl_host = socket.gethostname()
        self.names = [f"sbnode{i}" for i in range(nodes)]
        self.addrs = [f"{SUBNET}.{10 + i}" for i in range(nodes)]
        self.conf = self.root / "slurm.conf"
        self.state = self.root / "state.json"
        self.ssh_dir = self.root / "ssh"
        self.trace_dir = self.root / "trace"
        self._cut: set[int] = set()  # nodes cut since the last reset: brought back at once there

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    # --- up ----------------------------------------------------------------------------------------

    def up(self, timeout: float = 60) -> "SlurmCluster":
        ensure_packages()
        ensure_munge()
        self.down(quiet=True)  # leftovers of an earlier run that was killed
        for d in ("state", "log", "spool", "trace"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        state: dict = {"pids": [], "netns": [], "iptables": []}
        self.state.write_text(json.dumps(state))
        self._network(state)
        self._write_conf()
        hosts = self.root / "hosts"
        hosts.write_text("127.0.0.1 localhost\n" + f"{GATEWAY} {self.ctl_host}\n" +
                         "".join(f"{a} {n}\n" for a, n in zip(self.addrs, self.names)))
        # no DNS inside the nodes: lookups the hosts file cannot answer (c10d's reverse lookups of
        # v4-mapped peers) fail at once instead of timing out for 10 s against an unreachable resolver
        resolv = self.root / "resolv.conf"
        resolv.write_text("options timeout:1 attempts:1\n")
        log = (self.root / "log" / "slurmctld.log").open("w")
        ctld = subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(self.conf)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        state["pids"].append(ctld.pid)
        self._ssh_keys()
        for name, addr in zip(self.names, self.addrs):
            enter = f"hostname {name} && mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf"
            for daemon, cmd in (("slurmd", f"slurmd -D -N {name} -f {self.conf}"),
                                ("sshd", f"/usr/sbin/sshd -D -e -f {self._sshd_config(name, addr)}")):
                if self.trace_execs:  # seccomp-bpf: only execve stops what they start, the rest runs at full speed
                    cmd = (f"{shutil.which('strace') or 'strace'} -f --seccomp-bpf -qq -e trace=execve -s 100000 "
                           f"-o {self.trace_dir / f'{daemon}-{name}.trace'} {cmd}")
                log = (self.root / "log" / f"{daemon}-{name}.log").open("w")
                proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{name}", "unshare", "--uts", "--mount", "sh",
                                         "-c", f"{enter} && exec {cmd}"], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                state["pids"].append(proc.pid)
                state.setdefault("daemons", {})[f"{daemon}-{name}"] = proc.pid  # nsenter, unshare and sh exec it
        self.state.write_text(json.dumps(state))
        self._wait_idle(timeout)
        self._wait_ssh(timeout)
        return self

    def daemon_pids(self, daemon: str) -> list[int]:
        """The pid of that daemon (slurmd, sshd) on every node (with trace_execs: of its strace)."""
        daemons = json.loads(self.state.read_text()).get("daemons", {})
        return [daemons[f"{daemon}-{name}"] for name in self.names]

    # --- what the nodes start (trace_execs) ------------------------------------------------------------

    def exec_trace_marks(self) -> dict[str, int]:
        """Where each daemon's execve trace ends now (trace_execs): exec_traces_since(marks) gives
        what the daemons and everything they started (slurmstepd, batch scripts, srun, ranks, ssh
        sessions) executed after this point."""
        if not self.trace_execs:
            raise RuntimeError("the cluster was not brought up with trace_execs=True")
        return {f.name: f.stat().st_size for f in sorted(self.trace_dir.glob("*.trace"))}

    def exec_traces_since(self, marks: dict[str, int]) -> str:
        """The execve lines every daemon's strace wrote since exec_trace_marks()."""
        out = []
        for f in sorted(self.trace_dir.glob("*.trace")):
            with f.open("rb") as fh:
                fh.seek(marks.get(f.name, 0))
                out.append(f"--- {f.stem}\n" + fh.read().decode(errors="replace"))
        return "".join(out)

    # --- ssh into the nodes --------------------------------------------------------------------------

    @property
    def ssh_options(self) -> str:
        """What --ssh-options takes to reach the nodes: this cluster's key and host keys only."""
        d = self.ssh_dir
        return (f"-i {d}/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR "
                f"-o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes")

    def hostfile(self, path: Path, slots: int = 1) -> Path:
        path.write_text("".join(f"{a} slots={slots}\n" for a in self.addrs))
        return path

    def _ssh_keys(self) -> None:
        d = self.ssh_dir
        d.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        for key in ("host_ed25519", "id_ed25519"):
            if not (d / key).exists():
                sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"stackbench-test-{key}", "-f", str(d / key))
        (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
        host_key = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
        (d / "known_hosts").write_text("".join(f"{a} {host_key}\n" for a in self.addrs))

    def _sshd_config(self, name: str, addr: str) -> Path:
        d = self.ssh_dir
        conf = d / f"sshd-{name}.conf"
        conf.write_text(f"""\
ListenAddress {addr}
Port 22
HostKey {d}/host_ed25519
PidFile {d}/sshd-{name}.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
""")
        return conf

    def _wait_ssh(self, timeout: float) -> None:
        t0 = time.monotonic()
        for addr in self.addrs:
            while True:
                p = sh("ssh", *self.ssh_options.split(), addr, "hostname", check=False)
                if p.returncode == 0:
                    break
                if time.monotonic() - t0 > timeout:
                    self.down(quiet=True)
                    raise RuntimeError(f"sshd on {addr} not answering after {timeout:.0f} s: {p.stderr.strip()}")
                time.sleep(0.3)

    def _network(self, state: dict) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for i, (name, addr) in enumerate(zip(self.names, self.addrs)):
            sh("ip", "netns", "add", name)
            state["netns"].append(name)
            self.state.write_text(json.dumps(state))
            host_end, ns_end = f"sbv{i}", f"sbv{i}p"
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            sh("ip", "link", "set", host_end, "master", BRIDGE)
            sh("ip", "link", "set", host_end, "up")
            sh("ip", "link", "set", ns_end, "netns", name)
            for cmd in (["ip", "addr", "add", f"{addr}/24", "dev", ns_end], ["ip", "link", "set", ns_end, "up"],
                        ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", GATEWAY]):
                sh("nsenter", f"--net=/run/netns/{name}", *cmd)
        if shutil.which("iptables"):  # Docker sets FORWARD to DROP; traffic between nodes crosses the bridge
            for rule in (["-i", BRIDGE, "-j", "ACCEPT"], ["-o", BRIDGE, "-j", "ACCEPT"]):
                if sh("iptables", "-I", "FORWARD", *rule, check=False).returncode == 0:
                    state["iptables"].append(rule)
        self.state.write_text(json.dumps(state))

    def _write_conf(self) -> None:
        r = self.root
        nodes = "\n".join(f"NodeName={n} NodeAddr={a} NodeHostname={n} CPUs={self.cpus} RealMemory=2000 State=UNKNOWN"
                          for n, a in zip(self.names, self.addrs))
        self.conf.write_text(f"""\
ClusterName=stackbench
SlurmctldHost={self.ctl_host}({GATEWAY})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MinJobAge=600
KillWait=5
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")

    def _wait_idle(self, timeout: float) -> None:
        t0 = time.monotonic()
        out = ""
        while time.monotonic() - t0 < timeout:
            out = sh("sinfo", "-h", "-N", "-o", "%N %t", check=False, env=dict(os.environ, **self.env)).stdout
            states = dict(line.split() for line in out.splitlines() if line.strip())
            if len(states) == self.nodes and all(s == "idle" for s in states.values()):
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n" + p.read_text()[-1500:] for p in sorted((self.root / "log").glob("*.log")))
        self.down(quiet=True)
        raise RuntimeError(f"Slurm nodes not idle after {timeout:.0f} s: {out!r}\n{logs}")

    # --- faults ------------------------------------------------------------------------------------

    def cut(self, node: int) -> None:
        """Take a node's link down (its end of the bridge): the node runs on, unreachable from
        slurmctld and the other nodes, as when a cable or a switch port dies."""
        sh("ip", "link", "set", f"sbv{node}", "down")
        self._cut.add(node)

    def restore(self, node: int) -> None:
        sh("ip", "link", "set", f"sbv{node}", "up")

    def processes(self, node: int, pattern: str) -> list[str]:
        """Command lines of the processes running in a node's namespace that contain pattern."""
        found = []
        for pid in sh("ip", "netns", "pids", self.names[node], check=False).stdout.split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pattern in cmd:
                found.append(f"{pid}: {cmd}")
        return found

    def reset(self, timeout: float = 120) -> None:
        """Between fault tests: every link up, no job left, every node resumed and idle.

        A node cut since the last reset is brought back at once, not when slurmctld next gets to
        it: its part of a cancelled job would stay COMPLETING until slurmctld's kill retry reaches
        it (about once a minute), and the node would stay "not responding" (idle*) until its next
        ping (every SlurmdTimeout / 3: 100 s). Setting it DOWN ends what slurmctld still holds on
        it (Slurm's own remedy for jobs stuck completing), and RESUME has slurmctld ping it now."""
        env = dict(os.environ, **self.env)
        for i in range(self.nodes):
            self.restore(i)
        sh("scancel", "--full", "--user", "root", check=False, env=env)
        for i in sorted(self._cut):
            sh("scontrol", "update", f"nodename={self.names[i]}", "state=down", "reason=stackbench-test-reset",
               check=False, env=env)
        self._cut.clear()
        t0 = time.monotonic()
        while sh("squeue", "-h", check=False, env=env).stdout.strip() and time.monotonic() - t0 < timeout:
            time.sleep(0.5)
        for name in self.names:  # a node slurmctld set down or drained comes back (idle ones refuse: fine)
            sh("scontrol", "update", f"nodename={name}", "state=resume", check=False, env=env)
        self._wait_idle(timeout)

    # --- down --------------------------------------------------------------------------------------

    def down(self, quiet: bool = False) -> None:
        """Stop the daemons by saved PIDs and delete what up() created, also after a crash."""
        state = json.loads(self.state.read_text()) if self.state.exists() else {"pids": [], "netns": [], "iptables": []}
        for pid in state["pids"]:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.3)
        for pid in state["pids"]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for rule in state["iptables"]:
            sh("iptables", "-D", "FORWARD", *rule, check=False)
        for name in set(state["netns"]) | set(self.names):
            if Path(f"/run/netns/{name}").exists():
                # whatever still runs in a node (slurmstepd, ranks) keeps its namespace alive
                for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                sh("ip", "netns", "delete", name, check=False)  # also unmounts /run/netns/NAME
        for i in range(len(self.names)):
            sh("ip", "link", "delete", f"sbv{i}", check=False)
        sh("ip", "link", "delete", BRIDGE, check=False)
        self.state.unlink(missing_ok=True)
        if not quiet:
            print(f"stopped the cluster in {self.root}", file=sys.stderr)

    def __enter__(self) -> "SlurmCluster":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down(quiet=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.slurm_cluster")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--dir", default="/tmp/sbslurm")
    args = p.parse_args(argv)
    cluster = SlurmCluster(args.nodes, args.dir)
    if args.action == "up":
        cluster.up()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
