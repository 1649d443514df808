"""Group commit: many callers' rows go to the event log in one transaction.

A commit with ``synchronous=FULL`` costs an fsync; batching concurrent Selects' decisions (and
concurrent Updates' feedback) into one transaction is what makes thousands per second possible.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("banditd.writer")


class GroupCommitter(Generic[T, R]):
    """Collects rows from any thread; a background thread commits them with ``commit(rows)``
    (one call per batch, results aligned with rows) and resolves each submitter's future."""

    def __init__(
        self,
        name: str,
        commit: Callable[[list[T]], Sequence[R]],
        *,
        max_wait_s: float = 0.002,
        max_rows: int = 2048,
    ) -> None:
        self._commit = commit
        self._max_wait = max_wait_s
        self._max_rows = max_rows
        self._cv = threading.Condition()
        self._queue: list[tuple[list[T], Future[list[R]]]] = []
        self._queued_rows = 0
        self._closed = False
        self._urgent = False  # a flush is waiting: commit without lingering
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, rows: list[T]) -> Future[list[R]]:
        fut: Future[list[R]] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("writer is closed")
            self._queue.append((rows, fut))
            self._queued_rows += len(rows)
            # Wake the writer for the first rows only (it then lingers on its own) or when the
            # batch is full: a wake-up per submit costs every Select a thread switch.
            if len(self._queue) == 1 or self._queued_rows >= self._max_rows:
                self._cv.notify()
        return fut

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything submitted before this call is committed (or failed)."""
        marker: Future[list[R]] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("writer is closed")
            pending = [f for _, f in self._queue]
            # The marker and the flag go in together, so the batch that takes the marker is
            # the one that skips the linger.
            self._queue.append(([], marker))
            self._urgent = True
            self._cv.notify()
        for f in [*pending, marker]:
            # The submitter sees a failure; flush only waits for the commit to be over.
            with contextlib.suppress(Exception):
                f.result(timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()

    def _take(self) -> list[tuple[list[T], Future[list[R]]]]:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return []
            # A short linger lets concurrent callers join this commit.
            deadline = time.monotonic() + self._max_wait
            while self._queued_rows < self._max_rows and not self._closed and not self._urgent:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch, self._queue, self._queued_rows = self._queue, [], 0
            self._urgent = False
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            rows: list[Any] = [r for rs, _ in batch for r in rs]
            try:
                results = list(self._commit(rows)) if rows else []
            except BaseException as e:  # noqa: BLE001 - delivered to every waiting caller
                log.warning("group commit of %d rows failed: %s", len(rows), e)
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            i = 0
            for rs, fut in batch:
                fut.set_result(results[i : i + len(rs)])
                i += len(rs)
