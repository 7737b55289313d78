"""envcheck's op-library check loads real shared libraries: one built here that resolves, one
with an undefined symbol (what an op built against another torch looks like to the loader)."""

import subprocess

import pytest

from stackbench.envcheck import abi


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    d = tmp_path_factory.mktemp("ops")
    (d / "good.c").write_text("int good_op(int x) { return x + 1; }\n")
    # the linker accepts an undefined symbol in a shared library; the loader (RTLD_NOW) does not
    (d / "bad.c").write_text("extern int at_symbol_from_another_torch(int);\n"
                             "int bad_op(int x) { return at_symbol_from_another_torch(x); }\n")
    out = {}
    for name in ("good", "bad"):
        so = d / f"{name}_op.cpython-311-x86_64-linux-gnu.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(d / f"{name}.c")], check=True)
        out[name] = so
    return out


def test_an_undefined_symbol_fails_the_check_and_names_the_op(libs, monkeypatch):
    monkeypatch.setattr(abi, "op_libraries", lambda: [libs["good"], libs["bad"]])
    (check,) = abi.check_op_libraries()
    assert check.status == "fail" and check.value == "1 of 2 fail to load"
    assert "bad_op: " in check.detail and "undefined symbol: at_symbol_from_another_torch" in check.detail
    assert "good_op" not in check.detail and "ABI mismatch" in check.fix


def test_libraries_that_resolve_are_listed(libs, monkeypatch):
    monkeypatch.setattr(abi, "op_libraries", lambda: [libs["good"]])
    (check,) = abi.check_op_libraries()
    assert check.status == "ok" and check.value == "1 of 1 load" and check.detail == "good_op"


def test_no_prebuilt_ops_is_a_skip_with_its_reason(monkeypatch):
    monkeypatch.setattr(abi, "op_libraries", lambda: [])
    (check,) = abi.check_op_libraries()
    assert check.status == "skip" and "compiles each op on first use" in check.detail
