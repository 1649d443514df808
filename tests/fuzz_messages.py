"""Protobuf fuzzing helpers for tests/test_fuzz_rpc.py.

``Fuzzer`` draws whole random messages of any type from its DESCRIPTOR (every scalar type,
repeated fields of random length, maps, a random member of each oneof, Struct/Value with
JSON-ish values, NaN/inf, huge and negative numbers, long and unicode strings) and applies
random mutations to valid messages (clear a field, set a value to a nasty one, duplicate, drop
or append a repeated element, switch a oneof member, replace a sub-message). Strings are drawn
partly from a pool of names the server knows (experiment names, arm and event ids,
hyperparameter names) so random messages reach past the name lookups.

``field_path_problem`` checks that an error message starts with a field path that resolves
against the request: ``items[3].context.dense.values: ...`` must name real fields, indexes
within the repeated fields' lengths and map keys present in the request.

Sizes are bounded: integers are drawn small (<= 20), at the type's limits or above 2^17, never
in between, so a fuzzed context dimension or count is either small or far past the server's
limits (an accepted dimension of e.g. 40,000 would allocate a [arms, d, d] LinUCB state: a
resource question, not a validation one).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message import Message
from hypothesis import strategies as st

# The upb runtime's descriptor classes are not the typed ones of google.protobuf.descriptor.
Descriptor = Any
FieldDescriptor = Any
NASTY_FLOATS = [
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    2.0,
    3.0,
    1e6,
    1e308,
    -1e308,
    5e-324,
    1e-300,
    2.0**63,
]
NASTY_STRINGS = [
    "",
    " ",
    "a",
    "x" * 129,
    "y" * 257,
    "z" * 3000,
    "üñí©ødé 漢字",
    "\u200b",
    "a\x00b",
    "a:b",
    "a.b",
    "a[0]",
    "'",
    '"',
    "\\",
    "NaN",
    "Infinity",
    "-1",
    "1.5",
    "float32",
    "\U0001f642" * 40,
    "../../etc/passwd",
    "Robert'); DROP TABLE decisions;--",
]
INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
BIG = 2**17  # past every count/dimension limit of the server (MAX_DIM is 2^16)
WKT_STRUCT = "google.protobuf.Struct"
WKT_VALUE = "google.protobuf.Value"
WKT_LIST = "google.protobuf.ListValue"


def msg_class(desc: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(desc)


def is_map(f: FieldDescriptor) -> bool:
    return f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


def is_repeated(f: FieldDescriptor) -> bool:
    return bool(f.is_repeated)


def real_oneofs(desc: Descriptor) -> list[Any]:
    """Oneofs written as such (not the synthetic ones of proto3 ``optional`` fields)."""
    return [o for o in desc.oneofs if not (len(o.fields) == 1 and o.name == "_" + o.fields[0].name)]


def int_strategy(lo: int, hi: int) -> st.SearchStrategy[int]:
    """The type's limits (a quarter of the draws), other edges, small values, huge values."""
    edges = sorted(
        v
        for v in {
            0,
            1,
            2,
            3,
            -1,
            2**31 - 1,
            2**31,
            2**32 - 1,
            2**63 - 1,
            2**63,
            -(2**31),
            -(2**63),
            BIG,
            BIG + 1,
        }
        if lo <= v <= hi
    )
    parts = [
        st.sampled_from([lo, hi]),
        st.sampled_from(edges),
        st.integers(max(lo, -5), min(hi, 20)),
    ]
    if hi >= BIG:
        parts.append(st.integers(BIG, hi))
    if lo <= -BIG:
        parts.append(st.integers(lo, -BIG))
    return st.one_of(*parts)


def float_strategy() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(NASTY_FLOATS),
        st.floats(-10.0, 10.0),
        st.floats(allow_nan=True, allow_infinity=True),
    )


