"""The group commit: rows from many threads, few commits, a flush that does not linger."""

from __future__ import annotations

import threading
import time

import pytest
from banditd.service.writer import GroupCommitter


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
