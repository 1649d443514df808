"""The group commit: rows from many threads, few commits, a flush that does not linger."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from banditd.service.writer import BufferFull, GroupCommitter


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, rows: list[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(rows))
        if self.fail_on is not None and self.fail_on in rows:
            raise RuntimeError("disk full")
        return [r * 10 for r in rows]


def test_rows_come_back_aligned_and_in_order() -> None:
    rec = Recorder()
    w: GroupCommitter[int, int] = GroupCommitter("t", rec, max_wait_s=0.001)
    try:
        futs = [w.submit([3 * i, 3 * i + 1, 3 * i + 2]) for i in range(50)]
        for i, f in enumerate(futs):
            assert f.result(5) == [30 * i, 30 * i + 10, 30 * i + 20]
        assert [r for b in rec.batches for r in b] == list(range(150))
    finally:
        w.close()


def test_concurrent_submits_share_commits() -> None:
    rec = Recorder()
    w: GroupCommitter[int, int] = GroupCommitter("t", rec, max_wait_s=0.05)
    try:
        start = threading.Barrier(16)
        results: dict[int, list[int]] = {}

        def one(i: int) -> None:
            start.wait()
            results[i] = w.submit([i]).result(5)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: [10 * i] for i in range(16)}
        assert len(rec.batches) < 16  # the linger let later submits join a commit
    finally:
        w.close()


def test_full_batch_commits_without_waiting_out_the_linger() -> None:
    rec = Recorder()
    w: GroupCommitter[int, int] = GroupCommitter("t", rec, max_wait_s=30.0, max_rows=4)
    try:
        t0 = time.monotonic()
        futs = [w.submit([i]) for i in range(4)]
        assert [f.result(5) for f in futs] == [[0], [10], [20], [30]]
        assert time.monotonic() - t0 < 5
    finally:
        w.close()


def test_flush_skips_the_linger() -> None:
    rec = Recorder()
    w: GroupCommitter[int, int] = GroupCommitter("t", rec, max_wait_s=30.0)
    try:
        fut = w.submit([7])
        time.sleep(0.05)  # the writer is lingering now
        t0 = time.monotonic()
        w.flush(timeout=10)
        assert time.monotonic() - t0 < 5
        assert fut.done() and fut.result() == [70]
    finally:
        w.close()


def test_a_failed_commit_reaches_every_submitter_and_the_writer_goes_on() -> None:
    rec = Recorder(fail_on=2)
    w: GroupCommitter[int, int] = GroupCommitter("t", rec, max_wait_s=0.2)
    try:
        a, b = w.submit([1]), w.submit([2])
        for f in (a, b):
            with pytest.raises(RuntimeError, match="disk full"):
                f.result(5)
        assert w.submit([5]).result(5) == [50]
    finally:
        w.close()


def test_closed_writer_refuses_rows() -> None:
    w: GroupCommitter[int, int] = GroupCommitter("t", Recorder())
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.submit([1])
    with pytest.raises(RuntimeError, match="closed"):
        w.flush()


# --- riding out a database outage ---------------------------------------------------------------


class Down(Exception):
    """Stands in for the store's Unavailable."""


