"""Event log contract, run against SQLite (a temporary file) and the real PostgreSQL (a database
created for this run and dropped after it). PostgreSQL tests skip only if the server is down."""

from __future__ import annotations

import pathlib
import random
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from banditd.store import errors, migrate
from banditd.store.engine import make_engine
from banditd.store.packing import pack_f64, pack_i32
from banditd.store.rows import ArmSpec, Decision, Experiment, Feedback, RevisionSpec
from banditd.store.schema import metadata
from banditd.store.sql import SqlEventLog

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
BACKENDS = ["sqlite", "postgresql"]
PARTIAL_INDEXES = ("uq_feedback_winner", "ix_feedback_pending", "ix_feedback_applied")


def _pg_down_reason() -> str | None:
    try:
        psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3).close()
    except psycopg.Error as e:
        return f"PostgreSQL at {PG_SERVER} unreachable ({e.__class__.__name__}: {e})"
    return None


PG_DOWN = _pg_down_reason()


def _create_pg_database() -> str:
    name = f"banditd_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_pg_database(name: str) -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def fresh_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database of each backend (never migrated)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('fresh') / 'banditd.db'}"
        return
    if PG_DOWN:
        pytest.skip(PG_DOWN)
    name = _create_pg_database()
    try:
        yield PG_URL.format(db=name)
    finally:
        _drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlEventLog]:
    url = f"sqlite:///{tmp_path_factory.mktemp('log') / 'banditd.db'}"
    migrate.upgrade(url)
    log = SqlEventLog.from_url(url)
    yield log
    log.close()


@pytest.fixture(scope="session")
def pg_log() -> Iterator[SqlEventLog]:
    if PG_DOWN:
        pytest.skip(PG_DOWN)
    name = _create_pg_database()
    try:
        url = PG_URL.format(db=name)
        migrate.upgrade(url)
        log = SqlEventLog.from_url(url)
        yield log
        log.close()
    finally:
        _drop_pg_database(name)


@pytest.fixture(params=BACKENDS)
def log(request: pytest.FixtureRequest) -> SqlEventLog:
    """A migrated event log shared by the session; tests keep apart by unique experiments."""
    fixture = "sqlite_log" if request.param == "sqlite" else "pg_log"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def new_experiment(log: SqlEventLog, n_arms: int = 3, namespace: str | None = None) -> Experiment:
    return log.create_experiment(
        namespace or f"ns-{uuid.uuid4().hex[:8]}",
        f"exp-{uuid.uuid4().hex[:8]}",
        config={"epsilon": 0.05, "reward": {"kind": "binary", "wait_s": 60.0}},
        revision=RevisionSpec(1, "linucb", {"alpha": 1.0, "lam": 1.0}, dim=4, feature_schema="f"),
        arms=[ArmSpec(f"arm{i}") for i in range(n_arms)],
    )


def decision(exp: Experiment, event_id: str, slot: int = 0, **kw: object) -> Decision:
    base: dict[str, object] = {
        "experiment_id": exp.id,
        "event_id": event_id,
        "revision": exp.revision,
        "version": 0,
        "chosen": (slot,),
        "slot_propensities": (0.5,),
        "created_at": 1000.0,
        "context": pack_f64([1.0, 2.0, 3.0, 4.0]),
    }
    base.update(kw)
    return Decision(**base)  # type: ignore[arg-type]


def reward(
    exp: Experiment, event_id: str | None, value: float = 1.0, kind: str = "reward"
) -> Feedback:
    return Feedback(exp.id, kind, value, event_id)  # type: ignore[arg-type]


