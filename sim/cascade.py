"""Cascading bandits (algorithms.md §5.1; Kveton et al. 2015): a ranked list, one click at most.

The user scans the shown list top-down and clicks the first attractive item, then leaves. Item
``e`` is attractive with probability ``w(e)``, independently of the other items. A round's
randomness is one uniform per item drawn from the round key, and item ``e`` is attractive iff
``u[e] < w(e)``: which items are attractive is fixed by the key whatever list is shown (common
random numbers), so every list a policy could show is scored against the same user.

Without features (``dim=0``) the attraction probabilities follow Kveton et al.'s synthetic set-up:
``k`` items with ``w = p`` and ``n_items - k`` with ``w = p - delta``, in an order shuffled by the
seed. With ``dim > 0`` (linear cascades: CascadeLinTS / CascadeLinUCB, Zong et al. 2016) item
``e`` has features ``x_e >= 0`` with ``|x_e|_1 = 1`` (Dirichlet(2/d) draws) and
``w(e) = clip(x_e . theta, 0.01, 0.99)`` for a ``theta`` spread over ``w_range``; since the
features are convex weights, ``w`` lies in ``w_range`` and the clip is inactive by default, so
the model is exactly linear.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .env import Array, env_dataclass, static

NO_CONTEXT = (0,)
CLIP = (0.01, 0.99)  # linear attraction probabilities are clipped into this range
# Features are Dirichlet(DIRICHLET_MASS / d): the total concentration stays DIRICHLET_MASS, so w
# keeps much the same spread over w_range whatever d (rather than bunching at the mean as d grows).
DIRICHLET_MASS = 2.0


@env_dataclass
class CascadeClicks:
    """Cascade model: per-slot rewards are 1 at the first attractive shown item, 0 elsewhere."""

    attraction: Array  # float[N]: w(e), the probability that item e is attractive
    features: Array  # float[N, d] item features (d = 0 without features)
    weights: Array  # float[d]: the true linear parameter (shape [0] without features)
    slots: int = static()  # k, the length of the shown list

    name: ClassVar[str] = "cascade"
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
        # One uniform per item, not per slot: attractiveness does not depend on the list shown.
        attractive = jax.random.uniform(key, means.shape) < means
        shown = attractive[arms]
        first = shown & (jnp.cumsum(shown) == 1)
        return first.astype(jnp.float64)

    def slate_value(self, means: Array, arms: Array) -> Array:
        return 1.0 - jnp.prod(1.0 - means[arms])

    def best_value(self, means: Array) -> Array:
        top, _ = jax.lax.top_k(means, self.slots)
        return 1.0 - jnp.prod(1.0 - top)


def check_ranked(n_items: int, k: int, dim: int) -> None:
    """Validation shared by the ranked constructors."""
    if int(k) < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    if int(n_items) < int(k):
        raise ValueError(f"n_items: must be >= k = {k}, got {n_items}")
    if int(dim) < 0:
        raise ValueError(f"dim: must be >= 0, got {dim}")


def check_range(arg: str, lo_hi: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in lo_hi)
    if not CLIP[0] <= lo <= hi <= CLIP[1]:
        raise ValueError(f"{arg}: expected {CLIP[0]} <= low <= high <= {CLIP[1]}, got {lo_hi}")
    return lo, hi


def check_attraction(arg: str, values: Array, n_items: int, dim: int) -> np.ndarray:
    if int(dim) > 0:
        raise ValueError(f"{arg}: explicit probabilities need dim=0 (got dim={dim})")
    m = np.asarray(values, np.float64)
    if m.shape != (int(n_items),) or not ((m >= 0) & (m <= 1)).all():
        raise ValueError(f"{arg}: expected {n_items} probabilities in [0, 1], got {m}")
    return m


def linear_items(
    rng: np.random.Generator, n_items: int, dim: int, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features [N, d], theta [d], w [N]) with x_e >= 0, |x_e|_1 = 1 and w = x . theta in [lo, hi].

    ``theta`` is spread over ``[lo, hi]`` with both ends attained (d >= 2), so items near a
    feature corner reach the extremes. With d = 1 the single feature is drawn from
    ``[lo/hi, 1]`` and ``theta = [hi]``.
    """
    if dim == 1:
        x = rng.uniform(lo / hi, 1.0, (n_items, 1))
        theta = np.array([hi])
    else:
        x = rng.dirichlet(np.full(dim, DIRICHLET_MASS / dim), n_items)
        u = rng.uniform(0.0, 1.0, dim)
        u = (u - u.min()) / (u.max() - u.min())
        theta = lo + (hi - lo) * u
    w = np.clip(x @ theta, *CLIP)
    return x, theta, w


def cascade(
    n_items: int = 16,
    k: int = 4,
    *,
    dim: int = 0,
    seed: int = 0,
    p: float = 0.2,
    delta: float = 0.15,
    w_range: Sequence[float] = (0.02, 0.6),
    attraction: Array | None = None,
) -> CascadeClicks:
    """A cascade over ``n_items`` items showing ``k`` of them.

    ``dim=0``: ``k`` items attract with probability ``p``, the rest with ``p - delta`` (Kveton et
    al. 2015), shuffled by ``seed``; or the given ``attraction`` probabilities. ``dim > 0``: a
    linear cascade whose attraction probabilities ``x_e . theta`` lie in ``w_range``.
    """
    check_ranked(n_items, k, dim)
    n, k, dim = int(n_items), int(k), int(dim)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p: must be in (0, 1], got {p}")
    if not 0.0 <= delta <= p:
        raise ValueError(f"delta: must be in [0, p], got {delta}")
    lo, hi = check_range("w_range", w_range)
    rng = np.random.default_rng(seed)
    x, theta = np.zeros((n, 0)), np.zeros(0)
    if attraction is not None:
        w = check_attraction("attraction", attraction, n, dim)
    elif dim == 0:
        w = rng.permutation(np.where(np.arange(n) < k, p, p - delta))
    else:
        x, theta, w = linear_items(rng, n, dim, lo, hi)
    return CascadeClicks(
        attraction=jnp.asarray(w, jnp.float64),
        features=jnp.asarray(x, jnp.float64),
        weights=jnp.asarray(theta, jnp.float64),
        slots=k,
    )
