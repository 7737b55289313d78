"""The GPU reference run, rehearsed: one command that does what a lent GPU's few minutes are for,
and that runs here first, on the CPU, so the GPU only has to execute it.

    python3 recipes/gpu_reference.py --out /tmp/ref --wheels .cache/gpu-wheels --archive $OUT/ref.tgz
    ./sb gpu-reference --out results/gpu-reference-cpu          # the CPU rehearsal (CI runs it)

This module needs only the standard library until its wheels are installed: with --wheels DIR
(`invoke gpu-wheels`) it first installs DIR's wheels for this Python offline into a target
folder and runs every step with it on PYTHONPATH, as on a host with torch and no network.

Steps, each a subprocess with its own deadline, each written out as soon as it ends (steps.json,
its log, and --archive re-packed), the remaining ones skipped with the reason once the total
deadline is near:
  GPU: envcheck --json; `invoke plan` for qwen3-0.6b (seq 2048) and qwen3-1.7b (seq 4096, each
       micro-batch 1-8: the largest that fits is the one benched); qwen3-0.6b bf16 SFT at ZeRO 0-3;
       qwen3-1.7b bf16 at seq 4096 with that micro-batch; the hf backend (transformers' Trainer)
       on one qwen3-0.6b config.
  CPU: the same envcheck and plans; the embedded model in bf16 at ZeRO 0-3; qwen3-0.6b's and
       qwen3-1.7b's configs cut to one layer (their real vocabulary and hidden size) for one step
       each; the hf backend on the embedded model (the one-step runs after the first skip the
       preflight the first one rehearsed).
One GPU proves less than a node: ZeRO 1-3 partition nothing across one device and NCCL has a world
of one; the README written beside the results says so, and the report's caveats do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {"qwen3-0.6b": 2048, "qwen3-1.7b": 4096}  # model -> sequence length of its reference run
MICRO_BATCHES = (1, 2, 4, 8)


@dataclass
class Step:
    name: str
    argv: list[str]
    deadline_s: float
    stdout_to: str = ""            # a file under --out that keeps the step's stdout (envcheck's JSON)
    after: object = None           # called with the finished step's result: may add steps (the plan's pick)
    result: dict = field(default_factory=dict)


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through _run's finally: the running step's processes are ended


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write-plans"]:  # the plan step: this file again, in the step's environment
        write_plans(argv[1], float(argv[2]))
        return 0
    p = argparse.ArgumentParser(prog="python3 recipes/gpu_reference.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the results, logs, steps.json and README.md")
    p.add_argument("--wheels", default="", help="install this wheel folder (invoke gpu-wheels) offline first")
    p.add_argument("--archive", default="", help="a .tgz of --out, re-packed after every step")
    p.add_argument("--deadline", type=float, default=540.0, help="seconds for every step together")
    p.add_argument("--cpu", action="store_true", help="the CPU rehearsal even where a GPU is visible")
    args = p.parse_args(argv)
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(args)
    finally:
        signal.signal(signal.SIGTERM, before)


def _main(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.wheels:
        site = install_wheels(Path(args.wheels), out / "site")
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    gib = None if args.cpu else _gpu_gib(env)
    gpu = gib is not None
    steps = plan_steps(out, gpu, gib or 80.0)
    _write_readme(out, steps, gpu, args)
    t_end = time.monotonic() + args.deadline
    done: list[Step] = []
    while steps:
        step = steps.pop(0)
        left = t_end - time.monotonic()
        if left < min(step.deadline_s, 30):
            step.result = {"status": "not run",
                           "why": f"{max(left, 0):.0f} s of the {args.deadline:.0f} s deadline left"}
        else:
            step.result = _run(step, out, env, min(step.deadline_s, left))
            if step.after:
                steps[:0] = step.after(step)
        done.append(step)
        _record(out, done, args.archive)
        print(f"gpu-reference: {step.name}: {step.result['status']}"
              + (f" in {step.result['seconds']:.0f} s" if "seconds" in step.result else f" ({step.result.get('why')})"),
              flush=True)
    _write_readme(out, done, gpu, args)
    _record(out, done, args.archive)
    return 0 if all(s.result["status"] == "ok" for s in done) else 1  # 1: a step failed (steps.json says which)


def install_wheels(wheels: Path, site: Path) -> Path:
    """This Python's wheels from the folder, offline, into `site` (as a host without network would)."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    req = wheels / f"requirements-{py}.txt"
    if not req.is_file():  # a user mistake: said in one line, exit 2, before anything runs
        why = "is not a folder" if not wheels.is_dir() else f"has no {req.name}: it was prepared for other Pythons"
        print(f"error: --wheels: {wheels} {why}\n  fix: ./sb gpu-wheels --out {wheels} --python {py} "
              "(on a machine with the package index)", file=sys.stderr)
        raise SystemExit(2)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--disable-pip-version-check", "--find-links", str(wheels), "--target", str(site), "-r",
                        str(req)], capture_output=True, text=True)
    if p.returncode != 0:  # wheels for another platform, or no pip: said, exit 2, nothing run
        last = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["pip gave no reason"]
        print(f"error: --wheels: installing {req} offline failed: {last[0]}\n  fix: ./sb gpu-wheels --python {py} "
              "on a machine with the package index, for this host's platform (x86-64 manylinux)", file=sys.stderr)
        raise SystemExit(2)
    print(f"gpu-reference: installed {req.name} offline into {site} in {time.monotonic() - t0:.1f} s", flush=True)
    return site


