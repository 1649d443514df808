"""Policy state <-> bytes, without knowing what a policy keeps.

A state is any tree of NamedTuples, dicts (string keys), tuples, lists and None, with arrays (or
scalars) at the leaves — the policies' ``State(stats, meta, cache)`` is one. The blob is an
uncompressed ``.npz`` (a zip of ``.npy`` files, readable by numpy alone) whose ``__header__``
member is UTF-8 JSON:

    {"format": "banditd.state", "format_version": 1, "family": ..., "revision": ...,
     "version": ..., "capacity": ..., "schema": [{"path", "name", "shape", "dtype"}, ...],
     "tree": <structure>, "omitted": [...], "digest": <sha256>}

Loading never unpickles (``allow_pickle=False``), refuses object and string dtypes, checks every
array against the schema and the digest (SHA-256 over the header without the digest, then every
array's bytes), and checks the family and revision the caller expects. The top-level ``cache``
field is left out by default: it is derived from the stats, so the caller recomputes it (it
comes back as an empty dict).
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .errors import StateFormatError

FORMAT = "banditd.state"
FORMAT_VERSION = 1
HEADER = "__header__"
CACHE_FIELD = "cache"
_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: nothing that needs pickle


@dataclass(frozen=True, slots=True)
class LeafSpec:
    path: str  # "stats/A", "meta/active"
    name: str  # member name in the npz
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string, e.g. "<f8"


@dataclass(frozen=True, slots=True)
class Header:
    format_version: int
    family: str
    revision: int
    version: int
    capacity: int
    schema: tuple[LeafSpec, ...]
    omitted: tuple[str, ...]
    tree: Any
    digest: str


class Loaded(NamedTuple):
    header: Header
    state: Any


def dumps(
    state: Any,
    *,
    family: str,
    revision: int,
    version: int,
    capacity: int,
    include_cache: bool = False,
) -> bytes:
    """Serialize ``state``; ``family``/``revision``/``version``/``capacity`` go in the header
    (the caller knows them; this module does not look inside the state)."""
    leaves: list[np.ndarray] = []
    schema: list[LeafSpec] = []
    omitted: list[str] = []

    def encode(node: Any, path: str, top: bool) -> Any:
        if _is_namedtuple(node):
            fields = []
            for name, child in zip(node._fields, node, strict=True):
                if top and name == CACHE_FIELD and not include_cache:
                    omitted.append(name)
                    fields.append([name, {"omitted": True}])
                else:
                    fields.append([name, encode(child, _join(path, name), False)])
            return {"namedtuple": type(node).__name__, "fields": fields}
        if isinstance(node, Mapping):
            items = []
            for key, child in node.items():
                if not isinstance(key, str):
                    raise TypeError(f"state: dict keys must be strings, got {key!r} at {path!r}")
                items.append([key, encode(child, _join(path, key), False)])
            return {"dict": items}
        if isinstance(node, tuple | list):
            kind = "tuple" if isinstance(node, tuple) else "list"
            return {kind: [encode(c, _join(path, str(i)), False) for i, c in enumerate(node)]}
        if node is None:
            return {"none": True}
        a = np.asarray(node)
        if a.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"state: leaf {path!r} has dtype {a.dtype}; only numeric arrays")
        a = _c_order(a)
        name = f"a{len(leaves)}"
        leaves.append(a)
        schema.append(LeafSpec(path, name, tuple(a.shape), a.dtype.str))
        return {"leaf": name}

    tree = encode(state, "", True)
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family,
        "revision": int(revision),
        "version": int(version),
        "capacity": int(capacity),
        "schema": [
            {"path": s.path, "name": s.name, "shape": list(s.shape), "dtype": s.dtype}
            for s in schema
        ],
        "tree": tree,
        "omitted": omitted,
    }
    header["digest"] = _digest(header, leaves)
    buf = io.BytesIO()
    members = {s.name: a for s, a in zip(schema, leaves, strict=True)}
    members[HEADER] = np.frombuffer(_canonical(header), dtype=np.uint8)
    savez: Any = np.savez  # numpy's stub reads **members as its allow_pickle flag
    savez(buf, allow_pickle=False, **members)
    return buf.getvalue()


def read_header(blob: bytes) -> Header:
    """The header alone (checked for format, not for integrity: use ``loads`` for that)."""
    with _open(blob) as npz:
        return _parse_header(_raw_header(npz))


def loads(
    blob: bytes,
    *,
    family: str | None = None,
    revision: int | None = None,
    types: Iterable[type] = (),
) -> Loaded:
    """Rebuild the state in ``blob``. ``family``/``revision``, when given, must match the header.
    ``types`` are the NamedTuple classes to rebuild with (matched by name and fields, e.g.
    ``(State, Meta)``); a NamedTuple without one comes back as an equivalent
    ``collections.namedtuple``. Raises ``StateFormatError`` on any mismatch or corruption."""
    with _open(blob) as npz:
        raw = _raw_header(npz)
        header = _parse_header(raw)
        if family is not None and header.family != family:
            raise StateFormatError(f"family: state is for {header.family!r}, expected {family!r}")
        if revision is not None and header.revision != revision:
            raise StateFormatError(
                f"revision: state is for revision {header.revision}, expected {revision}"
            )
        names = {s.name for s in header.schema}
        if set(npz.files) - {HEADER} != names:
            raise StateFormatError("schema: the arrays present do not match the header")
        arrays: dict[str, np.ndarray] = {}
        for spec in header.schema:
            try:
                a = npz[spec.name]
            except ValueError as e:  # an object array would need pickle
                raise StateFormatError(f"schema: {spec.path!r} cannot be read: {e}") from e
            if a.dtype.str != spec.dtype or tuple(a.shape) != spec.shape:
                raise StateFormatError(
                    f"schema: {spec.path!r} is {a.dtype.str}{list(a.shape)}, header says "
                    f"{spec.dtype}{list(spec.shape)}"
                )
            arrays[spec.name] = a
    if _digest(raw, [arrays[s.name] for s in header.schema]) != header.digest:
        raise StateFormatError("digest: state blob does not match its header (corrupt?)")
    by_name = {t.__name__: t for t in types}
    return Loaded(header, _decode(header.tree, arrays, by_name))


# --- internals -------------------------------------------------------------------------------


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _c_order(a: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns 0-d arrays (meta.version, ...) into 1-d ones.
    return a if a.flags.c_contiguous else a.copy(order="C")


def _join(path: str, key: str) -> str:
    if "/" in key:
        raise TypeError(f"state: key {key!r} at {path!r} contains '/'")
    return f"{path}/{key}" if path else key


def _canonical(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _digest(header: Mapping[str, Any], leaves: list[np.ndarray]) -> str:
    # Over the header minus its own digest field, then the arrays in schema order.
    h = hashlib.sha256(_canonical({k: v for k, v in header.items() if k != "digest"}))
    for a in leaves:
        h.update(_c_order(a).tobytes())
    return h.hexdigest()


class _Npz:
    def __init__(self, blob: bytes) -> None:
        try:
            self.npz = np.load(io.BytesIO(blob), allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise StateFormatError(f"blob: not a serialized state ({e})") from e
        if not isinstance(self.npz, np.lib.npyio.NpzFile):
            raise StateFormatError("blob: not a serialized state (a bare array)")

    def __enter__(self) -> np.lib.npyio.NpzFile:
        return self.npz

    def __exit__(self, *exc: object) -> None:
        self.npz.close()


def _open(blob: bytes) -> _Npz:
    return _Npz(blob)


def _raw_header(npz: np.lib.npyio.NpzFile) -> dict[str, Any]:
    if HEADER not in npz.files:
        raise StateFormatError("blob: no banditd state header")
    try:
        raw = json.loads(npz[HEADER].tobytes().decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise StateFormatError(f"header: unreadable ({e})") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise StateFormatError("header: not a banditd state")
    return raw


def _parse_header(raw: Mapping[str, Any]) -> Header:
    if raw.get("format_version") != FORMAT_VERSION:
        raise StateFormatError(
            f"format_version: {raw.get('format_version')!r} is not supported "
            f"(this build reads {FORMAT_VERSION})"
        )
    try:
        return Header(
            format_version=int(raw["format_version"]),
            family=str(raw["family"]),
            revision=int(raw["revision"]),
            version=int(raw["version"]),
            capacity=int(raw["capacity"]),
            schema=tuple(
                LeafSpec(
                    str(s["path"]),
                    str(s["name"]),
                    tuple(int(x) for x in s["shape"]),
                    str(s["dtype"]),
                )
                for s in raw["schema"]
            ),
            omitted=tuple(str(x) for x in raw["omitted"]),
            tree=raw["tree"],
            digest=str(raw["digest"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StateFormatError(f"header: malformed ({e!r})") from e


def _decode(node: Any, arrays: Mapping[str, np.ndarray], types: Mapping[str, type]) -> Any:
    try:
        if "leaf" in node:
            return arrays[node["leaf"]]
        if "omitted" in node:
            return {}
        if "none" in node:
            return None
        if "dict" in node:
            return {k: _decode(v, arrays, types) for k, v in node["dict"]}
        if "tuple" in node:
            return tuple(_decode(v, arrays, types) for v in node["tuple"])
        if "list" in node:
            return [_decode(v, arrays, types) for v in node["list"]]
        if "namedtuple" in node:
            name = node["namedtuple"]
            fields = [f for f, _ in node["fields"]]
            given = types.get(name)
            if given is not None and list(getattr(given, "_fields", ())) != fields:
                raise StateFormatError(
                    f"tree: {name} has fields {fields}, {given.__name__} has "
                    f"{list(getattr(given, '_fields', ()))}"
                )
            cls: Any = given or collections.namedtuple(name, fields)
            return cls(*(_decode(v, arrays, types) for _, v in node["fields"]))
    except (KeyError, TypeError, ValueError) as e:
        raise StateFormatError(f"tree: malformed ({e!r})") from e
    raise StateFormatError(f"tree: unknown node {sorted(node)!r}")