class Flaky:
    """A commit that raises ``Down`` while ``down`` is set, and records what it committed."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.committed: list[int] = []
        self.attempts: list[float] = []
        self.fail_on: int | None = None
        self.lock = threading.Lock()

    def __call__(self, rows: list[int]) -> list[int]:
        with self.lock:
            self.attempts.append(time.monotonic())
        if self.down.is_set():
            raise Down("database unavailable: connection refused")
        if self.fail_on is not None and self.fail_on in rows:
            raise RuntimeError("integrity: bad row")
        with self.lock:
            self.committed.extend(rows)
        return [r * 10 for r in rows]


def buffering(flaky: Flaky, **kw: object) -> GroupCommitter[int, int]:
    opts: dict[str, Any] = {"max_wait_s": 0.001, "retry_on": (Down,), "backoff_s": 0.01, **kw}
    opts.setdefault("max_backoff_s", 0.08)
    return GroupCommitter("decision-writer", flaky, **opts)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_unavailable_rows_stay_buffered_in_order_and_land_when_it_returns() -> None:
    flaky = Flaky()
    w = buffering(flaky, max_rows=16)
    try:
        assert w.submit([0, 1]).result(5) == [0, 10]
        flaky.down.set()
        futs = [w.submit([3 * i, 3 * i + 1, 3 * i + 2]) for i in range(1, 40)]
        wait_for(lambda: w.unavailable is not None)
        time.sleep(0.1)  # retried meanwhile, none of the submitters failed
        assert not any(f.done() for f in futs)
        assert w.buffered_rows == 3 * 39
        assert isinstance(w.unavailable, Down)
        more = [w.submit([1000 + i]) for i in range(5)]  # new rows keep queueing while down
        flaky.down.clear()
        for i, f in enumerate(futs, start=1):
            assert f.result(5) == [30 * i, 30 * i + 10, 30 * i + 20]
        assert [f.result(5) for f in more] == [[10 * (1000 + i)] for i in range(5)]
        # Nothing lost, nothing twice, submit order kept across the retries.
        assert flaky.committed == [0, 1, *range(3, 120), *range(1000, 1005)]
        assert w.unavailable is None and w.buffered_rows == 0
    finally:
        w.close()


def test_buffer_bound_refuses_rows_and_accepts_again_after_the_drain() -> None:
    flaky = Flaky()
    w = buffering(flaky, max_buffered_rows=10)
    try:
        flaky.down.set()
        futs = [w.submit([i, i + 100]) for i in range(5)]  # 10 rows: exactly the bound
        wait_for(lambda: w.unavailable is not None)
        with pytest.raises(BufferFull, match="10 rows buffered, the limit is 10") as err:
            w.submit([7])
        assert isinstance(err.value.cause, Down) and err.value.buffered == 10
        assert w.buffered_rows == 10  # the refused row was not queued
        flaky.down.clear()
        assert [f.result(5) for f in futs] == [[10 * i, 10 * (i + 100)] for i in range(5)]
        wait_for(lambda: w.buffered_rows == 0)
        assert w.submit([7]).result(5) == [70]
        assert 7 not in flaky.committed[:-1]  # the refused submit never reached the log
    finally:
        w.close()


def test_other_errors_still_reach_the_submitters_while_buffering() -> None:
    flaky = Flaky()
    flaky.fail_on = 2
    w = buffering(flaky, max_wait_s=0.2)
    try:
        a, b = w.submit([1]), w.submit([2])
        for f in (a, b):
            with pytest.raises(RuntimeError, match="integrity"):
                f.result(5)
        assert w.unavailable is None
        assert w.submit([5]).result(5) == [50]
    finally:
        w.close()


def test_backoff_doubles_and_is_bounded() -> None:
    flaky = Flaky()
    w = buffering(flaky, backoff_s=0.02, max_backoff_s=0.16)
    try:
        flaky.down.set()
        f = w.submit([1])
        time.sleep(1.5)
        flaky.down.clear()
        assert f.result(5) == [10]
    finally:
        w.close()
    gaps = [b - a for a, b in zip(flaky.attempts, flaky.attempts[1:], strict=False)][:-1]
    assert len(gaps) >= 5
    # 0.02, 0.04, 0.08, 0.16, 0.16, ...: doubling from backoff_s, capped at max_backoff_s
    assert gaps[0] >= 0.018 and gaps[1] >= 0.038 and gaps[2] >= 0.078 and gaps[3] >= 0.158
    assert gaps[0] < 0.15  # the first retry comes soon
    assert max(gaps) < 0.16 + 0.1
    assert len(flaky.attempts) < 1.5 / 0.16 + 8  # not a retry per ms


def test_flush_does_not_wait_out_an_outage() -> None:
    flaky = Flaky()
    w = buffering(flaky)
    try:
        flaky.down.set()
        f = w.submit([1])
        t0 = time.monotonic()
        assert w.flush(timeout=10) is False  # the commit failed as unavailable: told at once
        assert w.flush(timeout=10) is False  # known down: no wait at all
        assert time.monotonic() - t0 < 2
        assert not f.done()
        flaky.down.clear()
        assert f.result(5) == [10]
        assert w.flush(timeout=10) is True
    finally:
        w.close()


def test_flush_times_out_on_a_slow_commit() -> None:
    gate = threading.Event()

    def slow(rows: list[int]) -> list[int]:
        gate.wait(10)
        return rows

    w: GroupCommitter[int, int] = GroupCommitter("t", slow, max_wait_s=0.001)
    try:
        w.submit([1])
        t0 = time.monotonic()
        assert w.flush(timeout=0.2) is False
        assert time.monotonic() - t0 < 2
        gate.set()
        assert w.flush(timeout=5) is True
    finally:
        gate.set()
        w.close()


def test_close_while_down_gives_the_rows_up_and_says_how_many(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky()
    w = buffering(flaky, close_grace_s=0.2)
    flaky.down.set()
    futs = [w.submit([i]) for i in range(3)]
    wait_for(lambda: w.unavailable is not None)
    t0 = time.monotonic()
    with caplog.at_level("ERROR", logger="banditd.writer"):
        assert w.close() == 3
    assert time.monotonic() - t0 < 3
    assert "closing with 3 rows not committed" in caplog.text
    for f in futs:
        with pytest.raises(Down):
            f.result(1)


def test_close_within_the_grace_commits_the_buffer() -> None:
    flaky = Flaky()
    w = buffering(flaky, close_grace_s=5.0)
    flaky.down.set()
    f = w.submit([4])
    wait_for(lambda: w.unavailable is not None)
    threading.Timer(0.2, flaky.down.clear).start()
    assert w.close() == 0
    assert f.result(1) == [40]


def test_one_warning_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky()
    w = buffering(flaky)
    try:
        with caplog.at_level("INFO", logger="banditd.writer"):
            flaky.down.set()
            f = w.submit([1])
            time.sleep(0.5)  # several retries
            flaky.down.clear()
            f.result(5)
            wait_for(lambda: "backlog committed" in caplog.text)
    finally:
        w.close()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(flaky.attempts) > 4
    assert len(warnings) == 2, [r.getMessage() for r in warnings]  # down, and back again
    assert "unavailable" in warnings[0].getMessage()
    assert "available again" in warnings[1].getMessage()


def test_the_feedback_writer_fails_fast() -> None:
    """Without retry_on (the feedback writer: Update waits for it) an outage fails at once."""
    flaky = Flaky()
    w: GroupCommitter[int, int] = GroupCommitter("feedback-writer", flaky, max_wait_s=0.001)
    try:
        flaky.down.set()
        with pytest.raises(Down):
            w.submit([1]).result(5)
        assert w.buffered_rows == 0
        flaky.down.clear()
        assert w.submit([2]).result(5) == [20]
    finally:
        w.close()
