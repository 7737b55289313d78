"""No secret is ever written down. HF_TOKEN and WANDB_API_KEY planted with unique values in the
environment of `invoke bench` through every launcher (a local run, torchrun over ssh to the test
cluster's namespace hosts, a Slurm job on it), `--script-only`, `--dry-run` and `invoke report`:
the values are in no file under the results and report directories and in no argv of any process
started (strace of execve: of bench, and of every node's slurmd and sshd), while every rank saw
them (each records a hash of each value). The results directory's path has a space and a `$` in
it, which every script and command must quote. Also: a second `invoke bench` on a running sweep
is refused, naming the first; a read-only or full results directory is named, nothing is left."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackbench.core import record
from stackbench.core.secrets import HASH_KEY
from tests.conftest import ROOT
from tests.support.planted import PLANTED, SECRETS, found_in, found_in_bytes, hashes

pytestmark = [pytest.mark.deepspeed, pytest.mark.slurm]

RUN = ["--tasks", "sft", "--zero", "2", "--gpus-per-node", "1", "--steps", "2", "--warmup", "1"]
TRACE = [shutil.which("strace") or "strace", "-f", "-qq", "-e", "trace=execve", "-s", "100000"]


def _records(sweep_dir: Path) -> list[dict]:
    return [r for r in map(record.read, sweep_dir.glob("*.json")) if "schema" in r]


@pytest.fixture(scope="module")
def planted(slurm_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    results = root / "results with space $HOME"
    traces = root / "traces"
    traces.mkdir()
    env = {**os.environ, **slurm_cluster.env, **PLANTED}

    def bench(sweep: str, *args: str, trace: bool = True, wait: bool = True, env_=None):
        argv = [sys.executable, "-m", "tasks", "bench", *RUN, *args, "--results", str(results), "--sweep", sweep]
        if trace:
            argv = [*TRACE, "--seccomp-bpf", "-o", str(traces / f"{sweep}.trace"), *argv]
        proc = subprocess.Popen(argv, cwd=ROOT, env=env_ or env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        return proc.communicate(timeout=900) + (proc.returncode,) if wait else proc

    # what every node's slurmd and sshd start: slurmstepd, the batch script, srun, the ranks; ssh
    # sessions. The session's cluster runs them under strace (conftest: trace_execs), so only what
    # this fixture runs is read back, into daemons.trace
    marks = slurm_cluster.exec_trace_marks()
    out = {}
    try:
        slurm = bench("slurm", "--launcher", "slurm", "--nodes", "2", wait=False)
        lock = results / "slurm" / "sweep.lock"
        deadline = time.monotonic() + 120
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        out["second"] = bench("slurm", "--launcher", "slurm", "--nodes", "2", trace=False)  # the same sweep again
        out["local"] = bench("local", "--nodes", "1")  # another sweep, same results directory, side by side
        out["slurm"] = slurm.communicate(timeout=900) + (slurm.returncode,)
        hostfile = slurm_cluster.hostfile(root / "hosts")
        out["ssh"] = bench("ssh", "--launcher", "torchrun", "--hostfile", str(hostfile), "--ssh-options",
                           slurm_cluster.ssh_options, "--nodes", "2")
        no_slurm = dict(env, PATH=str(Path(sys.executable).parent))  # a laptop: no sinfo, no sbatch, no ssh
        for launcher in ("slurm", "torchrun", "local"):
            extra = ["--hostfile", str(hostfile)] if launcher == "torchrun" else []
            out[f"script-{launcher}"] = bench(f"script-{launcher}", "--launcher", launcher, "--nodes", "2",
                                              "--script-only", *extra, env_=no_slurm)
            out[f"dry-{launcher}"] = bench(f"dry-{launcher}", "--launcher", launcher, "--nodes", "2", "--dry-run",
                                           *extra, env_=no_slurm)
        report = subprocess.run([*TRACE, "-o", str(traces / "report.trace"), sys.executable, "-m", "tasks", "report",
                                 "--results", str(results), "--out", str(root / "report")],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        out["report"] = (report.stdout, report.stderr, report.returncode)
    finally:
        (traces / "daemons.trace").write_text(slurm_cluster.exec_traces_since(marks))
    for name, (stdout, stderr, _) in out.items():  # what the console showed, searched too
        (root / f"{name}.console").write_text(stdout + stderr)
    return root, results, traces, out


def test_every_launch_ran_and_every_rank_saw_the_secrets(planted):
    root, results, _, out = planted
    for name in ("local", "slurm", "ssh", "report"):
        stdout, stderr, code = out[name]
        assert code == 0, f"{name}: {stdout[-3000:]}{stderr[-3000:]}"
    for sweep, hosts in (("local", {socket.gethostname()}), ("slurm", {"sbnode0", "sbnode1"}),
                         ("ssh", {"sbnode0", "sbnode1"})):
        (rec,) = _records(results / sweep)
        assert rec["status"] == "ok", rec["error"]
        assert {"HF_TOKEN", "WANDB_API_KEY"} <= set(rec["launch"]["secrets"])  # the names, said
        ranks = rec["environment"]["ranks"]
        assert {r["host"] for r in ranks} == hosts
        for r in ranks:  # the values reached every rank on every host
            assert {k: r["secrets"].get(k) for k in SECRETS} == hashes(), (sweep, r)
            assert HASH_KEY not in r["secrets"]  # the key is passed, never hashed
    assert (root / "report" / "report.html").exists()


def test_no_secret_in_any_file_written(planted):
    root, results, _, out = planted
    assert list(results.rglob("job.sbatch")), "the Slurm job script was not kept"
    assert found_in(results, root / "report") == []
    assert [f for f in root.glob("*.console") if found_in_bytes(f.read_bytes())] == []


def test_no_secret_in_any_argv_of_bench_the_nodes_or_their_ranks(planted):
    _, _, traces, _ = planted
    execs = {}
    for trace in sorted(traces.glob("*.trace")):
        text = trace.read_text(errors="replace")
        execs[trace.name] = text.count("execve(")
        assert not found_in_bytes(text.encode()), f"a planted secret is in an argv: {trace}"
    # the traces saw what they must have: the ranks on the nodes, the ssh sessions' far side
    daemons = (traces / "daemons.trace").read_text(errors="replace")
    assert "torch.distributed.run" in daemons and "stackbench.bench.launchers.remote" in daemons
    assert "slurmstepd" in daemons
    assert re.search(r'execve\("[^"]*ssh", \["ssh", "-T"', (traces / "ssh.trace").read_text())
    assert all(n > 0 for n in execs.values()), execs


def test_scripts_are_complete_without_slurm_or_ssh_and_quote_the_paths(planted):
    _, results, _, out = planted
    for name in ("script-slurm", "script-torchrun", "script-local", "dry-slurm", "dry-torchrun", "dry-local"):
        assert out[name][2] == 0, f"{name}: {out[name][1][-2000:]}"
    script = out["script-slurm"][0]
    assert "#SBATCH --gpus-per-node=1" in script and "no Slurm client answered here" in script
    assert script.count("srun ") == 2 and "-m stackbench.trainer" in script and "export HF_TOKEN" not in script
    # the path with a space and a `$` arrives as one word, unexpanded, in the job shell
    sweep_dir = results / "script-slurm"
    assert f'#SBATCH "--output={sweep_dir}/' in script
    assert f"--out '{sweep_dir}'" in script
    job = "\n".join(line for line in script.splitlines() if line.startswith("srun "))
    job = job.replace("srun ", "printf '%s\\n' ")
    argv = subprocess.run(["bash", "-c", "SLURM_NNODES=2 MASTER_ADDR=h MASTER_PORT=1 PREFLIGHT_PORT=2 HOSTS=h,i "
                           "SLURM_JOB_ID=7; " + job], capture_output=True, text=True, check=True).stdout.splitlines()
    assert str(sweep_dir) in argv and "--nnodes=2" in argv and "--rdzv-endpoint=h:1" in argv


def test_a_second_bench_on_a_running_sweep_is_refused_naming_the_first(planted):
    _, results, _, out = planted
    stdout, stderr, code = out["second"]
    assert code == 2, stdout[-2000:] + stderr[-2000:]
    assert "sweep slurm is already being run by pid" in stderr and socket.gethostname() in stderr
    assert "Traceback" not in stderr


def _mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True)


def test_a_read_only_or_full_results_directory_is_named_and_nothing_is_left(tmp_path):
    from stackbench.core import files

    ro, full, kept = tmp_path / "ro", tmp_path / "full", tmp_path / "kept"
    for d in (ro, full, kept):
        d.mkdir()
    (kept / "earlier.json").write_text('{"measured": true}\n')
    _mount("--bind", str(kept), str(ro))
    _mount("-o", "remount,bind,ro", str(ro))
    _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full))
    try:
        for where, why in ((ro, "read-only"), (full, "MiB free")):
            p = subprocess.run([sys.executable, "-m", "tasks", "bench", *RUN, "--nodes", "1", "--results", str(where),
                                "--sweep", "s"], cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert p.returncode == 2 and str(where) in p.stderr and why in p.stderr, p.stderr[-2000:]
            assert "Traceback" not in p.stderr
        assert (ro / "earlier.json").read_text() == '{"measured": true}\n'  # what was there is kept
        subprocess.run(["dd", "if=/dev/zero", f"of={full}/filler", "bs=64k"], capture_output=True)  # until full
        with pytest.raises(files.ResultsUnwritable, match="is full"):
            record.write(full / "s" / "run.json", {"status": "ok", "pad": "x" * 10000})
        assert list((full / "s").iterdir()) == []  # no partial record, no temp file
    finally:
        for d in (ro, full):
            subprocess.run(["umount", str(d)], capture_output=True)
