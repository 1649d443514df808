"""Crash recovery (issue 4, "Tests"): a ``banditd serve`` subprocess receiving ~1,000 rewards/s is
killed with SIGKILL at random points and stopped dead at each deterministic fault point, and is
restarted on the same data directory every time. After a final clean stop:

- every acknowledged reward is in the log as acknowledged (same sequence, kind and value), and
  every logged decision has at most one winning reward, exactly one once its window closed with a
  default set, applied exactly once;
- the apply records form one contiguous chain of versions;
- the state rebuilt from the log (latest checkpoint + batches, and from no checkpoint at all) and
  every checkpoint taken on the way equal a reference computed here by replaying exactly the
  applied rows through the policy in-process;
- the restart after ``after_commit_before_apply`` found committed-but-unapplied feedback.

Two experiments share the load: ``bern`` (beta_ts, no window, immediate: integer counts) and
``lin`` (linucb on 3-d contexts, 2 s window with default reward 0, hence at_window_close: float
statistics, default rewards, late rewards from clients resending after a restart).
"""

from __future__ import annotations

import collections
import pathlib
import random
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from banditd import policies
from banditd.clients import Client
from banditd.clients.errors import BanditdError
from banditd.policies import Meta, State
from banditd.service.registry import Registry
from banditd.store import serialize
from banditd.store.packing import unpack_f64
from banditd.store.schema import apply_records, checkpoints, decisions, experiments, feedback
from banditd.store.sql import SqlEventLog
from server_proc import ServerProcess

NS = "crash"
ARMS = ["a", "b", "c"]
P_ARM = np.array([0.2, 0.5, 0.7])
DIM = 3
WINDOW = 2.0
BATCH = 50  # decisions per Select call
RATE = 1000.0  # rewards/s offered, both experiments together
NO_REWARD = 0.2  # share of lin's decisions never rewarded: their windows close with the default
CHECKPOINT_EVERY = 5  # small, so checkpoints (and their fault points) happen every few batches
FLAGS = ("--checkpoint-every", str(CHECKPOINT_EVERY))
EXPS = ("bern", "lin")
WINNING = ("reward", "default")
APPLIED_KINDS = ("reward", "default", "observation")
# What a client sees while the server dies under it; anything else is a server answer (a bug).
TRANSPORT = {"UNAVAILABLE", "UNKNOWN", "CANCELLED", "DEADLINE_EXCEEDED"}
# (fault point, range of BANDITD_FAULT_AFTER): the n-th learner step, or the n-th checkpoint
# (one per CHECKPOINT_EVERY versions), lands ~0.5-2 s into a run at this load.
FAULTS = [
    ("after_commit_before_apply", (20, 60)),
    ("after_apply_before_checkpoint", (2, 6)),
    ("mid_checkpoint", (2, 6)),
]
RANDOM_KILLS = 5


@dataclass
class Ack:
    exp: str
    event_id: str
    value: float
    kind: str
    seq: int


@dataclass
class Ledger:
    """What the client knows. ``unsure`` rewards had their Update fail as the server died, so
    they may or may not be committed; like a real client, the next run sends them again."""

    acks: list[Ack] = field(default_factory=list)
    unsure: dict[str, list[tuple[str, float]]] = field(
        default_factory=lambda: {n: [] for n in EXPS}
    )
    answered: list[tuple[str, str, float]] = field(default_factory=list)  # (exp, event, time)