def plan_steps(out: Path, gpu: bool, gpu_gib: float) -> list[Step]:
    py, res = [sys.executable], str(out / "results")
    tasks = [*py, "-m", "tasks"]
    common = ["--tasks", "sft", "--nodes", "1", "--gpus-per-node", "1", "--results", res, "--dtype", "bf16"]
    steps = [Step("envcheck", [*py, "-m", "stackbench.envcheck", "--json"], 120, stdout_to="envcheck.json")]
    # `./sb plan --model M --gpus-per-node 1 --gpu-mem G --nodes 1 --seq-len S --micro-batch B --json` for
    # every model and micro-batch, in one process (one import of the stack, not eight)
    steps.append(Step("plan", [*py, str(Path(__file__).resolve()), "--write-plans", str(out), f"{gpu_gib:g}"], 120))

    def pick(model: str) -> int:
        """The largest micro-batch the planner says fits at some stage (1 when none or no plan)."""
        plans = out / "plans.json"
        fits = json.loads(plans.read_text())[model]["fits"] if plans.is_file() else []
        return max(fits, default=1)

    if gpu:
        steps.append(Step("bench qwen3-0.6b bf16 ZeRO 0-3", [
            *tasks, "bench", "--model", "qwen3-0.6b", "--zero", "0,1,2,3", "--seq-len", "2048", "--micro-batch", "2",
            "--steps", "8", "--warmup", "2", "--repeat-data", "--sweep", "qwen3-0.6b-bf16", *common], 300))

        def big(step: Step) -> list[Step]:
            return [Step(f"bench qwen3-1.7b seq 4096 mb{pick('qwen3-1.7b')}", [
                *tasks, "bench", "--model", "qwen3-1.7b", "--zero", "2,3", "--seq-len", "4096", "--micro-batch",
                str(pick("qwen3-1.7b")), "--steps", "6", "--warmup", "2", "--repeat-data",
                "--sweep", "qwen3-1.7b-s4096", *common], 240)]
        steps[-1].after = big
        steps.append(Step("bench hf backend qwen3-0.6b ZeRO-2", [
            *tasks, "bench", "--backend", "hf", "--model", "qwen3-0.6b", "--zero", "2", "--seq-len", "2048",
            "--micro-batch", "2", "--steps", "8", "--warmup", "2", "--repeat-data", "--sweep", "hf-qwen3-0.6b",
            *common], 180))
        return steps
    steps.append(Step("bench tiny bf16 ZeRO 0-3", [*tasks, "bench", "--model", "tiny", "--zero", "0,1,2,3", "--steps",
                                                     "1", "--warmup", "0", "--sweep", "tiny-bf16", *common], 300))
    for model in PRESETS:
        folder = cut_preset(model, layers=1, dest=out / "models" / f"{model}-1layer")
        steps.append(Step(f"bench {model} cut to 1 layer", [
            *tasks, "bench", "--model", str(folder), "--zero", "2", "--seq-len", "64", "--micro-batch", "1",
            "--steps", "1", "--warmup", "0", "--no-preflight", "--sweep", f"{model}-1layer", *common], 300))
    steps.append(Step("bench hf backend tiny ZeRO-2", [
        *tasks, "bench", "--backend", "hf", "--model", "tiny", "--zero", "2", "--steps", "1", "--warmup", "0",
        "--no-preflight", "--sweep", "hf-tiny", *common], 240))
    return steps


