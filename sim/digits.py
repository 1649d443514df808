"""Handwritten digits as a 10-arm contextual bandit (real data: scikit-learn's ``load_digits``).

Each round shows one image drawn uniformly with replacement from the 1,797 8x8 images; the
context is its 64 pixels scaled to [0, 1] plus a constant 1 (so a linear model has an intercept),
65 values. Arm ``a`` means "the digit is ``a``" and pays 1 if right, 0 if wrong, deterministically.
"""

from __future__ import annotations

from functools import cache
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .env import Array, env_dataclass

N_CLASSES = 10
PIXEL_MAX = 16.0  # load_digits pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap)


@env_dataclass
class Digits:
    images: Array  # float[M, 65]: pixels / 16, then a bias column of ones
    labels: Array  # int[M] in 0..9

    name: ClassVar[str] = "digits"
    reward_kind: ClassVar[str] = "binary"
    per_arm: ClassVar[bool] = False

    @property
    def n_arms(self) -> int:
        return N_CLASSES

    @property
    def dim(self) -> int:
        return int(self.images.shape[1])

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        i = jax.random.randint(key, (), 0, self.images.shape[0])
        return self.images[i], jax.nn.one_hot(self.labels[i], N_CLASSES, dtype=jnp.float64)

    def reward(self, key: Array, means: Array, arm: Array) -> Array:
        return means[arm]


@cache
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # only this environment needs scikit-learn

    data = load_digits()
    x = np.asarray(data.data, np.float64) / PIXEL_MAX
    x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    return x, np.asarray(data.target, np.int64)


def digits(*, seed: int = 0) -> Digits:
    """The full data set. ``seed`` is accepted for the common constructor signature; the data are
    fixed, and which image a round shows comes from the round key, not from here."""
    del seed
    x, y = _load()
    return Digits(images=jnp.asarray(x), labels=jnp.asarray(y))
