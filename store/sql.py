"""``EventLog`` on SQLAlchemy 2 Core: one implementation for SQLite and PostgreSQL.

Concurrency: SQLite write transactions start with ``BEGIN IMMEDIATE`` (one writer at a time, so a
check followed by a write inside one transaction cannot race). On PostgreSQL (READ COMMITTED)
the unique indexes are the arbiters: a batch that loses a race on ``uq_feedback_winner`` or
``pk_decisions`` is rolled back and run again (its check then sees the winner). Batches insert
in key order, so concurrent ones lock index entries in one global order and do not deadlock;
deadlocks and serialization failures (SQLSTATE 40xxx) are retried all the same. The learner's
writes serialize on the experiment's fence row lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from . import errors
from .engine import SQLITE_BEGIN, SQLITE_READY, make_engine
from .eventlog import EventLog
from .rows import (
    EXPERIMENT_STATUSES,
    FEEDBACK_KINDS,
    WINNING_KINDS,
    AppliedBatch,
    ApplyRecord,
    Arm,
    ArmSpec,
    Checkpoint,
    Committed,
    Counts,
    Decision,
    Experiment,
    ExperimentStatus,
    Feedback,
    FeedbackKind,
    Pending,
    Revision,
    RevisionSpec,
)
from .schema import (
    PENDING_PREDICATE,
    WINNING_PREDICATE,
    apply_records,
    checkpoints,
    decisions,
    experiments,
    feedback,
    fences,
    namespaces,
    revisions,
)
from .schema import arms as arm_table  # methods take an ``arms`` argument
from .sql_rows import (
    DECISION_COLUMNS,
    decision_row,
    experiment_select,
    feedback_values,
    pending_select,
    revision_values,
    to_apply_record,
    to_arm,
    to_checkpoint,
    to_decision,
    to_experiment,
    to_pending,
    to_revision,
)

T = TypeVar("T")

CHUNK = 500  # ids per IN (...) list: far below SQLite's and psycopg's parameter limits
RACE_RETRIES = 8  # attempts of a batch that lost a race or a deadlock (PostgreSQL only)
BATCH_PAGE = 256  # apply records fetched per page when replaying


def _drop_null_columns(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave out columns that are NULL in every row (they default to NULL): a reward batch
    binds 5 columns instead of 18, which is most of the client-side cost of a multi-row
    INSERT on psycopg."""
    if not values:
        return values
    used = {k for v in values for k, x in v.items() if x is not None}
    if len(used) == len(values[0]):
        return values
    return [{k: v[k] for k in v if k in used} for v in values]