class Load(threading.Thread):
    """One experiment's client: Select a batch, then report its rewards, paced to its share of
    RATE. Rewards left unsure by an earlier crash are sent again first."""

    def __init__(self, target: str, name: str, ledger: Ledger, seed: int) -> None:
        super().__init__(name=f"load-{name}", daemon=True)
        self.target, self.exp, self.ledger = target, name, ledger
        self.rng = np.random.default_rng(seed)
        self.halt = threading.Event()
        self.error: BanditdError | None = None
        self.error_at = 0.0
        self.unexpected: BaseException | None = None
        self.sent = 0
        self.elapsed = 0.0

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            with Client(self.target, retries=0, timeout=10) as c:
                again, self.ledger.unsure[self.exp] = self.ledger.unsure[self.exp], []
                for i in range(0, len(again), 500):
                    self.report(c, again[i : i + 500])
                while not self.halt.is_set():
                    self.round(c)
                    ahead = t0 + self.sent / (RATE / len(EXPS)) - time.monotonic()
                    if ahead > 0:
                        self.halt.wait(ahead)
        except BanditdError as e:
            self.error, self.error_at = e, time.time()
        except BaseException as e:  # noqa: BLE001 - surfaced by the test
            self.unexpected = e
        self.elapsed = time.monotonic() - t0

    def round(self, c: Client) -> None:
        rng = self.rng
        if self.exp == "lin":
            x = rng.normal(size=(BATCH, DIM))
            ds = c.select(NS, self.exp, x)
        else:
            x = None
            ds = c.select(NS, self.exp, BATCH)
        now = time.time()
        self.ledger.answered.extend((self.exp, d.event_id, now) for d in ds)
        rewards = []
        for i, d in enumerate(ds):
            if x is not None and rng.random() < NO_REWARD:
                continue
            p = P_ARM[ARMS.index(d.arm_id)]
            if x is not None:
                p = 1 / (1 + np.exp(-(x[i, 0] + 2 * p - 1)))
            rewards.append((d.event_id, float(rng.random() < p)))
        self.report(c, rewards)

    def report(self, c: Client, rewards: list[tuple[str, float]]) -> None:
        if not rewards:
            return
        try:
            acks = c.update(NS, self.exp, rewards)
        except BanditdError:
            self.ledger.unsure[self.exp].extend(rewards)
            raise
        assert [a.event_id for a in acks] == [e for e, _ in rewards]
        self.ledger.acks.extend(
            Ack(self.exp, e, v, str(a.kind), a.sequence)
            for (e, v), a in zip(rewards, acks, strict=True)
        )
        self.sent += len(rewards)


def start_load(target: str, ledger: Ledger, rng: random.Random) -> list[Load]:
    loads = [Load(target, name, ledger, rng.randrange(2**32)) for name in EXPS]
    for load in loads:
        load.start()
    return loads


def stop_load(loads: list[Load]) -> None:
    for load in loads:
        load.halt.set()
    for load in loads:
        load.join(30)
        assert not load.is_alive()
        assert load.unexpected is None, load.unexpected


def create_experiments(target: str) -> None:
    with Client(target) as c:
        c.create_experiment(NS, "bern", "beta_ts", ARMS)
        c.create_experiment(
            NS, "lin", "linucb", ARMS, dim=DIM, wait_window=WINDOW, default_reward=0.0
        )
        assert c.get_experiment(NS, "lin").apply_mode == "at_window_close"


