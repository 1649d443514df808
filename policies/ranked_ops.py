"""Host side of ranked families: validated select and update over [B, k] lists.

``builder.build`` hands these functions the helpers it already has (contexts, active mask,
state digest); the kernels are the builder's jitted ``rank_select:<k>`` and update programs.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import SelectOutput, State, key_uniform_host, next_pow2, to_key_array
from .family import Family
from .ranked import conditional, observed_mask, uniform_prefix

MODEL_MEMO = 128


@dataclass
class Helpers:
    cfg: dict
    traced: dict  # float64 hyperparameters (numpy)
    h: dict  # the same as jnp scalars
    jitted: Callable[[str], Any]
    contexts: Callable[..., np.ndarray]
    host_active: Callable[[State], tuple[np.ndarray, bool]]
    digest: Callable[[State], bytes]
    times: Callable[[Any, int], np.ndarray]
    pad_rows: Callable[..., np.ndarray]


class RankedOps:
    def __init__(self, fam: Family, hp: Helpers) -> None:
        self.fam, self.hp = fam, hp
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._stats_memo: tuple[bytes, dict, dict] = (b"", {}, {})

    # --- select --------------------------------------------------------------------------

    def select(
        self,
        state: State,
        contexts: Any,
        keys: Any,
        eligible: Any = None,
        *,
        epsilon: float = 0.0,
        t: Any = None,
        k: int | None = None,
    ) -> SelectOutput:
        fam, hp = self.fam, self.hp
        if k is None or int(k) < 1:
            raise ValueError(f"k: ranked family {fam.name!r} needs the list length k >= 1")
        k = int(k)
        self._check_positions(k, "k")
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {epsilon}")
        rows = int(np.shape(keys)[0])
        keys_np = to_key_array(keys, rows)
        x = hp.contexts(state, contexts, rows)
        if x.shape[0] != rows:
            raise ValueError(f"contexts: {x.shape[0]} rows but {rows} keys")
        active, _ = hp.host_active(state)
        cap = active.shape[0]
        if eligible is None:
            elig = np.broadcast_to(active, (rows, cap))
        else:
            e = np.asarray(eligible, bool)
            e = np.broadcast_to(e, (rows, e.shape[-1])) if e.ndim == 1 else e
            if e.ndim != 2 or e.shape[0] != rows or e.shape[1] > cap:
                raise ValueError(f"eligible: expected [B, <= {cap}] mask, got {list(e.shape)}")
            elig = np.zeros((rows, cap), bool)
            elig[:, : e.shape[1]] = e
            elig &= active[None, :]
        short = elig.sum(axis=1) < k
        if short.any():
            i = int(np.flatnonzero(short)[0])
            raise ValueError(
                f"eligible: row {i} has {int(elig[i].sum())} active eligible items; k is {k}"
            )
        host_draw = fam.extra.get("host_draw")
        if host_draw is not None:
            return self._host_select(state, keys_np, elig, float(epsilon), k, host_draw)
        bucket = next_pow2(rows)
        fn = hp.jitted(f"rank_select:{k}")
        out = fn(
            hp.h,
            state,
            hp.pad_rows(x, bucket),
            hp.pad_rows(keys_np, bucket),
            hp.pad_rows(np.ascontiguousarray(elig), bucket, True),
            np.float64(epsilon),
            hp.pad_rows(hp.times(t, rows), bucket),
        )
        arms, prop, scores, first = (np.asarray(o)[:rows] for o in out)
        arms = arms.astype(np.int64)
        if fam.kind == "argmax":
            return SelectOutput(arms, prop, scores, first)
        # Thompson families: P_greedy from the host model, mixed with the kernel's P_uniform.
        eps = float(epsilon)
        prefix = np.empty((rows, k))
        first = np.empty((rows, cap))
        for i in range(rows):
            model = self.model(state, elig[i], x[i] if x.ndim == 3 else None, k)
            prefix[i] = (1.0 - eps) * model.prefix(arms[i]) + eps * prop[i]
            n_e = max(int(elig[i].sum()), 1)
            first[i] = np.where(elig[i], (1.0 - eps) * model.first() + eps / n_e, 0.0)
        return SelectOutput(arms, conditional(prefix), scores, first)

    def _host_select(
        self, state: State, keys_np: np.ndarray, elig: np.ndarray, eps: float, k: int, draw
    ) -> SelectOutput:
        """Thompson lists of Beta families with numpy: Beta draws of 1,000 items cost ~1 ms per
        row in XLA here and ~40 us in numpy. Same distribution as the kernel (which simulators
        use); the draws are a pure function of the row key (Philox keyed by it), so a decision
        replays."""
        hp = self.hp
        rows, cap = elig.shape
        stats = self._host_stats(state)
        arms = np.empty((rows, k), np.int64)
        scores = np.empty((rows, cap))
        prefix = np.empty((rows, k))
        first = np.empty((rows, cap))
        for i in range(rows):
            k0, k1 = int(keys_np[i, 0]), int(keys_np[i, 1])
            rng = np.random.Generator(np.random.Philox(key=(k0 << 32) | k1))
            s = draw(hp.cfg, hp.traced, stats, self._host_cache(state), rng)
            scores[i] = s
            m = elig[i]
            items = np.flatnonzero(m)
            if key_uniform_host(k0, k1) < eps:
                arms[i] = rng.permutation(items)[:k]
            else:
                top = items[np.argpartition(-s[items], k - 1)[:k]]
                arms[i] = top[np.argsort(-s[top], kind="stable")]
            model = self.model(state, m, None, k)
            unif = uniform_prefix(m[None, :], k)[0]
            prefix[i] = (1.0 - eps) * model.prefix(arms[i]) + eps * unif
            first[i] = np.where(m, (1.0 - eps) * model.first() + eps / items.size, 0.0)
        return SelectOutput(arms, conditional(prefix), scores, first)

    def _host_stats(self, state: State) -> dict[str, np.ndarray]:
        d = self.hp.digest(state)
        if self._stats_memo[0] != d:
            self._stats_memo = (
                d,
                {n: np.asarray(v) for n, v in state.stats.items()},
                {n: np.asarray(v) for n, v in state.cache.items()},
            )
        return self._stats_memo[1]

    def _host_cache(self, state: State) -> dict[str, np.ndarray]:
        self._host_stats(state)
        return self._stats_memo[2]

    def model(self, state: State, mask: np.ndarray, ctx: np.ndarray | None, k: int) -> Any:
        """The family's prefix-probability model for (state, eligible set, context), memoized."""
        hp = self.hp
        key = (
            hp.digest(state),
            np.packbits(mask).tobytes(),
            None if ctx is None else hashlib.blake2b(ctx.tobytes(), digest_size=16).digest(),
            k if self.fam.extra.get("k_dependent", True) else 0,
        )
        hit = self._models.get(key)
        if hit is not None:
            return hit
        with self._lock:  # one build per key even when many threads meet a new state at once
            hit = self._models.get(key)
            if hit is None:
                stats = {n: np.asarray(v) for n, v in state.stats.items()}
                cache = {n: np.asarray(v) for n, v in state.cache.items()}
                seed = int.from_bytes(key[0][:8], "little")
                hit = self.fam.rank_model(
                    hp.cfg, hp.traced, stats, cache, mask.copy(), ctx, k, seed
                )
                self._models[key] = hit
                if len(self._models) > MODEL_MEMO:
                    self._models.popitem(last=False)
        return hit

    def warm(self, state: State) -> None:
        """Build the model a select over every active item would need (context-free models)."""
        fam = self.fam
        if fam.kind == "sampled" and not fam.contextual and not fam.extra.get("k_dependent", True):
            active, any_active = self.hp.host_active(state)
            if any_active:
                self.model(state, active, None, 0)

    def _check_positions(self, k: int, field: str) -> None:
        """Families with per-slot statistics keep ``positions`` slots; a longer list has none."""
        p = self.hp.cfg.get("positions")
        if p is not None and k > int(p):
            raise ValueError(f"{field}: lists of {k} items; this policy keeps {p} positions")

    # --- update --------------------------------------------------------------------------

    def update_rows(
        self,
        state: State,
        contexts: Any,
        arms: Any,
        rewards: Any,
        observed: Any,
        propensity: Any,
    ) -> tuple[np.ndarray, ...]:
        """Validated (x, arms, rewards, observed, propensity) for the update kernel."""
        fam, hp = self.fam, self.hp
        a = np.asarray(arms, dtype=np.int64)
        if a.ndim != 2 or a.shape[1] < 1:
            raise ValueError(f"arms: ranked updates take [B, k] lists, got {list(a.shape)}")
        rows, k = a.shape
        self._check_positions(k, "arms")
        r = np.asarray(rewards, dtype=np.float64)
        if r.shape != a.shape:
            raise ValueError(f"rewards: shape {list(r.shape)} != arms shape {list(a.shape)}")
        if not np.isfinite(r).all():
            raise ValueError("rewards: must be finite")
        used = int(state.meta.n_arms)
        if a.size and (a.min() < 0 or a.max() >= used):
            raise ValueError(f"arms: index out of range [0, {used})")
        if k > 1 and (np.diff(np.sort(a, axis=1), axis=1) == 0).any():
            raise ValueError("arms: a list shows each item at most once")
        if fam.reward_kinds == ("binary",) and not np.isin(r, (0.0, 1.0)).all():
            raise ValueError(f"rewards: family {fam.name!r} takes per-slot clicks 0 or 1")
        if observed is None:
            w = observed_mask(fam.observe, r)
        else:
            w = np.asarray(observed, np.float64)
            if w.shape != a.shape:
                raise ValueError(f"observed: shape {list(w.shape)} != arms shape {list(a.shape)}")
        if propensity is None:
            p = np.ones(rows)
        else:
            p = np.asarray(propensity, np.float64).reshape(rows, -1).prod(axis=1)
            if not ((p > 0) & (p <= 1)).all():
                raise ValueError("propensity: must be in (0, 1]")
        x = hp.contexts(state, contexts, rows, played=True)
        if x.ndim == 3:  # per-item features: the shown items' rows are what was observed
            x = x[np.arange(rows)[:, None], a]
        elif fam.contextual and fam.per_arm_contexts == "required":
            raise ValueError(
                f"contexts: family {fam.name!r} needs per-item features [B, N, d] to update"
            )
        return x, a, r, w, p
