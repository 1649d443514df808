"""Non-contextual environments: Bernoulli arms and Gaussian arms."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .env import Array, env_dataclass

NO_CONTEXT = (0,)


@env_dataclass
class BernoulliArms:
    """Arm ``a`` pays 1 with probability ``means[a]``, else 0."""

    means: Array  # float[N]

    name: ClassVar[str] = "bernoulli"
    reward_kind: ClassVar[str] = "binary"
    per_arm: ClassVar[bool] = False

    @property
    def n_arms(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return 0

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        return jnp.zeros(NO_CONTEXT), self.means

    def reward(self, key: Array, means: Array, arm: Array) -> Array:
        # One uniform per round shared by all arms: the realized reward of every arm is fixed by
        # the key, so different policies (and MABWiser) face the same draws.
        return (jax.random.uniform(key) < means[arm]).astype(jnp.float64)


@env_dataclass
class GaussianArms:
    """Arm ``a`` pays ``means[a] + sd * z`` with ``z ~ N(0, 1)``."""

    means: Array  # float[N]
    sd: Array  # float scalar

    name: ClassVar[str] = "gaussian"
    reward_kind: ClassVar[str] = "real"
    per_arm: ClassVar[bool] = False

    @property
    def n_arms(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return 0

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        return jnp.zeros(NO_CONTEXT), self.means

    def reward(self, key: Array, means: Array, arm: Array) -> Array:
        return means[arm] + self.sd * jax.random.normal(key)


def bernoulli(n_arms: int = 10, *, seed: int = 0, means: Array | None = None) -> BernoulliArms:
    """``n_arms`` arms with means drawn uniformly from [0, 1] (or the given ``means``)."""
    if means is None:
        m = np.random.default_rng(seed).uniform(0.0, 1.0, int(n_arms))
    else:
        m = np.asarray(means, np.float64)
        if m.ndim != 1 or not ((m >= 0) & (m <= 1)).all():
            raise ValueError("means: expected a 1-D array of probabilities in [0, 1]")
    return BernoulliArms(means=jnp.asarray(m, jnp.float64))


def gaussian(
    n_arms: int = 10, *, seed: int = 0, sd: float = 1.0, means: Array | None = None
) -> GaussianArms:
    """Sutton & Barto's 10-armed testbed by default: means ~ N(0, 1), unit-variance noise."""
    if not sd > 0:
        raise ValueError(f"sd: must be > 0, got {sd}")
    if means is None:
        m = np.random.default_rng(seed).normal(0.0, 1.0, int(n_arms))
    else:
        m = np.asarray(means, np.float64)
        if m.ndim != 1:
            raise ValueError("means: expected a 1-D array")
    return GaussianArms(means=jnp.asarray(m, jnp.float64), sd=jnp.asarray(sd, jnp.float64))
