"""The gRPC contract stays compatible with the last released descriptor snapshot.

``proto/released/banditd-v1.binpb`` is the released contract (see proto/released/README.md).
``buf breaking`` against it runs in ``./dev check``; these tests run the same command, show that
it fails on a breaking edit, and repeat the essential check in pure Python (no buf needed).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest
from banditd.v1 import bandit_pb2
from google.protobuf import descriptor_pb2

ROOT = pathlib.Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "proto" / "released" / "banditd-v1.binpb"
PROTO_FILE = "banditd/v1/bandit.proto"


def _buf() -> str:
    venv_buf = pathlib.Path(sys.executable).with_name("buf")
    if venv_buf.is_file():
        return str(venv_buf)
    found = shutil.which("buf")
    if found is None:
        pytest.skip("buf binary not installed (the buf-bin dev dependency provides it)")
    return found


def _buf_breaking(cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    # The command ./dev check runs; the snapshot is a local file, so nothing is fetched.
    return subprocess.run([_buf(), "breaking", "--against", str(SNAPSHOT)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _snapshot() -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(SNAPSHOT.read_bytes())


def _snapshot_file() -> descriptor_pb2.FileDescriptorProto:
    files = [f for f in _snapshot().file if f.name == PROTO_FILE]
    assert len(files) == 1, f"{SNAPSHOT.name} lacks {PROTO_FILE}"
    return files[0]


def _current_file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto()
    bandit_pb2.DESCRIPTOR.CopyToProto(fdp)
    return fdp


# --- buf breaking ---------------------------------------------------------------------------


def test_dev_check_runs_buf_breaking_against_the_snapshot() -> None:
    dev = (ROOT / "dev").read_text()
    check = dev[dev.index("  check)"):]
    check = check[:check.index(";;")]
    assert "buf breaking --against proto/released/banditd-v1.binpb" in check
    assert "FILE" in (ROOT / "buf.yaml").read_text().split("breaking:", 1)[1]


def test_buf_breaking_passes_against_the_released_snapshot() -> None:
    r = _buf_breaking(ROOT)
    assert r.returncode == 0, f"buf breaking failed:\n{r.stdout}{r.stderr}"


def _copy_contract(dest: pathlib.Path) -> pathlib.Path:
    shutil.copyfile(ROOT / "buf.yaml", dest / "buf.yaml")
    for src in (ROOT / "proto").rglob("*.proto"):
        target = dest / src.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return dest / "proto" / PROTO_FILE


_WATERMARK = "  uint64 applied_watermark = 8;\n"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # renumbered: the old number is gone
        (_WATERMARK, "  uint64 applied_watermark = 12;\n",
         ['field "8" with name "applied_watermark"', 'message "Decision"', "deleted"]),
        # deleted without reserving the number
        (_WATERMARK, "",
         ['field "8" with name "applied_watermark"', 'message "Decision"', "deleted"]),
        # retyped: still a varint on the wire, but values above 2**32 are truncated
        (_WATERMARK, "  uint32 applied_watermark = 8;\n",
         ['field "8" with name "applied_watermark"', 'message "Decision"', "uint64", "uint32"]),
        # renamed: JSON and generated code break even though the wire does not
        (_WATERMARK, "  uint64 applied_mark = 8;\n",
         ['"applied_watermark"', '"applied_mark"', 'message "Decision"']),
        # RPC removed
        ("  rpc Activate(ActivateRequest) returns (ActivateResponse);\n", "",
         ['"Activate"', 'service "BanditService"']),
    ],
    ids=["renumber-field", "delete-field", "retype-field", "rename-field", "delete-rpc"],
)
def test_buf_breaking_fails_on_a_breaking_change(
    tmp_path: pathlib.Path, old: str, new: str, expected: list[str]
) -> None:
    proto = _copy_contract(tmp_path)
    text = proto.read_text()
    assert text.count(old) == 1, f"edit target not found once in {PROTO_FILE}: {old!r}"
    proto.write_text(text.replace(old, new))
    r = _buf_breaking(tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"buf breaking accepted a breaking change:\n{out}"
    # 100 is buf's exit status for rule violations; anything else means it failed to compare.
    assert r.returncode == 100, f"buf breaking exited {r.returncode}, not 100:\n{out}"
    for needle in expected:
        assert needle.lower() in out.lower(), f"{needle!r} not in buf breaking output:\n{out}"


def test_buf_breaking_allows_additions(tmp_path: pathlib.Path) -> None:
    proto = _copy_contract(tmp_path)
    text = proto.read_text()
    old = "  google.protobuf.Timestamp decide_time = 11;\n}\n"
    assert text.count(old) == 1
    proto.write_text(text.replace(old, old[:-2] + "  string note = 12;\n}\n"))
    r = _buf_breaking(tmp_path)
    assert r.returncode == 0, f"buf breaking rejected an added field:\n{r.stdout}{r.stderr}"


# --- pure-Python snapshot check -------------------------------------------------------------


def _messages(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs: list[descriptor_pb2.DescriptorProto]) -> None:
        for m in msgs:
            name = f"{prefix}.{m.name}"
            out[name] = m
            walk(name, list(m.nested_type))  # map entries (Reward.MetricsEntry) and nested types

    walk(fdp.package, list(fdp.message_type))
    return out


def _enums(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, dict[int, str]]:
    out = {f"{fdp.package}.{e.name}": {v.number: v.name for v in e.value} for e in fdp.enum_type}
    for name, m in _messages(fdp).items():
        for e in m.enum_type:
            out[f"{name}.{e.name}"] = {v.number: v.name for v in e.value}
    return out


def _field_signature(m: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto
                     ) -> tuple[object, ...]:
    real_oneof = f.HasField("oneof_index") and not f.proto3_optional
    return (
        f.name,
        descriptor_pb2.FieldDescriptorProto.Type.Name(f.type),
        f.type_name,  # message/enum type, e.g. ".google.protobuf.Timestamp"
        descriptor_pb2.FieldDescriptorProto.Label.Name(f.label),
        f.proto3_optional,  # explicit presence is part of the label
        m.oneof_decl[f.oneof_index].name if real_oneof else None,
    )


def _method_signature(r: descriptor_pb2.MethodDescriptorProto) -> tuple[object, ...]:
    return (r.input_type, r.output_type, r.client_streaming, r.server_streaming)


def compat_problems(released: descriptor_pb2.FileDescriptorProto,
                    current: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """What of ``released`` is missing or changed in ``current``; additions are fine."""
    problems: list[str] = []
    if released.package != current.package:
        problems.append(f"package {released.package} is now {current.package}")
    now_msgs = _messages(current)
    for name, old in _messages(released).items():
        new = now_msgs.get(name)
        if new is None:
            problems.append(f"message {name} removed")
            continue
        new_fields = {f.number: f for f in new.field}
        for f in old.field:
            g = new_fields.get(f.number)
            if g is None:
                problems.append(f"{name}.{f.name} = {f.number} removed or renumbered")
            elif _field_signature(old, f) != _field_signature(new, g):
                problems.append(f"{name} field {f.number}: {_field_signature(old, f)} is now "
                                f"{_field_signature(new, g)}")
    now_enums = _enums(current)
    for name, values in _enums(released).items():
        if name not in now_enums:
            problems.append(f"enum {name} removed")
            continue
        for number, value in values.items():
            if now_enums[name].get(number) != value:
                problems.append(f"enum value {name}.{value} = {number} removed or changed")
    now_services = {s.name: {r.name: r for r in s.method} for s in current.service}
    for s in released.service:
        if s.name not in now_services:
            problems.append(f"service {s.name} removed")
            continue
        for rpc in s.method:
            now = now_services[s.name].get(rpc.name)
            if now is None:
                problems.append(f"rpc {s.name}.{rpc.name} removed")
            elif _method_signature(rpc) != _method_signature(now):
                problems.append(f"rpc {s.name}.{rpc.name}: {_method_signature(rpc)} is now "
                                f"{_method_signature(now)}")
    return problems


def test_snapshot_holds_the_released_contract() -> None:
    released = _snapshot_file()
    assert released.package == "banditd.v1"
    assert [s.name for s in released.service] == ["BanditService"]
    rpcs = {r.name for r in released.service[0].method}
    assert {"CreateExperiment", "Select", "Update", "StreamUpdates", "GetStats"} <= rpcs
    assert "banditd.v1.Decision" in _messages(released)


def test_generated_module_keeps_every_released_field_and_rpc() -> None:
    problems = compat_problems(_snapshot_file(), _current_file())
    assert not problems, "banditd.v1 breaks the released contract:\n" + "\n".join(problems)


def _edited(edit: str) -> descriptor_pb2.FileDescriptorProto:
    fdp = _current_file()
    decision = next(m for m in fdp.message_type if m.name == "Decision")
    field = next(f for f in decision.field if f.name == "applied_watermark")
    if edit == "renumber":
        field.number = 99
    elif edit == "delete":
        decision.field.remove(field)
    elif edit == "retype":
        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_UINT32
    elif edit == "rename":
        field.name = "applied_mark"
    elif edit == "repeat":
        field.label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    elif edit == "delete-rpc":
        service = fdp.service[0]
        service.method.remove(next(r for r in service.method if r.name == "Activate"))
    elif edit == "stream-rpc":
        next(r for r in fdp.service[0].method if r.name == "Select").server_streaming = True
    elif edit == "add":
        decision.field.add(name="note", number=99, type=field.TYPE_STRING, label=field.label)
        fdp.service[0].method.add(name="Ping", input_type=".banditd.v1.GetStatsRequest",
                                  output_type=".banditd.v1.GetStatsResponse")
    return fdp


@pytest.mark.parametrize(
    ("edit", "needle"),
    [("renumber", "banditd.v1.Decision.applied_watermark = 8 removed"),
     ("delete", "banditd.v1.Decision.applied_watermark = 8 removed"),
     ("retype", "TYPE_UINT32"),
     ("rename", "applied_mark"),
     ("repeat", "LABEL_REPEATED"),
     ("delete-rpc", "rpc BanditService.Activate removed"),
     ("stream-rpc", "rpc BanditService.Select")],
    ids=["renumber", "delete", "retype", "rename", "repeat", "delete-rpc", "stream-rpc"],
)
def test_snapshot_check_catches_breaking_edits(edit: str, needle: str) -> None:
    problems = compat_problems(_snapshot_file(), _edited(edit))
    assert any(needle in p for p in problems), problems


def test_snapshot_check_allows_additions() -> None:
    assert compat_problems(_snapshot_file(), _edited("add")) == []
