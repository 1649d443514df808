"""Durability (issue 4): acknowledged = committed, and what a crash may lose.

A client makes sequential Selects (and acknowledged Updates in between) against a ``banditd
serve`` subprocess that is killed with SIGKILL after N answers, while calls are in flight:

- decisions missing from the log afterwards are the last ones answered (a suffix: the group
  commit writes in order) and were all answered within the documented loss window before the
  kill (writer flush + a commit; asserted with a generous 500 ms margin);
- every Update acknowledged before the kill is in the log, as acknowledged;
- after the unclean restart a reward for a lost decision is acknowledged ``orphan`` (not
  NOT_FOUND) and never applied, while an id from before any crash window is still NOT_FOUND.

A round with ``--writer-flush-ms 250`` makes the loss certain, so the orphan path always runs.
"""

from __future__ import annotations

import pathlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest
import sqlalchemy as sa
from banditd.clients import Client
from banditd.clients.errors import BanditdError, NotFound
from banditd.store.schema import apply_records, decisions, feedback
from server_proc import ServerProcess

NS = "dur"
NAME = "log"
MARGIN = 0.5  # seconds on top of the documented window (flush + one commit) on a shared host


@dataclass
class Round:
    flush_ms: float
    n: int  # answers before the kill
    with_updates: bool
    answered: list[tuple[str, float]] = field(default_factory=list)  # (event id, arrival time)
    acked: list[tuple[str, float, str, int]] = field(default_factory=list)  # (id, value, kind, seq)
    killed_at: float = 0.0
    error: BaseException | None = None


def drive(target: str, rnd: Round, reached: threading.Event, rng: np.random.Generator) -> None:
    """Sequential Selects until the server dies; after every second one, an Update rewarding the
    previous decision (so Updates are in flight at the kill too)."""
    try:
        with Client(target, retries=0, timeout=10) as c:
            while True:
                (d,) = c.select(NS, NAME)
                rnd.answered.append((d.event_id, time.time()))
                if len(rnd.answered) == rnd.n:
                    reached.set()
                if rnd.with_updates and len(rnd.answered) % 2 == 0:
                    eid = rnd.answered[-2][0]
                    value = float(rng.random() < 0.5)
                    (ack,) = c.update(NS, NAME, {eid: value})
                    rnd.acked.append((eid, value, str(ack.kind), ack.sequence))
    except BanditdError as e:
        rnd.error = e
    except BaseException as e:  # noqa: BLE001 - checked by the test
        rnd.error = e
        reached.set()


def kill_after(srv: ServerProcess, rnd: Round, seed: int) -> None:
    reached = threading.Event()
    t = threading.Thread(
        target=drive, args=(srv.target, rnd, reached, np.random.default_rng(seed)), daemon=True
    )
    t.start()
    try:
        assert reached.wait(60), rnd.error
        assert rnd.error is None, rnd.error
        rnd.killed_at = time.time()
    finally:
        srv.kill()
        t.join(30)
    assert not t.is_alive()
    # The client's calls may only fail because the server died under them.
    assert isinstance(rnd.error, BanditdError) and rnd.error.code_name in (
        "UNAVAILABLE",
        "UNKNOWN",
        "CANCELLED",
    ), rnd.error


def logged(data: pathlib.Path) -> tuple[set[str], dict[int, tuple[str, str, float, int | None]]]:
    """Event ids of logged decisions; feedback rows by seq: (event id, kind, value, applied)."""
    eng = sa.create_engine(f"sqlite:///{data / 'banditd.db'}")
    try:
        with eng.connect() as conn:
            ids = set(conn.execute(sa.select(decisions.c.event_id)).scalars())
            fb = {
                r.seq: (r.event_id, r.kind, r.reward, r.applied_version)
                for r in conn.execute(sa.select(feedback))
            }
    finally:
        eng.dispose()
    return ids, fb


def uuid7_at(t: float) -> str:
    """A well-formed UUIDv7 for Unix time ``t`` (an id no client of this test issued)."""
    ms = int(t * 1000)
    r = secrets.randbits(74)
    return str(
        uuid.UUID(int=ms << 80 | 0x7 << 76 | (r >> 62) << 64 | 0b10 << 62 | (r & (2**62 - 1)))
    )


