"""Production mode against the real servers: replicas of `banditd serve` sharing one Redis and one
PostgreSQL (each test with its own database and key prefix), one learner per experiment."""

from __future__ import annotations

import json
import os
import pathlib
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

import psycopg
import pytest
import redis
import sqlalchemy as sa
from banditd.clients import Client
from banditd.clients.errors import NotFound
from banditd.clients.ids import new_event_id
from banditd.store.schema import apply_records, arms, decisions, feedback
from server_proc import ServerProcess

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
REDIS_URL = "redis://127.0.0.1:6379/0"
NS, NAME = "prod", "ab"
ARMS = ["a", "b", "c"]
LOAD = pathlib.Path(__file__).with_name("replica_load.py")
TTL_S = 3.0  # lease: a killed learner is replaced within this (plus a learner pass)


def _down() -> str | None:
    try:
        psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3).close()
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except (psycopg.Error, redis.exceptions.RedisError) as e:
        return f"PostgreSQL or Redis unreachable ({e.__class__.__name__}: {e})"
    return None


pytestmark = pytest.mark.skipif(_down() is not None, reason=str(_down()))


@pytest.fixture
def shared() -> Iterator[tuple[str, str]]:
    """(database URL, Redis prefix) of this test alone; both removed afterwards."""
    db = f"banditd_repl_{uuid.uuid4().hex[:10]}"
    prefix = f"banditd-repl-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    try:
        yield PG_URL.format(db=db), prefix
    finally:
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match="{" + prefix + ":*", count=1000))
        if keys:
            r.delete(*keys)
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture
def pair(tmp_path: pathlib.Path, shared: tuple[str, str]) -> Iterator[tuple[ServerProcess, ...]]:
    """Replicas a and b on this test's database and prefix, stopped afterwards."""
    url, prefix = shared
    a = replica(tmp_path, "a", url, prefix).start()
    try:
        b = replica(tmp_path, "b", url, prefix).start()
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def replica(
    tmp: pathlib.Path, name: str, url: str, prefix: str, redis_url: str = REDIS_URL
) -> ServerProcess:
    return ServerProcess(
        tmp / name,
        "--database-url",
        url,
        "--redis-url",
        redis_url,
        "--redis-prefix",
        prefix,
        "--no-precompile",
        env={"BANDITD_LEASE_TTL_S": str(TTL_S)},
    )


def leader_pid(prefix: str) -> int | None:
    """The pid of the replica holding the (only) experiment's learner lease."""
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match="{" + prefix + ":exp:*}:lease", count=1000))
    assert len(keys) <= 1, keys
    holder = r.hget(keys[0], "holder") if keys else None
    return None if holder is None else int(holder.decode().split(":")[1])


def select_update(target: str, n: int, acked: list, lock: threading.Lock, seed: int) -> None:
    """n Selects, each rewarded (on the same replica) with a value that depends on the arm."""
    rng = random.Random(seed)
    with Client(target, retries=3, timeout=10) as c:
        for _ in range(n):
            (d,) = c.select(NS, NAME)
            v = float(rng.random() < {"a": 0.2, "b": 0.5, "c": 0.8}[d.arm_ids[0]])
            (ack,) = c.update(NS, NAME, {d.event_id: v})
            with lock:
                acked.append((d.event_id, d.arm_ids[0], v, ack.sequence))


def wait_watermark(target: str, seq: int, timeout: float = 30.0) -> float:
    """Seconds until a Select on ``target`` reports an applied watermark >= seq."""
    t0 = time.monotonic()
    with Client(target) as c:
        while time.monotonic() - t0 < timeout:
            (d,) = c.select(NS, NAME)
            if d.applied_watermark >= seq:
                return time.monotonic() - t0
            time.sleep(0.02)
    raise AssertionError(f"{target}: watermark never reached {seq} in {timeout} s")


