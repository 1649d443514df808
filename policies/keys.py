"""One PRNG key per decision, derived from (experiment, event id), so any decision replays."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def derive_keys(scope: str, event_ids: Sequence[str]) -> np.ndarray:
    """[B, 2] uint32 raw threefry keys; ``scope`` names the experiment (and revision)."""
    out = np.empty((len(event_ids), 2), np.uint32)
    prefix = scope.encode() + b"\x00"
    for i, e in enumerate(event_ids):
        d = hashlib.blake2b(prefix + e.encode(), digest_size=8).digest()
        out[i, 0] = int.from_bytes(d[:4], "little")
        out[i, 1] = int.from_bytes(d[4:], "little")
    return out
