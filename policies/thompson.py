"""Non-contextual Thompson sampling: Beta-Bernoulli, Gaussian (known variance), NIG.

algorithms.md §1.1-1.3. Stats are per-arm sums; priors are added at read time so replicas'
deltas merge by ``+``. Choice probabilities have no closed form for N > 2: the builder estimates
them by Monte Carlo once per (stats, eligible set) and memoizes them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .base import segment_sum
from .family import Family, Hyper, no_cache, positive, zeros_init
from .rank_probs import BetaRank

# --- Beta-Bernoulli -------------------------------------------------------------------------


def _beta_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    n = state.meta.active.shape[0]
    # Fractional rewards count as pseudo-successes (algorithms.md §1.1 option (b)).
    return {"s": segment_sum(w * r, arms, n), "f": segment_sum(w * (1.0 - r), arms, n)}


def _beta_scores(cfg, h, state, ctx, keys, mask, t):
    a = h["prior_a"] + state.stats["s"]
    b = h["prior_b"] + state.stats["f"]
    return jax.vmap(lambda k: jax.random.beta(k, a, b))(keys)


def _beta_first(cfg, h, st, mask):
    """Exact P(arm has the top draw): a 1-D integral on a grid adapted to the posteriors with
    the exact Beta CDF per bin (``rank_probs.BetaRank``), ~1-2 ms for 10 arms where 32,768
    Monte Carlo draws took ~15 ms, which every new state version paid."""
    return BetaRank(h["prior_a"] + st["s"], h["prior_b"] + st["f"], mask).first()


BETA_TS = Family(
    name="beta_ts",
    doc="Beta-Bernoulli Thompson sampling; fractional rewards in [0,1] as pseudo-counts.",
    kind="sampled",
    contextual=False,
    host_sampler=lambda cfg, h, st, m, rng: rng.beta(
        h["prior_a"] + st["s"], h["prior_b"] + st["f"], size=(m, st["s"].shape[0])
    ),
    reward_kinds=("binary", "bounded"),
    hypers={
        "prior_a": Hyper(1.0, "Beta prior alpha_0 (pseudo-successes)", check=positive, rule="> 0"),
        "prior_b": Hyper(1.0, "Beta prior beta_0 (pseudo-failures)", check=positive, rule="> 0"),
    },
    init_stats=zeros_init(("s", "f")),
    delta=_beta_delta,
    refresh=no_cache,
    scores=_beta_scores,
    extra={"host_probs": _beta_first},
)


# --- Gaussian, known noise variance ---------------------------------------------------------


def count_sum_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    n = state.meta.active.shape[0]
    return {"n": segment_sum(w, arms, n), "s": segment_sum(w * r, arms, n)}


def gaussian_posterior(h, stats):
    """Posterior precision p and mean m (algorithms.md §1.2)."""
    p = h["lam"] + stats["n"] / h["noise_var"]
    m = (h["mu0"] * h["lam"] + stats["s"] / h["noise_var"]) / p
    return m, p


def _gauss_scores(cfg, h, state, ctx, keys, mask, t):
    m, p = gaussian_posterior(h, state.stats)
    z = jax.vmap(lambda k: jax.random.normal(k, m.shape))(keys)
    return m + z / jnp.sqrt(p)


def _gauss_host(cfg, h, stats, draws, rng):
    m, p = gaussian_posterior(h, stats)
    return m + rng.standard_normal((draws, m.shape[0])) / np.sqrt(p)


GAUSSIAN_TS = Family(
    name="gaussian_ts",
    doc="Gaussian Thompson sampling, unknown mean, known noise variance.",
    kind="sampled",
    contextual=False,
    hypers={
        "mu0": Hyper(0.0, "prior mean mu_0", check=lambda x: np.isfinite(float(x)), rule="finite"),
        "lam": Hyper(1.0, "prior precision 1/tau_0^2", check=positive, rule="> 0"),
        "noise_var": Hyper(1.0, "known reward noise variance sigma^2", check=positive, rule="> 0"),
    },
    init_stats=zeros_init(("n", "s")),
    delta=count_sum_delta,
    refresh=no_cache,
    scores=_gauss_scores,
    host_sampler=_gauss_host,
)


# --- Normal-Inverse-Gamma -------------------------------------------------------------------


def _nig_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    n = state.meta.active.shape[0]
    y = r - h["center"]  # a fixed offset keeps S2 - n*ybar^2 well conditioned, and stays additive
    return {
        "n": segment_sum(w, arms, n),
        "s1": segment_sum(w * y, arms, n),
        "s2": segment_sum(w * y * y, arms, n),
    }


def nig_posterior(h, stats):
    """(mu_n, kappa_n, a_n, b_n) per arm (algorithms.md §1.3), on the original reward scale."""
    n, s1, s2 = stats["n"], stats["s1"], stats["s2"]
    mu0 = h["mu0"] - h["center"]
    kn = h["lam"] + n
    mun = (h["lam"] * mu0 + s1) / kn
    safe_n = jnp.maximum(n, 1e-300)
    ybar = jnp.where(n > 0, s1 / safe_n, 0.0)
    ss = jnp.maximum(s2 - n * ybar * ybar, 0.0)
    bn = h["prior_b"] + 0.5 * ss + h["lam"] * n * (ybar - mu0) ** 2 / (2.0 * kn)
    an = h["prior_a"] + n / 2.0
    return mun + h["center"], kn, an, bn


def _nig_scores(cfg, h, state, ctx, keys, mask, t):
    mun, kn, an, bn = nig_posterior(h, state.stats)

    def one(k):
        kg, kz = jax.random.split(k)
        g = jax.random.gamma(kg, an)
        z = jax.random.normal(kz, an.shape)
        return mun + jnp.sqrt(bn / g / kn) * z

    return jax.vmap(one)(keys)


def _nig_host(cfg, h, stats, draws, rng):
    mun, kn, an, bn = (np.asarray(v) for v in nig_posterior(h, stats))
    g = rng.gamma(an, size=(draws, an.shape[0]))
    return mun + np.sqrt(bn / g / kn) * rng.standard_normal(g.shape)


NIG_TS = Family(
    name="nig_ts",
    doc="Thompson sampling with a Normal-Inverse-Gamma posterior (unknown mean and variance).",
    kind="sampled",
    contextual=False,
    hypers={
        "mu0": Hyper(0.0, "prior mean mu_0", check=lambda x: np.isfinite(float(x)), rule="finite"),
        "lam": Hyper(
            1.0, "prior strength kappa_0 (pseudo-observations)", check=positive, rule="> 0"
        ),
        "prior_a": Hyper(1.0, "inverse-gamma shape a_0", check=positive, rule="> 0"),
        "prior_b": Hyper(1.0, "inverse-gamma scale b_0", check=positive, rule="> 0"),
        "center": Hyper(
            0.0,
            "fixed offset c subtracted before summing r and r^2 (numerical conditioning)",
            check=lambda x: np.isfinite(float(x)),
            rule="finite",
        ),
    },
    init_stats=zeros_init(("n", "s1", "s2")),
    delta=_nig_delta,
    refresh=no_cache,
    scores=_nig_scores,
    host_sampler=_nig_host,
)
