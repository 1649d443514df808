"""Model summaries for GetStats: 95% model intervals, P(best), plug-in regret, holdout lift.

Pure functions of plain numpy sufficient statistics (no I/O, no service state), so every number
can be checked against scipy.stats directly. scipy is not a dependency of the service: quantiles
are found by bisection on jax's regularized incomplete beta function, with asymptotic expansions
where its continued fraction loses accuracy (both Beta parameters large; Student-t with many
degrees of freedom).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from banditd.policies.thompson import gaussian_posterior, nig_posterior
from jax.scipy.special import betainc, ndtri

LEVEL = 0.95
Z95 = 1.959963984540054  # standard normal 0.975 quantile
LOW_P, HIGH_P = (1.0 - LEVEL) / 2.0, (1.0 + LEVEL) / 2.0

# jax's betainc drifts (CDF errors ~1e-7 at a = b = 1e6, ~1e-2 at 1e7); from here on the Beta is
# so close to normal that a Cornish-Fisher expansion is accurate to ~1e-6 standard deviations.
BETA_EXPANSION_MIN = 1e5
# Student-t quantiles by their 1/nu expansion beyond this (error ~ nu^-5, far below float64 noise).
T_EXPANSION_MIN = 1e4
MAX_DRAWS = 100_000
MIN_DRAWS = 1_000
DRAW_BUDGET = 2_000_000  # draws x contenders per P(best) estimate (~0.1 s for Beta draws)
CHUNK = 1 << 20  # samples held in memory at once

NOT_CONTEXTUAL = "not defined for contextual families"
BAYESIAN = ("beta_ts", "gaussian_ts", "nig_ts")

_betainc = jax.jit(betainc)


def _pad8(x: np.ndarray, fill: float) -> np.ndarray:
    # Power-of-two lengths (>= 8) so the jitted betainc compiles for few shapes.
    n = max(8, 1 << max(x.size - 1, 0).bit_length())
    return np.concatenate([x, np.full(n - x.size, fill)])


def _beta_cdf(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    k = a.size
    out = _betainc(
        jnp.asarray(_pad8(a, 1.0)), jnp.asarray(_pad8(b, 1.0)), jnp.asarray(_pad8(x, 0.5))
    )
    return np.asarray(out)[:k]


def normal_quantile(p: Any) -> np.ndarray:
    return np.asarray(ndtri(jnp.asarray(p, dtype=jnp.float64)))


def _beta_quantile_expansion(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Cornish-Fisher to second order (skewness, excess kurtosis, skewness^2); the neglected
    terms are O((a+b)^-3/2) standard deviations for the a, b it is used at."""
    n = a + b
    mean = a / n
    sd = np.sqrt(a * b / (n * n * (n + 1.0)))
    g1 = 2.0 * (b - a) * np.sqrt(n + 1.0) / ((n + 2.0) * np.sqrt(a * b))
    g2 = 6.0 * ((a - b) ** 2 * (n + 1.0) - a * b * (n + 2.0)) / (a * b * (n + 2.0) * (n + 3.0))
    z = normal_quantile(p)
    w = (
        z
        + (z * z - 1.0) * g1 / 6.0
        + (z**3 - 3.0 * z) * g2 / 24.0
        - (2.0 * z**3 - 5.0 * z) * g1 * g1 / 36.0
    )
    return np.asarray(mean + sd * w)


def beta_quantile(a: Any, b: Any, p: Any) -> np.ndarray:
    """Quantile function of Beta(a, b) at probability p (all broadcast; a, b > 0, 0 < p < 1)."""
    a, b, p = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(a, b, p))
    shape = a.shape
    a, b, p = a.ravel(), b.ravel(), p.ravel()
    out = np.empty(a.shape)
    big = np.minimum(a, b) >= BETA_EXPANSION_MIN
    if big.any():
        out[big] = _beta_quantile_expansion(a[big], b[big], p[big])
    small = ~big
    if small.any():
        aa, bb, pp = a[small], b[small], p[small]
        lo, hi = np.zeros(aa.shape), np.ones(aa.shape)
        # 64 halvings reach the float64 spacing anywhere in [0, 1]; the CDF is monotone in x.
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            below = _beta_cdf(aa, bb, mid) < pp
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        out[small] = 0.5 * (lo + hi)
    return out.reshape(shape)


