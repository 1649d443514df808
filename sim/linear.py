"""Linear contextual environments with Gaussian reward noise.

Contexts are ``N(0, I/d)`` so ``|x| ~ 1`` whatever ``d``; parameters are ``N(0, I)``, so every
arm's mean reward is roughly ``N(0, 1)`` across rounds and the noise ``sd`` reads on that scale.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .env import Array, env_dataclass, static


@env_dataclass
class LinearDisjoint:
    """One context ``x[d]`` per round shared by all arms; arm ``a`` has its own ``theta[a]``."""

    theta: Array  # float[N, d]
    sd: Array  # float scalar

    name: ClassVar[str] = "linear_disjoint"
    reward_kind: ClassVar[str] = "real"
    per_arm: ClassVar[bool] = False

    @property
    def n_arms(self) -> int:
        return int(self.theta.shape[0])

    @property
    def dim(self) -> int:
        return int(self.theta.shape[1])

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        x = jax.random.normal(key, (self.dim,)) / np.sqrt(self.dim)
        return x, self.theta @ x

    def reward(self, key: Array, means: Array, arm: Array) -> Array:
        return means[arm] + self.sd * jax.random.normal(key)


@env_dataclass
class LinearPerArm:
    """Each round every arm shows a feature row ``X[a]``; one shared ``theta`` scores them all."""

    theta: Array  # float[d]
    sd: Array  # float scalar
    arms: int = static()  # the arm count is not the shape of any parameter here

    name: ClassVar[str] = "linear_per_arm"
    reward_kind: ClassVar[str] = "real"
    per_arm: ClassVar[bool] = True

    @property
    def n_arms(self) -> int:
        return self.arms

    @property
    def dim(self) -> int:
        return int(self.theta.shape[0])

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        x = jax.random.normal(key, (self.arms, self.dim)) / np.sqrt(self.dim)
        return x, x @ self.theta

    def reward(self, key: Array, means: Array, arm: Array) -> Array:
        return means[arm] + self.sd * jax.random.normal(key)


def _check(n_arms: int, dim: int, sd: float) -> None:
    if int(n_arms) < 2:
        raise ValueError(f"n_arms: must be >= 2, got {n_arms}")
    if int(dim) < 1:
        raise ValueError(f"dim: must be >= 1, got {dim}")
    if not sd >= 0:
        raise ValueError(f"sd: must be >= 0, got {sd}")


def linear_disjoint(
    n_arms: int = 10, dim: int = 10, *, seed: int = 0, sd: float = 0.5
) -> LinearDisjoint:
    _check(n_arms, dim, sd)
    theta = np.random.default_rng(seed).normal(0.0, 1.0, (int(n_arms), int(dim)))
    return LinearDisjoint(theta=jnp.asarray(theta), sd=jnp.asarray(sd, jnp.float64))


def linear_per_arm(
    n_arms: int = 10, dim: int = 10, *, seed: int = 0, sd: float = 0.5
) -> LinearPerArm:
    _check(n_arms, dim, sd)
    theta = np.random.default_rng(seed).normal(0.0, 1.0, int(dim))
    return LinearPerArm(theta=jnp.asarray(theta), sd=jnp.asarray(sd, jnp.float64), arms=int(n_arms))
