"""Crash windows: telling a reward for a decision lost in a crash from one never issued.

Select answers before the decision writer's group commit, so an unclean stop can lose the
decisions of the last flush interval. Their rewards must not be NOT_FOUND (the id was issued)
nor applied (the context is gone): they are acknowledged ``orphan``. Event ids are UUIDv7 (the
client's, or the server's when the client sends none), so an unknown id whose timestamp falls in
a crash window — from the newest decision that survived (or the crashed run's start, if later) to
the restart — is an orphan.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import uuid

log = logging.getLogger("banditd.orphans")

SKEW_S = 10.0  # tolerated difference between the client's and the server's clocks


def uuid7_time(event_id: str) -> float | None:
    """The Unix time in a UUIDv7, or None for anything else."""
    try:
        u = uuid.UUID(event_id)
    except ValueError:
        return None
    if u.version != 7:
        return None
    return (u.int >> 80) / 1000.0


def _atomic_write(path: pathlib.Path, text: str) -> None:
    """Write-then-rename, so a crash mid-write never leaves a file the next start cannot read."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class CrashWindows:
    def __init__(self, data_dir: str) -> None:
        self.dir = pathlib.Path(data_dir)
        self.marker = self.dir / "banditd.running"
        self.path = self.dir / "crash-windows.json"
        self.windows: list[tuple[float, float]] = []
        if self.path.exists():
            self.windows = [tuple(w) for w in json.loads(self.path.read_text())]  # type: ignore[misc]

    def started(self, last_decision: float | None, now: float) -> bool:
        """Record a crash window if the previous run did not stop cleanly; returns whether."""
        crashed = self.marker.exists()
        if crashed:
            # A lost decision was made after the newest surviving one and during the crashed run,
            # whose start the marker holds: without the latter, a crash before any decision was
            # logged would open a window from 0 and turn every never-issued id into an orphan.
            start = max(last_decision or 0.0, self._run_start())
            self.windows.append((start, now))
            _atomic_write(self.path, json.dumps(self.windows))
            log.warning(
                "previous run did not stop cleanly: rewards for decisions made between "
                "%.3f and %.3f that were lost are acknowledged as orphans",
                start,
                now,
            )
        _atomic_write(self.marker, f"{now!r}\n")
        return crashed

    def _run_start(self) -> float:
        try:
            return float(self.marker.read_text())
        except ValueError:  # written by an older version: no start recorded
            return 0.0

    def stopped(self) -> None:
        self.marker.unlink(missing_ok=True)

    def is_orphan(self, event_id: str) -> bool:
        t = uuid7_time(event_id)
        if t is None:
            return False
        return any(lo - SKEW_S <= t <= hi + SKEW_S for lo, hi in self.windows)
