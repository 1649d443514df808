"""Deterministic crash points for recovery tests: ``BANDITD_FAULT=<point>`` (optionally
``BANDITD_FAULT_AFTER=<n>``: crash at the n-th time the point is reached, default 1) makes the
process exit at once, as ``kill -9`` would, at that point. Unset, it costs one dict lookup."""

from __future__ import annotations

import os
import sys

POINTS = ("after_commit_before_apply", "after_apply_before_checkpoint", "mid_checkpoint")
_seen: dict[str, int] = {}


def hit(point: str) -> None:
    if os.environ.get("BANDITD_FAULT") != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] >= int(os.environ.get("BANDITD_FAULT_AFTER", "1")):
        sys.stderr.write(f"banditd: injected fault {point}\n")
        sys.stderr.flush()
        os._exit(137)
