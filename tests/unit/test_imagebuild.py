"""The build without an engine: the CUDA 12.4 profile and its Megatron variant resolve (their
committed locks), pass the compatibility rules and render their Dockerfiles; bad combinations are
refused before anything is built; an edited lock is refused."""

import re
import shutil
import subprocess
import sys

import pytest

from stackbench.core.errors import UserError
from stackbench.core.lockfile import normalize
from stackbench.imagebuild import lock, main, profile, render, sources
from tests.conftest import ROOT


@pytest.mark.parametrize("name,no_registry", [("cuda12.4", False), ("cuda12.4-megatron", False), ("cpu-small", False),
                                              ("cuda12.4", True), ("cuda12.4-megatron", True)])
def test_committed_locks_hold_and_pass_the_rules(name, no_registry):
    prof = profile.load(name, no_registry=no_registry)
    lk = main.plan(prof)  # stamp checked, rules checked on pins and on the resolved lock
    pins = lk.pins()
    for req in prof.stack + prof.sdists + prof.overrides:
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)$", req)
        if m:
            assert pins[normalize(m.group(1))] == m.group(2), req
    for part in ("wheels.txt", "sdists.txt", "overrides.txt"):
        text = (lk.path / part).read_text()
        assert text.count("==") == text.count("--hash=sha256:")  # every pin hashed


def test_the_cuda124_known_good_set():
    lk = lock.load(profile.load("cuda12.4"))
    pins = lk.pins()
    assert pins["torch"] == "2.6.0" and pins["nvidia-cudnn-cu12"] == "9.1.0.70" and pins["nvidia-nccl-cu12"] == "2.21.5"
    assert pins["deepspeed"] == "0.16.9" and pins["flash-attn"] == "2.7.4.post1"
    assert pins["nvidia-cuda-runtime-cu12"].startswith("12.4.")


def test_the_cuda124_dockerfile():
    prof = profile.load("cuda12.4")
    text = render.dockerfile(prof, lock.load(prof), offline=False)
    assert text.startswith("# Rendered by `invoke build`") and "FROM nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04" in text
    assert 'SHELL ["/bin/bash", "-euo", "pipefail", "-c"]' in text
    assert "pip install --require-hashes --no-deps  -r /opt/stackbench-lock/wheels.txt" in text
    assert 'TORCH_CUDA_ARCH_LIST="9.0" FLASH_ATTN_CUDA_ARCHS="90"' in text and "MAX_JOBS" in text
    assert "export DS_BUILD_OPS=0; export DS_BUILD_FUSED_ADAM=1;" in text and "grep -A1 -i '^flash-attn==' " in text
    assert "python -c 'import flash_attn_2_cuda'" in text and "python -m stackbench.envcheck" in text
    assert 'stackbench.version.torch="2.6.0"' in text and 'stackbench.version.nvidia-cudnn-cu12="9.1.0.70"' in text
    assert "--no-index --find-links" not in text  # online build: from PyPI, hashes still required
    offline = render.dockerfile(prof, lock.load(prof), offline=True)
    assert "--no-index --find-links /wheelhouse" in offline


def test_the_megatron_variant_dockerfile():
    prof = profile.load("cuda12.4-megatron")
    lk = lock.load(prof)
    text = render.dockerfile(prof, lk, offline=False)
    assert "overrides.txt" in text and "export NVTE_FRAMEWORK=pytorch" in text
    assert "git+https://github.com/NVIDIA/apex@e13873debc4699d39c6861074b9a3b2a02327f92" in text
    # this apex commit takes its extensions as setup.py options; without them it is pure Python
    assert '--config-settings="--build-option=--cpp_ext" --config-settings="--build-option=--cuda_ext"' in text
    assert "import torch, apex_C, amp_C, fused_layer_norm_cuda" in text  # torch first: they need its libc10
    prof.git["apex"]["source"] = "/src/apex"  # --git-source apex=/src/apex: copied into the context, no URL
    fetched = render.dockerfile(prof, lk, offline=False)
    assert "COPY sources/apex/ /opt/src/apex/" in fetched and "git+https://github.com" not in fetched
    assert "--build-option=--cuda_ext\" /opt/src/apex && rm -rf /opt/src/apex" in fetched
    assert lk.pins()["nvidia-cudnn-cu12"] == "9.5.1.17"  # the override wins over torch's 9.1.0.70
    assert lk.versions_for_rules(prof)["transformer-engine"] == "2.4.0"
    te = text[text.index("STACKBENCH-STAGE build-transformer-engine-torch"):text.index("STACKBENCH-STAGE build-apex")]
    ds = text[text.index("STACKBENCH-STAGE build-deepspeed"):text.index("STACKBENCH-STAGE build-flash-attn")]
    assert "export CUDNN_PATH=$(python -c 'import nvidia.cudnn" in te and "CUDNN_PATH" not in ds  # its own env
    assert "stackbench.git.apex" in render.labels(prof, lk)


