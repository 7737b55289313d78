"""Secrets kept from paper and hostile values refused or quoted, without launching: which names are
secrets, scripts and records without their values, #SBATCH values that cannot break out of their
line, host names that cannot become ssh options, the sweep lock and the run claims, and the far
end of the ssh connection (its environment from stdin; the command stopped when stdin closes)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import socket
import subprocess
import sys
import time

import pytest

from stackbench.bench import claims
from stackbench.bench.launchers import LaunchOptions
from stackbench.bench.launchers.slurm import SlurmLauncher, directive
from stackbench.bench.launchers.torchrun import read_hostfile
from stackbench.bench.sweep import run_sweep
from stackbench.core import record, secrets
from stackbench.core.config import Launch, RunConfig
from stackbench.core.errors import ConfigError
from tests.conftest import ROOT

SPEC = RunConfig(task="sft", model="tiny", zero_stage=3, nodes=2, gpus_per_node=8)


@pytest.mark.parametrize("name, value", [
    ("HF_TOKEN", "hf_x"), ("HUGGING_FACE_HUB_TOKEN", "hf_x"), ("WANDB_API_KEY", "k"), ("MODELSCOPE_API_TOKEN", "t"),
    ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_SESSION_TOKEN", "s"), ("AZURE_CLIENT_SECRET", "s"),
    ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json"), ("MY_DB_PASSWORD", "p"), ("GITHUB_PAT", "p"),
    ("OPENAI_API_KEY", "sk"), ("HTTPS_PROXY", "http://alice:s3cret@proxy:3128"),
])
def test_credentials_are_secrets(name, value):
    assert secrets.is_secret(name, value)


@pytest.mark.parametrize("name, value", [
    ("NCCL_DEBUG", "INFO"), ("NCCL_SOCKET_IFNAME", "ib0"), ("HF_HOME", "/data/hf"), ("HF_HUB_OFFLINE", "1"),
    ("CUDA_VISIBLE_DEVICES", "0,1"), ("GLOO_SOCKET_IFNAME", "eth0"), ("HTTPS_PROXY", "http://proxy:3128"),
    ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"), ("TOKENIZERS_PARALLELISM", "false"), ("GPG_KEY", "A035C8C1"),
])
def test_settings_are_not_secrets(name, value):
    assert not secrets.is_secret(name, value)


def test_cloud_settings_travel_as_secrets_but_only_credentials_are_redacted():
    env = {"AWS_PROFILE": "default-profile", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENG", "HF_TOKEN": "hf_abc123"}
    assert all(secrets.is_secret(k) for k in env)
    text = "profile default-profile, key wJalrXUtnFEMIK7MDENG, token hf_abc123"
    assert secrets.redact(text, env) == ("profile default-profile, key <AWS_SECRET_ACCESS_KEY: redacted>, "
                                         "token <HF_TOKEN: redacted>")


def test_a_credential_with_quotes_and_accents_is_redacted_before_it_is_serialised(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_DB_PASSWORD", 'pa"ss\\wörd1')
    rec = record.new("failed", SPEC, Launch(), started_at=record.now(),
                     error=record.error("crash", 'connect failed: password=pa"ss\\wörd1'))
    text = record.write(tmp_path / "r.json", rec).read_text()
    assert "<MY_DB_PASSWORD: redacted>" in text and "ss\\" not in text and "w\\u00f6rd" not in text


def test_ranks_hash_secrets_with_the_runs_key_and_never_the_key():
    env = {"HF_TOKEN": "hf_same", secrets.HASH_KEY: "k1"}
    one = secrets.fingerprints(env)
    assert list(one) == ["HF_TOKEN"] and one == secrets.fingerprints(dict(env))  # ranks of a run agree
    assert secrets.fingerprints({**env, secrets.HASH_KEY: "k2"}) != one  # another key: nothing to compare offline
    assert secrets.fingerprints({"HF_TOKEN": "hf_same"}) == {"HF_TOKEN": ""}  # no key (started by hand): names only


def test_the_job_script_names_no_secret_value_and_records_say_only_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_unitPlantedToken1")
    monkeypatch.setenv("HF_HOME", "/data/hf")
    launcher = SlurmLauncher(LaunchOptions(env={"NCCL_DEBUG": "INFO"}), gpus="yes")
    script = launcher.script(SPEC, tmp_path)
    assert "hf_unitPlantedToken1" not in script and "export HF_TOKEN" not in script
    assert "export HF_HOME=/data/hf" in script.splitlines()  # settings still pass through
    launch = launcher.bookkeeping(SPEC, tmp_path)
    assert "HF_TOKEN" in launch.secrets.split(",") and "HF_TOKEN" in launch.recorded()["secrets"]
    # the last guard: a record whose text holds the value (a log tail in an error) is written redacted
    rec = record.new("failed", SPEC, Launch(), started_at=record.now(),
                     error=record.error("crash", "Traceback ... token=hf_unitPlantedToken1 rejected"))
    text = record.write(tmp_path / "r.json", rec).read_text()
    assert "hf_unitPlantedToken1" not in text and "<HF_TOKEN: redacted>" in text


@pytest.mark.parametrize("kw, expect", [
    (dict(partition="gpu\n#SBATCH --wrap=rm"), "not a Slurm partition name"),
    (dict(account="proj; rm -rf ~"), "not a Slurm account name"),
    (dict(sbatch_args=("--qos=high\nrm -rf ~",)), "newline"),
    (dict(sbatch_args=("qos=high",)), "is not an sbatch option"),
    (dict(sbatch_args=("--export=NONE",)), "--export=ALL"),
    (dict(container_image="/images/x.sqsh\rboom"), "control character"),
])
def test_slurm_values_that_cannot_be_made_safe_are_refused(kw, expect):
    with pytest.raises(ConfigError, match=expect):
        SlurmLauncher(**kw)


def test_sbatch_values_with_spaces_and_quotes_are_one_word_for_sbatch(tmp_path):
    assert directive("--qos=high") == "--qos=high"
    assert directive('--comment=a "b" # c') == '"--comment=a \\"b\\" # c"'  # sbatch's parser unquotes it
    sweep = tmp_path / "my results $(touch pwned)"
    script = SlurmLauncher(sbatch_args=("--comment=two words",), gpus="no").script(
        RunConfig(task="sft", model="/models/My Model $x", zero_stage=2, nodes=2, gpus_per_node=1), sweep)
    assert f'#SBATCH "--output={sweep}/' in script and '#SBATCH "--comment=two words"' in script
    train = next(line for line in script.splitlines() if line.startswith("srun ") and "-m stackbench.trainer" in line)
    words = shlex.split(train)  # the shell's reading: paths are single words, unexpanded
    assert "/models/My Model $x" in words and str(sweep) in words
    assert '"--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT"' in train  # only the job's own variables expand
    subprocess.run(["bash", "-n", "-c", script], check=True)  # and the whole script parses


@pytest.mark.parametrize("line", ["-oProxyCommand=touch_pwned slots=8", "node-a;reboot slots=8", "user@node-a",
                                  "$(hostname) slots=1"])
def test_hostfile_entries_that_are_not_hosts_are_refused_with_file_and_line(tmp_path, line):
    hosts = tmp_path / "hosts"
    hosts.write_text(f"node-0 slots=8\n{line}\n")
    with pytest.raises(ConfigError) as e:
        read_hostfile(str(hosts))
    assert e.value.where == f"{hosts}:2"


def test_hostfile_takes_names_and_addresses():
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False) as f:
        f.write("gpu-01.cluster.local slots=8\n10.0.0.12 slots=8\nfe80::1 slots=8\nnode_3\n")
    assert [h for h, _ in read_hostfile(f.name)] == ["gpu-01.cluster.local", "10.0.0.12", "fe80::1", "node_3"]
    os.unlink(f.name)


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasks", "bench", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("args, expect", [
    (["--sweep", "../../etc"], "cannot name a sweep folder"),
    (["--sweep", "a b"], "cannot name a sweep folder"),
    (["--env", "WANDB_API_KEY=abcdef123456"], "export WANDB_API_KEY in this shell instead"),
    (["--env", "X;rm=1"], "KEY a variable name"),
    (["--launcher", "slurm", "--sbatch-arg=--qos=a\nb"], "newline"),
    (["--deadline", "soon"], "--deadline: cannot read 'soon' as a number"),
])
def test_hostile_or_mistyped_bench_flags_exit_2_before_anything_runs(tmp_path, args, expect):
    p = _bench("--dry-run", "--results", str(tmp_path), *args)
    assert p.returncode == 2 and expect in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_held_sweep_lock_names_its_holder_and_dies_with_it(tmp_path):
    with claims.SweepLock(tmp_path):
        assert json.loads((tmp_path / "sweep.lock").read_text())["pid"] == os.getpid()
        other = subprocess.run([sys.executable, "-c", "import sys; from stackbench.bench import claims; "
                                f"claims.SweepLock(__import__('pathlib').Path({str(tmp_path)!r})).__enter__()"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in other.stderr, other.stderr
    # a holder killed with SIGKILL leaves nothing to clean up: the kernel drops its flock
    holder = subprocess.Popen([sys.executable, "-c", "import time, pathlib; from stackbench.bench import claims; "
                               f"claims.SweepLock(pathlib.Path({str(tmp_path)!r})).__enter__(); print('held', "
                               "flush=True); time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(claims.Busy, match=f"pid {holder.pid}"):
        claims.SweepLock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    with claims.SweepLock(tmp_path):
        pass


def test_a_run_claim_left_by_a_gone_holder_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "r.claim"
    for holder in ({"pid": dead.pid, "host": socket.gethostname()}, {"pid": 1, "host": "another-host"},
                   {"pid": os.getpid(), "host": socket.gethostname()}, {}):
        path.write_text(json.dumps(holder) if holder else "")
        claim = claims.RunClaim(tmp_path, "r")
        assert claim.acquire() is None and json.loads(path.read_text())["pid"] == os.getpid()
        claim.release()
        assert not path.exists()


def _race(directory: str, barrier, wins) -> None:
    barrier.wait()
    if claims.RunClaim(directory, "r").acquire() is None:
        wins.put(os.getpid())
        time.sleep(1)  # hold it while the others try


def test_only_one_of_many_processes_claims_a_run(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, wins = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, wins)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    winners = []
    while not wins.empty():
        winners.append(wins.get())
    assert len(winners) == 1


def test_a_run_claimed_by_another_live_process_is_left_to_it(tmp_path):
    cfg = RunConfig(task="sft", model="tiny", zero_stage=2, nodes=1, gpus_per_node=1)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f"{cfg.run_id}.claim").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))

        class MustNotLaunch(SlurmLauncher):
            def launch(self, cfg, sweep_dir):
                raise AssertionError("a run claimed by another process was launched")

        assert run_sweep([cfg], MustNotLaunch(LaunchOptions(preflight=False), gpus="no"), tmp_path, quiet=True) == []
        assert not record.path(tmp_path, cfg.run_id).exists()
    finally:
        holder.kill()


def test_a_setting_that_holds_a_credential_is_refused_not_written(tmp_path, monkeypatch):
    from stackbench.bench.launchers.slurm.scheduler import submit as _submit

    monkeypatch.setenv("HF_TOKEN", "hf_unitPlantedToken2")
    monkeypatch.setenv("NCCL_DEBUG_FILE", "/tmp/hf_unitPlantedToken2.log")  # a setting built from the token
    script = SlurmLauncher(gpus="no").script(SPEC, tmp_path)
    with pytest.raises(ConfigError, match="would hold the value of HF_TOKEN"):
        _submit(tmp_path / "run", script)
    assert not (tmp_path / "run" / "job.sbatch").exists()


@pytest.mark.parametrize("target", ["-", "scripts"])
def test_script_only_refuses_a_setting_that_holds_a_credential_before_writing_anything(target, tmp_path):
    """--script-only writes the scripts a user submits: the same refusal as a submission, on stdout
    and in a folder alike, and no script is left behind."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_TOKEN="hf_unitPlantedToken3",
               NCCL_DEBUG_FILE="/tmp/hf_unitPlantedToken3.log")
    # one run's script on stdout; two into a folder
    where = ["--zero", "3", "--script-only"] if target == "-" else ["--zero", "2,3", "--script-only", str(tmp_path)]
    p = subprocess.run([sys.executable, "-m", "tasks", "bench", "--launcher", "slurm", "--nodes", "2", "--tasks", "sft",
                        "--results", str(tmp_path / "r"), *where],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2 and "would hold the value of HF_TOKEN" in p.stderr, p.stderr[-2000:]
    assert "hf_unitPlantedToken3" not in p.stdout + p.stderr
    assert not list(tmp_path.rglob("*.sbatch"))


def test_the_far_end_of_ssh_takes_its_environment_from_stdin_and_stops_when_it_closes(tmp_path):
    marker = tmp_path / "seen"
    child = (f"import os, time; open({str(marker)!r}, 'w').write(os.environ['HF_TOKEN']); "
             "time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-m", "stackbench.bench.launchers.remote", "--", sys.executable, "-c",
                             child], cwd=ROOT, stdin=subprocess.PIPE)
    proc.stdin.write(json.dumps({"HF_TOKEN": "hf_via_stdin"}).encode() + b"\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.read_text() == "hf_via_stdin"
    t0 = time.monotonic()
    proc.stdin.close()  # the connection went away
    assert proc.wait(timeout=30) in (128 + 15, 143) and time.monotonic() - t0 < 15