def student_t_quantile(nu: Any, p: float) -> np.ndarray:
    """Upper quantile (p > 1/2) of the standard Student-t with nu degrees of freedom."""
    if not 0.5 < p < 1.0:
        raise ValueError(f"p: expected an upper-tail probability in (1/2, 1), got {p}")
    nu = np.asarray(nu, dtype=np.float64)
    shape = nu.shape
    nu = nu.ravel()
    out = np.empty(nu.shape)
    big = nu >= T_EXPANSION_MIN
    if big.any():
        # Abramowitz & Stegun 26.7.5.
        x = float(normal_quantile(p))
        v = nu[big]
        out[big] = (
            x
            + (x**3 + x) / (4.0 * v)
            + (5 * x**5 + 16 * x**3 + 3 * x) / (96.0 * v**2)
            + (3 * x**7 + 19 * x**5 + 17 * x**3 - 15 * x) / (384.0 * v**3)
            + (79 * x**9 + 776 * x**7 + 1482 * x**5 - 1920 * x**3 - 945 * x) / (92160.0 * v**4)
        )
    small = ~big
    if small.any():
        # P(|T| > t) = I_u(nu/2, 1/2) with u = nu / (nu + t^2): t from the Beta quantile u.
        v = nu[small]
        u = beta_quantile(v / 2.0, 0.5, 2.0 * (1.0 - p))
        out[small] = np.sqrt(v * (1.0 - u) / u)
    return out.reshape(shape)


# --- per-family models ---------------------------------------------------------------------

