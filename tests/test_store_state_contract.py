"""StateStore contract, run against the in-process store and the real Redis (each test under its
own key prefix, deleted after it). Redis tests skip only if the server is down."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from banditd.store import serialize
from banditd.store.errors import Conflict, StaleFence, Unavailable
from banditd.store.state import StateStore
from banditd.store.state_memory import MemoryStateStore
from banditd.store.state_redis import RedisStateStore, keys_for
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = ["memory", "redis"]


def _redis_down_reason() -> str | None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.exceptions.RedisError as e:
        return f"Redis at {REDIS_URL} unreachable ({e.__class__.__name__}: {e})"
    return None


REDIS_DOWN = _redis_down_reason()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    if REDIS_DOWN:
        pytest.skip(REDIS_DOWN)
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A prefix no other test uses; every key under it is deleted afterwards."""
    name = f"banditd-test-{uuid.uuid4().hex[:12]}"
    yield name
    stray = list(redis_client.scan_iter(match=f"{{{name}:*", count=1000))
    if stray:
        redis_client.delete(*stray)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> StateStore[bytes]:
    if request.param == "memory":
        return MemoryStateStore[bytes]()
    client = request.getfixturevalue("redis_client")
    return RedisStateStore(client, prefix=request.getfixturevalue("prefix"))


def blob(version: int) -> bytes:
    # Not UTF-8 and holds NULs: a store that decodes or truncates values fails the equality.
    return version.to_bytes(4, "big") + b"\x00\xff" + f"v{version}".encode() * (version % 7 + 1)


# --- contract, both backends ----------------------------------------------------------------------


def test_never_goes_backwards(store: StateStore[bytes]) -> None:
    assert store.get(1) is None and store.version(1) is None
    assert store.put(1, 3, b"v3")
    assert not store.put(1, 2, b"v2")  # older: ignored
    assert not store.put(1, 3, b"other v3")  # same version: the first publication stands
    snap = store.get(1)
    assert snap is not None and (snap.version, snap.value, snap.fence) == (3, b"v3", None)
    assert store.put(1, 4, b"v4") and store.version(1) == 4
    assert store.get(1).value == b"v4"  # type: ignore[union-attr]


def test_experiments_are_independent(store: StateStore[bytes]) -> None:
    assert store.put(1, 5, b"one", fence=9)
    assert store.get(2) is None and store.version(2) is None
    assert store.put(2, 1, b"two", fence=1)  # experiment 1's fence and version don't apply
    store.delete(2)
    snap = store.get(1)
    assert snap is not None and (snap.version, snap.value, snap.fence) == (5, b"one", 9)


def test_delete_then_fresh_put(store: StateStore[bytes]) -> None:
    assert store.put(1, 10, b"old", fence=5)
    store.delete(1)
    assert store.get(1) is None and store.version(1) is None
    # Both the version and the fence are forgotten: a lower version and fence now publish.
    assert store.put(1, 1, b"fresh", fence=1)
    snap = store.get(1)
    assert snap is not None and (snap.version, snap.value, snap.fence) == (1, b"fresh", 1)
    store.delete(1)
    store.delete(1)  # deleting nothing is fine
    assert store.get(1) is None


def test_stale_fence_is_refused_and_changes_nothing(store: StateStore[bytes]) -> None:
    assert store.put(1, 1, b"a", fence=2)
    with pytest.raises(StaleFence, match="1 is older than 2"):
        store.put(1, 2, b"from a deposed learner", fence=1)
    snap = store.get(1)
    assert snap is not None and (snap.version, snap.value, snap.fence) == (1, b"a", 2)
    assert store.put(1, 2, b"b", fence=2)  # an equal fence is the same learner: accepted
    assert store.put(1, 3, b"c", fence=9)
    assert store.put(1, 4, b"d", fence=10)  # compared as numbers, not as text
    with pytest.raises(StaleFence, match="9 is older than 10"):
        store.put(1, 5, b"e", fence=9)


def test_higher_fence_is_recorded_even_when_the_version_loses(store: StateStore[bytes]) -> None:
    assert store.put(1, 5, b"a", fence=1)
    assert store.put(1, 6, b"b", fence=3)
    assert store.get(1).fence == 3  # type: ignore[union-attr]
    assert not store.put(1, 4, b"late", fence=4)  # version too old, but fence 4 is now seen
    with pytest.raises(StaleFence):
        store.put(1, 7, b"from fence 3", fence=3)
    assert store.version(1) == 6
    assert store.put(1, 7, b"c")  # no fence given: not checked, and the snapshot carries none
    snap = store.get(1)
    assert snap is not None and (snap.version, snap.value, snap.fence) == (7, b"c", None)


