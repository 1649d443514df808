"""In-process state store, feedback signal, and state serialization."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any, NamedTuple

import numpy as np
import pytest
from banditd.store import serialize
from banditd.store.errors import StaleFence, StateFormatError
from banditd.store.signal_local import LocalSignal
from banditd.store.state_memory import MemoryStateStore

# --- memory state store ---------------------------------------------------------------------------


def test_memory_state_store_never_goes_backwards() -> None:
    store: MemoryStateStore[str] = MemoryStateStore()
    assert store.get(1) is None and store.version(1) is None
    assert store.put(1, 3, "v3")
    assert not store.put(1, 2, "v2")  # older: ignored
    assert not store.put(1, 3, "other v3")  # same version: the first publication stands
    snap = store.get(1)
    assert snap is not None and (snap.version, snap.value) == (3, "v3")
    assert store.put(1, 4, "v4") and store.version(1) == 4
    assert store.get(2) is None  # experiments are independent
    store.delete(1)
    assert store.get(1) is None and store.put(1, 1, "fresh")


def test_memory_state_store_refuses_stale_fence() -> None:
    store: MemoryStateStore[str] = MemoryStateStore()
    assert store.put(1, 1, "a", fence=2)
    with pytest.raises(StaleFence):
        store.put(1, 2, "from a deposed learner", fence=1)
    assert store.version(1) == 1
    assert store.put(1, 2, "b", fence=3)
    assert store.get(1).fence == 3  # type: ignore[union-attr]


def test_memory_state_store_concurrent_puts_keep_the_highest() -> None:
    store: MemoryStateStore[int] = MemoryStateStore()
    versions = list(range(1, 401))

    def publish(vs: list[int]) -> None:
        for v in vs:
            store.put(7, v, v)

    workers = [threading.Thread(target=publish, args=(versions[i::4],)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    snap = store.get(7)
    assert snap is not None and snap.version == snap.value == 400


# --- signal ---------------------------------------------------------------------------------------


def test_signal_returns_pending_without_blocking() -> None:
    sig = LocalSignal()
    sig.notify(1)
    sig.notify(1)
    sig.notify(2)
    t0 = time.monotonic()
    assert sig.wait(5.0) == {1, 2}
    assert time.monotonic() - t0 < 1.0
    assert sig.wait(0.05) == set()  # coalesced: consumed once


def test_signal_times_out() -> None:
    sig = LocalSignal()
    t0 = time.monotonic()
    assert sig.wait(0.1) == set()
    assert time.monotonic() - t0 >= 0.1


def test_signal_wakes_a_waiting_thread() -> None:
    sig = LocalSignal()
    got: list[set[int]] = []
    waiter = threading.Thread(target=lambda: got.append(sig.wait(10.0, [5])))
    waiter.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    sig.notify(5)
    waiter.join(5.0)
    assert got == [{5}] and time.monotonic() - t0 < 1.0


def test_signal_filters_by_experiment_and_keeps_others() -> None:
    sig = LocalSignal()
    sig.notify(2)
    assert sig.wait(0.05, [1]) == set()  # 2 is not ours
    assert sig.wait(0.05, [2, 3]) == {2}  # and was kept for its waiter


def test_signal_close_wakes_waiters() -> None:
    sig = LocalSignal()
    got: list[set[int]] = []
    waiter = threading.Thread(target=lambda: got.append(sig.wait(30.0)))
    waiter.start()
    time.sleep(0.05)
    sig.close()
    waiter.join(5.0)
    assert not waiter.is_alive() and got == [set()]
    sig.notify(1)
    assert sig.wait(5.0) == set()


# --- serialization --------------------------------------------------------------------------------


class Meta(NamedTuple):
    active: Any
    n_arms: Any
    version: Any
    revision: Any


class State(NamedTuple):
    stats: dict[str, Any]
    meta: Meta
    cache: dict[str, Any]


def make_state(cap: int = 4, d: int = 3) -> State:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((cap, d, d))
    return State(
        stats={"A": a, "b": rng.standard_normal((cap, d)), "n": np.arange(cap, dtype=np.int64)},
        meta=Meta(
            active=np.array([True, True, False, False]),
            n_arms=np.int64(2),
            version=np.int64(17),
            revision=np.int32(3),
        ),
        cache={"A_inv": np.linalg.inv(a + 3 * np.eye(d))},
    )


def dumps(state: Any, **kw: Any) -> bytes:
    args: dict[str, Any] = {"family": "linucb", "revision": 3, "version": 17, "capacity": 4}
    args.update(kw)
    return serialize.dumps(state, **args)


def same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_round_trip_is_exact_and_drops_the_cache() -> None:
    state = make_state()
    loaded = serialize.loads(dumps(state), family="linucb", revision=3, types=(State, Meta))
    got = loaded.state
    assert type(got) is State and type(got.meta) is Meta
    assert list(got.stats) == ["A", "b", "n"]
    for k in state.stats:
        assert same(got.stats[k], state.stats[k]), k
    for f in Meta._fields:
        assert same(getattr(got.meta, f), getattr(state.meta, f)), f
    assert got.cache == {}  # derived: the caller refreshes it


def test_cache_kept_on_request() -> None:
    state = make_state()
    got = serialize.loads(dumps(state, include_cache=True), types=(State, Meta)).state
    assert same(got.cache["A_inv"], state.cache["A_inv"])


def test_header_describes_the_state() -> None:
    h = serialize.read_header(dumps(make_state()))
    assert (h.format_version, h.family, h.revision, h.version, h.capacity) == (
        serialize.FORMAT_VERSION,
        "linucb",
        3,
        17,
        4,
    )
    schema = {s.path: (s.shape, s.dtype) for s in h.schema}
    assert schema == {
        "stats/A": ((4, 3, 3), "<f8"),
        "stats/b": ((4, 3), "<f8"),
        "stats/n": ((4,), "<i8"),
        "meta/active": ((4,), "|b1"),
        "meta/n_arms": ((), "<i8"),
        "meta/version": ((), "<i8"),
        "meta/revision": ((), "<i4"),
    }
    assert h.omitted == ("cache",) and len(h.digest) == 64


def test_without_types_namedtuples_come_back_generic() -> None:
    got = serialize.loads(dumps(make_state())).state
    assert type(got) is not State and got._fields == State._fields
    assert got.meta._fields == Meta._fields and int(got.meta.version) == 17


def test_nested_containers_and_scalars() -> None:
    tree = {"xs": [np.float64(1.5), (np.zeros(2, np.float32), None)], "flag": True}
    got = serialize.loads(dumps(tree)).state
    assert isinstance(got["xs"], list) and isinstance(got["xs"][1], tuple)
    assert same(got["xs"][0], np.float64(1.5)) and same(got["xs"][1][0], np.zeros(2, np.float32))
    assert got["xs"][1][1] is None and same(got["flag"], np.bool_(True))


def test_real_policy_state_round_trips() -> None:
    from banditd.policies import Meta as PMeta
    from banditd.policies import State as PState
    from banditd.policies import make

    pol = make("linucb", alpha=1.0, lam=1.0)
    state = pol.init(n_arms=3, dim=2)
    blob = serialize.dumps(state, family="linucb", revision=0, version=0, capacity=4)
    got = serialize.loads(blob, family="linucb", types=(PState, PMeta)).state
    assert type(got) is PState and set(got.stats) == set(state.stats)
    for k in state.stats:
        assert same(got.stats[k], np.asarray(state.stats[k])), k
    assert same(got.meta.active, np.asarray(state.meta.active))


def test_refuses_foreign_family_revision_and_format() -> None:
    blob = dumps(make_state())
    with pytest.raises(StateFormatError, match="family"):
        serialize.loads(blob, family="beta_ts")
    with pytest.raises(StateFormatError, match="revision"):
        serialize.loads(blob, revision=4)
    with pytest.raises(StateFormatError, match="format_version"):
        serialize.loads(_edit_header(blob, lambda h: h.update(format_version=2)))
    with pytest.raises(StateFormatError, match="not a banditd state"):
        serialize.loads(_edit_header(blob, lambda h: h.update(format="other")))
    with pytest.raises(StateFormatError, match="blob"):
        serialize.loads(b"not a zip at all")
    with pytest.raises(StateFormatError, match="fields"):
        serialize.loads(blob, types=(_OtherState,))


class _OtherState(NamedTuple):  # same name as State, different fields
    stats: Any
    meta: Any


_OtherState.__name__ = "State"


def test_refuses_tampering() -> None:
    blob = dumps(make_state())
    # A header edit that keeps everything consistent except the digest.
    with pytest.raises(StateFormatError, match="digest"):
        serialize.loads(_edit_header(blob, lambda h: h.update(version=18)))

    # A schema that disagrees with the arrays.
    def reshape(h: dict[str, Any]) -> None:
        h["schema"][0]["shape"] = [2, 3, 3]

    with pytest.raises(StateFormatError, match="schema"):
        serialize.loads(_edit_header(blob, reshape))
    # One flipped bit in an array.
    members = _members(blob)
    members["a1"] = members["a1"].copy()
    members["a1"].view(np.uint8).reshape(-1)[5] ^= 1
    with pytest.raises(StateFormatError, match="digest"):
        serialize.loads(_pack(members))
    # A smuggled extra array.
    members = _members(blob)
    members["a99"] = np.zeros(1)
    with pytest.raises(StateFormatError, match="schema"):
        serialize.loads(_pack(members))


def test_never_unpickles() -> None:
    blob = dumps(make_state())
    members = _members(blob)
    members["a0"] = np.array([{"evil": 1}], dtype=object)
    buf = io.BytesIO()
    _savez(buf, **members)  # allow_pickle defaults to True when saving
    with pytest.raises(StateFormatError):
        serialize.loads(buf.getvalue())
    with pytest.raises(TypeError, match="numeric"):
        serialize.dumps({"x": np.array(["a"])}, family="f", revision=0, version=0, capacity=1)


_savez: Any = np.savez  # numpy's stub reads **members as its allow_pickle flag


def _members(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _pack(members: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    _savez(buf, **members)
    return buf.getvalue()


def _edit_header(blob: bytes, edit: Any) -> bytes:
    members = _members(blob)
    header = json.loads(members[serialize.HEADER].tobytes())
    edit(header)
    members[serialize.HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return _pack(members)
