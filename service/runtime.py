"""One live experiment: its policy, arms and the published state snapshot.

The learner is the only writer of ``state`` (under ``lock``); Select reads whatever snapshot is
published at the time, so it never waits for an update.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from banditd import policies
from banditd.store import rows

from .errors import invalid


def unit_hash(scope: str, value: str) -> float:
    """A uniform number in [0, 1) that depends only on (scope, value): sticky assignment."""
    d = hashlib.blake2b(f"{scope}\x00{value}".encode(), digest_size=8).digest()
    return int.from_bytes(d, "little") / 2.0**64


@dataclass
class Runtime:
    exp: rows.Experiment
    config: dict[str, Any]
    policy: policies.Policy
    state: policies.State
    arms: list[rows.Arm]
    watermark: int = 0  # highest feedback seq reflected in ``state``
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.reindex()
        self._host: tuple[Any, int, np.ndarray] | None = None

    def host_meta(self, state: policies.State) -> tuple[int, np.ndarray]:
        """(version, active mask) of a published snapshot on the host, memoized per snapshot:
        reading a device scalar costs a Select ~20 us, and snapshots change far less often."""
        h = self._host
        if h is not None and h[0] is state:
            return h[1], h[2]
        version, active = int(state.meta.version), np.asarray(state.meta.active)
        self._host = (state, version, active)
        return version, active

    def reindex(self) -> None:
        self.slot_of = {a.arm_id: a.slot for a in self.arms}
        feats = np.zeros((max(len(self.arms), 1), max(self.config["arm_feature_dim"], 1)))
        self.has_static = np.zeros(len(self.arms), bool)
        for a in self.arms:
            f = a.features_array()
            if f is not None:
                feats[a.slot, : f.shape[0]] = f
                self.has_static[a.slot] = True
        self.static_features = feats[:, : self.config["arm_feature_dim"]]

    @property
    def key(self) -> str:
        return f"{self.exp.namespace}/{self.exp.name}"

    @property
    def revision(self) -> int:
        return self.exp.revision

    @property
    def scope(self) -> str:
        """What decision keys derive from, with the event id: replays need the same scope."""
        return f"{self.exp.id}:{self.exp.revision}"

    @property
    def capacity(self) -> int:
        return int(np.shape(self.state.meta.active)[0])

    def active_slots(self) -> np.ndarray:
        return np.asarray([a.slot for a in self.arms if a.active], dtype=np.int64)

    # --- contexts ------------------------------------------------------------------------------

    def parse_context(self, field_name: str, ctx: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(values, sparse indices or None) from a proto Context, validated against the schema."""
        dim = self.config["dim"]
        which = ctx.WhichOneof("kind") if ctx is not None else None
        if which is None:
            if dim:
                raise invalid(field_name, f"a context of dimension {dim} is required")
            return np.zeros(0), None
        if which == "dense":
            if self.config["sparse"]:
                raise invalid(f"{field_name}.dense", "this experiment takes sparse contexts")
            v = np.asarray(ctx.dense.values, dtype=np.float64)
            if v.shape[0] != dim:
                raise invalid(
                    f"{field_name}.dense.values", f"expected {dim} values, got {v.shape[0]}"
                )
            if not np.isfinite(v).all():
                raise invalid(f"{field_name}.dense.values", "must be finite (no NaN or inf)")
            return v, None
        idx = np.asarray(ctx.sparse.indices, dtype=np.int64)
        v = np.asarray(ctx.sparse.values, dtype=np.float64)
        if idx.shape != v.shape:
            raise invalid(
                f"{field_name}.sparse.values", f"{v.shape[0]} values for {idx.shape[0]} indices"
            )
        if idx.size and idx.max() >= dim:
            raise invalid(
                f"{field_name}.sparse.indices", f"index {int(idx.max())} is out of range [0, {dim})"
            )
        if np.unique(idx).size != idx.size:
            raise invalid(f"{field_name}.sparse.indices", "indices must not repeat")
        if not np.isfinite(v).all():
            raise invalid(f"{field_name}.sparse.values", "must be finite (no NaN or inf)")
        return v, idx

    def dense(self, values: np.ndarray, indices: np.ndarray | None) -> np.ndarray:
        if indices is None:
            return values
        out = np.zeros(self.config["dim"])
        out[indices] = values
        return out

    def parse_arm_features(self, field_name: str, items: Any) -> dict[int, np.ndarray]:
        afd = self.config["arm_feature_dim"]
        out: dict[int, np.ndarray] = {}
        for j, af in enumerate(items):
            slot = self.slot_of.get(af.arm_id)
            if slot is None:
                raise invalid(f"{field_name}[{j}].arm_id", f"unknown arm {af.arm_id!r}")
            if afd == 0:
                raise invalid(
                    f"{field_name}[{j}]",
                    "this experiment has no arm features (arm_feature_dimension 0)",
                )
            v = np.asarray(af.values, dtype=np.float64)
            if v.shape[0] != afd:
                raise invalid(f"{field_name}[{j}].values", f"expected {afd} values, got {v.size}")
            if not np.isfinite(v).all():
                raise invalid(f"{field_name}[{j}].values", "must be finite (no NaN or inf)")
            if slot in out:
                raise invalid(f"{field_name}[{j}].arm_id", f"arm {af.arm_id!r} given twice")
            out[slot] = v
        return out

    def arm_matrix(
        self, field_name: str, overrides: dict[int, np.ndarray], needed: np.ndarray
    ) -> np.ndarray:
        """[capacity, arm_feature_dim]: static features with per-request overrides; every slot in
        ``needed`` must have one or the other."""
        feats = np.zeros((self.capacity, self.config["arm_feature_dim"]))
        n = self.static_features.shape[0]
        feats[: min(n, self.capacity)] = self.static_features[: self.capacity]
        for slot, v in overrides.items():
            feats[slot] = v
        missing = [
            int(s) for s in needed if not (s < n and self.has_static[s]) and s not in overrides
        ]
        if missing:
            raise invalid(
                field_name,
                f"arm {self.arms[missing[0]].arm_id!r} has no static "
                "features; send them in arm_features",
            )
        return feats

    def policy_rows(self, contexts: np.ndarray, arm_feats: list[np.ndarray] | None) -> Any:
        """What the policy's select takes: None, [B, d] or [B, N, d + d_arm]."""
        fam = policies.get(self.config["family"])
        if not fam.contextual:
            return None
        if self.config["arm_feature_dim"] == 0:
            return contexts
        assert arm_feats is not None
        B, cap = contexts.shape[0], self.capacity
        return np.concatenate(
            [
                np.broadcast_to(contexts[:, None, :], (B, cap, contexts.shape[1])),
                np.stack(arm_feats),
            ],
            axis=2,
        )
