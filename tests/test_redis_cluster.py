"""Redis Cluster: a local 3-master cluster of this module alone (its own free loopback ports and
directory, never the machine's 127.0.0.1:6379), the state, lease and signal contracts on the
cluster client, and two production replicas on it serving experiments whose keys live on
different masters, checked like the single-server replicas in test_replicas."""

from __future__ import annotations

import pathlib
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
import test_store_signal_lease as signal_contract
import test_store_state_contract as state_contract
from banditd.clients import Client
from banditd.store.lease import RedisLease
from banditd.store.redis_client import (
    client_from_url,
    cluster_seeds,
    is_cluster_url,
    redact_url,
)
from banditd.store.schema import experiments
from banditd.store.signal_redis import RedisSignal
from banditd.store.state_redis import CLIENT_DEFAULTS, RedisStateStore, keys_for
from redis.cluster import RedisCluster
from redis.crc import key_slot
from test_replicas import (
    ARMS,
    applied_means,
    beta_means,
    check_log,
    replica,
    shared,  # noqa: F401 - the fixture: this test's own database and key prefix
)

MASTERS = 3
NS = "cluster"

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server or redis-cli is not installed (needed to start a local Redis Cluster)",
)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(n: int) -> list[int]:
    """n ports p, each with p + 10000 (its cluster bus port) free too, below the ephemeral
    range so that neither collides with a client's outgoing port."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        p = rng.randrange(20000, 30000)
        if p not in ports and _bindable(p) and _bindable(p + 10000):
            ports.append(p)
    return ports


class LocalCluster:
    """``MASTERS`` redis-server processes in cluster mode without persistence, joined by
    ``redis-cli --cluster create`` into one cluster with no replicas."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.ports = _cluster_ports(MASTERS)
        self.procs: dict[int, subprocess.Popen] = {}
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (it reconnects by itself after a restart)."""
        if port not in self._clients:
            self._clients[port] = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2)
        return self._clients[port]

    def start_node(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
             "--cluster-node-timeout", "3000", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--logfile", f"redis-{port}.log"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                self.node(port).ping()
                return
            except redis.exceptions.ConnectionError as e:
                if self.procs[port].poll() is not None or time.monotonic() > deadline:
                    msg = f"redis-server on {port} did not start:\n{self.log(port)}"
                    raise RuntimeError(msg) from e
                time.sleep(0.05)

    def kill_node(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def log(self, port: int) -> str:
        path = self.root / f"redis-{port}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def start(self) -> None:
        for p in self.ports:
            self.start_node(p)
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert create.returncode == 0, create.stdout + create.stderr
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says cluster_state:ok and sees all slots on ``MASTERS`` masters."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._ok(p) for p in self.ports):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok in {timeout} s:\n{self.log(self.ports[0])}")
            time.sleep(0.1)

    def _ok(self, port: int) -> bool:
        info = self.node(port).cluster("INFO")  # parsed: {"cluster_state": "ok", ...}
        ok = info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"
        return ok and len(set(self.slot_owners(port).values())) == MASTERS

    def slot_owners(self, port: int | None = None) -> dict[tuple[int, int], int]:
        """(first slot, last slot) -> the port of the master serving them, per CLUSTER SLOTS."""
        raw = self.node(port or self.ports[0]).execute_command("CLUSTER SLOTS")
        return {(int(r[0]), int(r[1])): int(r[2][1]) for r in raw}

    def keyslot(self, key: str) -> int:
        return int(self.node(self.ports[0]).execute_command("CLUSTER KEYSLOT", key))

    def master_of(self, key: str) -> int:
        slot = self.keyslot(key)
        (port,) = [p for (lo, hi), p in self.slot_owners().items() if lo <= slot <= hi]
        return port

    def subscriber_node(self, channel: str) -> int | None:
        """The node the (classic, per-node) subscription to ``channel`` lives on."""
        for p in self.ports:
            ((_, n),) = self.node(p).pubsub_numsub(channel)
            if n:
                return p
        return None

    def stop(self) -> None:
        for p in list(self.procs):
            self.kill_node(p)
        for client in self._clients.values():
            client.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    root = pathlib.Path(tempfile.mkdtemp(prefix="banditd-cluster-"))
    c = LocalCluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_client(cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = client_from_url(cluster.url, **CLIENT_DEFAULTS)
    assert isinstance(client, RedisCluster)
    yield client
    client.close()


@pytest.fixture
def prefix(cluster_client: RedisCluster) -> Iterator[str]:
    """A key prefix of this test alone; every key under it is deleted afterwards."""
    p = f"banditd-test-{uuid.uuid4().hex[:12]}"
    yield p
    for key in list(cluster_client.scan_iter(match="{" + p + ":*", count=1000)):
        cluster_client.delete(key)


# --- URLs -----------------------------------------------------------------------------------------


def test_cluster_url_forms() -> None:
    assert cluster_seeds("redis+cluster://h1:7000,h2:7001/") == (
        "redis://h1:7000/",
        [("h1", 7000), ("h2", 7001)],
    )
    assert cluster_seeds("rediss+cluster://u:p%40ss@h1:7000,[::1]:7001/0?socket_timeout=3") == (
        "rediss://u:p%40ss@h1:7000/0?socket_timeout=3",
        [("h1", 7000), ("::1", 7001)],
    )
    assert cluster_seeds("redis+cluster://h1") == ("redis://h1", [("h1", 6379)])
    for bad in ("redis+cluster:///", "redis+cluster://h1:port/", "redis://h1:7000/"):
        with pytest.raises(ValueError):
            cluster_seeds(bad)
    assert is_cluster_url("REDIS+CLUSTER://h:1") and not is_cluster_url("redis://h:1/0")
    # Logged URLs hide the password, a cluster's host list included.
    assert redact_url("redis+cluster://u:s3cret@h1:7000,h2:7001/?password=x&a=1") == (
        "redis+cluster://u:***@h1:7000,h2:7001/?password=***&a=1"
    )
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    # One server: a plain client, made without I/O, the defaults applied unless the URL says.
    one = client_from_url("redis://127.0.0.1:1/0?socket_timeout=3", **CLIENT_DEFAULTS)
    assert type(one) is redis.Redis
    kwargs = one.get_connection_kwargs()
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (3.0, 2.0)


def test_cluster_client_from_seeds(cluster: LocalCluster) -> None:
    with socket.socket() as s:  # a seed nobody listens on: the next one is asked
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    url = f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{cluster.ports[1]}/?socket_timeout=3"
    client = client_from_url(url, **CLIENT_DEFAULTS)
    try:
        assert isinstance(client, RedisCluster)
        assert client.get_connection_kwargs()["socket_timeout"] == 3.0  # the URL wins
        assert client.get_connection_kwargs()["socket_connect_timeout"] == 2.0
        assert {n.port for n in client.get_primaries()} == set(cluster.ports)
    finally:
        client.close()


def test_experiments_spread_over_slots_and_masters(cluster: LocalCluster) -> None:
    """Keys of one experiment share a slot (the server agrees with keys_for's hash tag);
    different experiments hash to different slots, on every master."""
    masters = set()
    slots = set()
    for exp in range(1, 13):
        k = keys_for("banditd", exp)
        slot = cluster.keyslot(k.tag)
        assert slot == key_slot(k.tag.encode())
        for key in (k.state, k.fence, k.parts, k.part_versions, f"{k.tag}:lease"):
            assert cluster.keyslot(key) == slot
        slots.add(slot)
        masters.add(cluster.master_of(k.tag))
    assert len(slots) == 12 and masters == set(cluster.ports)


# --- contracts on the cluster client --------------------------------------------------------------

STATE_CONTRACT = [
    "test_never_goes_backwards",
    "test_experiments_are_independent",
    "test_delete_then_fresh_put",
    "test_stale_fence_is_refused_and_changes_nothing",
    "test_higher_fence_is_recorded_even_when_the_version_loses",
    "test_version_without_get",
    "test_serialized_state_round_trips_byte_exact",
    "test_concurrent_publishers_keep_the_highest",
]
STATE_REDIS_CONTRACT = [  # (client, prefix): the key layout and parts, scanned over every master
    "test_redis_writes_only_the_keys_it_names",
    "test_redis_parts_publish_and_fetch_only_changed_arms",
]
LEASE_CONTRACT = [
    "test_lease_same_holder_reacquire_renews",
    "test_lease_takeover_after_expiry_fences_out_the_old_holder",
    "test_lease_same_holder_after_its_lease_lapsed_gets_a_new_fence",
    "test_lease_racing_threads_one_winner_per_round",
    "test_lease_rejects_nonpositive_ttl",
]
SIGNAL_CONTRACT = [
    "test_signal_notify_then_wait_returns_it_once",
    "test_signal_filters_by_experiment_and_keeps_others",
    "test_signal_times_out_within_bounds",
    "test_signal_wakes_a_blocked_waiter",
    "test_signal_close_wakes_waiters_and_later_waits_return_at_once",
]


@pytest.mark.parametrize("name", STATE_CONTRACT)
def test_state_contract(name: str, cluster_client: RedisCluster, prefix: str) -> None:
    getattr(state_contract, name)(RedisStateStore(cluster_client, prefix=prefix))


@pytest.mark.parametrize("name", STATE_REDIS_CONTRACT)
def test_state_redis_contract(name: str, cluster_client: RedisCluster, prefix: str) -> None:
    getattr(state_contract, name)(cluster_client, prefix)


@pytest.mark.parametrize("name", LEASE_CONTRACT)
def test_lease_contract(name: str, cluster: LocalCluster, prefix: str) -> None:
    lease = RedisLease.from_url(cluster.url, prefix=prefix)
    try:
        getattr(signal_contract, name)(lease)
    finally:
        lease.close()


def test_lease_and_state_fences_on_the_experiments_master(
    cluster: LocalCluster, cluster_client: RedisCluster, prefix: str
) -> None:
    lease = RedisLease.from_url(cluster.url, prefix=prefix)
    store = RedisStateStore.from_url(cluster.url, prefix=prefix)
    try:
        assert lease.acquire(7, "a", 5.0) == 1
        assert lease.acquire(7, "b", 5.0) is None
        assert store.put(7, 1, b"v1", fence=40)
        assert lease.current_fence(7) == 1  # not the store's 40
        assert store.get(7).fence == 40  # type: ignore[union-attr]
        # Every key of the experiment sits on the master of its tag, none anywhere else.
        k = keys_for(prefix, 7)
        names = [k.state, k.fence, lease.lease_key(7), lease.fence_key(7)]
        owner = cluster.master_of(k.tag)
        assert cluster.node(owner).exists(*names) == 4
        slot = cluster.keyslot(k.tag)
        for p in cluster.ports:
            if p != owner:
                assert cluster.node(p).execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
    finally:
        lease.close()
        store.delete(7)


@pytest.mark.parametrize("name", SIGNAL_CONTRACT)
def test_signal_contract(name: str, cluster: LocalCluster, prefix: str) -> None:
    sig = RedisSignal.from_url(cluster.url, prefix=prefix)
    try:
        assert sig.subscribed
        getattr(signal_contract, name)(sig)
    finally:
        sig.close()


def test_signal_reaches_another_replica_whichever_node_publishes(
    cluster: LocalCluster, prefix: str
) -> None:
    a = RedisSignal.from_url(cluster.url, prefix=prefix)
    b = RedisSignal.from_url(cluster.url, prefix=prefix)
    try:
        assert a.subscribed and b.subscribed
        waiter, got = signal_contract._wait_in_thread(b, 10.0, [7])
        a.notify(7)
        waiter.join(5.0)
        assert got == [{7}]
        assert a.wait(1.0) == {7} and a.wait(0.3) == set()  # once for the sender too
        # Classic PUBLISH is broadcast over the cluster bus: any master reaches the listener,
        # which is subscribed on one node only.
        assert cluster.subscriber_node(b.channel) is not None
        for i, p in enumerate(cluster.ports):
            cluster.node(p).publish(b.channel, str(100 + i))
            assert b.wait(5.0, [100 + i]) == {100 + i}, p
    finally:
        a.close()
        b.close()


# --- two production replicas on the cluster -------------------------------------------------------


P_REWARD = {"a": 0.2, "b": 0.5, "c": 0.8}


def select_update(
    target: str, name: str, n: int, acked: list, lock: threading.Lock, seed: int
) -> None:
    """n Selects of experiment ``name``, each rewarded on the same replica."""
    rng = random.Random(seed)
    with Client(target, retries=3, timeout=10) as c:
        for _ in range(n):
            (d,) = c.select(NS, name)
            v = float(rng.random() < P_REWARD[d.arm_ids[0]])
            (ack,) = c.update(NS, name, {d.event_id: v})
            with lock:
                acked.append((d.event_id, d.arm_ids[0], v, ack.sequence))


def wait_watermark(target: str, name: str, seq: int, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    with Client(target) as c:
        while time.monotonic() - t0 < timeout:
            (d,) = c.select(NS, name)
            if d.applied_watermark >= seq:
                return
            time.sleep(0.02)
    raise AssertionError(f"{target} {name}: watermark never reached {seq} in {timeout} s")


def experiment_id(db_url: str, name: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.select(experiments.c.id).where(experiments.c.name == name)).one()[0]
            )
    finally:
        engine.dispose()


def assert_same_model(targets: list[str], name: str, want: dict[str, float]) -> None:
    views = []
    for t in targets:
        with Client(t) as c:
            s = c.stats(NS, name)
        views.append((s.version, {a.arm_id: a.model_mean for a in s.arms}))
    assert all(v == views[0] for v in views), views
    for arm, mean in views[0][1].items():
        assert mean == pytest.approx(want[arm], abs=1e-12), (name, arm, mean, want[arm])


def test_two_replicas_with_experiments_on_two_masters(
    tmp_path: pathlib.Path,
    shared: tuple[str, str],  # noqa: F811
    cluster: LocalCluster,
    cluster_client: RedisCluster,
) -> None:
    """Production mode on the cluster: experiments created until their hash tags land on at
    least two masters, concurrent Select + Update on both replicas, then per experiment every
    acknowledged reward applied once, a gapless apply chain with fences never going down, and
    both replicas serving the model the applied rows give."""
    db_url, prefix = shared
    a = replica(tmp_path, "a", db_url, prefix, cluster.url).start()
    try:
        b = replica(tmp_path, "b", db_url, prefix, cluster.url).start()
        try:
            ids: dict[str, int] = {}
            owner: dict[str, int] = {}
            with Client(a.target) as c:
                for i in range(12):
                    name = f"e{i}"
                    c.create_experiment(NS, name, "beta_ts", ARMS)
                    ids[name] = experiment_id(db_url, name)
                    owner[name] = cluster.master_of(keys_for(prefix, ids[name]).tag)
                    if len(ids) >= 2 and len(set(owner.values())) >= 2:
                        break
            assert len(set(owner.values())) >= 2, owner

            acked: dict[str, list] = {name: [] for name in ids}
            lock = threading.Lock()
            threads = [
                threading.Thread(
                    target=select_update, args=(t.target, name, 30, acked[name], lock, 10 * k + j)
                )
                for k, name in enumerate(ids)
                for j, t in enumerate([a, b, a, b])
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

            leaders = {}
            for name, exp in ids.items():
                assert len(acked[name]) == 120
                top = max(x[3] for x in acked[name])
                for r in (a, b):
                    wait_watermark(r.target, name, top)
                check_log(db_url, acked[name], exp, only_acked=True)
                want = applied_means(db_url, exp)
                assert want == beta_means((arm, v) for _e, arm, v, _s in acked[name])
                assert_same_model([a.target, b.target], name, want)
                # The experiment's keys (state, parts, lease) live on the master of its tag.
                k = keys_for(prefix, exp)
                lease_key = f"{k.tag}:lease"
                names = [k.state, k.parts, k.part_versions, lease_key, f"{k.tag}:lease_fence"]
                assert cluster.node(owner[name]).exists(*names) == len(names), name
                holder = cluster_client.hget(lease_key, "holder")
                leaders[name] = None if holder is None else int(holder.decode().split(":")[1])
                assert leaders[name] in (a.proc.pid, b.proc.pid)  # type: ignore[union-attr]
            print(
                f"experiments {ids}, slots "
                f"{ {n: cluster.keyslot(keys_for(prefix, e).tag) for n, e in ids.items()} }, "
                f"masters {owner} ({len(set(owner.values()))} of {MASTERS}), leaders {leaders}"
            )
        finally:
            b.stop()
    finally:
        a.stop()


# --- last: a node goes away and comes back --------------------------------------------------------


def test_signal_listener_resubscribes_when_its_node_restarts(
    cluster: LocalCluster, prefix: str
) -> None:
    sig = RedisSignal.from_url(cluster.url, prefix=prefix)
    try:
        assert sig.subscribed
        port = cluster.subscriber_node(sig.channel)
        assert port is not None
        cluster.kill_node(port)  # SIGKILL: the subscription's node is gone
        deadline = time.monotonic() + 5.0
        while sig.subscribed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sig.subscribed
        time.sleep(0.5)  # down for a while: refused reconnects, with backoff
        cluster.start_node(port)  # back with its nodes.conf: the same node, the same slots
        sender = cluster.node(next(p for p in cluster.ports if p != port))
        deadline = time.monotonic() + 15.0
        got: set[int] = set()
        while not got and time.monotonic() < deadline:
            sender.publish(sig.channel, "11")  # lost until the listener is back
            got = sig.wait(0.25, [11])
        assert got == {11} and sig.subscribed
        assert cluster.subscriber_node(sig.channel) is not None
    finally:
        sig.close()
        cluster.wait_ok()


def test_server_logs_redact_cluster_and_database_passwords() -> None:
    """The server logs its Redis and database URLs through ``config.redacted``."""
    from banditd.service.config import redacted

    assert (
        redacted("redis+cluster://u:s3cret@h1:7000,h2:7001/")
        == "redis+cluster://u:***@h1:7000,h2:7001/"
    )
    assert "s3cret" not in redacted("redis://:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in redacted("rediss+cluster://h1:7000/?password=s3cret")
    assert "s3cret" not in redacted("postgresql+psycopg://u:s3cret@h/db")