def check_log(
    url: str, acked: list, exp: int | None = None, only_acked: bool = False
) -> dict[int, int]:
    """Every acknowledged reward in the log exactly once and applied exactly once; apply records
    a gapless chain; returns {version_to: fence} of the apply records. ``exp``: that experiment
    alone (None: the log's only one); ``only_acked``: no winning reward but the acknowledged."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            fb = conn.execute(
                sa.select(
                    feedback.c.seq,
                    feedback.c.event_id,
                    feedback.c.kind,
                    feedback.c.reward,
                    feedback.c.applied_version,
                ).where(sa.true() if exp is None else feedback.c.experiment_id == exp)
            ).all()
            recs = conn.execute(
                sa.select(
                    apply_records.c.version_from, apply_records.c.version_to, apply_records.c.fence
                )
                .where(sa.true() if exp is None else apply_records.c.experiment_id == exp)
                .order_by(apply_records.c.version_to)
            ).all()
    finally:
        engine.dispose()
    by_seq = {r.seq: r for r in fb}
    for eid, _arm, v, seq in acked:
        row = by_seq[seq]
        assert (row.event_id, row.kind, row.reward) == (eid, "reward", v)
        assert row.applied_version is not None, f"acknowledged reward {seq} never applied"
    winners = [r for r in fb if r.kind == "reward"]
    if only_acked:
        assert len(winners) == len(acked)  # nothing but what was acknowledged
    assert len({r.event_id for r in winners}) == len(winners)  # one winning reward per event
    # Versions: 1, 2, 3, ... each from the previous, fences never going down along the chain.
    assert [r.version_to for r in recs] == list(range(1, len(recs) + 1))
    assert all(r.version_from == r.version_to - 1 for r in recs)
    fences = [r.fence for r in recs]
    assert fences == sorted(fences), fences
    return {r.version_to: r.fence for r in recs}


def model(target: str) -> tuple[int, dict[str, float]]:
    """(state version, posterior mean per arm) as the replica's own state gives them."""
    with Client(target) as c:
        s = c.stats(NS, NAME)
    return s.version, {a.arm_id: a.model_mean for a in s.arms}