def _chunks(items: Sequence[T], n: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# SQLite names columns, not constraints, in its messages.
_SQLITE_UNIQUE = {
    "uq_feedback_winner": "UNIQUE constraint failed: feedback.experiment_id, feedback.event_id",
    "pk_decisions": "UNIQUE constraint failed: decisions.experiment_id, decisions.event_id",
}


def _violated(exc: sa.exc.IntegrityError, name: str) -> bool:
    """Whether ``exc`` is a violation of the unique constraint or index ``name``."""
    diag = getattr(exc.orig, "diag", None)  # psycopg names the constraint
    if diag is not None:
        return getattr(diag, "constraint_name", None) == name
    return _SQLITE_UNIQUE[name] in str(exc.orig)


class SqlEventLog(EventLog):
    """The event log on an engine from ``engine.make_engine`` (or use ``from_url``). ``clock``
    stamps created/committed times (tests inject one so wait windows need no real sleeps)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self.dialect = engine.dialect.name
        self._insert_sql: dict[tuple[str, tuple[str, ...]], str] = {}
        if self.dialect == "postgresql":
            self._insert: Callable[[sa.Table], Any] = postgresql.insert
        elif self.dialect == "sqlite":
            if not engine.get_execution_options().get(SQLITE_READY):
                # Without its BEGIN IMMEDIATE and pragmas, first-reward-wins could race.
                raise ValueError(
                    "engine: make SQLite engines with banditd.store.engine.make_engine"
                )
            self._insert = sqlite.insert
        else:
            raise ValueError(f"database_url: unsupported database {self.dialect!r}")

    @classmethod
    def from_url(
        cls, url: str, *, clock: Callable[[], float] = time.time, **engine_kw: Any
    ) -> SqlEventLog:
        return cls(make_engine(url, **engine_kw), clock=clock)

    def close(self) -> None:
        self.engine.dispose()

    # --- transactions ------------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                if write and self.dialect == "sqlite":
                    conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
                with conn.begin():
                    yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.ProgrammingError) as e:
            if _missing_table(e):  # SQLite says so with an OperationalError, PostgreSQL not
                raise errors.StoreError(
                    f"database schema missing or out of date ({e.orig}): run `banditd migrate`"
                ) from e
            if isinstance(e, sa.exc.ProgrammingError):
                raise
            raise errors.Unavailable(f"database unavailable: {e.orig}") from e

    def _lock_experiment(self, conn: sa.Connection, experiment_id: int) -> None:
        # Row lock on PostgreSQL so slot and revision numbering cannot race; SQLite's
        # BEGIN IMMEDIATE already serializes writers and the FOR UPDATE renders as nothing.
        found = conn.execute(
            sa.select(experiments.c.id).where(experiments.c.id == experiment_id).with_for_update()
        ).first()
        if found is None:
            raise errors.NotFound(f"experiment: no experiment with id {experiment_id}")

    # --- experiments -------------------------------------------------------------------------

    def create_experiment(
        self,
        namespace: str,
        name: str,
        *,
        config: Mapping[str, Any],
        revision: RevisionSpec,
        arms: Sequence[ArmSpec] = (),
        status: ExperimentStatus = "active",
    ) -> Experiment:
        _check_status(status)
        now = self.clock()
        with self._tx(write=True) as conn:
            conn.execute(
                self._insert(namespaces)
                .values(name=namespace, created_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            ns_id = conn.execute(
                sa.select(namespaces.c.id).where(namespaces.c.name == namespace)
            ).scalar_one()
            taken = sa.select(experiments.c.id).where(
                experiments.c.namespace_id == ns_id, experiments.c.name == name
            )
            if conn.execute(taken).first() is not None:
                raise errors.AlreadyExists(f"name: experiment {namespace}/{name} already exists")
            try:
                exp_id = conn.execute(
                    experiments.insert()
                    .values(
                        namespace_id=ns_id,
                        name=name,
                        family=revision.family,
                        status=status,
                        revision=revision.revision,
                        config=dict(config),
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(experiments.c.id)
                ).scalar_one()
            except sa.exc.IntegrityError as e:  # a concurrent create on PostgreSQL
                raise errors.AlreadyExists(
                    f"name: experiment {namespace}/{name} already exists"
                ) from e
            conn.execute(revisions.insert().values(revision_values(exp_id, revision, now)))
            self._insert_arms(conn, exp_id, arms, first_slot=0, now=now)
        got = self.get_experiment_by_id(exp_id)
        assert got is not None
        return got

    def get_experiment(self, namespace: str, name: str) -> Experiment | None:
        q = experiment_select().where(namespaces.c.name == namespace, experiments.c.name == name)
        with self._tx(write=False) as conn:
            row = conn.execute(q).first()
        return None if row is None else to_experiment(row._mapping)

    def get_experiment_by_id(self, experiment_id: int) -> Experiment | None:
        q = experiment_select().where(experiments.c.id == experiment_id)
        with self._tx(write=False) as conn:
            row = conn.execute(q).first()
        return None if row is None else to_experiment(row._mapping)

    def list_experiments(self, namespace: str | None = None) -> list[Experiment]:
        q = experiment_select().order_by(namespaces.c.name, experiments.c.name)
        if namespace is not None:
            q = q.where(namespaces.c.name == namespace)
        with self._tx(write=False) as conn:
            return [to_experiment(r._mapping) for r in conn.execute(q)]

    def update_experiment(
        self,
        experiment_id: int,
        *,
        status: ExperimentStatus | None = None,
        config: Mapping[str, Any] | None = None,
        revision: int | None = None,
    ) -> Experiment:
        values: dict[str, Any] = {"updated_at": self.clock()}
        if status is not None:
            _check_status(status)
            values["status"] = status
        if config is not None:
            values["config"] = dict(config)
        with self._tx(write=True) as conn:
            self._lock_experiment(conn, experiment_id)
            if revision is not None:
                fam = conn.execute(
                    sa.select(revisions.c.family).where(
                        revisions.c.experiment_id == experiment_id,
                        revisions.c.revision == revision,
                    )
                ).scalar_one_or_none()
                if fam is None:
                    raise errors.NotFound(f"revision: experiment has no revision {revision}")
                values.update(revision=revision, family=fam)
            conn.execute(
                experiments.update().where(experiments.c.id == experiment_id).values(values)
            )
        got = self.get_experiment_by_id(experiment_id)
        assert got is not None
        return got

    def add_revision(
        self, experiment_id: int, revision: RevisionSpec, *, make_current: bool = True
    ) -> Revision:
        now = self.clock()
        with self._tx(write=True) as conn:
            self._lock_experiment(conn, experiment_id)
            top = conn.execute(
                sa.select(sa.func.max(revisions.c.revision)).where(
                    revisions.c.experiment_id == experiment_id
                )
            ).scalar()
            taken = conn.execute(
                sa.select(revisions.c.revision).where(
                    revisions.c.experiment_id == experiment_id,
                    revisions.c.revision == revision.revision,
                )
            ).first()
            if taken is not None:
                raise errors.AlreadyExists(f"revision: {revision.revision} already exists")
            if top is not None and revision.revision < top:
                raise errors.Conflict(
                    f"revision: {revision.revision} is below the latest revision {top}"
                )
            conn.execute(revisions.insert().values(revision_values(experiment_id, revision, now)))
            if make_current:
                conn.execute(
                    experiments.update()
                    .where(experiments.c.id == experiment_id)
                    .values(revision=revision.revision, family=revision.family, updated_at=now)
                )
        got = self.get_revision(experiment_id, revision.revision)
        assert got is not None
        return got

    def get_revision(self, experiment_id: int, revision: int) -> Revision | None:
        q = sa.select(revisions).where(
            revisions.c.experiment_id == experiment_id, revisions.c.revision == revision
        )
        with self._tx(write=False) as conn:
            row = conn.execute(q).first()
        return None if row is None else to_revision(row._mapping)

    def list_revisions(self, experiment_id: int) -> list[Revision]:
        q = (
            sa.select(revisions)
            .where(revisions.c.experiment_id == experiment_id)
            .order_by(revisions.c.revision)
        )
        with self._tx(write=False) as conn:
            return [to_revision(r._mapping) for r in conn.execute(q)]

    def add_arms(self, experiment_id: int, arms: Sequence[ArmSpec]) -> list[Arm]:
        now = self.clock()
        with self._tx(write=True) as conn:
            self._lock_experiment(conn, experiment_id)
            top = conn.execute(
                sa.select(sa.func.max(arm_table.c.slot)).where(
                    arm_table.c.experiment_id == experiment_id
                )
            ).scalar()
            ids = [a.arm_id for a in arms]
            taken = conn.execute(
                sa.select(arm_table.c.arm_id).where(
                    arm_table.c.experiment_id == experiment_id, arm_table.c.arm_id.in_(ids)
                )
            ).scalars()
            taken_ids = sorted(taken)
            if taken_ids:
                raise errors.AlreadyExists(f"arm_id: already in the experiment: {taken_ids}")
            first = 0 if top is None else top + 1
            self._insert_arms(conn, experiment_id, arms, first_slot=first, now=now)
            conn.execute(
                experiments.update().where(experiments.c.id == experiment_id).values(updated_at=now)
            )
        added = set(ids)
        return [a for a in self.list_arms(experiment_id) if a.arm_id in added]

    def _insert_arms(
        self,
        conn: sa.Connection,
        experiment_id: int,
        specs: Sequence[ArmSpec],
        *,
        first_slot: int,
        now: float,
    ) -> None:
        seen: set[str] = set()
        for a in specs:
            if a.arm_id in seen:
                raise errors.AlreadyExists(f"arm_id: {a.arm_id!r} given twice")
            seen.add(a.arm_id)
        if not specs:
            return
        conn.execute(
            arm_table.insert(),
            [
                {
                    "experiment_id": experiment_id,
                    "slot": first_slot + i,
                    "arm_id": a.arm_id,
                    "metadata": dict(a.metadata),
                    "features": a.features,
                    "active": True,
                    "created_at": now,
                    "retired_at": None,
                }
                for i, a in enumerate(specs)
            ],
        )

    def retire_arms(self, experiment_id: int, arm_ids: Sequence[str]) -> list[Arm]:
        now = self.clock()
        wanted = list(dict.fromkeys(arm_ids))
        with self._tx(write=True) as conn:
            self._lock_experiment(conn, experiment_id)
            found = set(
                conn.execute(
                    sa.select(arm_table.c.arm_id).where(
                        arm_table.c.experiment_id == experiment_id, arm_table.c.arm_id.in_(wanted)
                    )
                ).scalars()
            )
            missing = [a for a in wanted if a not in found]
            if missing:
                raise errors.NotFound(f"arm_id: not in the experiment: {missing}")
            conn.execute(
                arm_table.update()
                .where(
                    arm_table.c.experiment_id == experiment_id,
                    arm_table.c.arm_id.in_(wanted),
                    arm_table.c.active.is_(True),
                )
                .values(active=False, retired_at=now)
            )
            conn.execute(
                experiments.update().where(experiments.c.id == experiment_id).values(updated_at=now)
            )
        return [a for a in self.list_arms(experiment_id) if a.arm_id in found]

    def list_arms(self, experiment_id: int, *, active_only: bool = False) -> list[Arm]:
        q = (
            sa.select(arm_table)
            .where(arm_table.c.experiment_id == experiment_id)
            .order_by(arm_table.c.slot)
        )
        if active_only:
            q = q.where(arm_table.c.active.is_(True))
        with self._tx(write=False) as conn:
            return [to_arm(r._mapping) for r in conn.execute(q)]

    # --- decisions ---------------------------------------------------------------------------

    def insert_decisions(self, rows: Sequence[Decision]) -> set[tuple[int, str]]:
        # Key order: concurrent batches then take index locks in one global order and cannot
        # deadlock on PostgreSQL (the log's row order carries no meaning for decisions).
        ordered = sorted(rows, key=lambda d: (d.experiment_id, d.event_id))
        values = [decision_row(d) for d in ordered]
        # Optimistic first: the servicer already answers repeated event ids from memory or the
        # log, so a batch almost never holds a logged id; an insert that hits one fails as a
        # whole, and the next attempt checks which ids exist and skips them.
        check = False
        for _attempt in range(RACE_RETRIES):
            skipped: set[tuple[int, str]] = set()
            try:
                with self._tx(write=True) as conn:
                    if not check:
                        self._insert_many(conn, decisions, DECISION_COLUMNS, values)
                        return skipped
                    existing = self._existing_decisions(conn, ordered)
                    fresh = []
                    for d, v in zip(ordered, values, strict=True):
                        key = (d.experiment_id, d.event_id)
                        if key in existing:
                            skipped.add(key)
                        else:
                            existing.add(key)
                            fresh.append(v)
                    if fresh:
                        self._insert_many(conn, decisions, DECISION_COLUMNS, fresh)
                return skipped
            except sa.exc.IntegrityError as e:
                # A logged event id, or another writer committed one after our check: run
                # again; the check now sees it and the row is skipped.
                if not _violated(e, "pk_decisions"):
                    raise _integrity(e) from e
                check = True
            except errors.Unavailable as e:
                if not _transient(e):
                    raise
        raise errors.Unavailable("decisions: too many concurrent writers for the same event ids")

    def _insert_many(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: tuple[str, ...],
        values: list[tuple[Any, ...]],
    ) -> None:
        """A plain INSERT of many rows straight through the driver's executemany. SQLAlchemy's
        statement execution costs more than the insert itself at the decision writer's rate."""
        sql = self._insert_sql.get((table.name, columns))
        if sql is None:
            mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
            sql = (
                f"INSERT INTO {table.name} ({', '.join(columns)}) "
                f"VALUES ({', '.join([mark] * len(columns))})"
            )
            self._insert_sql[(table.name, columns)] = sql
        conn.exec_driver_sql(sql, values)

    def _existing_decisions(
        self, conn: sa.Connection, rows: Sequence[Decision]
    ) -> set[tuple[int, str]]:
        by_exp: dict[int, list[str]] = {}
        for d in rows:
            by_exp.setdefault(d.experiment_id, []).append(d.event_id)
        found: set[tuple[int, str]] = set()
        for exp, ids in by_exp.items():
            for chunk in _chunks(sorted(set(ids))):
                q = sa.select(decisions.c.event_id).where(
                    decisions.c.experiment_id == exp, decisions.c.event_id.in_(chunk)
                )
                found.update((exp, e) for e in conn.execute(q).scalars())
        return found

    def get_decisions(self, experiment_id: int, event_ids: Iterable[str]) -> dict[str, Decision]:
        ids = sorted(set(event_ids))
        out: dict[str, Decision] = {}
        with self._tx(write=False) as conn:
            for chunk in _chunks(ids):
                q = sa.select(decisions).where(
                    decisions.c.experiment_id == experiment_id, decisions.c.event_id.in_(chunk)
                )
                for r in conn.execute(q):
                    d = to_decision(r._mapping)
                    out[d.event_id] = d
        return out

    # --- feedback ----------------------------------------------------------------------------

    def insert_feedback(self, rows: Sequence[Feedback]) -> list[Committed]:
        if not rows:
            return []
        now = self.clock()
        for r in rows:
            if r.kind not in FEEDBACK_KINDS:
                raise ValueError(f"kind: unknown feedback kind {r.kind!r}")
            if r.kind != "observation" and r.event_id is None:
                raise ValueError(f"event_id: required for feedback of kind {r.kind!r}")
        # Rows are inserted in key order so that concurrent batches take the unique index's
        # locks in one global order (no deadlocks on PostgreSQL); the first row of the batch
        # in the caller's order still wins, and acks come back in the caller's order.
        order = sorted(
            range(len(rows)), key=lambda i: (rows[i].experiment_id, rows[i].event_id or "")
        )
        for _attempt in range(RACE_RETRIES):
            try:
                with self._tx(write=True) as conn:
                    won = self._winners(conn, rows)
                    kinds: list[FeedbackKind] = []
                    for r in rows:
                        kind = r.kind
                        if kind == "reward" and r.deadline is not None and now > r.deadline:
                            kind = "late"
                        if kind in WINNING_KINDS:
                            key = (r.experiment_id, r.event_id)
                            if key in won:
                                kind = "duplicate"
                            else:
                                won.add(key)
                        kinds.append(kind)
                    values = _drop_null_columns(
                        [feedback_values(rows[i], kinds[i], now) for i in order]
                    )
                    stmt = feedback.insert().returning(feedback.c.seq, sort_by_parameter_order=True)
                    inserted = conn.execute(stmt, values).scalars().all()
                seqs = [0] * len(rows)
                for i, seq in zip(order, inserted, strict=True):
                    seqs[i] = int(seq)
                return [Committed(s, k) for s, k in zip(seqs, kinds, strict=True)]
            except sa.exc.IntegrityError as e:
                # Lost a race on PostgreSQL: another transaction committed a winner for one of
                # our event ids after our check. Run again: the check now sees it.
                if not _violated(e, "uq_feedback_winner"):
                    raise _integrity(e) from e
            except errors.Unavailable as e:
                if not _transient(e):
                    raise
        raise errors.Unavailable("feedback: too many concurrent writers for the same event ids")

    def _winners(
        self, conn: sa.Connection, rows: Sequence[Feedback]
    ) -> set[tuple[int, str | None]]:
        by_exp: dict[int, set[str]] = {}
        for r in rows:
            if r.kind in WINNING_KINDS and r.event_id is not None:
                by_exp.setdefault(r.experiment_id, set()).add(r.event_id)
        found: set[tuple[int, str | None]] = set()
        for exp, ids in by_exp.items():
            for chunk in _chunks(sorted(ids)):
                # The predicate is repeated verbatim so SQLite can use the partial unique index.
                q = sa.select(feedback.c.event_id).where(
                    feedback.c.experiment_id == exp,
                    feedback.c.event_id.in_(chunk),
                    sa.text(WINNING_PREDICATE),
                )
                found.update((exp, e) for e in conn.execute(q).scalars())
        return found

    def pending_feedback(
        self, experiment_id: int, limit: int, *, ready_at: float | None = None
    ) -> list[Pending]:
        q = pending_select().where(
            feedback.c.experiment_id == experiment_id, sa.text(PENDING_PREDICATE)
        )
        if ready_at is not None:
            # at_window_close: a decision's feedback waits until its window has closed
            q = q.where(
                sa.or_(
                    feedback.c.event_id.is_(None),
                    sa.and_(
                        decisions.c.deferred.is_(False),
                        sa.or_(decisions.c.deadline.is_(None), decisions.c.deadline <= ready_at),
                    ),
                )
            )
        q = q.order_by(feedback.c.seq).limit(limit)
        with self._tx(write=False) as conn:
            return [to_pending(r._mapping) for r in conn.execute(q)]

    def find_by_reward_id(
        self, experiment_id: int, reward_ids: Sequence[str]
    ) -> dict[str, Committed]:
        out: dict[str, Committed] = {}
        with self._tx(write=False) as conn:
            for chunk in _chunks(sorted(set(reward_ids))):
                q = (
                    sa.select(feedback.c.reward_id, feedback.c.seq, feedback.c.kind)
                    .where(
                        feedback.c.experiment_id == experiment_id,
                        feedback.c.reward_id.in_(chunk),
                    )
                    .order_by(feedback.c.seq)
                )
                for rid, seq, kind in conn.execute(q):
                    out.setdefault(rid, Committed(int(seq), kind))  # the first row is the ack
        return out

    def expired_decisions(
        self, experiment_id: int, *, now: float, after: float, limit: int
    ) -> list[Decision]:
        winner = (
            sa.select(feedback.c.seq)
            .where(
                feedback.c.experiment_id == decisions.c.experiment_id,
                feedback.c.event_id == decisions.c.event_id,
                sa.text(WINNING_PREDICATE),
            )
            .exists()
        )
        q = (
            sa.select(decisions)
            .where(
                decisions.c.experiment_id == experiment_id,
                decisions.c.deadline > after,
                decisions.c.deadline <= now,
                decisions.c.deferred.is_(False),
                ~winner,
            )
            .order_by(decisions.c.deadline, decisions.c.event_id)
            .limit(limit)
        )
        with self._tx(write=False) as conn:
            return [to_decision(r._mapping) for r in conn.execute(q)]

    def activate(
        self, experiment_id: int, event_ids: Sequence[str], *, now: float, window: float
    ) -> list[str]:
        ids = sorted(set(event_ids))
        done: list[str] = []
        with self._tx(write=True) as conn:
            for chunk in _chunks(ids):
                where = sa.and_(
                    decisions.c.experiment_id == experiment_id,
                    decisions.c.event_id.in_(chunk),
                    decisions.c.deferred.is_(True),
                )
                hit = list(conn.execute(sa.select(decisions.c.event_id).where(where)).scalars())
                if hit:
                    conn.execute(
                        decisions.update()
                        .where(where)
                        .values(deferred=False, deadline=(now + window) if window > 0 else None)
                    )
                done.extend(hit)
        return done

    def last_decision_time(self) -> float | None:
        with self._tx(write=False) as conn:
            return conn.execute(sa.select(sa.func.max(decisions.c.created_at))).scalar()

    # --- learner -----------------------------------------------------------------------------

    def acquire_fence(self, experiment_id: int) -> int:
        now = self.clock()
        stmt = (
            self._insert(fences)
            .values(experiment_id=experiment_id, fence=1, updated_at=now)
            .on_conflict_do_update(
                index_elements=["experiment_id"],
                set_={"fence": fences.c.fence + 1, "updated_at": now},
            )
            .returning(fences.c.fence)
        )
        try:
            with self._tx(write=True) as conn:
                return int(conn.execute(stmt).scalar_one())
        except sa.exc.IntegrityError as e:
            raise errors.NotFound(f"experiment: no experiment with id {experiment_id}") from e

    def current_fence(self, experiment_id: int) -> int:
        q = sa.select(fences.c.fence).where(fences.c.experiment_id == experiment_id)
        with self._tx(write=False) as conn:
            return int(conn.execute(q).scalar() or 0)

    def _check_fence(self, conn: sa.Connection, experiment_id: int, fence: int) -> None:
        # An UPDATE, not a SELECT: it holds the fence row's lock until commit, so a takeover
        # (acquire_fence) waits for this transaction and every later write sees the new token.
        n = conn.execute(
            fences.update()
            .where(fences.c.experiment_id == experiment_id, fences.c.fence == fence)
            .values(updated_at=self.clock())
        ).rowcount
        if n != 1:
            current = conn.execute(
                sa.select(fences.c.fence).where(fences.c.experiment_id == experiment_id)
            ).scalar()
            raise errors.StaleFence(f"fence: {fence} is not the current fence {current or 0}")

    def mark_applied(
        self,
        experiment_id: int,
        seqs: Sequence[int],
        *,
        version_from: int,
        version_to: int,
        fence: int,
    ) -> ApplyRecord:
        unique = sorted(set(seqs))
        if not unique:
            raise ValueError("seqs: an apply needs at least one feedback row")
        if version_to <= version_from:
            raise ValueError(f"version_to: {version_to} is not above version_from {version_from}")
        now = self.clock()
        with self._tx(write=True) as conn:
            self._check_fence(conn, experiment_id, fence)
            last = conn.execute(
                sa.select(sa.func.max(apply_records.c.version_to)).where(
                    apply_records.c.experiment_id == experiment_id
                )
            ).scalar()
            if last is not None and version_to <= last:
                raise errors.Conflict(f"version_to: version {version_to} is already applied")
            if last is not None and last != version_from:
                raise errors.Conflict(
                    f"version_from: {version_from} does not continue the applied version {last}"
                )
            try:
                conn.execute(
                    apply_records.insert().values(
                        experiment_id=experiment_id,
                        version_from=version_from,
                        version_to=version_to,
                        fence=fence,
                        n_rows=len(unique),
                        created_at=now,
                    )
                )
            except sa.exc.IntegrityError as e:
                raise errors.Conflict(f"version_to: version {version_to} is already applied") from e
            marked = 0
            for chunk in _chunks(unique):
                marked += conn.execute(
                    feedback.update()
                    .where(
                        feedback.c.experiment_id == experiment_id,
                        feedback.c.seq.in_(chunk),
                        sa.text(PENDING_PREDICATE),
                    )
                    .values(applied_version=version_to)
                ).rowcount
            if marked != len(unique):
                raise errors.Conflict(
                    f"seqs: {len(unique) - marked} of {len(unique)} rows are not pending feedback "
                    f"of experiment {experiment_id} (already applied, unknown or not applicable)"
                )
        return ApplyRecord(experiment_id, version_from, version_to, fence, len(unique), now)

    def latest_apply(self, experiment_id: int) -> ApplyRecord | None:
        q = (
            sa.select(apply_records)
            .where(apply_records.c.experiment_id == experiment_id)
            .order_by(apply_records.c.version_to.desc())
            .limit(1)
        )
        with self._tx(write=False) as conn:
            row = conn.execute(q).first()
        return None if row is None else to_apply_record(row._mapping)

    def applied_batches_after(self, experiment_id: int, version: int) -> Iterator[AppliedBatch]:
        after = version
        while True:
            with self._tx(write=False) as conn:
                recs = [
                    to_apply_record(r._mapping)
                    for r in conn.execute(
                        sa.select(apply_records)
                        .where(
                            apply_records.c.experiment_id == experiment_id,
                            apply_records.c.version_to > after,
                        )
                        .order_by(apply_records.c.version_to)
                        .limit(BATCH_PAGE)
                    )
                ]
                if not recs:
                    return
                rows: dict[int, list[Pending]] = {r.version_to: [] for r in recs}
                q = (
                    pending_select()
                    .where(
                        feedback.c.experiment_id == experiment_id,
                        feedback.c.applied_version > after,
                        feedback.c.applied_version <= recs[-1].version_to,
                    )
                    .order_by(feedback.c.applied_version, feedback.c.seq)
                )
                for r in conn.execute(q):
                    p = to_pending(r._mapping)
                    assert p.feedback.applied_version is not None
                    rows[p.feedback.applied_version].append(p)
            for rec in recs:
                yield AppliedBatch(rec, tuple(rows[rec.version_to]))
            after = recs[-1].version_to

    def save_checkpoint(
        self, experiment_id: int, *, revision: int, version: int, blob: bytes, fence: int
    ) -> Checkpoint:
        now = self.clock()
        values = {
            "experiment_id": experiment_id,
            "revision": revision,
            "version": version,
            "fence": fence,
            "blob": blob,
            "created_at": now,
        }
        stmt = (
            self._insert(checkpoints)
            .values(values)
            .on_conflict_do_update(
                index_elements=["experiment_id", "revision", "version"],
                set_={"fence": fence, "blob": blob, "created_at": now},
            )
        )
        with self._tx(write=True) as conn:
            self._check_fence(conn, experiment_id, fence)
            conn.execute(stmt)
        return Checkpoint(experiment_id, revision, version, fence, blob, now)

    def latest_checkpoint(
        self, experiment_id: int, revision: int | None = None
    ) -> Checkpoint | None:
        q = (
            sa.select(checkpoints)
            .where(checkpoints.c.experiment_id == experiment_id)
            .order_by(checkpoints.c.version.desc(), checkpoints.c.revision.desc())
            .limit(1)
        )
        if revision is not None:
            q = q.where(checkpoints.c.revision == revision)
        with self._tx(write=False) as conn:
            row = conn.execute(q).first()
        return None if row is None else to_checkpoint(row._mapping)

    def prune_checkpoints(self, experiment_id: int, keep: int) -> int:
        if keep < 1:
            raise ValueError("keep: at least the latest checkpoint must be kept")
        with self._tx(write=True) as conn:
            kept = conn.execute(
                sa.select(checkpoints.c.revision, checkpoints.c.version)
                .where(checkpoints.c.experiment_id == experiment_id)
                .order_by(checkpoints.c.version.desc(), checkpoints.c.revision.desc())
                .limit(keep)
            ).all()
            if len(kept) < keep:
                return 0
            oldest = kept[-1].version
            return int(
                conn.execute(
                    checkpoints.delete().where(
                        checkpoints.c.experiment_id == experiment_id,
                        checkpoints.c.version < oldest,
                    )
                ).rowcount
            )

    # --- reporting ---------------------------------------------------------------------------

    def counts(self, experiment_id: int) -> Counts:
        # One statement = one snapshot on PostgreSQL too (READ COMMITTED re-snapshots per
        # statement), so the numbers are mutually consistent.
        def n_feedback(*where: Any) -> Any:
            return (
                sa.select(sa.func.count())
                .select_from(feedback)
                .where(feedback.c.experiment_id == experiment_id, *where)
                .scalar_subquery()
            )

        cols = [
            sa.select(sa.func.count())
            .select_from(decisions)
            .where(decisions.c.experiment_id == experiment_id)
            .scalar_subquery()
            .label("decisions"),
            n_feedback(feedback.c.applied_version.is_not(None)).label("applied"),
            sa.select(sa.func.coalesce(sa.func.max(apply_records.c.version_to), 0))
            .where(apply_records.c.experiment_id == experiment_id)
            .scalar_subquery()
            .label("version"),
        ] + [n_feedback(feedback.c.kind == k).label(f"kind_{k}") for k in FEEDBACK_KINDS]
        with self._tx(write=False) as conn:
            m = conn.execute(sa.select(*cols)).one()._mapping
        return Counts(
            decisions=int(m["decisions"]),
            feedback={k: int(m[f"kind_{k}"]) for k in FEEDBACK_KINDS},
            applied=int(m["applied"]),
            version=int(m["version"]),
        )


# --- row conversion ------------------------------------------------------------------------


def _check_status(status: str) -> None:
    if status not in EXPERIMENT_STATUSES:
        raise ValueError(f"status: expected one of {EXPERIMENT_STATUSES}, got {status!r}")


def _transient(e: errors.Unavailable) -> bool:
    """A deadlock or serialization failure (SQLSTATE class 40): the transaction was rolled back
    and running it again is the documented remedy."""
    cause = e.__cause__
    orig = getattr(cause, "orig", None)
    return str(getattr(orig, "sqlstate", "") or "").startswith("40")


def _missing_table(e: sa.exc.DBAPIError) -> bool:
    text = str(e.orig).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _integrity(e: sa.exc.IntegrityError) -> errors.StoreError:
    text = str(e.orig).lower()
    if "foreign key" in text:
        return errors.NotFound(f"experiment: unknown experiment id ({e.orig})")
    return errors.Conflict(f"integrity: {e.orig}")
