"""Probabilities of Thompson lists: P(a_1..a_j are the top j of one posterior draw).

Two models, built on the host once per (state, eligible set[, context]) and then queried per
decision in O(k * grid):

* ``BetaRank`` -- independent Beta posteriors per item (CascadeTS, PBM-TS). The ordered-prefix
  probability is a nested one-dimensional integral,
      P(a_1 > ... > a_j > every other eligible item),
  computed exactly up to quadrature error on a grid adapted to the posteriors: a logit-spaced
  backbone (resolves the region where the maximum of many uncertain items lives) plus
  mean +- 8 sd nodes of the items most likely to be ranked high. Bin masses use the exact Beta
  CDF (``scipy.special.betainc``), so no probability leaks between bins; within a bin two chain
  items are ordered with probability 1/2 and the rest's CDF product is averaged over the edges.
  Cost: one CDF table of |E| x grid evaluations per model (~0.2 us each).
* ``SampledRank`` -- correlated scores (linear models) or procedures without a closed form
  (in-slate TS): ``draws`` simulated lists; a prefix's probability is its frequency, counting
  the decision's own draw as one more sample, so a shown list never gets probability 0.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy.special import betainc, expit

BACKBONE = expit(np.linspace(-16.0, 16.0, 641))
NODES = np.linspace(-8.0, 8.0, 49)
CONTENDERS = 32


def _grid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = a / (a + b)
    # m(1-m)/(a+b+1) rather than ab/((a+b)^2 (a+b+1)): no overflow for huge priors
    sd = np.sqrt(mean * (1.0 - mean) / (a + b + 1.0))
    top = np.argsort(-(mean + 2.0 * sd), kind="stable")[:CONTENDERS]
    local = (mean[top, None] + sd[top, None] * NODES[None, :]).ravel()
    pts = np.concatenate([[0.0, 1.0], BACKBONE, local[(local > 0.0) & (local < 1.0)]])
    return np.unique(pts)


class BetaRank:
    """Prefix probabilities of the top-k list of one draw of independent Beta(a, b) items."""

    def __init__(self, a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> None:
        self.n = a.shape[0]
        self.items = np.flatnonzero(mask)
        self.pos = np.full(self.n, -1)
        self.pos[self.items] = np.arange(self.items.size)
        aa, bb = a[self.items], b[self.items]
        self.grid = _grid(aa, bb)
        cdf = betainc(aa[:, None], bb[:, None], self.grid[None, :])  # [E, G+1]
        cdf[:, 0], cdf[:, -1] = 0.0, 1.0
        self.cdf = cdf
        self.mass = np.diff(cdf, axis=1)  # [E, G]: P(item in bin g), exact
        with np.errstate(divide="ignore"):
            self.log_cdf = np.log(np.maximum(cdf, 1e-300))
        self.log_all = self.log_cdf.sum(axis=0)  # log prod_{eligible} F(x) at the edges
        self._first: np.ndarray | None = None

    def _rest(self, log_rest: np.ndarray, empty: np.ndarray | bool) -> np.ndarray:
        """P(every remaining item < the value), averaged over each bin's edges ([..., G])."""
        edge = np.exp(log_rest)
        edge[..., 0] = 0.0  # every remaining item is above 0 almost surely
        mid = 0.5 * (edge[..., :-1] + edge[..., 1:])
        return np.where(np.asarray(empty)[..., None], 1.0, mid) if np.any(empty) else mid

    def prefix(self, arms: np.ndarray) -> np.ndarray:
        rows = self.pos[np.asarray(arms)]
        if (rows < 0).any():
            raise ValueError("arms: the list names an item outside the eligible set")
        k, e = rows.size, self.items.size
        # the rest after each prefix, for all prefix lengths at once: [k, G]
        log_rest = self.log_all[None, :] - np.cumsum(self.log_cdf[rows], axis=0)
        rest = self._rest(log_rest, np.arange(1, k + 1) == e)
        mass = self.mass[rows]
        out = np.empty(k)
        chain = mass[0]
        out[0] = chain @ rest[0]
        for j in range(1, k):
            # P(earlier chain above bin g): mass in higher bins, plus half of bin g's own.
            above = np.cumsum(chain[::-1])[::-1] - 0.5 * chain
            chain = mass[j] * above
            out[j] = chain @ rest[j]
        return out

    def first(self) -> np.ndarray:
        """P(item is the top of the draw) for every slot (0 outside the eligible set)."""
        if self._first is None:
            p = np.zeros(self.n)
            e = self.items.size
            for i, r in enumerate(range(e)):
                lr = self.log_all - self.log_cdf[r]
                p[self.items[i]] = float(self.mass[r] @ self._rest(lr, e == 1))
            self._first = p / max(p.sum(), 1e-300)
        return self._first


class SampledRank:
    """Prefix probabilities as frequencies among simulated lists [M, k]."""

    def __init__(self, lists: np.ndarray, n: int) -> None:
        self.m, self.k = lists.shape
        self.counts = [Counter(map(tuple, lists[:, : j + 1].tolist())) for j in range(self.k)]
        self._first = np.bincount(lists[:, 0], minlength=n) / self.m

    def prefix(self, arms: np.ndarray) -> np.ndarray:
        a = [int(x) for x in arms]
        return np.asarray(
            [(self.counts[j].get(tuple(a[: j + 1]), 0) + 1) / (self.m + 1) for j in range(len(a))]
        )

    def first(self) -> np.ndarray:
        return self._first
