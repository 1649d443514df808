"""Fixed split: the A/B control arm for "fixed split vs bandit" comparisons.

Traffic goes to the arms in configured proportions whatever the rewards, so the logged
propensity is the arm's weight (renormalized over the arms a row may take). The counts and sums
it keeps serve GetStats and off-policy evaluation; they never change a decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from .family import Family, Hyper, no_cache, zeros_init
from .thompson import count_sum_delta


def _weights_ok(x: Any) -> bool:
    if x is None:
        return True
    if not isinstance(x, list | tuple) or not x:
        return False
    w = [float(v) for v in x]
    return all(v >= 0 and v == v and v != float("inf") for v in w) and sum(w) > 0


def _validate(params: dict[str, Any]) -> None:
    # Static hyperparameters key the compiled program, so they must be hashable.
    if params["weights"] is not None:
        params["weights"] = tuple(float(v) for v in params["weights"])


def _split_dist(cfg: Mapping[str, Any], h, state, ctx, mask, t):
    cap = mask.shape[-1]
    weights = cfg["weights"]
    if weights is None:
        w = jnp.ones(cap)
    else:
        given = jnp.asarray(weights[:cap], jnp.float64)
        w = jnp.zeros(cap).at[: given.shape[0]].set(given)  # arms beyond the list: weight 0
    wm = jnp.where(mask, w[None, :], 0.0)
    total = wm.sum(-1, keepdims=True)
    uniform = mask / jnp.maximum(mask.sum(-1, keepdims=True), 1)
    # A row whose eligible arms all weigh 0 is split evenly rather than refused.
    probs = jnp.where(total > 0, wm / jnp.maximum(total, 1e-300), uniform)
    return probs, jnp.broadcast_to(w, mask.shape)


FIXED_SPLIT = Family(
    name="fixed_split",
    doc="Fixed split (A/B test): arm i gets weights[i] of the traffic, renormalized over the "
    "active eligible arms; propensity = that share. Weights follow arm creation order; arms "
    "beyond the list get 0; no weights = an even split. Rewards are counted, never learned from.",
    kind="dist",
    contextual=False,
    hypers={
        "weights": Hyper(
            None,
            "traffic share per arm in creation order (normalized); null = even split",
            static=True,
            check=_weights_ok,
            rule="a non-empty list of finite weights >= 0 with a positive sum, or null",
            identity=False,
        ),
    },
    init_stats=zeros_init(("n", "s")),
    delta=count_sum_delta,
    refresh=no_cache,
    dist=_split_dist,
    validate=_validate,
)

__all__ = ["FIXED_SPLIT"]
