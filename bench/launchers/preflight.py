"""Preflight: before the runs of a node count, do all nodes join, and does an all-reduce across
every rank work? Fails in seconds and names the host that did not answer.

torchrun cannot tell: its rendezvous waits for every node before it starts any worker and then
times out without saying who was missing. So one process per node meets the others at a TCPStore
on the first host; node 0 knows which hosts to expect and names the ones that never registered.
When all have joined, each node spawns its ranks, which run a timed all-reduce (NCCL on GPUs, gloo
on CPU), check the sum, and report bus bandwidth the way nccl-tests does (busbw = algbw * 2(n-1)/n);
then the collectives ZeRO uses besides, all-gather and reduce-scatter, at the same size (busbw =
algbw * (n-1)/n, S the gathered output or the scattered input). Within one node that is the
intra-node bus; over several, the slowest link of the ring, the inter-node one.

    python -m stackbench.bench.launchers.preflight --node-rank R --nnodes N --nproc P --master HOST:PORT \
        --hosts h0,h1,... --deadline 30 --out preflight.json

Exit codes: 0 ok, 4 a node did not join or the all-reduce failed (the JSON says which host).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import timedelta

from stackbench.bench.launchers.options import LaunchOptions
from stackbench.core.errors import EXIT_PREFLIGHT as EXIT_FAILED

PREFIX = "stackbench-preflight:"  # the line launchers look for in node logs


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stackbench.bench.launchers.preflight", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--node-rank", type=int, default=None,
                   help="this node's index; default $SLURM_NODEID or $NODE_RANK (one command for every node)")
    p.add_argument("--nnodes", type=int, required=True)
    p.add_argument("--nproc", type=int, default=1, help="ranks per node")
    p.add_argument("--master", required=True, help="HOST:PORT of node 0, where the store listens")
    p.add_argument("--hosts", default="", help="comma list of the expected host of each node, to name the missing")
    p.add_argument("--deadline", type=float, default=LaunchOptions.preflight_deadline_s,
                   help="seconds for joining and for the all-reduce")
    p.add_argument("--bytes", type=int, default=16 * 2**20, help="all-reduce message size")
    p.add_argument("--out", default="", help="node 0 writes the result JSON here")
    return p.parse_args(argv)


def _say(result: dict) -> None:
    print(PREFIX, json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.node_rank is None:
        args.node_rank = int(os.environ.get("SLURM_NODEID", os.environ.get("NODE_RANK", 0)))
    from torch.distributed import TCPStore

    host, port = args.master.rsplit(":", 1)
    hosts = [h for h in args.hosts.split(",") if h] or [f"node{i}" for i in range(args.nnodes)]
    me = socket.gethostname()
    t0 = time.monotonic()
    try:
        store = TCPStore(host, int(port), args.nnodes, is_master=args.node_rank == 0, wait_for_workers=False,
                         timeout=timedelta(seconds=args.deadline))
    except Exception as e:  # noqa: BLE001 - the store raises RuntimeError/DistNetworkError/TimeoutError by version
        _say({"ok": False, "node": args.node_rank, "host": me, "error": "unreachable_master",
              "message": f"node {args.node_rank} ({me}) could not reach node 0 at {args.master} within "
                         f"{args.deadline:.0f} s: {str(e).splitlines()[0]}"})
        return EXIT_FAILED
    store.set(f"joined/{args.node_rank}", json.dumps({"host": me, "pid": os.getpid()}))

    if args.node_rank == 0:
        missing = _wait_for_nodes(store, args.nnodes, t0 + args.deadline)
        if missing:
            named = ", ".join(f"node {i} ({hosts[i] if i < len(hosts) else '?'})" for i in missing)
            result = {"ok": False, "error": "not_joined", "missing_nodes": missing,
                      "missing_hosts": [hosts[i] for i in missing if i < len(hosts)],
                      "message": f"{named} did not join within {args.deadline:.0f} s: check that the host is up, "
                                 f"reachable from {me}, and that port {port} is open"}
            store.set("verdict", json.dumps(result))
            return _finish(args, result)
        store.set("verdict", json.dumps({"ok": True}))
    else:
        try:
            store.wait(["verdict"], timedelta(seconds=max(1.0, t0 + args.deadline + 5 - time.monotonic())))
        except Exception:  # noqa: BLE001
            _say({"ok": False, "node": args.node_rank, "host": me, "error": "no_verdict",
                  "message": f"node {args.node_rank} ({me}) joined but node 0 gave no verdict in time"})
            return EXIT_FAILED
        verdict = json.loads(store.get("verdict"))
        if not verdict["ok"]:
            _say(verdict)
            return EXIT_FAILED

    result = _allreduce_all_ranks(args)
    if args.node_rank == 0:
        result["joined_hosts"] = [json.loads(store.get(f"joined/{i}"))["host"] for i in range(args.nnodes)]
        result["join_s"] = round(time.monotonic() - t0, 3)
        return _finish(args, result)
    return 0 if result["ok"] else EXIT_FAILED


def _wait_for_nodes(store, nnodes: int, deadline: float) -> list[int]:
    while True:
        missing = [i for i in range(nnodes) if not store.check([f"joined/{i}"])]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.1)


def _finish(args: argparse.Namespace, result: dict) -> int:
    result.update(nnodes=args.nnodes, nproc=args.nproc, deadline_s=args.deadline)
    if args.out:
        from stackbench.core import record

        record.write(args.out, result)
    _say(result)
    return 0 if result["ok"] else EXIT_FAILED


def _allreduce_all_ranks(args: argparse.Namespace) -> dict:
    """Spawn this node's ranks; each joins the process group and runs the timed all-reduce."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_rank, args=(args, local, queue), daemon=True) for local in range(args.nproc)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + args.deadline + 30  # + spawn and import time
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    reports = [queue.get() for _ in range(sum(1 for p in procs if p.exitcode == 0))]
    for p in procs:
        if p.is_alive():
            p.kill()
    failed = [r for r in reports if not r["ok"]]
    if failed or len(reports) < args.nproc:
        msg = failed[0]["message"] if failed else f"a rank on {socket.gethostname()} did not finish the all-reduce"
        return {"ok": False, "error": "allreduce", "message": msg, "host": socket.gethostname()}
    return next((r for r in reports if r.get("rank") == 0), reports[0])


