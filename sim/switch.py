"""Non-stationary Bernoulli arms: piecewise-constant means with abrupt switches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .arms import NO_CONTEXT
from .env import Array, env_dataclass


@env_dataclass
class SwitchingBernoulli:
    """Arm ``a`` pays 1 with probability ``means[k, a]`` in segment ``k``: rounds
    ``[breakpoints[k-1], breakpoints[k])`` (segment 0 starts at round 0, the last never ends)."""

    means: Array  # float[K, N]: one row of arm means per segment
    breakpoints: Array  # float[K - 1]: increasing rounds at which the next segment starts

    name: ClassVar[str] = "switching_bernoulli"
    reward_kind: ClassVar[str] = "binary"
    per_arm: ClassVar[bool] = False

    @property
    def n_arms(self) -> int:
        return int(self.means.shape[1])

    @property
    def dim(self) -> int:
        return 0

    def segment(self, t: Array) -> Array:
        """The segment of round ``t``: how many breakpoints are <= t."""
        return jnp.searchsorted(self.breakpoints, t, side="right")

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        return jnp.zeros(NO_CONTEXT), self.means[self.segment(t)]

    def reward(self, key: Array, means: Array, arm: Array) -> Array:
        # As BernoulliArms: one uniform per round shared by all arms (common random numbers).
        return (jax.random.uniform(key) < means[arm]).astype(jnp.float64)


def switching_bernoulli(means: Array, breakpoints: Sequence[float]) -> SwitchingBernoulli:
    """Segments of arm means ``[K, N]`` and the ``K - 1`` rounds at which they switch."""
    m = np.asarray(means, np.float64)
    b = np.asarray(breakpoints, np.float64).reshape(-1)
    if m.ndim != 2 or not ((m >= 0) & (m <= 1)).all():
        raise ValueError("means: expected [segments, arms] probabilities in [0, 1]")
    if b.shape[0] != m.shape[0] - 1:
        raise ValueError(f"breakpoints: {m.shape[0]} segments need {m.shape[0] - 1}, got {b.size}")
    if b.size and (not np.isfinite(b).all() or (b <= 0).any() or (np.diff(b) <= 0).any()):
        raise ValueError("breakpoints: expected increasing rounds > 0")
    return SwitchingBernoulli(means=jnp.asarray(m), breakpoints=jnp.asarray(b))


def abrupt_switch(
    means_before: Array | None = None,
    means_after: Array | None = None,
    switch_at: float = 2500,
    *,
    n_arms: int = 5,
    seed: int = 0,
) -> SwitchingBernoulli:
    """Bernoulli arms whose means jump from ``means_before`` to ``means_after`` at round
    ``switch_at``. Without means: ``n_arms`` means uniform on [0, 1] (from ``seed``) before, and
    the same means shifted by one arm after, so the best arm changes."""
    if means_before is None:
        before = np.random.default_rng(seed).uniform(0.0, 1.0, int(n_arms))
    else:
        before = np.asarray(means_before, np.float64)
    after = np.roll(before, 1) if means_after is None else np.asarray(means_after, np.float64)
    if before.ndim != 1 or after.shape != before.shape:
        raise ValueError("means: expected two 1-D arrays of the same length")
    return switching_bernoulli(np.stack([before, after]), [switch_at])