# (rng, m, idx) -> [m, len(idx)] samples of the means of arms idx
Draw = Callable[[np.random.Generator, int, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Model:
    """Per-arm mean estimate and 95% interval (NaN where undefined), and how to sample the means
    for P(best) (arms with a NaN interval must not contend)."""

    method: str
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    draw: Draw
    sampling: str  # what ``draw`` samples from, for the P(best) method string


def beta_model(s: np.ndarray, f: np.ndarray, prior_a: float, prior_b: float) -> Model:
    a = prior_a + np.asarray(s, dtype=np.float64)
    b = prior_b + np.asarray(f, dtype=np.float64)
    q = beta_quantile(np.stack([a, a]), np.stack([b, b]), np.array([[LOW_P], [HIGH_P]]))
    return Model(
        method="beta posterior Beta(prior_a + s, prior_b + f): mean and equal-tailed 95% "
        "credible interval",
        mean=a / (a + b),
        low=q[0],
        high=q[1],
        draw=lambda rng, m, i: rng.beta(a[i], b[i], size=(m, i.size)),
        sampling="the Beta posteriors",
    )


def gaussian_model(n: np.ndarray, s: np.ndarray, hyper: Mapping[str, float]) -> Model:
    m, prec = gaussian_posterior(hyper, {"n": np.asarray(n, np.float64), "s": np.asarray(s)})
    m, sd = np.asarray(m, np.float64), 1.0 / np.sqrt(np.asarray(prec, np.float64))
    return Model(
        method="normal posterior (known noise variance): mean and equal-tailed 95% credible "
        "interval",
        mean=m,
        low=m - Z95 * sd,
        high=m + Z95 * sd,
        draw=lambda rng, k, i: m[i] + sd[i] * rng.standard_normal((k, i.size)),
        sampling="the normal posteriors",
    )


def nig_model(n: np.ndarray, s1: np.ndarray, s2: np.ndarray, hyper: Mapping[str, float]) -> Model:
    stats = {k: np.asarray(v, np.float64) for k, v in (("n", n), ("s1", s1), ("s2", s2))}
    mun, kn, an, bn = (np.asarray(v, np.float64) for v in nig_posterior(hyper, stats))
    # Marginal posterior of the mean: Student-t, 2 a_n degrees of freedom, scale^2 b_n/(a_n k_n).
    nu = 2.0 * an
    scale = np.sqrt(bn / (an * kn))
    half = student_t_quantile(nu, HIGH_P) * scale
    return Model(
        method="normal-inverse-gamma posterior: mean and equal-tailed 95% credible interval of "
        "the Student-t marginal of the mean",
        mean=mun,
        low=mun - half,
        high=mun + half,
        draw=lambda rng, k, i: mun[i] + scale[i] * rng.standard_t(nu[i], size=(k, i.size)),
        sampling="the Student-t marginal posteriors of the means",
    )


def empirical_model(sums_n: np.ndarray, total: np.ndarray, sumsq: np.ndarray) -> Model:
    """Normal approximation from the logged rewards: mean +- 1.96 s / sqrt(n) (n >= 2)."""
    n = np.asarray(sums_n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, total / n, np.nan)
        var = np.where(n > 1, np.maximum(sumsq - n * mean * mean, 0.0) / (n - 1.0), np.nan)
        se = np.sqrt(var / n)
    return Model(
        method="normal approximation from the empirical mean and variance (non-Bayesian "
        "family): mean +- 1.96 s/sqrt(n)",
        mean=mean,
        low=mean - Z95 * se,
        high=mean + Z95 * se,
        draw=lambda rng, k, i: mean[i] + se[i] * rng.standard_normal((k, i.size)),
        sampling="the normal approximations N(mean, s^2/n)",
    )


def family_model(
    family: str,
    hyper: Mapping[str, Any],
    stats: Mapping[str, Any],
    n: np.ndarray,
    total: np.ndarray,
    sumsq: np.ndarray,
) -> Model:
    """The model of a non-contextual family: its posterior (from ``stats``, the policy's
    sufficient statistics per slot) when Bayesian, else the empirical normal approximation from
    the logged reward sums (``n``, ``total``, ``sumsq`` per slot)."""
    st = {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}
    h = {k: float(v) for k, v in hyper.items() if k in _HYPERS.get(family, ())}
    if family == "beta_ts":
        return beta_model(st["s"], st["f"], h["prior_a"], h["prior_b"])
    if family == "gaussian_ts":
        return gaussian_model(st["n"], st["s"], h)
    if family == "nig_ts":
        return nig_model(st["n"], st["s1"], st["s2"], h)
    return empirical_model(n, total, sumsq)


_HYPERS = {
    "beta_ts": ("prior_a", "prior_b"),
    "gaussian_ts": ("mu0", "lam", "noise_var"),
    "nig_ts": ("mu0", "lam", "prior_a", "prior_b", "center"),
}


# --- P(best), regret, lift -----------------------------------------------------------------


def draws_for(k: int) -> int:
    """Monte Carlo draws for k contenders: MAX_DRAWS (standard error <= 0.0016) until the
    sample matrix would exceed DRAW_BUDGET."""
    return int(min(MAX_DRAWS, max(MIN_DRAWS, DRAW_BUDGET // max(k, 1))))


def prob_best(draw: Draw, contenders: np.ndarray, draws: int, seed: Any) -> np.ndarray:
    """P(arm has the largest mean) among the ``contenders`` (bool[K]) by Monte Carlo; NaN for the
    other arms. Ties within a draw share its win evenly (a zero-variance approximation can tie)."""
    contenders = np.asarray(contenders, bool)
    out = np.full(contenders.shape, np.nan)
    if not contenders.any():
        return out
    idx = np.flatnonzero(contenders)
    rng = np.random.default_rng(seed)
    wins = np.zeros(idx.size)
    per = max(1, CHUNK // idx.size)
    done = 0
    while done < draws:
        m = min(per, draws - done)
        x = draw(rng, m, idx)
        hit = x == x.max(axis=1, keepdims=True)
        wins += (hit / hit.sum(axis=1, keepdims=True)).sum(axis=0)
        done += m
    out[contenders] = wins / draws
    return out


def plug_in_regret(n: np.ndarray, mean: np.ndarray, active: np.ndarray) -> float | None:
    """sum_a n_a (mu* - mu_a) over arms with a finite mean that are active or were played,
    mu* the largest such mean; None when there is no such arm."""
    n, mean = np.asarray(n, np.float64), np.asarray(mean, np.float64)
    ok = np.isfinite(mean) & (np.asarray(active, bool) | (n > 0))
    if not ok.any():
        return None
    best = mean[ok].max()
    return float(np.sum(n[ok] * (best - mean[ok])))


@dataclass(frozen=True)
class Lift:
    policy_n: int
    policy_mean: float
    holdout_n: int
    holdout_mean: float
    lift: float
    low: float
    high: float


def _mean_var(n: int, total: float, sumsq: float) -> tuple[float, float]:
    mean = total / n
    return mean, max(sumsq - n * mean * mean, 0.0) / (n - 1)


def welch_lift(policy: tuple[int, float, float], holdout: tuple[int, float, float]) -> Lift | None:
    """Policy mean minus holdout mean with a 95% Welch (unpooled) normal-approximation interval,
    from (n, sum, sum of squares) of each side; None unless both sides have 2 rewards."""
    (n1, s1, q1), (n0, s0, q0) = policy, holdout
    if n1 < 2 or n0 < 2:
        return None
    m1, v1 = _mean_var(n1, s1, q1)
    m0, v0 = _mean_var(n0, s0, q0)
    diff = m1 - m0
    half = Z95 * math.sqrt(v1 / n1 + v0 / n0)
    return Lift(n1, m1, n0, m0, diff, diff - half, diff + half)