def _rank(args: argparse.Namespace, local: int, queue) -> None:
    import torch
    import torch.distributed as dist

    rank, world = args.node_rank * args.nproc + local, args.nnodes * args.nproc
    host, port = args.master.rsplit(":", 1)
    me = socket.gethostname()
    try:
        cuda = torch.cuda.is_available()
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        store = dist.PrefixStore("allreduce", dist.TCPStore(host, int(port), world, is_master=False,
                                                            timeout=timedelta(seconds=args.deadline)))
        dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=world,
                                timeout=timedelta(seconds=args.deadline))
        x = torch.full((args.bytes // 4,), float(rank + 1), device=device)
        dist.all_reduce(x)  # warm-up: connections are made here
        times = _timed(lambda: dist.all_reduce(x), cuda, before=lambda: x.fill_(float(rank + 1)))
        expected = world * (world + 1) / 2
        if not torch.allclose(x[:1].cpu(), torch.tensor([expected])):
            raise RuntimeError(f"all-reduce gave {x[0].item()} instead of {expected}")
        collectives = {"all_reduce": _bandwidth(args.bytes, times, 2 * (world - 1) / world)}
        shard = torch.ones(args.bytes // 4 // world, device=device)
        whole = torch.empty(shard.numel() * world, device=device)
        # torch 2.13 renamed them (*_single); 2.6 has only the old names
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        for op, call in (("all_gather", lambda: gather(whole, shard)),
                         ("reduce_scatter", lambda: scatter(shard, whole))):
            try:
                call()
                collectives[op] = _bandwidth(whole.numel() * 4, _timed(call, cuda), (world - 1) / world)
            except (RuntimeError, NotImplementedError) as e:  # a backend without it (older gloo): said, not fatal
                collectives[op] = {"error": str(e).splitlines()[0][:200]}
        everyone: list = [None] * world
        dist.all_gather_object(everyone, {"rank": rank, "host": me})
        queue.put({"ok": True, "rank": rank, "backend": dist.get_backend(), "world_size": world,
                   "hosts": sorted({e["host"] for e in everyone}), "ranks": everyone,
                   "allreduce": collectives["all_reduce"], "collectives": collectives,
                   "spans_nodes": args.nnodes > 1})
        dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 - every failure becomes a named report
        queue.put({"ok": False, "rank": rank, "message": f"rank {rank} on {me}: {type(e).__name__}: "
                                                         f"{str(e).splitlines()[0] if str(e) else ''}"})


def _timed(call, cuda: bool, before=None, iters: int = 5) -> list[float]:
    import torch

    times = []
    for _ in range(iters):
        if before:
            before()
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def _bandwidth(size: int, times: list[float], bus_factor: float) -> dict:
    """nccl-tests' figures for a collective of `size` bytes: algbw = size / time, busbw = algbw * factor."""
    best = min(times)
    algbw = size / best / 1e9
    return {"bytes": size, "best_s": best, "median_s": sorted(times)[len(times) // 2], "algbw_gbps": algbw,
            "busbw_gbps": algbw * bus_factor}


if __name__ == "__main__":
    sys.exit(main())