def test_version_without_get(store: StateStore[bytes]) -> None:
    assert store.version(3) is None
    store.put(3, 42, b"x" * 100_000)
    assert store.version(3) == 42
    assert not store.put(3, 41, b"y")
    assert store.version(3) == 42


def test_serialized_state_round_trips_byte_exact(store: StateStore[bytes]) -> None:
    state = {"A": np.arange(12.0).reshape(3, 4), "n": np.array([0, 1, 2], dtype=np.int64)}
    data = serialize.dumps(state, family="linucb", revision=0, version=9, capacity=3)
    assert store.put(1, 9, data)
    snap = store.get(1)
    assert snap is not None and snap.value == data
    got = serialize.loads(snap.value, family="linucb").state
    assert np.array_equal(got["A"], state["A"]) and np.array_equal(got["n"], state["n"])


def test_concurrent_publishers_keep_the_highest(store: StateStore[bytes]) -> None:
    versions = list(range(1, 201))
    won: list[int] = []
    seen: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def publish(vs: list[int]) -> None:
        try:
            for v in vs:
                if store.put(7, v, blob(v)):
                    won.append(v)
        except BaseException as e:  # surfaced below, not lost in the thread
            errors.append(e)

    def read() -> None:
        try:
            while not done.is_set():
                snap = store.get(7)
                if snap is not None:
                    seen.append((snap.version, snap.value))
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=publish, args=(versions[i::8],)) for i in range(8)]
    reader = threading.Thread(target=read)
    reader.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    reader.join()
    assert errors == []
    snap = store.get(7)
    assert snap is not None and (snap.version, snap.value) == (200, blob(200))
    assert 200 in won and len(won) == len(set(won))
    # Every snapshot read is whole (value matches its version) and reads never go backwards.
    assert all(value == blob(v) for v, value in seen)
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)


# --- Redis only -----------------------------------------------------------------------------------


def test_keys_of_one_experiment_share_a_slot() -> None:
    k1, k2 = keys_for("banditd", 1), keys_for("banditd", 2)
    assert (
        k1.tag == "{banditd:exp:1}" and k1.state.startswith(k1.tag) and k1.fence.startswith(k1.tag)
    )
    assert len({key_slot(k.encode()) for k in (k1.tag, k1.state, k1.fence)}) == 1
    assert len({k1.tag, k1.state, k1.fence}) == 3
    assert k1.tag != k2.tag and key_slot(k1.state.encode()) != key_slot(k2.state.encode())
    assert keys_for("other", 1).tag != k1.tag
    with pytest.raises(ValueError, match="braces"):
        keys_for("a}b", 1)


