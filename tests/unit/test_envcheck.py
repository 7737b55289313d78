"""envcheck on this machine's real state and on constructed cases: drift from a lock, an NCCL
interface that does not exist, a too-small /dev/shm (a real small tmpfs), known-bad version
combinations, fingerprints that differ across nodes, and the CLI's JSON and exit codes."""

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from stackbench.envcheck import compat, drift, environment, nodes, runner, system, versions
from stackbench.envcheck.check import STATUSES
from tests.conftest import ROOT


def test_the_real_machine_reports_every_area_with_reasons_for_skips():
    report = runner.run()
    assert report["schema"] == "stackbench.envcheck/1"
    areas = {c["area"] for c in report["checks"]}
    assert {"versions", "compat", "gpu", "toolchain", "system", "environment", "drift"} <= areas
    for c in report["checks"]:
        assert c["status"] in STATUSES and (c["status"] != "skip" or c["detail"])
    torch = next(c for c in report["checks"] if c["name"] == "torch")
    assert torch["status"] == "ok" and torch["value"] == metadata.version("torch")
    gpu = next(c for c in report["checks"] if c["area"] == "gpu")
    assert gpu["status"] == "skip" and "NVML" in gpu["detail"] or gpu["status"] == "ok"  # no GPU: a skip, no exception
    assert sum(report["summary"].values()) == len(report["checks"])


def test_a_cpu_host_is_checked_without_importing_torch():
    """The one-second budget: importing torch alone takes 1.5-3 s; without a GPU nothing needs it."""
    code = ("import sys; from stackbench.envcheck import runner; runner.run(); "
            "print(sorted({'torch', 'deepspeed'} & set(sys.modules)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.stdout.strip() == "[]", p.stdout + p.stderr


def _write_lock(path, pins):
    path.write_text("".join(f"{n}=={v} \\\n    --hash=sha256:{'0' * 64}\n" for n, v in pins.items()))
    return path


def test_a_lock_with_a_different_version_reports_drift(tmp_path, monkeypatch):
    have = {"deepspeed": metadata.version("deepspeed"), "Transformers": metadata.version("transformers")}
    same = _write_lock(tmp_path / "same.lock", have)
    assert drift.check_drift(str(same))[0].status == "ok"
    other = _write_lock(tmp_path / "other.lock", dict(have, torch="2.6.0+cu124", **{"not-installed-pkg": "1.0"}))
    (check,) = drift.check_drift(str(other))
    assert check.status == "fail" and check.value == "2 differ"
    assert f"torch: locked 2.6.0+cu124, installed {metadata.version('torch')}" in check.detail
    assert "not-installed-pkg: locked 1.0, installed missing" in check.detail and "deepspeed" not in check.detail
    monkeypatch.setenv("STACKBENCH_LOCK_HASH", "0123456789ab")
    assert drift.check_drift(str(same))[0].name == "lock hash"  # the image claims another lock


def test_a_piece_left_out_at_build_is_a_warning_not_drift(tmp_path, monkeypatch):
    """`invoke build --no-flash-attn` sets STACKBENCH_LEFT_OUT in the image: the locked flash-attn is
    missing on purpose, said as such; anything else missing is still drift."""
    have = {"deepspeed": metadata.version("deepspeed")}
    lock = _write_lock(tmp_path / "img.lock", dict(have, **{"flash-attn": "2.7.4.post1"}))
    monkeypatch.setenv("STACKBENCH_LEFT_OUT", '{"flash_attn": "--no-flash-attn: a source build takes hours"}')
    left, held = drift.check_drift(str(lock))
    assert (left.status, left.name, left.value) == ("warn", "left out at build", "flash-attn")
    assert "locked 2.7.4.post1, not installed: --no-flash-attn" in left.detail
    assert held.status == "ok" and held.value == "1 pins hold"
    (flash,) = versions.check_flash_attn()
    assert flash.status == "warn" and flash.value == "left out" and "--no-flash-attn" in flash.detail
    monkeypatch.setenv("STACKBENCH_LEFT_OUT", "not json")  # a damaged variable is no excuse: drift again
    assert drift.check_drift(str(lock))[-1].status == "fail"


def test_nccl_socket_ifname_naming_a_missing_interface_fails_with_the_fix(monkeypatch):
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "ib7")
    (check,) = environment.check_socket_ifname()
    real = [i for i in environment.interfaces() if i != "lo"]
    assert check.status == "fail" and "no interface here matches" in check.detail and real[0] in check.fix
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", real[0][:2])  # a prefix of an existing one, as NCCL allows
    assert environment.check_socket_ifname()[0].status == "ok"
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "^docker,lo")
    assert environment.check_socket_ifname()[0].status == "ok"
    monkeypatch.setenv("NCCL_IB_HCA", "mlx5_7")
    assert environment.check_ib_hca()[0].status == "fail"


