"""A real Docker engine building a real image: the CPU profile from a wheelhouse (no network in
the build), verified from inside (envcheck, a one-rank tiny bench), rebuilt from cache, refused
when its lock is tampered with; plus the engine errors people meet."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.planted import PLANTED, found_in, found_in_bytes, found_in_stream

pytestmark = pytest.mark.docker
PROFILE = "cpu-small"


@pytest.fixture(scope="module")
def engine_up():
    from tests.support.docker_engine import engine

    with engine():
        yield


@pytest.fixture(scope="module")
def built(engine_up, tmp_path_factory):
    """invoke base-image, invoke wheelhouse, invoke build: the commands users type."""
    results = tmp_path_factory.mktemp("results")
    wheels = ROOT / ".cache" / "wheelhouse" / PROFILE
    for args in (["base-image"], ["wheelhouse", "--profile", PROFILE, "--out", str(wheels)]):
        p = _invoke(*args)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    t0 = time.monotonic()
    # built with planted secrets in its environment: test_no_planted_secret_in_any_image_layer
    p = _invoke("build", "--profile", PROFILE, "--wheelhouse", str(wheels), "--results", str(results), env=PLANTED)
    assert p.returncode == 0, p.stdout[-5000:] + p.stderr[-3000:]
    manifests = sorted((results / "images").glob(f"{PROFILE}-*.json"))
    assert manifests, p.stdout[-2000:]
    return json.loads(manifests[-1].read_text()), results, wheels, time.monotonic() - t0


def _invoke(*args, env=None, timeout=3000):
    return subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


def test_the_image_carries_its_versions_and_lock_hash(built):
    manifest, *_ = built
    from stackbench.imagebuild import lock, profile

    lk = lock.load(profile.load(PROFILE))
    labels = manifest["labels"]
    assert manifest["tag"] == f"stackbench/{PROFILE}:{lk.hash[:12]}"  # content-addressed
    assert labels["stackbench.lock_hash"] == lk.hash and labels["org.opencontainers.image.version"] == lk.hash[:12]
    assert labels["stackbench.version.torch"] == lk.pins()["torch"] == "2.13.0+cpu"
    assert labels["stackbench.version.deepspeed"] == lk.pins()["deepspeed"]
    assert json.loads(labels["stackbench.versions"]) == lk.pins()
    stages = set(manifest["stage_seconds"])  # stages whose steps ran (a warm engine caches the early ones)
    assert stages <= {"start", "system", "stack", "build-deepspeed", "verify"}
    assert "verify" in stages or manifest["fully_cached"]
    assert manifest["size_bytes"] > 500 * 2**20


def test_no_planted_secret_in_any_image_layer(built):
    """HF_TOKEN and WANDB_API_KEY were in the environment of `invoke build`: they are in no layer's
    history, no layer, no config (the whole `docker save` stream searched), not in the manifest."""
    from stackbench.imagebuild import engine

    manifest, results, *_ = built
    history = subprocess.run(["docker", "history", "--no-trunc", manifest["tag"]], capture_output=True,
                             check=True).stdout
    assert b"pip install" in history or b"RUN" in history  # the history is there to search
    assert found_in_bytes(history) == []
    tar = engine.connect().images.get(manifest["tag"]).save(named=True)
    assert found_in_stream(tar) == []
    assert found_in(results) == []


def test_envcheck_and_a_one_rank_bench_succeed_inside_the_image(built):
    """The build's verify stage ran envcheck and a one-rank bench with the image's own stack; the
    record it left in the image is read back here, and envcheck runs again in a fresh container."""
    from stackbench.imagebuild import engine

    manifest, *_ = built
    code, out = engine.run(manifest["tag"], ["python", "-m", "stackbench.envcheck", "--json"])
    report = json.loads(out[out.index("{"):])
    assert code == 0 == report["exit_code"], out[-3000:]
    drift = next(c for c in report["checks"] if c["area"] == "drift")
    assert drift["status"] == "ok" and "pins hold" in drift["value"]
    assert report["fingerprint"]["image"] == manifest["tag"]
    code, out = engine.run(manifest["tag"], ["bash", "-c", "cat /opt/stackbench-verify/verify/sft-*.json"])
    assert code == 0, out[-3000:]
    rec = json.loads(out)
    assert rec["status"] == "ok" and rec["environment"]["image"] == manifest["tag"]
    assert rec["environment"]["lock_hash"] == manifest["lock_hash"]
    assert rec["config"]["zero_stage"] == 2 and len(rec["metrics"]["step_times_s"]) >= 1


def test_building_again_is_a_cache_hit(built):
    manifest, results, wheels, cold_s = built
    # built with planted secrets in its environment: test_no_planted_secret_in_any_image_layer
    p = _invoke("build", "--profile", PROFILE, "--wheelhouse", str(wheels), "--results", str(results), env=PLANTED)
    assert p.returncode == 0, p.stdout[-3000:]
    again = json.loads((results / "images" / f"{PROFILE}-{manifest['lock_hash'][:12]}.json").read_text())
    assert again["fully_cached"] and again["image_id"] == manifest["image_id"]
    print(f"cold build (incl. base image and wheelhouse): {cold_s:.0f} s; cached: {again['build_seconds']} s")


@pytest.fixture
def scratch_profiles(tmp_path, monkeypatch):
    """A copy of docker/profiles and docker/locks to tamper with."""
    from stackbench.imagebuild import profile

    shutil.copytree(ROOT / "docker" / "profiles", tmp_path / "profiles")
    shutil.copytree(ROOT / "docker" / "locks", tmp_path / "locks")
    monkeypatch.setattr(profile, "PROFILES", tmp_path / "profiles")
    monkeypatch.setattr(profile, "LOCKS", tmp_path / "locks")
    return tmp_path / "locks" / PROFILE


def _tamper_torch_hash(lock_dir: Path) -> None:
    wheels = lock_dir / "wheels.txt"
    lines = wheels.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("torch=="))
    lines[i + 1] = "    --hash=sha256:" + "0" * 64
    wheels.write_text("\n".join(lines) + "\n")


def test_a_tampered_lock_fails_the_build(built, scratch_profiles):
    from stackbench.core.errors import UserError
    from stackbench.imagebuild import main

    _, results, wheels, _ = built
    _tamper_torch_hash(scratch_profiles)
    with pytest.raises(UserError, match="does not match its lock.sha256"):  # refused before the engine is asked
        main.build(profile=PROFILE, wheelhouse_dir=str(wheels), results=str(results))
    # even with its stamp updated to match, pip's --require-hashes refuses the wheel inside the build
    from stackbench.core.lockfile import lock_hash

    (scratch_profiles / "lock.sha256").write_text(lock_hash(scratch_profiles) + "\n")
    with pytest.raises(UserError) as e:
        main.build(profile=PROFILE, wheelhouse_dir=str(wheels), results=str(results))
    assert e.value.kind == "build_failed" and "stage stack" in e.value.what and e.value.exit_code == 1
    assert "DO NOT MATCH THE HASHES" in e.value.what  # pip's own words, from the build log


def test_no_nvidia_runtime_is_named_as_such(built):
    from stackbench.core.errors import UserError
    from stackbench.imagebuild import engine

    with pytest.raises(UserError, match="no NVIDIA container runtime") as e:
        engine.run(built[0]["tag"], ["true"], gpus=True)
    assert "nvidia-container-toolkit" in e.value.fix


def test_export_writes_a_loadable_tar(engine_up, tmp_path):
    from stackbench.imagebuild import engine

    out = engine.export("local/bookworm:minbase", tmp_path / "base.tar")
    assert out.stat().st_size > 50 * 2**20
    import tarfile

    with tarfile.open(out) as tar:
        assert "manifest.json" in tar.getnames()


def test_no_engine_is_a_clear_error_without_traceback():
    p = _invoke("build", "--profile", PROFILE, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert p.returncode == 2 and "no Docker engine answers" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_an_unpullable_base_falls_back_to_the_registry_free_variant_and_says_so(built, scratch_profiles, capsys):
    """A profile whose registry base cannot be pulled (no such registry, as behind a firewall) and
    that has a [no_registry] variant: the build takes the variant, says why on the console, and
    the manifest keeps where the base came from."""
    from stackbench.imagebuild import main, profile

    (scratch_profiles.parent.parent / "profiles" / "scratch.toml").write_text(
        'name = "scratch"\nbase = "registry.invalid/stackbench/never:1"\npython = "3.11"\n'
        '[stack]\nrequirements = []\n'
        '[no_registry]\nsuffix = "local"\nbase = "local/bookworm:minbase"\nbootstrap = { suite = "bookworm" }\n')
    for name in ("scratch", "scratch-local"):
        shutil.copytree(scratch_profiles, scratch_profiles.parent / name)

    def reselect(no_registry):
        return profile.load("scratch", no_registry=no_registry)

    chosen, how = main.choose_base(reselect(False), reselect)
    assert chosen.name == "scratch-local" and chosen.base == "local/bookworm:minbase"
    assert how["source"] == "engine" and how["fallback_from"] == "registry.invalid/stackbench/never:1"
    assert "registry.invalid" in how["fallback_reason"]
    out = capsys.readouterr().out
    assert "cannot be pulled" in out and "building the registry-free variant scratch-local instead" in out
    assert "--base IMAGE" in out
