"""Position-based slates (PBM, algorithms.md §6.2): every slot may be clicked, independently.

Slot ``j`` is examined with probability ``kappa[j]`` (``kappa[0] = 1``, non-increasing) and the
item shown there attracts with probability ``theta[e]``, so slot ``j`` is clicked with probability
``kappa[j] * theta[a_j]``, independently across slots. A round's randomness is one uniform per
(item, slot) drawn from the round key, and slot ``j`` clicks iff
``u[a_j, j] < kappa[j] * theta[a_j]``: the outcome of showing item ``e`` at slot ``j`` is fixed by
the key whatever else the list holds (common random numbers).

The expected reward of a list is ``sum_j kappa[j] * theta[a_j]``; by the rearrangement inequality
the best list shows the ``k`` most attractive items in decreasing order.

Without features (``dim=0``) ``theta`` is drawn from the seed, ``theta_range[0] + (theta_range[1]
- theta_range[0]) * Beta(1, 2)``: a few good items, many poor ones. With ``dim > 0`` items get
features ``x_e`` and ``theta_e = clip(x_e . theta*, 0.01, 0.99)`` exactly as in
``banditd.sim.cascade``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .cascade import NO_CONTEXT, check_attraction, check_range, check_ranked, linear_items
from .env import Array, env_dataclass, static

KAPPA_DECAY = 0.8  # default examination kappa[j] = 1 / (1 + j) ** 0.8, j = 0..k-1


@env_dataclass
class PositionBased:
    """Position-based model: per-slot rewards are independent clicks, P = kappa[j] * theta[a_j]."""

    attraction: Array  # float[N]: theta[e], the click probability of item e once examined
    kappa: Array  # float[k]: examination probability of each slot
    features: Array  # float[N, d] item features (d = 0 without features)
    weights: Array  # float[d]: the true linear parameter theta* (shape [0] without features)
    slots: int = static()  # k, the length of the shown list

    name: ClassVar[str] = "pbm"
    reward_kind: ClassVar[str] = "binary"
    ranked: ClassVar[bool] = True

    @property
    def per_arm(self) -> bool:
        """Contexts are the item feature rows ``[N, d]`` (only when the env has features)."""
        return self.dim > 0

    @property
    def n_arms(self) -> int:
        return int(self.attraction.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        ctx = self.features if self.dim > 0 else jnp.zeros(NO_CONTEXT)
        return ctx, self.attraction

    def slate_rewards(self, key: Array, means: Array, arms: Array) -> Array:
        # One uniform per (item, slot): a slot's outcome depends only on the item shown there.
        u = jax.random.uniform(key, (means.shape[0], self.slots))
        drawn = u[arms, jnp.arange(self.slots)]
        return (drawn < self.kappa * means[arms]).astype(jnp.float64)

    def slate_value(self, means: Array, arms: Array) -> Array:
        return jnp.sum(self.kappa * means[arms])

    def best_value(self, means: Array) -> Array:
        top, _ = jax.lax.top_k(means, self.slots)  # sorted in decreasing order
        return jnp.sum(self.kappa * top)


def check_kappa(kappa: Array | None, k: int) -> np.ndarray:
    if kappa is None:
        return 1.0 / (1.0 + np.arange(k)) ** KAPPA_DECAY
    c = np.asarray(kappa, np.float64)
    if c.shape != (k,):
        raise ValueError(f"kappa: expected k = {k} examination probabilities, got shape {c.shape}")
    if not c[0] == 1.0:
        raise ValueError(f"kappa: the first slot must be examined (kappa[0] == 1), got {c[0]}")
    if not ((c > 0) & (c <= 1)).all():
        raise ValueError(f"kappa: must lie in (0, 1], got {c}")
    if (np.diff(c) > 0).any():
        raise ValueError(f"kappa: must be non-increasing, got {c}")
    return c


def pbm(
    n_items: int = 16,
    k: int = 4,
    *,
    kappa: Sequence[float] | None = None,
    dim: int = 0,
    seed: int = 0,
    theta_range: Sequence[float] = (0.02, 0.8),
    attraction: Array | None = None,
) -> PositionBased:
    """A position-based slate of ``k`` out of ``n_items`` items.

    ``kappa`` defaults to ``1 / (1 + j) ** 0.8``. ``dim=0``: item attraction probabilities are
    drawn from ``seed`` over ``theta_range`` (or the given ``attraction``); ``dim > 0``: linear in
    item features, within ``theta_range``.
    """
    check_ranked(n_items, k, dim)
    n, k, dim = int(n_items), int(k), int(dim)
    c = check_kappa(kappa, k)
    lo, hi = check_range("theta_range", theta_range)
    rng = np.random.default_rng(seed)
    x, theta = np.zeros((n, 0)), np.zeros(0)
    if attraction is not None:
        a = check_attraction("attraction", attraction, n, dim)
    elif dim == 0:
        a = lo + (hi - lo) * rng.beta(1.0, 2.0, n)
    else:
        x, theta, a = linear_items(rng, n, dim, lo, hi)
    return PositionBased(
        attraction=jnp.asarray(a, jnp.float64),
        kappa=jnp.asarray(c, jnp.float64),
        features=jnp.asarray(x, jnp.float64),
        weights=jnp.asarray(theta, jnp.float64),
        slots=k,
    )
