"""Prompt routing: arms are models, the context is a prompt embedding, and each model's expected
score is its own nonlinear function of the prompt (the setting of PAK-UCB / RFF-UCB).

Prompts are uniform on ``[-1, 1]^d``. Arm ``a``'s expected score is a sum of Gaussian bumps,
``mu_a(y) = sum_m h_am exp(-|y - c_am|^2 / (2 width^2))``, plus Gaussian noise ``sd``. With
``symmetric=True`` (the default) every bump has a twin at ``-c_am``, so each ``mu_a`` is an even
function of ``y``: its best linear predictor under the symmetric prompt distribution is a
constant, and a linear model per arm (disjoint LinUCB) cannot tell which model suits a prompt
better than uniform choice can, while a per-arm RBF kernel model can.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .env import Array, env_dataclass


@env_dataclass
class PromptRouting:
    centers: Array  # float[N, M, d]: bump centres per arm
    heights: Array  # float[N, M]
    width: Array  # float scalar: bump length scale
    sd: Array  # float scalar: score noise

    name: ClassVar[str] = "prompt_routing"
    reward_kind: ClassVar[str] = "real"
    per_arm: ClassVar[bool] = False

    @property
    def n_arms(self) -> int:
        return int(self.centers.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centers.shape[2])

    def means_at(self, y: Array) -> Array:
        """Expected score of every arm for prompt ``y`` [d] -> [N]."""
        d2 = jnp.sum((self.centers - y) ** 2, axis=-1)
        return jnp.sum(self.heights * jnp.exp(-d2 / (2.0 * self.width**2)), axis=-1)

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        y = jax.random.uniform(key, (self.dim,), minval=-1.0, maxval=1.0)
        return y, self.means_at(y)

    def reward(self, key: Array, means: Array, arm: Array) -> Array:
        return means[arm] + self.sd * jax.random.normal(key)


def prompt_routing(
    n_arms: int = 4,
    dim: int = 2,
    *,
    seed: int = 0,
    bumps: int = 2,
    width: float = 0.35,
    sd: float = 0.1,
    symmetric: bool = True,
) -> PromptRouting:
    """``bumps`` per arm (an even number when ``symmetric``: they come in pairs ``+-c``), centres
    uniform in ``[-0.8, 0.8]^d``, heights uniform in ``[0.5, 1]``."""
    if int(n_arms) < 2:
        raise ValueError(f"n_arms: must be >= 2, got {n_arms}")
    if int(dim) < 1:
        raise ValueError(f"dim: must be >= 1, got {dim}")
    if int(bumps) < 1 or (symmetric and int(bumps) % 2):
        raise ValueError(f"bumps: must be >= 1 (and even when symmetric), got {bumps}")
    if not width > 0:
        raise ValueError(f"width: must be > 0, got {width}")
    if not sd >= 0:
        raise ValueError(f"sd: must be >= 0, got {sd}")
    rng = np.random.default_rng(seed)
    n, m, d = int(n_arms), int(bumps), int(dim)
    if symmetric:
        half = rng.uniform(-0.8, 0.8, (n, m // 2, d))
        centers = np.concatenate([half, -half], axis=1)
        h = rng.uniform(0.5, 1.0, (n, m // 2))
        heights = np.concatenate([h, h], axis=1)
    else:
        centers = rng.uniform(-0.8, 0.8, (n, m, d))
        heights = rng.uniform(0.5, 1.0, (n, m))
    return PromptRouting(
        centers=jnp.asarray(centers),
        heights=jnp.asarray(heights),
        width=jnp.asarray(width, jnp.float64),
        sd=jnp.asarray(sd, jnp.float64),
    )