def engine(data: pathlib.Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{data / 'banditd.db'}")


def exp_ids(eng: sa.Engine) -> dict[str, int]:
    with eng.connect() as conn:
        return {r.name: r.id for r in conn.execute(sa.select(experiments.c.name, experiments.c.id))}


def after_crash(data: pathlib.Path, ledger: Ledger, since: int, killed_at: float) -> dict[str, Any]:
    """Read the log as the dead server left it: committed-but-unapplied feedback (all of it, and
    the part the learner could already apply: no window, or its window closed before the kill)
    and decisions answered but not logged."""
    j = feedback.outerjoin(
        decisions,
        sa.and_(
            decisions.c.experiment_id == feedback.c.experiment_id,
            decisions.c.event_id == feedback.c.event_id,
        ),
    )
    unapplied = sa.and_(feedback.c.applied_version.is_(None), feedback.c.kind.in_(APPLIED_KINDS))
    ready = sa.or_(decisions.c.deadline.is_(None), decisions.c.deadline <= killed_at)
    eng = engine(data)
    try:
        ids = exp_ids(eng)
        with eng.connect() as conn:

            def per_exp(*where: Any) -> dict[int, int]:
                q = sa.select(feedback.c.experiment_id, sa.func.count()).select_from(j)
                return dict(conn.execute(q.where(*where).group_by(feedback.c.experiment_id)).all())

            pending = per_exp(unapplied)
            due = per_exp(unapplied, ready)
            logged = set(conn.execute(sa.select(decisions.c.event_id)).scalars())
    finally:
        eng.dispose()
    answered = ledger.answered[since:]
    lost = [(e, t) for _, e, t in answered if e not in logged]
    return {
        "unapplied": {n: pending.get(i, 0) for n, i in ids.items()},
        "ready": {n: due.get(i, 0) for n, i in ids.items()},
        "lost": len(lost),
        "lost_max_age_s": max((killed_at - t for _, t in lost), default=0.0),
    }


def run_until_crash(
    data: pathlib.Path,
    ledger: Ledger,
    rng: random.Random,
    fault: tuple[str, int] | None,
    first: bool,
) -> dict[str, Any]:
    env = {} if fault is None else {"BANDITD_FAULT": fault[0], "BANDITD_FAULT_AFTER": str(fault[1])}
    srv = ServerProcess(data, *FLAGS, env=env).start()
    faults_before = srv.log().count(f"injected fault {fault[0]}") if fault else 0
    since = len(ledger.answered)
    loads: list[Load] = []
    try:
        if first:
            create_experiments(srv.target)
        loads = start_load(srv.target, ledger, rng)
        if fault is None:
            time.sleep(rng.uniform(1.0, 3.0))
            killed_at = time.time()
            srv.kill()
        else:
            assert srv.proc is not None
            deadline = time.monotonic() + 60
            while srv.proc.poll() is None:
                for load in loads:
                    assert load.is_alive() or load.error is not None, load.unexpected
                assert time.monotonic() < deadline, f"fault {fault} not reached in 60 s"
                time.sleep(0.05)
            killed_at = time.time()
            assert srv.proc.returncode == 137
            assert srv.log().count(f"injected fault {fault[0]}") == faults_before + 1
            srv.proc = None
    finally:
        srv.kill()
        stop_load(loads)
    # The load may only fail because the server died under it.
    for load in loads:
        if load.error is not None:
            assert load.error.code_name in TRANSPORT, load.error
            if fault is None:
                assert load.error_at >= killed_at - 0.05, load.error
    out = after_crash(data, ledger, since, killed_at)
    out.update(
        how=fault[0] if fault else "kill -9",
        rate=sum(ld.sent / max(ld.elapsed, 1e-9) for ld in loads),
    )
    return out


# --- the reference --------------------------------------------------------------------------------


@dataclass
class Logged:
    exp_id: int
    family: str
    hyper: dict[str, Any]
    records: list[Any]
    rows: list[Any]  # feedback, with the decision's arm slot and context
    decisions: dict[str, Any]
    checkpoints: dict[int, bytes]


def read_log(eng: sa.Engine, name: str) -> Logged:
    with eng.connect() as conn:
        exp = conn.execute(sa.select(experiments).where(experiments.c.name == name)).one()
        records = conn.execute(
            sa.select(apply_records)
            .where(apply_records.c.experiment_id == exp.id)
            .order_by(apply_records.c.version_to)
        ).all()
        j = feedback.outerjoin(
            decisions,
            sa.and_(
                decisions.c.experiment_id == feedback.c.experiment_id,
                decisions.c.event_id == feedback.c.event_id,
            ),
        )
        rows = conn.execute(
            sa.select(
                feedback.c.seq,
                feedback.c.event_id,
                feedback.c.kind,
                feedback.c.reward,
                feedback.c.applied_version,
                decisions.c.event_id.label("decided"),
                decisions.c.arm_slot,
                decisions.c.context,
                decisions.c.deadline,
            )
            .select_from(j)
            .where(feedback.c.experiment_id == exp.id)
            .order_by(feedback.c.seq)
        ).all()
        decided = {
            r.event_id: r
            for r in conn.execute(
                sa.select(decisions.c.event_id, decisions.c.deadline).where(
                    decisions.c.experiment_id == exp.id
                )
            )
        }
        cks = {
            r.version: r.blob
            for r in conn.execute(
                sa.select(checkpoints.c.version, checkpoints.c.blob).where(
                    checkpoints.c.experiment_id == exp.id
                )
            )
        }
    return Logged(
        exp.id, exp.config["family"], exp.config["hyperparameters"], records, rows, decided, cks
    )


def reference(lg: Logged) -> tuple[policies.Policy, dict[int, State]]:
    """The state after each applied batch, replaying exactly the applied rows in version then
    seq order through the policy in-process."""
    fam = policies.get(lg.family)
    policy = policies.make(lg.family, **lg.hyper)
    state = policy.init(len(ARMS), dim=DIM if fam.contextual else None)
    by_version: dict[int, list[Any]] = collections.defaultdict(list)
    for r in lg.rows:
        if r.applied_version is not None:
            by_version[r.applied_version].append(r)
    states = {0: state}
    for rec in lg.records:
        batch = by_version[rec.version_to]
        x = np.stack([unpack_f64(r.context) for r in batch]) if fam.contextual else None
        state = policy.update(
            state,
            x,
            np.asarray([r.arm_slot for r in batch]),
            np.asarray([r.reward for r in batch]),
        )
        states[rec.version_to] = state
    return policy, states


def assert_same_stats(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    assert set(got) == set(want), what
    for k in want:
        g, w = np.asarray(got[k]), np.asarray(want[k])
        if k in ("s", "f", "n"):  # counts: exact
            np.testing.assert_array_equal(g, w, err_msg=f"{what}: {k}")
        else:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=0, err_msg=f"{what}: {k}")


def rebuilt(db_copy: pathlib.Path) -> dict[str, State]:
    """The states a fresh Registry recovers from the log (what a restart would serve)."""
    log_ = SqlEventLog.from_url(f"sqlite:///{db_copy}")
    try:
        reg = Registry(log_)
        reg.load_all()
        return {rt.exp.name: rt.state for rt in reg.all()}
    finally:
        log_.close()


# --- the test -------------------------------------------------------------------------------------


def test_acknowledged_rewards_survive_kill_9_and_fault_points_exactly_once(
    tmp_path: pathlib.Path,
) -> None:
    data = tmp_path / "data"
    rng = random.Random(20240604)
    plan: list[tuple[str, int] | None] = [None] * RANDOM_KILLS
    for i, (point, (lo, hi)) in enumerate(FAULTS):
        plan.insert(1 + 2 * i, (point, rng.randint(lo, hi)))  # kill, fault, kill, fault, ...
    ledger = Ledger()
    crashes = []
    t_start = time.monotonic()
    for i, fault in enumerate(plan):
        crashes.append(run_until_crash(data, ledger, rng, fault, first=i == 0))

    # A last run: resend what is unsure, load a little more, let every window close, stop cleanly.
    srv = ServerProcess(data, *FLAGS).start()
    try:
        loads = start_load(srv.target, ledger, rng)
        time.sleep(1.5)
        stop_load(loads)
        assert all(ld.error is None for ld in loads), [ld.error for ld in loads]
        time.sleep(WINDOW + 1.5)  # windows close; the learner writes defaults and applies
    finally:
        rc = srv.stop()
    assert rc == 0
    log_text = srv.log()
    assert "Traceback" not in log_text, log_text[-5000:]
    assert not (data / "banditd.running").exists()  # the clean stop was recorded
    elapsed = time.monotonic() - t_start

    # Every crash was followed by a recovery (marker seen), and recoveries replayed recorded
    # batches on top of a checkpoint, not only loaded one.
    assert log_text.count("recovering from an unclean stop") == len(plan)
    replays = [
        (int(v), int(n))
        for v, n in re.findall(r"state rebuilt from version (\d+) \+ (\d+) batches", log_text)
    ]
    assert any(v > 0 and n > 0 for v, n in replays), replays

    fault_runs = [c for c in crashes if c["how"] != "kill -9"]
    assert [c["how"] for c in fault_runs] == [p for p, _ in FAULTS]
    # The fault between commit and apply leaves feedback the learner had taken (so it was ready)
    # committed and unapplied: recovery must apply it exactly once.
    assert crashes[1]["how"] == "after_commit_before_apply"
    assert sum(crashes[1]["ready"].values()) > 0, crashes[1]

    eng = engine(data)
    try:
        logs = {name: read_log(eng, name) for name in EXPS}
    finally:
        eng.dispose()

    # 1. Every acknowledged reward is in the log as acknowledged, and its event id has exactly
    # one winning reward, applied exactly once (none for an orphan).
    assert len({a.seq for a in ledger.acks}) == len(ledger.acks)
    assert not any(ledger.unsure.values())  # the clean run got every resend acknowledged
    first_acks = collections.Counter((a.exp, a.event_id) for a in ledger.acks if a.kind == "reward")
    assert max(first_acks.values()) == 1  # no event id was acknowledged as a winner twice
    kinds = collections.Counter(a.kind for a in ledger.acks)
    for name, lg in logs.items():
        by_seq = {r.seq: r for r in lg.rows}
        by_event: dict[str, list[Any]] = collections.defaultdict(list)
        for r in lg.rows:
            by_event[r.event_id].append(r)
        for a in (a for a in ledger.acks if a.exp == name):
            row = by_seq[a.seq]
            assert (row.event_id, row.kind, row.reward) == (a.event_id, a.kind, a.value), a
            rows = by_event[a.event_id]
            winners = [r for r in rows if r.kind in WINNING]
            applied = [r for r in rows if r.applied_version is not None]
            if a.kind == "orphan":
                assert a.event_id not in lg.decisions and not winners and not applied, a
                continue
            assert a.kind in ("reward", "duplicate", "late"), a
            assert len(winners) == 1 and applied == winners, (a, rows)
            (w,) = winners
            if a.kind == "reward":
                assert w.seq == a.seq
            elif a.kind == "duplicate":  # a resend of a reward whose first Update did commit
                assert (w.kind, w.reward) == ("reward", a.value) and w.seq < a.seq, (a, rows)
            else:  # late: a resend after the window; the first send or the default won
                assert name == "lin" and (w.kind == "default" or w.reward == a.value), (a, rows)

        # 2. Log-wide: at most one winner per decision, exactly one where a default is set (all
        # windows have closed), every winner applied, and nothing else applied.
        winners_of = collections.Counter(r.event_id for r in lg.rows if r.kind in WINNING)
        assert max(winners_of.values()) == 1
        if name == "lin":
            assert set(winners_of) == set(lg.decisions)
        for r in lg.rows:
            assert (r.applied_version is not None) == (r.kind in WINNING), r
            if r.kind in WINNING:
                assert r.decided is not None, r

        # 3. Versions: one contiguous chain from 0, one step per batch, no version twice, fences
        # never going back, and each record's row count matching the rows marked with it.
        recs = lg.records
        assert [r.version_from for r in recs] == [0] + [r.version_to for r in recs[:-1]]
        assert all(r.version_to == r.version_from + 1 for r in recs)
        assert len({r.version_to for r in recs}) == len(recs)
        assert [r.fence for r in recs] == sorted(r.fence for r in recs)
        per_version = collections.Counter(r.applied_version for r in lg.rows if r.applied_version)
        assert per_version == {r.version_to: r.n_rows for r in recs}

    # 4. State: the reference replay of exactly the applied rows; every checkpoint on the way,
    # and the state a fresh process recovers, with and without checkpoints, equal it.
    refs = {name: reference(lg) for name, lg in logs.items()}
    copy = tmp_path / "copy.db"
    for suffix in ("", "-wal"):  # a clean stop normally folds the WAL in; copy it if not
        if (data / f"banditd.db{suffix}").exists():
            shutil.copy(data / f"banditd.db{suffix}", f"{copy}{suffix}")
    recovered = rebuilt(copy)
    e = sa.create_engine(f"sqlite:///{copy}")
    with e.begin() as conn:
        conn.execute(checkpoints.delete())
    e.dispose()
    replayed = rebuilt(copy)
    for name, lg in logs.items():
        _, states = refs[name]
        final = states[lg.records[-1].version_to]
        assert len(lg.checkpoints) > 3
        for version, blob in lg.checkpoints.items():
            ck = serialize.loads(blob, family=lg.family, types=(State, Meta)).state
            assert int(ck.meta.version) == version
            assert_same_stats(ck.stats, states[version].stats, f"{name} checkpoint @{version}")
        for what, st in (("recovered", recovered[name]), ("replayed", replayed[name])):
            assert int(st.meta.version) == lg.records[-1].version_to, what
            assert_same_stats(st.stats, final.stats, f"{name} {what}")
        # Counts checked without the policy code too: each applied reward adds one observation.
        applied = [r for r in lg.rows if r.applied_version is not None]
        slots = np.asarray([r.arm_slot for r in applied])
        reward = np.asarray([r.reward for r in applied])
        if lg.family == "beta_ts":
            cap = final.stats["s"].shape[0]
            np.testing.assert_array_equal(
                final.stats["s"], np.bincount(slots[reward == 1], minlength=cap)
            )
            np.testing.assert_array_equal(
                final.stats["f"], np.bincount(slots[reward == 0], minlength=cap)
            )
        else:
            cap = final.stats["n"].shape[0]
            np.testing.assert_array_equal(final.stats["n"], np.bincount(slots, minlength=cap))

    n_applied = {
        name: sum(r.applied_version is not None for r in lg.rows) for name, lg in logs.items()
    }
    print(
        f"\ncrash test: {len(plan)} crashes in {elapsed:.0f} s; acks {dict(kinds)}; "
        f"applied rows {n_applied}; versions "
        f"{ {n: lg.records[-1].version_to for n, lg in logs.items()} }; "
        f"checkpoints { {n: len(lg.checkpoints) for n, lg in logs.items()} }; "
        f"recoveries (checkpoint version, batches replayed) {replays}"
    )
    for c in crashes:
        print(
            f"  {c['how']:<30} offered {c['rate']:6.0f} rewards/s; unapplied at restart "
            f"{c['unapplied']} (ready {c['ready']}); decisions lost {c['lost']} "
            f"(answered at most {1000 * c['lost_max_age_s']:.0f} ms before the kill)"
        )
    assert sum(kinds.values()) > 5000  # the load really ran
