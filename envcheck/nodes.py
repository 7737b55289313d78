"""envcheck across nodes, through the bench launchers (local, torchrun, slurm): every node runs
`python -m envcheck`; their fingerprints are compared (the same image, lock, driver, NCCL, torch
and DeepSpeed everywhere); the preflight's timed all-reduce reports bandwidth and names any host
that does not answer within its deadline."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from stackbench.core.stack import dists
from stackbench.envcheck.check import Check, area

ok, warn, fail, skip = area("nodes")

# what must be equal on every node, as paths into a fingerprint: the packages core/stack.py marks
# same_on_every_node, and what is not a package
SAME_EVERYWHERE = {
    "image": ("image",), "lock hash": ("lock_hash",), "driver": ("devices", "driver"), "nccl": ("nccl",),
    "torch CUDA": ("torch_cuda",), "python": ("python",),
    **{dist: ("packages", dist) for dist in dists("same_on_every_node")},
}


def _get(d: dict, path: tuple[str, ...]):
    for key in path:
        d = (d or {}).get(key)
    return d


def compare(reports: dict[int, dict]) -> list[Check]:
    """Checks from the nodes' reports: one per field that differs, plus every node's own failures."""
    out = []
    for label, path in SAME_EVERYWHERE.items():
        values = {node: _get(r["fingerprint"], path) for node, r in reports.items()}
        if len(set(map(str, values.values()))) > 1:
            listed = "; ".join(f"node {n} ({reports[n]['host']}): {v}" for n, v in sorted(values.items()))
            out.append(fail(f"same {label}", "differs", listed, "run every node from the same image / lock"))
        else:
            out.append(ok(f"same {label}", next(iter(values.values()), None) or "none", f"on {len(values)} nodes"))
    for node, r in sorted(reports.items()):
        bad = [c for c in r["checks"] if c["status"] == "fail"]
        if bad:
            out.append(fail(f"node {node} checks", r["host"], "; ".join(f"{c['area']}/{c['name']}: {c['detail']}"
                                                                        for c in bad), "run invoke envcheck there"))
    return out


def across(launcher, nodes: int, procs_per_node: int, work_dir: Path, deadline_s: float = 120.0) -> dict:
    """The multi-node report: per-node reports, the comparison, the all-reduce."""
    from stackbench.envcheck import runner

    t0 = time.perf_counter()
    argv = [sys.executable, "-m", "stackbench.envcheck", "--json", "--out", str(work_dir.resolve() / "node{node}.json")]
    logs, preflight = launcher.run_on_nodes(argv, nodes, procs_per_node, work_dir, deadline_s)
    reports = {}
    for i in range(nodes):
        path = work_dir / f"node{i}.json"
        if path.exists():
            reports[i] = json.loads(path.read_text())
    checks = compare(reports) if reports else []
    missing = [i for i in range(nodes) if i not in reports]
    if missing:
        hosts = launcher.hosts(nodes)
        checks.append(fail("reports", f"{len(reports)}/{nodes}", "no report from " + ", ".join(
            f"node {i} ({hosts[i]})" for i in missing) + f"; logs: {', '.join(str(p) for p in logs)}",
            "check that the node is up and runs the same stack at the same path"))
    if preflight is None:
        checks.append(skip("all-reduce", "", "the launcher ran no preflight"))
    elif preflight.get("ok"):
        ar = preflight["allreduce"]
        checks.append(ok("all-reduce", f"{ar['busbw_gbps']:.2f} GB/s busbw",
                         f"{ar['bytes'] / 2**20:.0f} MiB over {preflight['world_size']} ranks on "
                         f"{', '.join(preflight['hosts'])} ({preflight['backend']}), "
                         f"best of 5: {ar['best_s'] * 1e3:.1f} ms"))
    else:
        checks.append(fail("all-reduce", preflight.get("error", ""), preflight.get("message", ""),
                           "check the named host, its network interface (NCCL_SOCKET_IFNAME) and firewall"))
    summary = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail", "skip")}
    return {"schema": runner.SCHEMA, "host": f"{nodes} nodes via {launcher.name}",
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration_s": round(time.perf_counter() - t0, 3),
            "summary": summary, "checks": [c.to_dict() for c in checks], "nodes": reports, "preflight": preflight}