# --- migrations --------------------------------------------------------------------------------


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _indexes(url: str, table: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {ix["name"] for ix in sa.inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def test_migrations_up_down_up(fresh_url: str) -> None:
    assert migrate.current(fresh_url) is None
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == migrate.head() == "0002"
    assert migrate.is_current(fresh_url)
    assert set(metadata.tables) <= _tables(fresh_url)

    # one step back removes only what 0002 added, and forward again restores it
    migrate.downgrade(fresh_url, "0001")
    assert migrate.current(fresh_url) == "0001" and not migrate.is_current(fresh_url)
    assert "ix_feedback_reward_id" not in _indexes(fresh_url, "feedback")
    migrate.upgrade(fresh_url)
    assert "ix_feedback_reward_id" in _indexes(fresh_url, "feedback")

    migrate.downgrade(fresh_url, "base")
    assert migrate.current(fresh_url) is None
    assert _tables(fresh_url) & set(metadata.tables) == set()

    migrate.upgrade(fresh_url)
    log = SqlEventLog.from_url(fresh_url)
    try:
        exp = new_experiment(log)
        assert log.get_experiment(exp.namespace, exp.name) == exp
    finally:
        log.close()


def test_migration_matches_schema_module(fresh_url: str) -> None:
    migrate.upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, metadata) == []
            # The comparison can fail: an index the migration lacks is reported.
            drifted = sa.MetaData()
            for table in metadata.tables.values():
                table.to_metadata(drifted)
            sa.Index("ix_extra", drifted.tables["decisions"].c.unit_id)
            assert compare_metadata(ctx, drifted) != []
            # Alembic does not compare index predicates; check the partial indexes directly.
            if conn.dialect.name == "sqlite":
                q = "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
            else:
                q = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'feedback'"
            defs: dict[str, str] = {r[0]: r[1] for r in conn.execute(sa.text(q))}
    finally:
        engine.dispose()
    for name in PARTIAL_INDEXES:
        assert " WHERE " in defs[name].upper(), defs[name]
    assert "UNIQUE" in defs["uq_feedback_winner"].upper()


def test_sqlite_connection_settings(tmp_path: pathlib.Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/sub/dir/banditd.db", busy_timeout_ms=1234)
    try:
        with engine.connect() as conn:
            got = {
                p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                for p in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert got == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 1234, "foreign_keys": 1}


@pytest.mark.skipif(PG_DOWN is not None, reason=PG_DOWN or "")
def test_postgres_idle_connection_killed_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pooled connection whose backend died while idle (a PostgreSQL restart does this to
    every one) is pinged at checkout and replaced; one in steady use is not pinged."""
    import banditd.store.engine as engine_mod

    name = _create_pg_database()
    engine = make_engine(PG_URL.format(db=name), pool_size=1, max_overflow=0)
    pings: list[int] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: (pings.append(1), real_ping(c))[1])
    try:
        with engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with engine.connect() as conn:  # used again at once: no ping, same backend
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() == first
        assert pings == []
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (first,))
        monkeypatch.setattr(engine_mod, "PING_IDLE_S", 0.0)  # it has now been idle "long"
        with engine.connect() as conn:
            second = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        assert second != first
        assert pings == [1]
    finally:
        engine.dispose()
        _drop_pg_database(name)


def test_engine_refuses_other_databases() -> None:
    with pytest.raises(ValueError, match="database_url"):
        make_engine("mysql://localhost/x")
    with pytest.raises(ValueError, match="in-memory"):
        make_engine("sqlite://")
    with pytest.raises(ValueError, match="make_engine"):
        SqlEventLog(sa.create_engine("sqlite:///unused.db"))  # lacks BEGIN IMMEDIATE


def test_unmigrated_database_names_the_fix(fresh_url: str) -> None:
    log = SqlEventLog.from_url(fresh_url)
    try:
        with pytest.raises(errors.StoreError, match="banditd migrate"):
            log.list_experiments()
    finally:
        log.close()


def test_unreachable_postgres_is_unavailable() -> None:
    log = SqlEventLog.from_url(
        "postgresql+psycopg://postgres@127.0.0.1:1/nothing", connect_args={"connect_timeout": 2}
    )
    try:
        with pytest.raises(errors.Unavailable):
            log.list_experiments()
    finally:
        log.close()


# --- experiments, revisions, arms ----------------------------------------------------------------


def test_experiments_unique_per_namespace(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    assert (exp.status, exp.revision, exp.family) == ("active", 1, "linucb")
    assert exp.config == {"epsilon": 0.05, "reward": {"kind": "binary", "wait_s": 60.0}}
    with pytest.raises(errors.AlreadyExists, match=exp.name):
        log.create_experiment(
            exp.namespace, exp.name, config={}, revision=RevisionSpec(1, "ucb1", {})
        )
    other = log.create_experiment(
        f"{exp.namespace}-b", exp.name, config={}, revision=RevisionSpec(1, "ucb1", {})
    )
    assert other.id != exp.id
    assert log.get_experiment(exp.namespace, exp.name) == exp
    assert log.get_experiment_by_id(exp.id) == exp
    assert log.get_experiment(exp.namespace, "missing") is None
    assert [e.id for e in log.list_experiments(exp.namespace)] == [exp.id]
    everything = log.list_experiments()
    assert {exp.id, other.id} <= {e.id for e in everything}
    assert [(e.namespace, e.name) for e in everything] == sorted(
        (e.namespace, e.name) for e in everything
    )


def test_update_experiment(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    paused = log.update_experiment(exp.id, status="paused", config={"epsilon": 0.2})
    assert (paused.status, paused.config, paused.revision) == ("paused", {"epsilon": 0.2}, 1)
    assert paused.updated_at >= exp.updated_at
    with pytest.raises(ValueError, match="status"):
        log.update_experiment(exp.id, status="stopped")  # type: ignore[arg-type]
    with pytest.raises(errors.NotFound):
        log.update_experiment(10**9, status="active")
    with pytest.raises(errors.NotFound, match="revision"):
        log.update_experiment(exp.id, revision=7)


def test_revisions(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    rev2 = log.add_revision(exp.id, RevisionSpec(2, "lin_ts", {"v": 0.5}, dim=8))
    assert (rev2.revision, rev2.family, rev2.dim, rev2.hyperparameters) == (
        2,
        "lin_ts",
        8,
        {"v": 0.5},
    )
    now = log.get_experiment_by_id(exp.id)
    assert now is not None and (now.revision, now.family) == (2, "lin_ts")
    with pytest.raises(errors.AlreadyExists):
        log.add_revision(exp.id, RevisionSpec(2, "lin_ts", {}))
    with pytest.raises(errors.Conflict):
        log.add_revision(exp.id, RevisionSpec(0, "lin_ts", {}))
    log.add_revision(exp.id, RevisionSpec(3, "ucb1", {}), make_current=False)
    assert log.get_experiment_by_id(exp.id).revision == 2  # type: ignore[union-attr]
    back = log.update_experiment(exp.id, revision=1)
    assert (back.revision, back.family) == (1, "linucb")
    assert [r.revision for r in log.list_revisions(exp.id)] == [1, 2, 3]
    assert log.get_revision(exp.id, 9) is None


def test_arm_slots_are_never_reused(log: SqlEventLog) -> None:
    exp = new_experiment(log, n_arms=2)
    assert [(a.slot, a.arm_id, a.active) for a in log.list_arms(exp.id)] == [
        (0, "arm0", True),
        (1, "arm1", True),
    ]
    retired = log.retire_arms(exp.id, ["arm1", "arm1"])
    assert [(a.arm_id, a.active) for a in retired] == [("arm1", False)]
    assert retired[0].retired_at is not None
    feats = pack_f64([0.25, -1.0])
    added = log.add_arms(exp.id, [ArmSpec("arm2", {"cost": 0.01}, feats)])
    assert [(a.slot, a.arm_id, a.metadata, a.features) for a in added] == [
        (2, "arm2", {"cost": 0.01}, feats)
    ]
    assert np.array_equal(added[0].features_array(), [0.25, -1.0])  # type: ignore[arg-type]
    assert [a.arm_id for a in log.list_arms(exp.id, active_only=True)] == ["arm0", "arm2"]
    with pytest.raises(errors.AlreadyExists, match="arm1"):
        log.add_arms(exp.id, [ArmSpec("arm1")])  # retired ids stay taken
    with pytest.raises(errors.AlreadyExists, match="twice"):
        log.add_arms(exp.id, [ArmSpec("x"), ArmSpec("x")])
    with pytest.raises(errors.NotFound, match="nope"):
        log.retire_arms(exp.id, ["arm0", "nope"])
    assert log.list_arms(exp.id)[0].active  # the failed retire changed nothing
    with pytest.raises(errors.NotFound):
        log.add_arms(10**9, [ArmSpec("y")])


# --- decisions -----------------------------------------------------------------------------------


def test_decisions_round_trip_bytes_exactly(log: SqlEventLog) -> None:
    exp = new_experiment(log, n_arms=5)
    rng = np.random.default_rng(0)
    specials = [0.0, -0.0, 5e-324, 1.7976931348623157e308, -np.inf, np.inf]
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]
    dense = np.concatenate([rng.standard_normal(58), specials, [nan_payload]])
    rows = [
        decision(exp, "dense", context=dense.tobytes(), unit_id="user-1", deadline=1060.5),
        decision(
            exp,
            "sparse-slate",
            slot=4,
            chosen=(4, 0, 2),
            slot_propensities=(0.7, 1 / 3, 0.5),
            context=pack_f64([0.5, -2.0]),
            sparse_indices=pack_i32([3, 17]),
            arm_feature_slots=pack_i32([0, 2, 4]),
            arm_features=pack_f64(rng.standard_normal((3, 2))),
            eligible=pack_i32([0, 2, 4]),
            holdout=True,
            deferred=True,
            version=7,
        ),
        decision(exp, "no-context", context=None),
    ]
    assert log.insert_decisions(rows) == set()
    got = log.get_decisions(exp.id, ["dense", "sparse-slate", "no-context", "missing"])
    assert set(got) == {"dense", "sparse-slate", "no-context"}
    for row in rows:
        assert got[row.event_id] == row
    assert got["dense"].context == dense.tobytes()  # NaN payload bit for bit
    assert got["sparse-slate"].propensity == pytest.approx(0.7 / 6)
    assert np.array_equal(got["sparse-slate"].eligible_slots(), [0, 2, 4])  # type: ignore[arg-type]


def test_decisions_first_write_is_kept(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    assert log.insert_decisions([decision(exp, "a", slot=1)]) == set()
    skipped = log.insert_decisions(
        [decision(exp, "a", slot=2), decision(exp, "b", slot=0), decision(exp, "b", slot=2)]
    )
    assert skipped == {(exp.id, "a"), (exp.id, "b")}
    got = log.get_decisions(exp.id, ["a", "b"])
    assert (got["a"].chosen, got["b"].chosen) == ((1,), (0,))
    with pytest.raises(ValueError, match="propensity"):
        log.insert_decisions([decision(exp, "c", chosen=(0, 1), slot_propensities=(1.0,))])


# --- feedback ------------------------------------------------------------------------------------


def test_feedback_kinds_and_first_reward_wins(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    log.insert_decisions([decision(exp, e) for e in ("e1", "e2", "e3")])
    obs = Feedback(
        exp.id,
        "observation",
        0.25,
        chosen=(2,),
        propensity=0.4,
        context=pack_f64([9.0, 8.0, 7.0, 6.0]),
        event_time=999.0,
    )
    acks = log.insert_feedback(
        [
            reward(exp, "e1", 1.0),
            reward(exp, "e1", 0.0),  # second reward in the same batch
            reward(exp, "e2", 0.0, kind="default"),
            obs,
            reward(exp, "ghost", 1.0, kind="orphan"),
            reward(exp, "e3", 1.0, kind="late"),
        ]
    )
    assert [a.kind for a in acks] == [
        "reward",
        "duplicate",
        "default",
        "observation",
        "orphan",
        "late",
    ]
    assert len({a.seq for a in acks}) == len(acks)
    # Acks map back to the caller's rows even though rows are inserted in key order.
    by_seq = {p.feedback.seq: p.feedback for p in log.pending_feedback(exp.id, 10)}
    assert (by_seq[acks[0].seq].event_id, by_seq[acks[0].seq].reward) == ("e1", 1.0)
    assert (by_seq[acks[2].seq].event_id, by_seq[acks[2].seq].kind) == ("e2", "default")
    assert by_seq[acks[3].seq].chosen == (2,) and by_seq[acks[3].seq].event_time == 999.0
    later = log.insert_feedback(
        [reward(exp, "e1", 1.0), reward(exp, "e2", 1.0), reward(exp, "e2", 1.0, kind="default")]
    )
    assert [a.kind for a in later] == ["duplicate", "duplicate", "duplicate"]
    c = log.counts(exp.id)
    assert dict(c.feedback) == {
        "reward": 1,
        "default": 1,
        "duplicate": 4,
        "late": 1,
        "orphan": 1,
        "observation": 1,
    }
    with pytest.raises(ValueError, match="event_id"):
        log.insert_feedback([reward(exp, None)])
    with pytest.raises(errors.NotFound):
        log.insert_feedback([Feedback(10**9, "reward", 1.0, "x")])


@pytest.mark.parametrize("threads", [8])
def test_first_reward_wins_under_concurrency(log: SqlEventLog, threads: int) -> None:
    exp = new_experiment(log)
    events = [f"ev{i}" for i in range(30)]
    log.insert_decisions([decision(exp, e) for e in events])
    barrier = threading.Barrier(threads)
    acks: list[tuple[str, str]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine = events[:]
        rng.shuffle(mine)
        try:
            barrier.wait()
            for i in range(0, len(mine), 5):  # small batches interleave more
                batch = mine[i : i + 5]
                kinds = ["default" if rng.random() < 0.2 else "reward" for _ in batch]
                got = log.insert_feedback(
                    [reward(exp, e, 1.0, kind=k) for e, k in zip(batch, kinds, strict=True)]
                )
                with lock:
                    acks.extend((e, a.kind) for e, a in zip(batch, got, strict=True))
        except BaseException as e:  # surfaced below: a thread's exception would be lost
            failures.append(e)

    workers = [threading.Thread(target=writer, args=(s,)) for s in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert failures == []
    winners = Counter(e for e, k in acks if k in ("reward", "default"))
    assert winners == Counter(events)  # exactly one winner per event id
    assert sum(k == "duplicate" for _, k in acks) == len(events) * (threads - 1)
    c = log.counts(exp.id)
    assert c.feedback["reward"] + c.feedback["default"] == len(events)
    assert c.feedback["duplicate"] == len(events) * (threads - 1)


def test_opposite_batch_orders_do_not_deadlock(log: SqlEventLog) -> None:
    """Two writers inserting the same event ids in opposite orders: without a global lock
    order PostgreSQL aborts one of them with a deadlock (seen before rows were sorted)."""
    failures: list[BaseException] = []
    for _trial in range(10):
        exp = new_experiment(log)
        events = [f"e{i:02d}" for i in range(40)]
        log.insert_decisions([decision(exp, e) for e in events])
        barrier = threading.Barrier(2)

        def writer(
            order: list[str], exp: Experiment = exp, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            try:
                acks = log.insert_feedback([reward(exp, e) for e in order])
                assert len(acks) == len(order)
            except BaseException as e:  # surfaced below
                failures.append(e)

        workers = [threading.Thread(target=writer, args=(o,)) for o in (events, events[::-1])]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert log.counts(exp.id).feedback["reward"] == len(events)
    assert failures == []


def test_lost_race_is_caught_by_the_unique_index(
    log: SqlEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-check can be stale on PostgreSQL (another writer commits between it and the
    insert). Simulate exactly that: the first check sees no winner, so the insert hits
    uq_feedback_winner and the batch must be retried — not fail, not store a second winner."""
    exp = new_experiment(log)
    log.insert_decisions([decision(exp, "e1"), decision(exp, "e2")])
    log.insert_feedback([reward(exp, "e1")])
    real = SqlEventLog._winners
    calls: list[int] = []

    def stale_once(self: SqlEventLog, conn: sa.Connection, rows: list[Feedback]) -> set:
        calls.append(1)
        return set() if len(calls) == 1 else real(self, conn, rows)

    monkeypatch.setattr(SqlEventLog, "_winners", stale_once)
    acks = log.insert_feedback([reward(exp, "e2"), reward(exp, "e1")])
    assert len(calls) == 2  # the first attempt was rolled back by the index
    assert [a.kind for a in acks] == ["reward", "duplicate"]
    c = log.counts(exp.id)
    assert (c.feedback["reward"], c.feedback["duplicate"]) == (2, 1)


# --- learner: pending, apply, recovery, checkpoints -------------------------------------------


def test_pending_joins_decisions_in_seq_order(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    log.insert_decisions([decision(exp, "d1", slot=1), decision(exp, "d2", slot=2)])
    first = log.insert_feedback([reward(exp, "d2", 0.5), reward(exp, "d2", 0.7)])  # 2nd: dup
    obs = Feedback(exp.id, "observation", 1.0, chosen=(0,), context=pack_f64([1, 1, 1, 1]))
    second = log.insert_feedback([obs])
    third = log.insert_feedback(
        [reward(exp, "d9", 1.0, kind="late"), reward(exp, "d1", 1.0, kind="default")]
    )
    acks = [first[0], second[0], third[1]]
    pending = log.pending_feedback(exp.id, limit=10)
    assert [p.feedback.seq for p in pending] == [a.seq for a in acks]
    assert [a.kind for a in first + third] == ["reward", "duplicate", "late", "default"]
    assert [p.feedback.kind for p in pending] == ["reward", "observation", "default"]
    assert pending[0].decision is not None and pending[0].decision.chosen == (2,)
    assert pending[1].decision is None
    assert np.array_equal(pending[1].feedback.context_array(), [1, 1, 1, 1])  # type: ignore[arg-type]
    assert pending[2].decision is not None and pending[2].decision.event_id == "d1"
    assert pending[0].feedback.committed_at is not None
    assert [p.feedback.seq for p in log.pending_feedback(exp.id, limit=2)] == [
        acks[0].seq,
        acks[1].seq,
    ]


def test_mark_applied_is_atomic_and_applies_once(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    log.insert_decisions([decision(exp, f"e{i}") for i in range(4)])
    acks = log.insert_feedback([reward(exp, f"e{i}") for i in range(3)])
    fence = log.acquire_fence(exp.id)
    seqs = [a.seq for a in acks]

    rec = log.mark_applied(exp.id, seqs[:2], version_from=0, version_to=1, fence=fence)
    assert (rec.version_from, rec.version_to, rec.fence, rec.n_rows) == (0, 1, fence, 2)
    assert [p.feedback.seq for p in log.pending_feedback(exp.id, 10)] == [seqs[2]]

    with pytest.raises(errors.Conflict, match="already applied"):
        log.mark_applied(exp.id, [seqs[2]], version_from=0, version_to=1, fence=fence)
    with pytest.raises(errors.Conflict, match="version_from"):
        log.mark_applied(exp.id, [seqs[2]], version_from=5, version_to=6, fence=fence)
    # One already-applied row in the batch: the whole apply is refused, nothing written.
    with pytest.raises(errors.Conflict, match="not pending"):
        log.mark_applied(exp.id, [seqs[2], seqs[0]], version_from=1, version_to=2, fence=fence)
    assert [p.feedback.seq for p in log.pending_feedback(exp.id, 10)] == [seqs[2]]
    assert log.latest_apply(exp.id) == rec

    newer = log.acquire_fence(exp.id)
    assert newer == fence + 1 == log.current_fence(exp.id)
    with pytest.raises(errors.StaleFence):
        log.mark_applied(exp.id, [seqs[2]], version_from=1, version_to=2, fence=fence)
    log.mark_applied(exp.id, [seqs[2]], version_from=1, version_to=2, fence=newer)
    c = log.counts(exp.id)
    assert (c.applied, c.version, c.decisions) == (3, 2, 4)
    assert log.pending_feedback(exp.id, 10) == []


def test_concurrent_learners_apply_a_version_once(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    log.insert_decisions([decision(exp, f"e{i}") for i in range(8)])
    seqs = [a.seq for a in log.insert_feedback([reward(exp, f"e{i}") for i in range(8)])]
    fence = log.acquire_fence(exp.id)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def learner(part: list[int]) -> None:
        barrier.wait()
        try:
            log.mark_applied(exp.id, part, version_from=0, version_to=1, fence=fence)
            outcomes.append("applied")
        except errors.Conflict:
            outcomes.append("refused")

    parts = [seqs[0:2], seqs[2:4], seqs[4:6], seqs[0:2]]
    workers = [threading.Thread(target=learner, args=(p,)) for p in parts]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(outcomes) == ["applied", "refused", "refused", "refused"]
    assert log.counts(exp.id).applied == 2


def test_applied_batches_replay_in_order(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    log.insert_decisions([decision(exp, f"e{i}", slot=i % 3) for i in range(6)])
    fence = log.acquire_fence(exp.id)
    batches = [["e0", "e1"], ["e2"], ["e3", "e4", "e5"]]
    applied: list[list[int]] = []
    for v, ids in enumerate(batches):
        seqs = [a.seq for a in log.insert_feedback([reward(exp, e, float(v)) for e in ids])]
        log.mark_applied(exp.id, seqs, version_from=v, version_to=v + 1, fence=fence)
        applied.append(seqs)
    replay = list(log.applied_batches_after(exp.id, 1))
    assert [(b.record.version_from, b.record.version_to) for b in replay] == [(1, 2), (2, 3)]
    assert [[p.feedback.seq for p in b.rows] for b in replay] == applied[1:]
    assert [p.decision.event_id for p in replay[1].rows] == ["e3", "e4", "e5"]  # type: ignore[union-attr]
    assert all(p.feedback.applied_version == 3 for p in replay[1].rows)
    assert list(log.applied_batches_after(exp.id, 3)) == []


def test_checkpoints(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    assert log.latest_checkpoint(exp.id) is None
    fence = log.acquire_fence(exp.id)
    for version in (1, 2, 3):
        log.save_checkpoint(
            exp.id, revision=1, version=version, blob=bytes([version]) * 10, fence=fence
        )
    log.save_checkpoint(exp.id, revision=1, version=3, blob=b"again", fence=fence)  # replaced
    latest = log.latest_checkpoint(exp.id)
    assert latest is not None and (latest.version, latest.blob) == (3, b"again")
    log.add_revision(exp.id, RevisionSpec(2, "linucb", {"alpha": 2.0}))
    log.save_checkpoint(exp.id, revision=2, version=4, blob=b"r2", fence=fence)
    assert log.latest_checkpoint(exp.id).revision == 2  # type: ignore[union-attr]
    assert log.latest_checkpoint(exp.id, revision=1).blob == b"again"  # type: ignore[union-attr]
    assert log.prune_checkpoints(exp.id, keep=2) == 2
    assert log.latest_checkpoint(exp.id, revision=1).version == 3  # type: ignore[union-attr]
    log.acquire_fence(exp.id)
    with pytest.raises(errors.StaleFence):
        log.save_checkpoint(exp.id, revision=2, version=5, blob=b"stale", fence=fence)
    assert log.latest_checkpoint(exp.id).version == 4  # type: ignore[union-attr]


def test_counts(log: SqlEventLog) -> None:
    exp = new_experiment(log)
    empty = log.counts(exp.id)
    assert (empty.decisions, empty.applied, empty.version) == (0, 0, 0)
    assert set(empty.feedback.values()) == {0}
    log.insert_decisions([decision(exp, f"e{i}") for i in range(5)])
    acks = log.insert_feedback(
        [reward(exp, "e0"), reward(exp, "e0"), reward(exp, "e1", kind="late")]
    )
    log.mark_applied(
        exp.id, [acks[0].seq], version_from=0, version_to=1, fence=log.acquire_fence(exp.id)
    )
    other = new_experiment(log)
    log.insert_decisions([decision(other, "e0")])  # another experiment's rows are not counted
    c = log.counts(exp.id)
    assert (c.decisions, c.applied, c.version) == (5, 1, 1)
    assert (c.feedback["reward"], c.feedback["duplicate"], c.feedback["late"]) == (1, 1, 1)


def test_clock_is_injectable(log: SqlEventLog) -> None:
    clocked = SqlEventLog(log.engine, clock=lambda: 42.5)
    exp = new_experiment(clocked)
    ack = clocked.insert_feedback([Feedback(exp.id, "observation", 1.0, chosen=(0,))])[0]
    row = clocked.pending_feedback(exp.id, 1)[0].feedback
    assert (exp.created_at, row.seq, row.committed_at) == (42.5, ack.seq, 42.5)
