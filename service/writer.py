"""Group commit: many callers' rows go to the event log in one transaction.

A commit with ``synchronous=FULL`` costs an fsync; batching concurrent Selects' decisions (and
concurrent Updates' feedback) into one transaction is what makes thousands per second possible.

A writer made with ``retry_on`` (the decision writer, with the store's ``Unavailable``) rides out
a database outage: a commit failing with one of those errors fails no submitter; its rows go back
to the front of the queue, in order, and are retried with backoff (``backoff_s`` doubling up to
``max_backoff_s``) while new rows keep queueing, up to ``max_buffered_rows``; past that ``submit``
raises ``BufferFull``. Any other error still goes to the submitters of the batch. A writer made
without ``retry_on`` (the feedback writer: Update waits for its commit) fails fast.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("banditd.writer")

QUIET_S = 10.0  # a writer that fails fast reports its failures at most this often


class BufferFull(Exception):
    """The writer already holds ``max_buffered_rows`` rows it has not committed (the database is
    unavailable, or slower than the rows come): these rows were refused, nothing was queued."""

    def __init__(self, name: str, buffered: int, limit: int, cause: BaseException | None) -> None:
        why = f"the database is unavailable ({cause})" if cause is not None else "commits lag"
        super().__init__(f"{name}: {buffered} rows buffered, the limit is {limit}; {why}")
        self.buffered = buffered
        self.limit = limit
        self.cause = cause


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
        retry_on: tuple[type[BaseException], ...] = (),
        max_buffered_rows: int | None = None,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        close_grace_s: float = 5.0,
    ) -> None:
        if max_buffered_rows is not None and max_buffered_rows < 1:
            raise ValueError(f"max_buffered_rows: must be >= 1, got {max_buffered_rows}")
        self.name = name
        self._commit = commit
        self._max_wait = max_wait_s
        self._max_rows = max_rows
        self._retry_on = retry_on
        self._max_buffered = max_buffered_rows
        self._backoff = backoff_s
        self._max_backoff = max_backoff_s
        self._close_grace = close_grace_s
        self._cv = threading.Condition()
        # Rows with their submitter's future; ``([], marker)`` entries are flushes waiting.
        self._queue: list[tuple[list[T], Future[list[R]]]] = []
        self._queued_rows = 0
        self._batch_rows = 0  # rows of the batch being committed (retried while unavailable)
        self._markers = 0  # flush markers in the queue: commit without lingering
        self._closed = False
        self._closed_at = 0.0
        self._down: BaseException | None = None  # the last retryable error, until a commit works
        self._down_since = 0.0
        self._backlog_since = 0.0  # after an outage: committing the backlog since then
        self._full_logged = False
        self._fail_logged = 0.0
        self._fails = 0
        self.lost_rows = 0  # rows given up at close while the database was unavailable
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- state, for callers, logs and metrics ----------------------------------------------------

    @property
    def buffered_rows(self) -> int:
        """Rows submitted and not yet committed (queued, or in the commit being tried)."""
        with self._cv:
            return self._queued_rows + self._batch_rows

    @property
    def unavailable(self) -> BaseException | None:
        """The error of the last commit attempt if it was retryable and no commit has worked
        since (the database is down: rows are buffered); None otherwise."""
        return self._down

    # --- callers ---------------------------------------------------------------------------------

    def submit(self, rows: list[T]) -> Future[list[R]]:
        """Queue ``rows``; the future gets their results once committed. Raises ``BufferFull``
        (and queues nothing) when ``max_buffered_rows`` would be exceeded."""
        fut: Future[list[R]] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("writer is closed")
            if not rows:  # nothing to commit (and an empty entry would read as a flush)
                fut.set_result([])
                return fut
            if self._max_buffered is not None:
                held = self._queued_rows + self._batch_rows
                if held + len(rows) > self._max_buffered:
                    if not self._full_logged:
                        self._full_logged = True
                        log.warning(
                            "%s: %d rows buffered, the limit is %d: refusing more until the "
                            "database takes them",
                            self.name,
                            held,
                            self._max_buffered,
                        )
                    raise BufferFull(self.name, held, self._max_buffered, self._down)
            self._queue.append((rows, fut))
            self._queued_rows += len(rows)
            # Wake the writer for the first rows only (it then lingers on its own) or when the
            # batch is full: a wake-up per submit costs every Select a thread switch. While the
            # database is down the writer sleeps out its backoff whatever comes in.
            if len(self._queue) == 1 or self._queued_rows >= self._max_rows:
                self._cv.notify()
        return fut

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call is committed (or failed: a failure
        goes to its submitter). Returns True then; False if ``timeout`` (the whole wait) passed
        first, or if the database is unavailable: a ``retry_on`` writer then keeps the rows and
        ``flush`` does not wait for them (at once when it is known to be down, else when the
        commit of those rows fails)."""
        marker: Future[list[R]] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("writer is closed")
            if self._down is not None:
                return self._queued_rows + self._batch_rows == 0
            # The marker goes behind every row submitted before: the commit that resolves it
            # (or the retryable failure that fails it) comes after theirs.
            self._queue.append(([], marker))
            self._markers += 1
            self._cv.notify()
        try:
            marker.result(timeout)
        except FutureTimeout:
            return False
        except BaseException as e:  # noqa: BLE001 - a submitter's failure is theirs to see
            if self._retry_on and isinstance(e, self._retry_on):
                return False
        return True

    def close(self) -> int:
        """Commit what is queued and stop. While the database is unavailable, retries for up to
        ``close_grace_s``, then gives the rows up (logged as an error, their futures failed);
        returns how many rows were given up."""
        with self._cv:
            if not self._closed:
                self._closed = True
                self._closed_at = time.monotonic()
            self._cv.notify()
        self._thread.join()
        return self.lost_rows

    # --- the writer thread -----------------------------------------------------------------------

    def _take(self) -> list[tuple[list[T], Future[list[R]]]]:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return []
            # A short linger lets concurrent callers join this commit.
            deadline = time.monotonic() + self._max_wait
            while self._queued_rows < self._max_rows and not self._closed and not self._markers:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            # Whole submits, up to max_rows rows (at least one submit): after an outage the
            # backlog goes in bounded transactions, and a failure retries only one of them.
            n = rows = 0
            while n < len(self._queue) and (
                n == 0 or rows + len(self._queue[n][0]) <= self._max_rows
            ):
                rows += len(self._queue[n][0])
                n += 1
            batch, self._queue = self._queue[:n], self._queue[n:]
            self._queued_rows -= rows
            self._batch_rows = rows
            self._markers -= sum(1 for rs, _ in batch if not rs)
            return batch

    def _run(self) -> None:
        delay = self._backoff
        while True:
            batch = self._take()
            if not batch:
                return
            rows: list[Any] = [r for rs, _ in batch for r in rs]
            try:
                results = list(self._commit(rows)) if rows else []
            except BaseException as e:  # noqa: BLE001 - delivered to every waiting caller
                if self._retry_on and isinstance(e, self._retry_on):
                    if self._retry(batch, e, delay):
                        delay = min(delay * 2, self._max_backoff)
                        continue
                else:
                    self._failed(len(rows), e)
                with self._cv:
                    self._batch_rows = 0
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            delay = self._backoff
            with self._cv:
                self._batch_rows = 0
                now = time.monotonic()
                if self._down is not None:
                    log.warning(
                        "%s: database available again after %.1f s; %d rows were buffered",
                        self.name,
                        now - self._down_since,
                        self._queued_rows + len(rows),
                    )
                    self._down = None
                    self._backlog_since = now
                if self._backlog_since and self._queued_rows < self._max_rows:
                    log.info(
                        "%s: backlog committed in %.1f s", self.name, now - self._backlog_since
                    )
                    self._backlog_since = 0.0
                self._full_logged = False
            i = 0
            for rs, fut in batch:
                fut.set_result(results[i : i + len(rs)])
                i += len(rs)

    def _retry(
        self, batch: list[tuple[list[T], Future[list[R]]]], e: BaseException, delay: float
    ) -> bool:
        """A retryable failure: put the rows back in front (failing the flushes waiting behind
        them) and sleep out ``delay``. False when closing past the grace: give up the rows."""
        with self._cv:
            now = time.monotonic()
            if self._down is None:
                self._down_since = now
                log.warning(
                    "%s: database unavailable (%s): buffering rows (%s) and retrying every "
                    "%.2f-%.1f s",
                    self.name,
                    e,
                    f"limit {self._max_buffered}" if self._max_buffered else "no limit",
                    self._backoff,
                    self._max_backoff,
                )
            self._down = e
            if self._closed and now - self._closed_at >= self._close_grace:
                rest = self._queue
                self._queue, self._queued_rows, self._markers, self._batch_rows = [], 0, 0, 0
                batch.extend(rest)
                self.lost_rows += sum(len(rs) for rs, _ in batch)
                log.error(
                    "%s: closing with %d rows not committed: the database is still "
                    "unavailable (%s)",
                    self.name,
                    self.lost_rows,
                    e,
                )
                return False
            waiting = [f for rs, f in self._queue if not rs] + [f for rs, f in batch if not rs]
            kept = [(rs, f) for rs, f in batch if rs]
            self._queue = kept + [(rs, f) for rs, f in self._queue if rs]
            self._queued_rows += self._batch_rows
            self._batch_rows = 0
            self._markers = 0
        for f in waiting:  # every flush waits behind these rows: tell it now, not at a timeout
            f.set_exception(e)
        with self._cv:
            until = time.monotonic() + delay
            while True:
                left = until - time.monotonic()
                if left <= 0:
                    break
                if self._closed and time.monotonic() - self._closed_at >= self._close_grace:
                    break
                self._cv.wait(min(left, 0.05) if self._closed else left)
        return True

    def _failed(self, n: int, e: BaseException) -> None:
        """Log a failed commit; while failures go on, at most one line per QUIET_S."""
        self._fails += 1
        now = time.monotonic()
        if now - self._fail_logged >= QUIET_S:
            more = f" ({self._fails - 1} more failed commits before)" if self._fails > 1 else ""
            log.warning("%s: group commit of %d rows failed: %s%s", self.name, n, e, more)
            self._fail_logged = now
            self._fails = 0
