"""Cluster matching (Online Matching's set-up, algorithms.md §3.1): users are described by their
nearest clusters, items pay a click rate per cluster.

Each round a user embedding ``u ~ N(0, I_e)`` is drawn; its context is the softmax (temperature
``tau``) of the cosine similarities to its ``k`` nearest of ``C`` unit centroids, zero for the
other clusters: a ``[C]`` weight vector with ``k`` non-zeros summing to 1. Item ``j`` is clicked
with probability ``sum_c w_c theta[j, c]`` (``theta`` uniform in [0, 1]), which is linear in the
weights: Diag-LinUCB's model minus the cross-cluster covariance it drops.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .env import Array, env_dataclass, static


@env_dataclass
class ClusterMatching:
    centroids: Array  # float[C, e], unit rows
    theta: Array  # float[N, C]: click probability of item j for a user of cluster c
    tau: Array  # float scalar: softmax temperature
    k: int = static()  # non-zero cluster weights per user

    name: ClassVar[str] = "cluster_matching"
    reward_kind: ClassVar[str] = "binary"
    per_arm: ClassVar[bool] = False

    @property
    def n_arms(self) -> int:
        return int(self.theta.shape[0])

    @property
    def dim(self) -> int:
        return int(self.theta.shape[1])

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]:
        u = jax.random.normal(key, (self.centroids.shape[1],))
        sims = self.centroids @ (u / jnp.linalg.norm(u))
        top, idx = jax.lax.top_k(sims, self.k)
        w = jnp.zeros(self.dim).at[idx].set(jax.nn.softmax(top / self.tau))
        return w, self.theta @ w

    def reward(self, key: Array, means: Array, arm: Array) -> Array:
        return (jax.random.uniform(key) < means[arm]).astype(jnp.float64)


def cluster_matching(
    n_items: int = 10,
    n_clusters: int = 20,
    *,
    seed: int = 0,
    k: int = 3,
    embed_dim: int = 8,
    tau: float = 0.05,
) -> ClusterMatching:
    if int(n_items) < 2:
        raise ValueError(f"n_items: must be >= 2, got {n_items}")
    if not 1 <= int(k) <= int(n_clusters):
        raise ValueError(f"k: must be in [1, n_clusters], got {k}")
    if int(embed_dim) < 1:
        raise ValueError(f"embed_dim: must be >= 1, got {embed_dim}")
    if not tau > 0:
        raise ValueError(f"tau: must be > 0, got {tau}")
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(int(n_clusters), int(embed_dim)))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    theta = rng.uniform(0.0, 1.0, (int(n_items), int(n_clusters)))
    return ClusterMatching(
        centroids=jnp.asarray(c),
        theta=jnp.asarray(theta),
        tau=jnp.asarray(tau, jnp.float64),
        k=int(k),
    )
