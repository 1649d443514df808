"""Eight client threads mixing Select and Update on one experiment of an in-process server.

Each thread runs a seeded random mix of operations: Select batches (some retried with the same
event ids, some naming an event id other threads also ask for), Updates of its own decisions,
of other threads' decisions, second rewards for events that already have one (stored as
duplicates) and retried Updates (the same reward ids: answered with the first acks, nothing
stored twice). The client side records everything; once the learner has drained, the server's
stats, its event log and the model state must account for exactly what was sent.
"""

from __future__ import annotations

import os
import pathlib
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from banditd.clients import Ack, Client, Reward
from banditd.clients.ids import new_event_id
from banditd.service.config import ServerConfig
from banditd.service.server import Running, start

ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("BANDITD_JAX_CACHE", str(ROOT / ".jax_cache"))  # the tests' shared cache

NAMESPACE = "concurrency"
THREADS = 8
OPS = 300  # operations per thread
ARMS = 5
DIM = 8
CONTESTED = 24  # event ids every thread may ask for (at most one decision each)
DRAIN_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    srv = start(ServerConfig(port=0, data_dir=str(tmp_path_factory.mktemp("concurrency"))))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(running: Running) -> Iterator[Client]:
    # One client shared by all threads: the documented use (it is thread-safe).
    with Client(f"127.0.0.1:{running.port}", timeout=60.0) as c:
        yield c