def beta_means(arm_rewards: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Beta(1 + successes, 1 + failures) posterior means per arm."""
    sf = {a: [0, 0] for a in ARMS}
    for arm, r in arm_rewards:
        sf[arm][0 if r >= 0.5 else 1] += 1
    return {a: (1 + s) / (2 + s + f) for a, (s, f) in sf.items()}


def expected_means(acked: list) -> dict[str, float]:
    """What the acknowledged rewards give."""
    return beta_means((arm, v) for _eid, arm, v, _seq in acked)


def assert_same_model(targets: list[str], want: dict[str, float]) -> None:
    """Every replica serves the same state, and its posterior means are ``want``."""
    views = [model(t) for t in targets]
    assert all(v == views[0] for v in views), views
    for arm, mean in views[0][1].items():
        assert mean == pytest.approx(want[arm], abs=1e-12), (arm, mean, want[arm])


def test_two_replicas_share_experiments_one_learner_and_state(pair, shared) -> None:
    url, prefix = shared
    a, b = pair
    with Client(a.target) as c:
        c.create_experiment(NS, NAME, "beta_ts", ARMS)
    acked: list = []
    lock = threading.Lock()
    threads = [
        threading.Thread(target=select_update, args=(t.target, 60, acked, lock, i))
        for i, t in enumerate([a, b, a, b])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acked) == 240
    top = max(x[3] for x in acked)
    for t in (a, b):  # both replicas end up serving a state that covers every reward
        wait_watermark(t.target, top)
    pid = leader_pid(prefix)
    assert pid in (a.proc.pid, b.proc.pid)  # type: ignore[union-attr]
    # One learner at a time (a loaded machine may still see a takeover: the chain check
    # holds either way)
    check_log(url, acked)
    assert_same_model([a.target, b.target], expected_means(acked))


def free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


def applied_means(url: str, exp: int | None = None) -> dict[str, float]:
    """Beta(1 + s, 1 + f) means from the applied reward rows joined to their decisions' arms
    (of experiment ``exp``; None: the log's only one): what the state must hold, recomputed from
    the log alone."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            q = (
                sa.select(arms.c.arm_id, feedback.c.reward)
                .select_from(
                    feedback.join(
                        decisions,
                        (decisions.c.experiment_id == feedback.c.experiment_id)
                        & (decisions.c.event_id == feedback.c.event_id),
                    ).join(
                        arms,
                        (arms.c.experiment_id == decisions.c.experiment_id)
                        & (arms.c.slot == decisions.c.arm_slot),
                    )
                )
                .where(feedback.c.applied_version.is_not(None))
            )
            if exp is not None:
                q = q.where(feedback.c.experiment_id == exp)
            rows = conn.execute(q).all()
    finally:
        engine.dispose()
    return beta_means(rows)


def test_kill_9_replicas_mid_load_loses_nothing(tmp_path, shared) -> None:
    """Three replicas, three client processes, four kill -9 mid-load (the learner's holder at
    least twice); then: every acknowledged reward in the log once and applied once, a gapless
    apply chain with fences never going down, and every replica's model equal to the one
    recomputed from the applied rows."""
    url, prefix = shared
    ports = [free_port() for _ in range(3)]
    names = ["a", "b", "c"]

    def start(i: int, incarnation: int) -> ServerProcess:
        p = replica(tmp_path, f"{names[i]}{incarnation}", url, prefix)
        p.extra = (*p.extra, "--port", str(ports[i]))
        return p.start()

    procs = [start(i, 0) for i in range(3)]
    loaders: list[subprocess.Popen] = []
    stop = tmp_path / "stop"
    outs = [tmp_path / f"load{i}.jsonl" for i in range(3)]
    try:
        with Client(procs[0].target) as c:
            c.create_experiment(NS, NAME, "beta_ts", ARMS)
        targets = [f"127.0.0.1:{p}" for p in ports]
        for i in range(3):
            loaders.append(
                subprocess.Popen(
                    [sys.executable, str(LOAD), str(outs[i]), str(stop), str(i), *targets],
                    env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
                )
            )
        holder_kills = 0
        for k in range(4):
            time.sleep(2.0)  # load runs meanwhile
            pid = leader_pid(prefix)
            by_pid = {p.proc.pid: i for i, p in enumerate(procs) if p.proc is not None}
            victim = by_pid[pid] if (k % 2 == 0 and pid in by_pid) else (k % 3)
            holder_kills += int(procs[victim].proc is not None and procs[victim].proc.pid == pid)
            procs[victim].kill()  # SIGKILL, mid-load
            time.sleep(0.5)
            procs[victim] = start(victim, k + 1)
        assert holder_kills >= 2
        time.sleep(2.0)
        stop.touch()
        for lp in loaders:
            assert lp.wait(60) == 0
        acked, backwards = [], 0
        for out in outs:
            for line in out.read_text().splitlines():
                rec = json.loads(line)
                if isinstance(rec, dict):
                    backwards += rec["backwards"]
                else:
                    eid, arm, v, seq, kind = rec
                    assert kind == "reward"
                    acked.append((eid, arm, v, seq))
        assert backwards == 0  # no replica ever served an older state version than before
        assert len(acked) >= 100, len(acked)  # the load kept going through the kills
        assert len({x[0] for x in acked}) == len(acked)
        top = max(x[3] for x in acked)
        for p in procs:
            wait_watermark(p.target, top, timeout=60)
        fences = check_log(url, acked)
        assert len(set(fences.values())) >= 3  # takeovers, each with a higher fence
        seen = sorted(set(fences.values()))
        print(f"acked {len(acked)}, holder kills {holder_kills}, fences {seen}")
        assert_same_model([p.target for p in procs], applied_means(url))
    finally:
        stop.touch()
        for lp in loaders:
            if lp.poll() is None:
                lp.kill()
        for p in procs:
            if p.proc is not None:
                p.stop()


def test_updates_for_another_replicas_decisions(pair) -> None:
    """A reward sent to one replica for a decision another replica made and logged."""
    a, b = pair
    with Client(a.target) as ca, Client(b.target) as cb:
        ca.create_experiment(NS, NAME, "beta_ts", ARMS)
        ds = [ca.select(NS, NAME)[0] for _ in range(20)]
        # At once: the last decisions may still sit in a's writer queue (10 ms linger);
        # b waits for them rather than answer NOT_FOUND.
        acks = cb.update(NS, NAME, {d.event_id: 1.0 for d in ds})
        assert [x.kind for x in acks] == ["reward"] * 20
        with pytest.raises(NotFound, match="no decision"):
            cb.update(NS, NAME, {new_event_id(): 1.0})  # never issued anywhere
        top = max(x.sequence for x in acks)
    wait_watermark(a.target, top)
    wait_watermark(b.target, top)
    assert_same_model([a.target, b.target], beta_means((d.arm_ids[0], 1.0) for d in ds))


def test_experiment_changes_reach_the_other_replicas(pair) -> None:
    """Arms added on one replica and a new revision made on another: every replica serves the
    change within a few seconds and learning goes on under it."""
    a, b = pair
    with Client(a.target) as ca, Client(b.target) as cb:
        ca.create_experiment(NS, NAME, "beta_ts", ARMS)
        cb.select(NS, NAME)  # b has it loaded
        ca.update_experiment(NS, NAME, add_arms=["d"])

        def served(c: Client) -> set[str]:
            return {x.id for x in c.get_experiment(NS, NAME).arms}

        deadline = time.monotonic() + 10
        while served(cb) != {"a", "b", "c", "d"} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served(cb) == {"a", "b", "c", "d"}
        seen = {cb.select(NS, NAME)[0].arm_ids[0] for _ in range(200)}
        assert "d" in seen  # b decides with the new arm, not only lists it

        upd = cb.update_experiment(NS, NAME, hyperparameters={"prior_a": 2.0})
        assert upd.new_revision
        deadline = time.monotonic() + 10
        while ca.get_experiment(NS, NAME).revision != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ca.get_experiment(NS, NAME).revision == 2
        acks, chosen = [], {}
        for c in (ca, cb):
            for _ in range(10):
                (d,) = c.select(NS, NAME)
                assert d.revision == 2
                chosen[d.event_id] = d.arm_ids[0]
                acks.append(c.update(NS, NAME, {d.event_id: 1.0})[0])
        top = max(x.sequence for x in acks)
    wait_watermark(a.target, top)
    wait_watermark(b.target, top)
    va, vb = model(a.target), model(b.target)
    assert va == vb
    # Revision 2 starts fresh, Beta(2, 1) prior, and learned exactly its 20 successes.
    wins = {arm: 0 for arm in ["a", "b", "c", "d"]}
    for x in acks:
        wins[chosen[x.event_id]] += 1
    for arm, mean in va[1].items():
        assert mean == pytest.approx((2 + wins[arm]) / (3 + wins[arm]), abs=1e-12), arm


def test_only_changed_arms_are_republished(pair, shared) -> None:
    """Rewards for one arm only: its part is republished at every new version, the others stay
    at the version they were first published at, and the follower still matches the log."""
    _, prefix = shared
    a, b = pair
    with Client(a.target) as ca, Client(b.target) as cb:
        ca.create_experiment(NS, NAME, "beta_ts", ARMS)
        acked = []
        for i in range(30):
            c = (ca, cb)[i % 2]
            (d,) = c.select(NS, NAME, eligible=["c"])
            (ack,) = c.update(NS, NAME, {d.event_id: 1.0})
            acked.append((d.event_id, "c", 1.0, ack.sequence))
            time.sleep(0.06)  # spread over several publications (<= 20 per second)
    top = max(x[3] for x in acked)
    wait_watermark(a.target, top)
    wait_watermark(b.target, top)
    r = redis.Redis.from_url(REDIS_URL)
    (key,) = list(r.scan_iter(match="{" + prefix + ":exp:*}:part_versions", count=1000))
    versions = {int(k): int(v) for k, v in r.hgetall(key).items()}
    state_version = int(r.hget(key.replace(b"part_versions", b"state"), "version"))
    # slot 2 is "c"; the untouched arms were written once, at the first publication
    assert versions[2] == state_version > versions[0] == versions[1], versions
    assert_same_model([a.target, b.target], expected_means(acked))