def test_bad_allocator_config_fails(monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True,max_split_mb:128")
    (check,) = environment.check_alloc_conf()
    assert check.status == "fail" and "max_split_mb:128" in check.detail


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "shm"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)  # docker's default size
    yield str(mnt)
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_too_small_shared_memory_warns(small_tmpfs):
    (check,) = system.check_shm(small_tmpfs)
    assert check.status == "warn" and check.value == "0.06 GiB" and "--shm-size" in check.fix
    assert system.check_shm("/dev/shm")[0].status in ("ok", "warn")
    assert system.check_shm("/nonexistent/shm")[0].status == "fail"


@pytest.mark.parametrize("stack, rule, status", [
    ({"torch": "2.6.0+cu124", "flash-attn": "2.8.3"}, "flash-attn-2.8-torch-2.6", "fail"),
    ({"torch": "2.7.1+cu126", "flash-attn": "2.7.4.post1"}, "flash-attn-2.7.4.post1-wheels", "warn"),
    ({"transformer-engine": "2.4.0", "flash-attn": "2.8.0.post2", "torch": "2.7.1"},
     "transformer-engine-flash-attn-cap", "fail"),
    ({"transformer-engine": "2.4.0", "cudnn": "9.1.0.70", "torch": "2.6.0+cu124"}, "transformer-engine-cudnn", "fail"),
])
def test_known_bad_combinations_are_caught_with_a_link(stack, rule, status):
    found = {c.name: c for c in compat.checks(stack)}
    assert found[rule].status == status and found[rule].link.startswith("https://") and found[rule].fix


def test_the_known_good_cuda124_set_passes_the_rules():
    good = {"torch": "2.6.0+cu124", "flash-attn": "2.7.4.post1", "deepspeed": "0.16.9", "cudnn": "9.1.0.70",
            "nccl": "2.21.5"}
    assert [c.status for c in compat.checks(good)] == ["ok"]


def test_deepspeed_op_table_is_read_without_importing_deepspeed():
    info = versions.deepspeed_ops()
    assert info["version"] == metadata.version("deepspeed") and "cpu_adam" in info["installed_ops"]
    (check, *_) = versions.check_deepspeed()
    assert check.status == "ok" and "prebuilt:" in check.detail


def test_fingerprints_that_differ_across_nodes_fail_naming_the_hosts():
    base = runner.run()
    other = json.loads(json.dumps(base))
    other["host"] = "node-b"
    other["fingerprint"]["packages"]["torch"] = "2.6.0+cu124"
    checks = {c.name: c for c in nodes.compare({0: base, 1: other})}
    assert checks["same torch"].status == "fail" and "node 1 (node-b): 2.6.0+cu124" in checks["same torch"].detail
    assert checks["same deepspeed"].status == "ok"


def _envcheck(*args, **env):
    return subprocess.run([sys.executable, "-m", "stackbench.envcheck", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env=dict(os.environ, **env))


def test_cli_json_and_exit_codes():
    p = _envcheck("--json")
    assert p.returncode == json.loads(p.stdout)["exit_code"] in (0, 2)
    bad = _envcheck("--json", NCCL_SOCKET_IFNAME="nosuchif0")
    report = json.loads(bad.stdout)
    assert bad.returncode == 2 and report["summary"]["fail"] >= 1 and "Traceback" not in bad.stderr
    table = _envcheck(NCCL_SOCKET_IFNAME="nosuchif0", COLUMNS="200")
    assert table.returncode == 2 and "NCCL_SOCKET_IFNAME" in table.stdout and "fix:" in table.stdout
    strict = _envcheck("--strict", "--json", NCCL_DEBUG="INFO")  # a warning
    assert strict.returncode in (1, 2)