class Fuzzer:
    """Random and mutated protobuf messages, drawn with a Hypothesis ``draw`` function."""

    def __init__(
        self,
        draw: Any,
        pool: Sequence[str] = (),
        struct_keys: Sequence[str] = (),
        fields: Mapping[str, st.SearchStrategy[str]] | None = None,
        *,
        max_depth: int = 5,
        max_repeat: int = 7,
    ) -> None:
        self.draw = draw
        self.pool = list(pool)
        # Per field name (e.g. "namespace"), values that get past the first checks: drawn
        # for that field three times in four.
        self.fields = dict(fields or {})
        self.struct_keys = list(struct_keys) or ["alpha"]
        self.max_depth = max_depth
        self.max_repeat = max_repeat

    def index(self, n: int) -> int:
        """An index below ``n``, drawn the same way whatever ``n`` is (Hypothesis replays draws
        against server state that earlier examples changed)."""
        return self.draw(st.integers(0, 1023)) % n

    # --- values ------------------------------------------------------------------------------

    def string(self) -> str:
        choices = [st.sampled_from(NASTY_STRINGS), st.text(max_size=12)]
        if self.pool:
            choices = [st.sampled_from(self.pool), st.sampled_from(self.pool), *choices]
        return self.draw(st.one_of(*choices))

    def scalar(self, f: FieldDescriptor) -> Any:
        t = f.type
        if t == FD.TYPE_STRING and f.name in self.fields and self.draw(st.integers(0, 3)):
            return self.draw(self.fields[f.name])
        if t in INT_RANGES:
            return self.draw(int_strategy(*INT_RANGES[t]))
        if t == FD.TYPE_DOUBLE:
            return self.draw(float_strategy())
        if t == FD.TYPE_FLOAT:
            return self.draw(st.one_of(st.sampled_from(NASTY_FLOATS[:12]), st.floats(width=32)))
        if t == FD.TYPE_BOOL:
            return self.draw(st.booleans())
        if t == FD.TYPE_STRING:
            return self.string()
        if t == FD.TYPE_BYTES:
            return self.draw(st.binary(max_size=16))
        if t == FD.TYPE_ENUM:
            known = [v.number for v in f.enum_type.values]
            return self.draw(st.one_of(st.sampled_from(known), st.sampled_from([-1, 7, 99])))
        raise AssertionError(f"unhandled field type {t} of {f.full_name}")

    def json_value(self, depth: int) -> Any:
        leaf = st.one_of(
            float_strategy(),
            st.booleans(),
            st.none(),
            st.sampled_from(["", "float32", "float64", "rbf", "1.5", "Infinity", "NaN", "x"]),
            st.sampled_from([True, -1.0, 0.0, 2.0**63, 1e308, 1e6]),
        )
        if depth >= 2:
            return self.draw(leaf)
        kind = self.draw(st.integers(0, 9))
        if kind == 0:
            return [self.json_value(depth + 1) for _ in range(self.draw(st.integers(0, 4)))]
        if kind == 1:
            return {
                self.string(): self.json_value(depth + 1)
                for _ in range(self.draw(st.integers(0, 2)))
            }
        return self.draw(leaf)

    def struct_dict(self, depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for _ in range(self.draw(st.integers(0, 3))):
            key = self.draw(st.one_of(st.sampled_from(self.struct_keys), st.just(self.string())))
            out[key] = self.json_value(depth + 1)
        return out

    # --- whole messages ----------------------------------------------------------------------

    def message(self, desc: Descriptor, depth: int = 0) -> Message:
        msg = msg_class(desc)()
        self.fill(msg, depth)
        return msg

    def fill(self, msg: Message, depth: int = 0) -> None:
        desc = msg.DESCRIPTOR
        if desc.full_name == WKT_STRUCT:
            msg.update(self.struct_dict())  # type: ignore[attr-defined]
            return
        if desc.full_name in (WKT_VALUE, WKT_LIST):
            holder = msg_class(self._struct_desc(desc))()
            holder.update({"v": self.json_value(1)})  # type: ignore[attr-defined]
            v = holder.fields["v"]  # type: ignore[attr-defined]
            msg.CopyFrom(v if desc.full_name == WKT_VALUE else v.list_value)
            return
        chosen = set()
        for o in real_oneofs(desc):
            pick = self.draw(st.integers(-1, len(o.fields) - 1))
            if pick >= 0:
                chosen.add(o.fields[pick].name)
        oneof_members = {f.name for o in real_oneofs(desc) for f in o.fields}
        for f in desc.fields:
            if f.name in oneof_members:
                if f.name in chosen:
                    self.set_field(msg, f, depth)
                continue
            # Fields with a pool (namespace, name, ids) are mostly set: unset, most requests
            # would stop at "namespace: is required".
            if self.draw(st.integers(0, 7)) < (7 if f.name in self.fields else 4):
                self.set_field(msg, f, depth)

    @staticmethod
    def _struct_desc(desc: Descriptor) -> Descriptor:
        return desc.file.message_types_by_name["Struct"]

    def set_field(self, msg: Message, f: FieldDescriptor, depth: int) -> None:
        deeper = depth + 1 < self.max_depth
        if is_map(f):
            container = getattr(msg, f.name)
            kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            for _ in range(self.draw(st.integers(0, 3))):
                key = self.scalar(kf)
                if vf.type == FD.TYPE_MESSAGE:
                    if deeper:
                        self.fill(container[key], depth + 1)
                    else:
                        container[key].SetInParent()
                else:
                    container[key] = self.scalar(vf)
            return
        if is_repeated(f):
            container = getattr(msg, f.name)
            n = self.draw(st.one_of(st.integers(0, 3), st.integers(0, self.max_repeat)))
            if f.type == FD.TYPE_MESSAGE:
                for _ in range(n if deeper else 0):
                    self.fill(container.add(), depth + 1)
            else:
                container.extend(self.scalar(f) for _ in range(n))
            return
        if f.type == FD.TYPE_MESSAGE:
            sub = getattr(msg, f.name)
            sub.SetInParent()
            if deeper:
                self.fill(sub, depth + 1)
            return
        setattr(msg, f.name, self.scalar(f))

    # --- mutations ---------------------------------------------------------------------------

    def sites(self, msg: Message) -> list[tuple[Message, FieldDescriptor]]:
        """Every (message, field) reachable through set sub-messages: what a mutation may hit."""
        out: list[tuple[Message, FieldDescriptor]] = []
        desc = msg.DESCRIPTOR
        if desc.full_name in (WKT_STRUCT, WKT_VALUE, WKT_LIST):
            return out
        for f in desc.fields:
            out.append((msg, f))
            if f.type != FD.TYPE_MESSAGE or is_map(f):
                continue
            if is_repeated(f):
                for el in getattr(msg, f.name):
                    out.extend(self.sites(el))
            elif msg.HasField(f.name):
                out.extend(self.sites(getattr(msg, f.name)))
        return out

    def mutate(self, msg: Message, n: int) -> list[str]:
        """Apply ``n`` random mutations in place; returns what was done (for failure output)."""
        done = []
        for _ in range(n):
            sites = self.sites(msg)
            parent, f = sites[self.index(len(sites))]
            done.append(f"{f.full_name}: {self.mutate_field(parent, f)}")
        return done

    def mutate_field(self, msg: Message, f: FieldDescriptor) -> str:
        name = f.name
        op = self.draw(st.integers(0, 5))
        if op == 0:
            msg.ClearField(name)
            return "cleared"
        if is_map(f):
            container = getattr(msg, name)
            kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            key = self.scalar(kf)
            if vf.type == FD.TYPE_MESSAGE:
                self.fill(container[key], 1)
            else:
                container[key] = self.scalar(vf)
            return f"set key {key!r}"
        if f.type == FD.TYPE_MESSAGE and f.message_type.full_name == WKT_STRUCT:
            s = getattr(msg, name)
            if op == 1:
                s.Clear()
                self.fill(s)
                return "replaced struct"
            key = self.draw(st.sampled_from(self.struct_keys))
            if op == 2 and key in s.fields:
                del s[key]
                return f"deleted struct key {key!r}"
            s.update({key: self.json_value(1)})
            getattr(msg, name).SetInParent()
            return f"set struct key {key!r}"
        if is_repeated(f):
            container = getattr(msg, name)
            n = len(container)
            if op == 1 and n:  # drop one element
                i = self.index(n)
                del container[i]
                return f"deleted [{i}]"
            if op == 2 and n:  # duplicate one element (duplicate ids, one value too many)
                i = self.index(n)
                if f.type == FD.TYPE_MESSAGE:
                    container.add().CopyFrom(container[i])
                else:
                    container.append(container[i])
                return f"duplicated [{i}]"
            if op == 3 and n and f.type != FD.TYPE_MESSAGE:  # one element to a nasty value
                i = self.index(n)
                container[i] = self.scalar(f)
                return f"set [{i}]"
            if op == 4 and n > 1:
                items = list(container)
                items.reverse()
                if f.type == FD.TYPE_MESSAGE:
                    copies = [type(x)() for x in items]
                    for c, x in zip(copies, items, strict=True):
                        c.CopyFrom(x)
                    del container[:]
                    for c in copies:
                        container.add().CopyFrom(c)
                else:
                    container[:] = items
                return "reversed"
            if f.type == FD.TYPE_MESSAGE:
                self.fill(container.add(), 2)
            else:
                container.append(self.scalar(f))
            return "appended"
        if f.type == FD.TYPE_MESSAGE:
            sub = getattr(msg, name)
            sub.Clear()
            if op % 2:
                self.fill(sub, 2)
            sub.SetInParent()  # also switches a oneof to this member
            return "replaced"
        value = self.scalar(f)
        setattr(msg, name, value)
        return f"set {value!r}"


# --- error messages name a field of the request -------------------------------------------

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STREAM_PREFIX = re.compile(r"^message (\d+): ")


def _bracket(text: str, pos: int) -> tuple[Any, int]:
    """The literal inside ``[...]`` at ``pos`` (an int or a Python string repr) and the end."""
    if text[pos] != "[":
        raise ValueError("expected '['")
    j = pos + 1
    if j < len(text) and text[j] in "'\"":
        q, k = text[j], j + 1
        while k < len(text) and text[k] != q:
            k += 2 if text[k] == "\\" else 1
        if k >= len(text) or text[k + 1 : k + 2] != "]":
            raise ValueError("unterminated key")
        return ast.literal_eval(text[j : k + 1]), k + 2
    m = re.compile(r"\d+\]").match(text, j)
    if not m:
        raise ValueError("expected an index")
    return int(text[j : m.end() - 1]), m.end()


def field_path_problem(request: Message, details: str) -> str | None:
    """None if ``details`` starts with ``<path>: `` and the path names fields of ``request``
    (indexes in range, map and Struct keys present); else what is wrong."""
    node: Any = request
    pos = 0
    try:
        while True:
            if isinstance(node, Message) and node.DESCRIPTOR.full_name == WKT_STRUCT:
                fields = node.fields  # type: ignore[attr-defined]
                keys = sorted(
                    (k for k in fields if details.startswith(k, pos)), key=len, reverse=True
                )
                keys = [k for k in keys if details[pos + len(k) : pos + len(k) + 2] == ": "]
                if not keys:
                    return f"no key of the request's Struct at {details[pos:]!r}"
                pos += len(keys[0])
                break
            m = IDENT.match(details, pos)
            if not m:
                return f"no field name at {details[pos:]!r}"
            if not isinstance(node, Message):
                return f"{m.group()!r} descends into a scalar"
            f = node.DESCRIPTOR.fields_by_name.get(m.group())
            if f is None:
                return f"{node.DESCRIPTOR.full_name} has no field {m.group()!r}"
            pos = m.end()
            value = getattr(node, f.name)
            if details.startswith("[", pos):
                key, pos = _bracket(details, pos)
                if is_map(f):
                    if key not in value:
                        return f"{f.name}[{key!r}] is not in the request"
                elif is_repeated(f):
                    if not isinstance(key, int) or key >= len(value):
                        return f"{f.name}[{key!r}] is out of range ({len(value)} elements)"
                else:
                    return f"{f.name} is not repeated"
                value = value[key]
            if details.startswith(".", pos):
                node, pos = value, pos + 1
                continue
            break
    except (ValueError, SyntaxError) as e:
        return f"unparsable path: {e}"
    if details[pos : pos + 2] != ": ":
        return f"path not followed by ': ' at {details[pos:]!r}"
    return None


def stream_path_problem(requests: Sequence[Message], details: str) -> str | None:
    """StreamUpdates errors read ``message <i>: <path>: ...`` with the path in message i."""
    m = STREAM_PREFIX.match(details)
    if not m:
        return "no 'message <i>: ' prefix"
    i = int(m.group(1))
    if i >= len(requests):
        return f"message {i} was never sent ({len(requests)} sent)"
    return field_path_problem(requests[i], details[m.end() :])