def test_kill_loses_only_the_last_decisions_and_no_acknowledged_update(
    tmp_path: pathlib.Path,
) -> None:
    data = tmp_path / "data"
    rounds = [
        Round(10.0, 150, True),  # the default decision flush
        Round(10.0, 300, True),
        Round(2.0, 450, True),
        # A long flush makes the loss of the last answers certain: the orphan path needs one.
        Round(250.0, 400, False),
    ]
    before_first_run = time.time()
    srv = ServerProcess(data).start()
    with Client(srv.target) as c:
        c.create_experiment(NS, NAME, "beta_ts", ["a", "b", "c"])
    # Killed before any decision is logged: the crash window this leaves must start at this
    # run's start, not at time 0, or every never-issued id would become an orphan (see below).
    srv.kill()

    report = []
    for i, rnd in enumerate(rounds):
        srv = ServerProcess(data, "--decision-flush-ms", str(rnd.flush_ms)).start()
        kill_after(srv, rnd, seed=i)
        ids, fb = logged(data)
        answered = [e for e, _ in rnd.answered]
        missing = [e for e in answered if e not in ids]
        # The group commit writes in order, so what is lost is the newest answers, no gaps.
        assert missing == answered[len(answered) - len(missing) :], (i, missing)
        ages = [rnd.killed_at - t for e, t in rnd.answered if e not in ids]
        window = rnd.flush_ms / 1000 + MARGIN
        assert max(ages, default=0.0) <= window, (i, ages)
        # Acknowledged = committed: every acknowledged Update is in the log as acknowledged.
        for eid, value, kind, seq in rnd.acked:
            assert kind == "reward"
            assert fb[seq][:3] == (eid, kind, value), (eid, fb.get(seq))
            assert eid in ids  # a reward is only acknowledged for a logged decision
        if rnd.with_updates:
            assert len(rnd.acked) >= rnd.n // 2 - 1
        report.append(
            (rnd.flush_ms, len(answered), len(rnd.acked), len(missing), max(ages, default=0))
        )

    lost = [e for e, _ in rounds[-1].answered if e not in logged(data)[0]]
    # How many are lost depends on where the kill falls in the writer's cycle (one was seen on
    # a loaded CI machine); the orphan check below needs one lost and one kept.
    assert len(lost) >= 1, "the 250 ms flush round must lose its last answers"
    kept = [e for e, _ in rounds[-1].answered if e not in lost][0]

    # After the unclean restart: the lost decision's reward is an orphan, logged, not applied.
    srv = ServerProcess(data).start()
    try:
        with Client(srv.target) as c:
            acks = c.update(NS, NAME, {lost[0]: 1.0, kept: 1.0})
            assert [(a.event_id, a.kind, a.orphan) for a in acks] == [
                (lost[0], "orphan", True),
                (kept, "reward", False),
            ]
            # Ids are judged by their UUIDv7 time: one from an hour before the first run was
            # never issued and precedes every crash window, so it stays NOT_FOUND.
            with pytest.raises(NotFound):
                c.update(NS, NAME, {uuid7_at(before_first_run - 3600): 1.0})
            stats = c.stats(NS, NAME)
            assert stats.feedback.orphans == 1
    finally:
        assert srv.stop() == 0  # a clean stop applies everything acknowledged
    ids, fb = logged(data)
    orphan_seq, reward_seq = acks[0].sequence, acks[1].sequence
    assert fb[orphan_seq] == (lost[0], "orphan", 1.0, None)
    assert lost[0] not in ids
    assert fb[reward_seq][:2] == (kept, "reward") and fb[reward_seq][3] is not None
    # Nothing but first rewards was applied: the orphan is counted, never learned.
    applied = [row for row in fb.values() if row[3] is not None]
    assert all(row[1] == "reward" for row in applied)
    assert len(applied) == sum(1 for row in fb.values() if row[1] == "reward")
    eng = sa.create_engine(f"sqlite:///{data / 'banditd.db'}")
    with eng.connect() as conn:
        n_rows = conn.execute(sa.select(sa.func.sum(apply_records.c.n_rows))).scalar()
    eng.dispose()
    assert n_rows == len(applied)

    print("\ndurability: flush ms | answered | acked updates | decisions lost | oldest lost (ms)")
    for flush, n_ans, n_ack, n_lost, age in report:
        print(f"  {flush:6.0f} | {n_ans:5d} | {n_ack:5d} | {n_lost:3d} | {1000 * age:7.1f}")
