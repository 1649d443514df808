"""The policy contract: a NamedTuple of pure functions over a pytree state (optax style).

State is ``(stats, meta, cache)``:
  * ``stats``: additive float64 sufficient statistics (dict of arrays); merge by ``+``.
  * ``meta``: active mask, slots used, version (applied update batches), revision.
  * ``cache``: values derived from ``stats`` (inverses, means); never a source of truth.

Shapes: ``N`` is the padded arm capacity (the arm count rounded up to a multiple of 8, then
grown by doubling). ``B`` batch rows are
padded to power-of-two buckets so a jitted kernel compiles once per (bucket, capacity).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

Array = Any  # jax.Array | np.ndarray; kept loose so numpy and jax inputs both type-check
Stats = dict[str, Array]

MIN_CAPACITY = 4


class Meta(NamedTuple):
    active: Array  # bool[N]: selectable slots (retired and empty slots are False)
    n_arms: Array  # int scalar: slots ever used; a slot is never reused
    version: Array  # int scalar: count of applied update batches (monotone)
    revision: Array  # int scalar: the experiment revision this state belongs to


class State(NamedTuple):
    stats: Stats
    meta: Meta
    cache: Stats


class SelectOutput(NamedTuple):
    arms: np.ndarray  # int[B] (or int[B, k] for ranked families)
    propensity: np.ndarray  # float[B] (or per-slot float[B, k])
    scores: np.ndarray  # float[B, N]: index before epsilon-mixing and masking (TS: sampled value)
    probs: np.ndarray  # float[B, N]: choice probabilities (single-arm families)


class Policy(NamedTuple):
    """What ``make`` returns. Every function is pure; ``state`` in, new ``state`` out."""

    family: str
    hyper: Mapping[str, Any]
    init: Callable[..., State]
    add_arms: Callable[..., State]
    retire_arms: Callable[..., State]
    update: Callable[..., State]
    select: Callable[..., SelectOutput]
    kernels: Any  # the jittable un-padded kernels (for simulators and vmapped experiments)
    warm: Callable[[State], None]  # precompute a new state's choice probabilities (learners)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def capacity_for(n_arms: int, current: int = 0) -> int:
    """Initial capacity: n_arms rounded up to a multiple of 8 (a power-of-two start would
    waste up to half of every select's work). Growth doubles, so added arms recompile rarely."""
    need = max(MIN_CAPACITY, -(-int(n_arms) // 8) * 8 if n_arms > MIN_CAPACITY else MIN_CAPACITY)
    if current:
        cap = current
        while cap < n_arms:
            cap *= 2
        return cap
    return need


# --- kernel-level helpers shared by families -------------------------------------------------

NEG_INF = -jnp.inf


def masked(scores: Array, mask: Array) -> Array:
    return jnp.where(mask, scores, NEG_INF)


def tie_probs(scores: Array, mask: Array) -> Array:
    """Uniform distribution over the argmax set of ``scores`` within ``mask`` (rows)."""
    s = masked(scores, mask)
    top = jnp.max(s, axis=-1, keepdims=True)
    tied = (s == top) & mask
    return tied / jnp.maximum(tied.sum(-1, keepdims=True), 1)


def mix_epsilon(base: Array, mask: Array, epsilon: Array) -> Array:
    """(1-eps) * base + eps * uniform(eligible): the documented propensity rule."""
    n_elig = jnp.maximum(mask.sum(-1, keepdims=True), 1)
    return jnp.where(mask, (1.0 - epsilon) * base + epsilon / n_elig, 0.0)


def _fmix32(h: Array) -> Array:
    """murmur3's 32-bit finalizer: every input bit flips each output bit with probability 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def key_uniform(keys: Array) -> Array:
    """A uniform number in [0, 1) per row, hashed from the row key's 64 bits.

    Cheaper than a threefry round (~10 us per select here) and still uniform for structured
    keys such as ``PRNGKey(i)`` = [0, i]: the words are mixed before use.
    """
    k = keys.astype(jnp.uint32)
    hi = _fmix32(k[:, 0] ^ _fmix32(k[:, 1] + jnp.uint32(0x9E3779B9)))
    lo = _fmix32(k[:, 1] ^ hi)
    return (hi.astype(jnp.float64) + lo.astype(jnp.float64) * 2.0**-32) * 2.0**-32


def key_uniform_host(k0: int, k1: int) -> float:
    """``key_uniform`` for one key on the host (same bits, plain Python)."""

    def fmix(h: int) -> int:
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    hi = fmix(k0 ^ fmix((k1 + 0x9E3779B9) & 0xFFFFFFFF))
    lo = fmix(k1 ^ hi)
    return (hi + lo * 2.0**-32) * 2.0**-32


def sample_from(probs: Array, key: Array) -> Array:
    """One draw per row from ``probs`` by inverse CDF with that row's key.

    u is in (0, 1], so the draw is the first arm whose cumulative mass reaches u * total: an arm
    with zero probability is never returned (a vmapped categorical costs ~3x more here).
    """
    u = (1.0 - key_uniform(key)).astype(probs.dtype)
    c = jnp.cumsum(probs, axis=-1)
    return jnp.sum(c < u[:, None] * c[:, -1:], axis=-1)


def segment_sum(values: Array, arms: Array, n: int) -> Array:
    return jax.ops.segment_sum(values, arms, num_segments=n)


def row_keys(keys: Array, n: int) -> Array:
    """Split each row key into ``n`` independent keys: [B, n, 2]."""
    return jax.vmap(lambda k: jax.random.split(k, n))(keys)


def to_key_array(keys: Any, rows: int) -> np.ndarray:
    k = np.asarray(keys, dtype=np.uint32)
    if k.shape != (rows, 2):
        raise ValueError(f"keys: expected shape ({rows}, 2) uint32, got {k.shape}")
    return k