@dataclass
class Sent:
    """Everything the threads sent and got back (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    arm: dict[str, str] = field(default_factory=dict)  # event id -> chosen arm (first answer)
    context: dict[str, np.ndarray] = field(default_factory=dict)  # event id -> context sent
    events: list[str] = field(default_factory=list)  # decided event ids, in arrival order
    contested_answers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # reward id -> (event id, value, first ack); a reward id is one stored row at most
    rewards: dict[str, tuple[str, float, Ack]] = field(default_factory=dict)
    select_calls: int = 0
    select_retries: int = 0
    update_calls: int = 0
    update_retries: int = 0
    errors: list[str] = field(default_factory=list)


def _run_threads(
    client: Client, name: str, contextual: bool, seed: int
) -> tuple[Sent, list[str], float]:
    sent = Sent()
    contested = [new_event_id() for _ in range(CONTESTED)]
    arms = [f"arm-{i}" for i in range(ARMS)]
    # True model of the world: per-arm click rates (binary) or linear weights (real rewards).
    world = np.random.default_rng(seed)
    rates = dict(zip(arms, world.uniform(0.1, 0.9, ARMS), strict=True))
    theta = dict(zip(arms, world.normal(size=(ARMS, DIM)), strict=True))
    barrier = threading.Barrier(THREADS)

    def reward_value(rng: np.random.Generator, event_id: str) -> float:
        with sent.lock:
            arm, x = sent.arm[event_id], sent.context.get(event_id)
        if not contextual:
            return float(rng.random() < rates[arm])
        assert x is not None
        return float(x @ theta[arm] + 0.1 * rng.normal())

    def select(rng: np.random.Generator) -> list[str]:
        """One Select batch; returns the event ids it decided for the first time."""
        n = int(rng.integers(1, 9))
        ids: list[str | None] = [None] * n
        if rng.random() < 0.15:
            ids[int(rng.integers(n))] = contested[int(rng.integers(CONTESTED))]
        ctx = rng.normal(size=(n, DIM)) if contextual else None
        ds = client.select(NAMESPACE, name, ctx if contextual else n, event_ids=ids)
        assert len(ds) == n
        fresh = []
        with sent.lock:
            sent.select_calls += 1
            for j, d in enumerate(ds):
                assert len(d.arm_ids) == 1 and d.arm_id in arms, d
                if ids[j] is not None:
                    assert d.event_id == ids[j]
                    sent.contested_answers[d.event_id].append(d.arm_id)
                    if d.event_id in sent.arm:
                        continue  # decided before (by this or another thread)
                else:
                    assert not d.replayed, d
                    if d.event_id in sent.arm:
                        sent.errors.append(f"fresh event id {d.event_id} answered twice")
                        continue
                sent.arm[d.event_id] = d.arm_id
                if ctx is not None:
                    sent.context[d.event_id] = ctx[j]
                sent.events.append(d.event_id)
                if ids[j] is None:
                    fresh.append(d.event_id)
        if rng.random() < 0.1:  # a retry: the recorded decisions come back
            again = client.select(
                NAMESPACE, name, ctx if contextual else n, event_ids=[d.event_id for d in ds]
            )
            with sent.lock:
                sent.select_retries += 1
            assert [(d.event_id, d.arm_ids) for d in again] == [(d.event_id, d.arm_ids) for d in ds]
            assert all(d.replayed for d in again), again
        return fresh

    def update(rng: np.random.Generator, pending: list[str], rewarded: list[str]) -> None:
        chosen: list[str] = []
        for _ in range(min(len(pending), int(rng.integers(1, 6)))):
            chosen.append(pending.pop(int(rng.integers(len(pending)))))
        rewarded.extend(chosen)
        if rng.random() < 0.25:  # someone else's decision (it may already have a reward)
            with sent.lock:
                chosen.append(sent.events[int(rng.integers(len(sent.events)))])
        if rewarded and rng.random() < 0.1:  # a second reward for one of ours: a duplicate
            chosen.append(rewarded[int(rng.integers(len(rewarded)))])
        if not chosen:
            return
        batch = [Reward(e, reward_value(rng, e), reward_id=uuid.uuid4().hex) for e in chosen]
        acks = client.update(NAMESPACE, name, batch)
        assert [a.event_id for a in acks] == chosen
        with sent.lock:
            sent.update_calls += 1
            for r, a in zip(batch, acks, strict=True):
                assert r.reward_id not in sent.rewards
                sent.rewards[r.reward_id] = (r.event_id, r.value, a)
        if rng.random() < 0.15:  # a retry (same reward ids): the first acks, nothing stored
            again = client.update(NAMESPACE, name, batch)
            with sent.lock:
                sent.update_retries += 1
            assert again == acks

    def worker(tid: int) -> None:
        rng = np.random.default_rng([seed, tid])
        pending: list[str] = []
        rewarded: list[str] = []
        try:
            barrier.wait(timeout=60)
            for _ in range(OPS):
                if not pending or rng.random() < 0.45:
                    pending.extend(select(rng))
                else:
                    update(rng, pending, rewarded)
        except Exception:  # noqa: BLE001 - reported by the test
            with sent.lock:
                sent.errors.append(f"thread {tid}:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=worker, args=(i,), name=f"t{i}") for i in range(THREADS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    return sent, contested, time.perf_counter() - t0


def _check_totals(running: Running, client: Client, name: str, sent: Sent, contested: list[str]):
    """Everything the server counted, logged and learned equals what the threads sent."""
    assert not sent.errors, "\n".join(sent.errors)
    rt = running.servicer.registry.get(NAMESPACE, name)
    assert rt is not None

    # Client side: which row won for each event id, per arm.
    by_event: dict[str, list[tuple[float, Ack]]] = defaultdict(list)
    for event_id, value, ack in sent.rewards.values():
        by_event[event_id].append((value, ack))
    won: dict[str, tuple[float, Ack]] = {}
    for event_id, got in by_event.items():
        kinds = Counter(a.kind for _, a in got)
        assert kinds == Counter({"reward": 1, "duplicate": len(got) - 1}), (event_id, got)
        assert all(a.duplicate == (a.kind == "duplicate") for _, a in got)
        assert not any(a.late or a.orphan for _, a in got)
        won[event_id] = next((v, a) for v, a in got if a.kind == "reward")
    seqs = [a.sequence for _, _, a in sent.rewards.values()]
    assert len(set(seqs)) == len(seqs), "two stored rows share a sequence"
    n_decisions = len(sent.arm)
    n_rows = len(sent.rewards)
    n_won = len(won)
    assert n_won < n_rows  # the mix did send duplicates
    decided_per_arm = Counter(sent.arm.values())
    rewarded_per_arm = Counter(sent.arm[e] for e in won)
    reward_sum_per_arm: dict[str, float] = defaultdict(float)
    for e, (v, _) in won.items():
        reward_sum_per_arm[sent.arm[e]] += v

    # Contested event ids: every answer names the same arm, and each is one decision.
    for event_id, answers in sent.contested_answers.items():
        assert len(set(answers)) == 1, (event_id, answers)
        assert sent.arm[event_id] == answers[0]
    assert len(sent.events) == len(set(sent.events)) == n_decisions

    # The learner drains: the applied watermark reaches the highest acknowledged winning row.
    top = max(a.sequence for _, a in won.values())
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (stats := client.stats(NAMESPACE, name)).applied_watermark < top:
        assert time.monotonic() < deadline, (
            f"applied watermark {stats.applied_watermark} < {top} after {DRAIN_TIMEOUT_S} s"
        )
        time.sleep(0.05)
    assert stats.applied_watermark == top
    assert running.learner.errors == 0

    # GetStats
    assert stats.decisions == n_decisions
    fb = stats.feedback
    assert (fb.rewards, fb.duplicates, fb.defaults, fb.late, fb.orphans, fb.observations) == (
        n_won,
        n_rows - n_won,
        0,
        0,
        0,
        0,
    )
    by_arm = {a.arm_id: a for a in stats.arms}
    assert {a: s.decisions for a, s in by_arm.items() if s.decisions} == dict(decided_per_arm)
    assert sum(s.decisions for s in by_arm.values()) == n_decisions
    assert {a: s.rewards for a, s in by_arm.items() if s.rewards} == dict(rewarded_per_arm)
    for a, s in by_arm.items():
        assert s.mean_reward * s.rewards == pytest.approx(reward_sum_per_arm[a], abs=1e-9), a

    # The event log
    counts = running.servicer.log.counts(rt.exp.id)
    assert counts.decisions == n_decisions
    assert counts.feedback["reward"] == n_won
    assert counts.feedback["duplicate"] == n_rows - n_won
    assert sum(counts.feedback.values()) == n_rows
    assert counts.applied == n_won  # every winning row applied, no duplicate
    assert counts.version == stats.version >= 1
    logged = running.servicer.log.get_decisions(rt.exp.id, list(sent.arm))
    assert len(logged) == n_decisions
    arm_of_slot = {a.slot: a.arm_id for a in rt.arms}
    assert {e: arm_of_slot[d.chosen[0]] for e, d in logged.items()} == sent.arm
    return stats, logged, won


def test_eight_threads_beta_ts(running: Running, client: Client) -> None:
    name = "beta"
    client.create_experiment(NAMESPACE, name, "beta_ts", [f"arm-{i}" for i in range(ARMS)])
    sent, contested, seconds = _run_threads(client, name, contextual=False, seed=1)
    stats, _, won = _check_totals(running, client, name, sent, contested)
    assert sent.select_retries and sent.update_retries
    assert max(len(v) for v in sent.contested_answers.values()) > 1
    # The posterior counts every winning reward exactly once: Beta(1 + s, 1 + f) per arm.
    for a in stats.arms:
        s = sum(v for e, (v, _) in won.items() if sent.arm[e] == a.arm_id)
        n = sum(1 for e in won if sent.arm[e] == a.arm_id)
        assert a.model_mean == pytest.approx((1 + s) / (2 + n), abs=1e-12), a
    print(
        f"beta_ts: {sent.select_calls} Selects (+{sent.select_retries} retries), "
        f"{sent.update_calls} Updates (+{sent.update_retries} retries) in {seconds:.1f} s"
    )


def test_eight_threads_linucb(running: Running, client: Client) -> None:
    name = "linucb"
    client.create_experiment(
        NAMESPACE, name, "linucb", [f"arm-{i}" for i in range(ARMS)], dim=DIM, reward_kind="real"
    )
    sent, contested, seconds = _run_threads(client, name, contextual=True, seed=2)
    assert sent.select_retries and sent.update_retries
    assert max(len(v) for v in sent.contested_answers.values()) > 1
    _, logged, won = _check_totals(running, client, name, sent, contested)
    # Every logged context is the one sent (contested ids: the one that won the race).
    for e, d in logged.items():
        x = d.context_array()
        assert x is not None
        if e not in contested:
            np.testing.assert_array_equal(x, sent.context[e])
    # The model holds every winning reward exactly once: n, G = sum x x^T and b = sum r x per arm.
    rt = running.servicer.registry.get(NAMESPACE, name)
    assert rt is not None
    st: Any = rt.state.stats
    for a in rt.arms:
        xs = [logged[e].context_array() for e in won if sent.arm[e] == a.arm_id]
        rs = [won[e][0] for e in won if sent.arm[e] == a.arm_id]
        X = np.array(xs).reshape(-1, DIM)
        assert float(st["n"][a.slot]) == len(xs), a
        np.testing.assert_allclose(np.asarray(st["G"][a.slot]), X.T @ X, atol=1e-8)
        np.testing.assert_allclose(np.asarray(st["b"][a.slot]), X.T @ np.array(rs), atol=1e-8)
    print(
        f"linucb: {sent.select_calls} Selects (+{sent.select_retries} retries), "
        f"{sent.update_calls} Updates (+{sent.update_retries} retries) in {seconds:.1f} s"
    )