def write_plans(out: str, gpu_gib: float) -> None:
    """plans.json: `invoke plan --json`'s rows for each reference model and micro-batch (the public
    command, one process per model), and the micro-batches that fit."""
    found = {}
    for model, seq in PRESETS.items():
        argv = [sys.executable, "-m", "tasks", "plan", "--model", model, "--tasks", "sft", "--gpus-per-node", "1",
                "--gpu-mem", f"{gpu_gib:g}", "--nodes", "1", "--seq-len", str(seq), "--micro-batch",
                ",".join(map(str, MICRO_BATCHES)), "--json"]
        p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            sys.stderr.write(p.stderr)
            raise SystemExit(p.returncode)
        rows = {mb: [r for r in json.loads(p.stdout) if r["micro_batch"] == mb] for mb in MICRO_BATCHES}
        found[model] = {"seq_len": seq, "gpu_gib": gpu_gib, "rows": rows,
                        "fits": [mb for mb, r in rows.items() if any(x["fits"] for x in r)]}
    Path(out, "plans.json").write_text(json.dumps(found, indent=1) + "\n")


def cut_preset(model: str, layers: int, dest: Path) -> Path:
    """A model folder of the preset's config with `layers` layers (its vocabulary, hidden size and
    heads kept: the real shapes of the embedding, the attention and the loss) and the embedded
    tokenizer, no weights (random init): one layer of the real model, runnable on a CPU."""
    raw = json.loads((ROOT / "trainer" / "presets" / f"{model}.json").read_text())
    raw.pop("_stackbench", None)
    total = raw["num_hidden_layers"]
    raw["num_hidden_layers"] = layers
    for key, value in list(raw.items()):  # per-layer lists (layer_types, ...) cut to the layers kept
        if isinstance(value, list) and len(value) == total:
            raw[key] = value[:layers]
    if isinstance(raw.get("max_window_layers"), int):
        raw["max_window_layers"] = min(raw["max_window_layers"], layers)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(raw, indent=1) + "\n")
    for f in (ROOT / "trainer" / "assets" / "tiny-qwen3").iterdir():  # the embedded tokenizer
        if f.name != "config.json" and f.is_file():
            shutil.copy2(f, dest / f.name)
    return dest


def _run(step: Step, out: Path, env: dict, deadline: float) -> dict:
    log = out / "logs" / (step.name.replace(" ", "-").replace("/", "-") + ".log")
    log.parent.mkdir(exist_ok=True)
    t0 = time.monotonic()
    with open(log, "w") as err, open(out / step.stdout_to if step.stdout_to else os.devnull, "w") as keep:
        proc = subprocess.Popen(step.argv, cwd=ROOT, env=env, stdout=keep if step.stdout_to else err, stderr=err,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=deadline)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            rc, status = None, "timeout"
        finally:  # its own session: a deadline, Ctrl-C or the host's SIGTERM ends every process it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"status": status, "rc": rc, "seconds": round(time.monotonic() - t0, 1), "deadline_s": round(deadline),
            "log": str(log.relative_to(out)), "command": shlex.join(step.argv)}


def _record(out: Path, done: list[Step], archive: str) -> None:
    (out / "steps.json").write_text(json.dumps([{"step": s.name, **s.result} for s in done], indent=1) + "\n")
    if archive:
        tmp = Path(archive + ".tmp").resolve()
        # not the installed wheels, the cut models' folders or the archive itself (when it lies inside --out)
        left_out = {out / "site", out / "models", tmp, Path(archive).resolve()}
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(out, arcname=out.name,
                    filter=lambda t: None if out.parent / t.name in left_out else t)
        tmp.replace(archive)


def _write_readme(out: Path, steps: list[Step], gpu: bool, args: argparse.Namespace) -> None:
    lines = [f"# GPU reference run ({'GPU' if gpu else 'CPU rehearsal'})", "",
             "    " + shlex.join([sys.executable, "recipes/gpu_reference.py", *sys.argv[1:]]), "",
             "One GPU proves less than a node: ZeRO 1-3 partition nothing across one device and NCCL has a "
             "world of one, so these runs check the stack, the bf16 path and the memory and step-time models "
             "on real shapes, not ZeRO's communication.", "",
             "| step | status | s | command |", "|---|---|---:|---|"]
    for s in steps:
        r = s.result
        lines.append(f"| {s.name} | {r.get('status', 'to run')}{': ' + r['why'] if r.get('why') else ''} | "
                     f"{r.get('seconds', '')} | `{shlex.join(s.argv)}` |")
    lines += ["", "Results: `results/<sweep>/*.json` (records), `logs/` (each step's output), `steps.json`."]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def _gpu_gib(env: dict) -> float | None:
    """The first GPU's memory in GiB as this host's torch sees it (with the installed wheels), None
    without one: one probe, one torch import."""
    p = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_properties(0).total_memory "
                        "/ 2**30 if torch.cuda.is_available() else '')"], env=env, capture_output=True, text=True,
                       timeout=120)
    out = p.stdout.strip() if p.returncode == 0 else ""
    return float(out) if out else None


if __name__ == "__main__":
    sys.exit(main())