def test_redis_writes_only_the_keys_it_names(redis_client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(redis_client, prefix=prefix)
    store.put(5, 1, b"v", fence=2)
    keys = keys_for(prefix, 5)
    written = {k.decode() for k in redis_client.scan_iter(match=f"{{{prefix}:*", count=1000)}
    assert written == {keys.state, keys.fence}
    assert len({key_slot(k.encode()) for k in written}) == 1
    store.delete(5)
    assert list(redis_client.scan_iter(match=f"{{{prefix}:*", count=1000)) == []


def test_redis_stores_share_state_through_the_server(
    redis_client: redis.Redis, prefix: str
) -> None:
    a = RedisStateStore(redis_client, prefix=prefix)
    b = RedisStateStore.from_url(REDIS_URL, prefix=prefix)  # another process, in effect
    assert a.put(1, 2, b"from a", fence=3)
    assert not b.put(1, 2, b"from b", fence=3)
    with pytest.raises(StaleFence):
        b.put(1, 3, b"from b", fence=2)
    assert b.get(1) == a.get(1) and b.get(1).value == b"from a"  # type: ignore[union-attr]
    assert RedisStateStore(redis_client, prefix=prefix + "-x").get(1) is None


def test_redis_parts_publish_and_fetch_only_changed_arms(
    redis_client: redis.Redis, prefix: str
) -> None:
    store = RedisStateStore(redis_client, prefix=prefix)
    assert store.get_parts(4) is None
    arms = {slot: bytes([slot]) * 7 + b"\x00\xff" for slot in range(5)}
    assert store.put_parts(4, 1, b"head1", arms, fence=1)
    got = store.get_parts(4)
    assert got is not None and (got.version, got.header, got.fence) == (1, b"head1", 1)
    assert got.parts == {s: (1, b) for s, b in arms.items()}
    have = {s: v for s, (v, _) in got.parts.items()}
    # Version 2 changes arms 1 and 3 only: a reader holding version 1 fetches just those.
    assert store.put_parts(4, 2, b"head2", {1: b"one-2", 3: b"three-2"}, fence=1)
    got = store.get_parts(4, have)
    assert got is not None and got.header == b"head2" and got.version == 2
    assert got.parts == {1: (2, b"one-2"), 3: (2, b"three-2")}
    # A reader with nothing gets every arm, each at the version it was last written at.
    full = store.get_parts(4)
    assert full is not None and {s: v for s, (v, _) in full.parts.items()} == {
        0: 1,
        1: 2,
        2: 1,
        3: 2,
        4: 1,
    }
    # Same rules as put: older versions ignored, stale fences refused, nothing changed.
    assert not store.put_parts(4, 2, b"late", {0: b"x"}, fence=1)
    with pytest.raises(StaleFence):
        store.put_parts(4, 3, b"deposed", {0: b"x"}, fence=0)
    again = store.get_parts(4)
    assert again is not None and again == full
    # reset: a new layout (e.g. grown capacity) drops the old arms
    assert store.put_parts(4, 3, b"head3", {0: b"only"}, fence=2, reset=True)
    got = store.get_parts(4, have)
    assert got is not None and got.parts == {0: (3, b"only")}
    assert store.version(4) == 3
    store.delete(4)
    assert list(redis_client.scan_iter(match=f"{{{prefix}:*", count=1000)) == []


def test_redis_parts_refuse_a_lost_base(redis_client: redis.Redis, prefix: str) -> None:
    """A partial publication names the version it continues; once Redis has lost that one (a
    restart or FLUSHALL), writing only the changed arms would leave the others missing for a
    new reader, so it is refused with Conflict and nothing is written."""
    store = RedisStateStore(redis_client, prefix=prefix)
    assert store.put_parts(5, 1, b"head1", {0: b"a", 1: b"b"}, fence=1)
    assert store.put_parts(5, 2, b"head2", {1: b"b2"}, fence=1, base=1)
    with pytest.raises(Conflict, match="base"):
        store.put_parts(5, 3, b"head3", {1: b"b3"}, fence=1, base=1)  # 2 is published, not 1
    store.delete(5)  # what a FLUSHALL does to this experiment's keys
    with pytest.raises(Conflict, match="nothing"):
        store.put_parts(5, 3, b"head3", {1: b"b3"}, fence=1, base=2)
    assert store.get_parts(5) is None
    # Every arm again, without a base: accepted, and a reader with nothing gets all of them.
    assert store.put_parts(5, 3, b"head3", {0: b"a", 1: b"b3"}, fence=1, reset=True)
    got = store.get_parts(5)
    assert got is not None and got.parts == {0: (3, b"a"), 1: (3, b"b3")}
    store.delete(5)


def test_redis_refuses_a_decoding_client() -> None:
    with pytest.raises(ValueError, match="decode"):
        RedisStateStore(redis.Redis(decode_responses=True))  # no I/O: fine with Redis down


def _no_retry_client(
    port: int, *, connect_timeout: float | None = None, timeout: float | None = None
) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # the default retries with backoff: seconds per call
    )


def _assert_all_unavailable(store: RedisStateStore, cause: type[Exception]) -> None:
    calls = [
        lambda: store.get(1),
        lambda: store.version(1),
        lambda: store.put(1, 1, b"v", fence=1),
        lambda: store.delete(1),
    ]
    for call in calls:
        with pytest.raises(Unavailable) as info:
            call()
        assert isinstance(info.value.__cause__, cause)
        assert str(info.value) == str(info.value.__cause__) and str(info.value)


def test_redis_down_raises_unavailable() -> None:
    client = _no_retry_client(1, connect_timeout=0.5)  # nothing listens on port 1
    _assert_all_unavailable(RedisStateStore(client), redis.exceptions.ConnectionError)


def test_redis_not_answering_raises_unavailable() -> None:
    with socket.socket() as mute:  # accepts connections (the kernel does), never replies
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        client = _no_retry_client(mute.getsockname()[1], timeout=0.2)
        _assert_all_unavailable(RedisStateStore(client), redis.exceptions.TimeoutError)
