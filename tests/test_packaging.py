"""The distribution: generated code current, buf lint clean, the wheel holds only banditd.*."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_proto_code_is_current() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_buf_lint_passes() -> None:
    buf = shutil.which("buf") or str(pathlib.Path(sys.executable).parent / "buf")
    if not pathlib.Path(buf).exists():
        pytest.skip("buf is not installed (dev extra buf-bin)")
    r = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_wheel_contains_only_the_banditd_namespace(tmp_path: pathlib.Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = tmp_path.glob("banditd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"banditd", next(t for t in tops if t.endswith(".dist-info"))}
    for needed in ("banditd/policies/registry.py", "banditd/v1/bandit.proto",
                   "banditd/v1/bandit_pb2.py", "banditd/migrations/versions/0001_initial.py",
                   "banditd/migrations/script.py.mako", "banditd/service/server.py",
                   "banditd/clients/cli.py", "banditd/policies/py.typed"):
        assert needed in names, needed
    assert not any(n.startswith("banditd/__init__") for n in names)  # PEP 420 namespace root