def test_megatron_without_the_cudnn_override_is_refused():
    prof = profile.load("cuda12.4-megatron")
    versions = lock.load(prof).versions_for_rules(prof)
    versions["cudnn"] = "9.1.0.70"
    with pytest.raises(UserError, match="needs cuDNN 9.3 or newer"):
        main.check_rules(prof, versions, "test")


def test_a_bad_combination_is_refused_before_anything_is_built():
    p = subprocess.run([sys.executable, "-m", "invoke", "build", "--cuda", "12.4", "--flash-attn", "2.8.3"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "flash-attn 2.8.3 with torch 2.6.0" in p.stderr
    assert "open-r1/issues/684" in p.stderr and "Traceback" not in p.stderr
    assert not (ROOT / "docker/locks/cuda12.4+flash-attn2.8.3").exists()  # nothing resolved, nothing built


def test_an_edited_lock_is_refused(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "docker" / "profiles", tmp_path / "profiles")
    shutil.copytree(ROOT / "docker" / "locks", tmp_path / "locks")
    monkeypatch.setattr(profile, "PROFILES", tmp_path / "profiles")
    monkeypatch.setattr(profile, "LOCKS", tmp_path / "locks")
    wheels = tmp_path / "locks" / "cuda12.4" / "wheels.txt"
    wheels.write_text(wheels.read_text().replace("torch==2.6.0", "torch==2.6.1"))
    with pytest.raises(UserError, match="does not match its lock.sha256") as e:
        lock.load(profile.load("cuda12.4"))
    assert "invoke lock --profile cuda12.4" in e.value.fix


def test_profile_errors_name_the_place():
    with pytest.raises(UserError, match="no profile 'cuda99'"):
        profile.load("cuda99")
    with pytest.raises(UserError, match="no profile for CUDA 11.8"):
        profile.for_cuda("11.8")
    assert profile.for_cuda("12.4") == "cuda12.4"


def test_the_registry_free_variant_keeps_the_known_good_set_on_python_313():
    registry, free = profile.load("cuda12.4"), profile.load("cuda12.4", no_registry=True)
    assert free.name == "cuda12.4-debian" and free.python == "3.13" and free.base == "local/debian-trixie:minbase"
    assert free.bootstrap.suite == "trixie" and "non-free" in free.bootstrap.components
    assert free.pins() == registry.pins()  # the same pins; only the base, Python and toolkit differ
    pins = lock.load(free).pins()
    assert pins["torch"] == "2.6.0" and pins["deepspeed"] == "0.16.9" and pins["nvidia-nccl-cu12"] == "2.21.5"
    assert pins["nvidia-cuda-runtime-cu12"].startswith("12.4.")


def test_the_registry_free_dockerfile():
    prof = profile.load("cuda12.4", no_registry=True)
    text = render.dockerfile(prof, lock.load(prof), offline=False)
    assert "FROM local/debian-trixie:minbase" in text
    # Debian's CUDA 12.4 toolkit, pinned; GCC 13 (CUDA 12.4's newest host compiler); the driver's
    # libraries declared provided by the host (a stand-in package), and refused if they got in anyway
    assert 'packages="libaio-dev nvidia-cuda-toolkit=12.4.131~12.4.1-2 g++-13"' in text
    assert "Provides: %s" in text and '"libcuda.so.1 (= 999), libnvidia-ml.so.1 (= 999)"' in text
    assert "ldconfig -p | grep -c 'libcuda.so.1'" in text and "ldconfig -p | grep -c 'libnvidia-ml.so.1'" in text
    assert "CUDA_HOME=/usr CC=gcc-13 CXX=g++-13 NVCC_CCBIN=g++-13 LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/stubs" in text
    assert "python3.13 -m venv /opt/stack" in text
    # DeepSpeed's training ops for sm_90, with the CUDA builders on a host without a GPU
    assert 'TORCH_CUDA_ARCH_LIST="9.0"' in text and "export DS_ACCELERATOR=cuda; " in text
    for op in ("FUSED_ADAM", "CPU_ADAM", "CPU_ADAGRAD", "CPU_LION", "FUSED_LAMB", "FUSED_LION", "AIO", "QUANTIZER"):
        assert f"export DS_BUILD_{op}=1;" in text
    assert "export DS_BUILD_OPS=0;" in text
    assert ("/opt/stackbench-build-shims/triton/__init__.py" in text
            and "rm -rf /root/.cache /tmp/* /opt/stackbench-build-shims" in text)
    stages = re.findall(r"echo \"STACKBENCH-STAGE (\S+?)\"", text)
    assert stages == ["system", "stack", "build-deepspeed", "build-flash-attn", "verify"]
    verify = text[text.index("STACKBENCH-STAGE verify"):]
    assert "export DS_ACCELERATOR=cuda; " in verify and "FusedAdamBuilder().load()" in verify
    assert "python -m stackbench.envcheck" in verify and "python -m invoke bench --tasks sft" in verify
    labels = render.labels(prof, lock.load(prof))
    assert labels["stackbench.base.source"] == "debootstrap trixie (main,contrib,non-free) from http://deb.debian.org/debian"
    assert labels["stackbench.python"] == "3.13" and labels["stackbench.cuda"] == "12.4"
    assert labels["stackbench.version.flash-attn"] == "2.7.4.post1"
    assert f'stackbench.base.source="{labels["stackbench.base.source"]}"' in text


def test_leaving_flash_attn_out_shows_in_the_tag_labels_and_image_env():
    prof = profile.load("cuda12.4", no_registry=True)
    lk = lock.load(prof)
    prof.leave_out("flash-attn", "--no-flash-attn: a source build takes hours")
    text = render.dockerfile(prof, lk, offline=False)
    assert render.tag(prof, lk) == f"stackbench/cuda12.4-debian:{lk.hash[:12]}-no-flash-attn"
    assert "build-flash-attn" not in text and "flash_attn_2_cuda" not in text
    labels = render.labels(prof, lk)
    assert labels["stackbench.left_out.flash-attn"] == "--no-flash-attn: a source build takes hours"
    assert "stackbench.version.flash-attn" not in labels and "flash-attn" not in labels["stackbench.versions"]
    assert 'STACKBENCH_LEFT_OUT="{\\"flash-attn\\": \\"--no-flash-attn: a source build takes hours\\"}"' in text
    with pytest.raises(UserError, match="does not build apex"):
        prof.leave_out("apex", "x")


def test_the_megatron_variant_moves_only_what_python_313_forces():
    prof = profile.load("cuda12.4-megatron", no_registry=True)
    assert prof.name == "cuda12.4-megatron-debian" and prof.base == "local/debian-trixie:minbase"
    pins = lock.load(prof).pins()
    assert pins["transformer-engine-cu12"] == "2.5.0"  # 2.4.0 declares Requires-Python <3.13
    assert pins["megatron-core"] == "0.12.2" and "megatron-core==0.12.2" in prof.sdists  # no cp313 wheel: its sdist
    assert pins["torch"] == "2.6.0" and pins["nvidia-cudnn-cu12"] == "9.5.1.17"


def test_a_profile_without_a_registry_free_variant_says_so():
    with pytest.raises(UserError, match="has no \\[no_registry\\] variant"):
        profile.load("cpu-small", no_registry=True)


def test_render_only_needs_no_engine_and_names_the_registry_free_image(capsys):
    assert main.build(cuda="12.4", no_registry=True, no_flash_attn=True, render_only=True) == 0
    out = capsys.readouterr().out
    assert "stackbench/cuda12.4-debian:" in out and "-no-flash-attn: context in" in out
    text = (ROOT / ".cache" / "build" / "cuda12.4-debian" / "Dockerfile").read_text()
    assert "FROM local/debian-trixie:minbase" in text and "build-flash-attn" not in text


def test_a_long_source_build_says_its_time_first_unless_a_wheel_is_at_hand(tmp_path, monkeypatch):
    prof = profile.load("cuda12.4", no_registry=True)
    prof.estimates = {"flash-attn": {"units": 10, "unit_seconds": 360, "measured": "measured here"}}
    monkeypatch.setattr(sources, "compile_jobs", lambda: 2)
    (line,) = sources.compile_estimates(prof, None)
    assert line.startswith("flash-attn 2.7.4.post1 will be compiled from source: 10 compile units at about 6.0 min")
    assert "2 parallel jobs here: about 0.5 h" in line and "--no-flash-attn" in line
    (tmp_path / "flash_attn-2.7.4.post1+cu12torch2.6cxx11abiFALSE-cp313-cp313-linux_x86_64.whl").write_bytes(b"")
    (line,) = sources.compile_estimates(prof, tmp_path)
    assert "a prebuilt wheel is in the wheelhouse" in line and "installed, not compiled" in line
    prof.leave_out("flash-attn", "--no-flash-attn")
    assert sources.compile_estimates(prof, None) == []


def test_what_the_registry_free_variant_changes_is_said():
    registry, free = profile.load("cuda12.4-megatron"), profile.load("cuda12.4-megatron", no_registry=True)
    assert main.variant_changes(registry, free) == [
        "Python 3.11 -> 3.13", "transformer-engine 2.4.0 -> 2.5.0", "transformer-engine-cu12 2.4.0 -> 2.5.0",
        "transformer-engine-torch 2.4.0 -> 2.5.0",
        "megatron-core==0.12.2 built from its sdist (no wheel for Python 3.13)"]
    assert main.variant_changes(profile.load("cuda12.4"), profile.load("cuda12.4", no_registry=True)) == [
        "Python 3.11 -> 3.13"]
