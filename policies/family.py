"""What a policy family declares; ``builder.build`` turns it into a ``Policy``.

Kernel functions receive ``cfg`` (static Python values that shape the computation: closed over,
so they select the compiled program) and ``h`` (float64 scalars, traced: experiments of one
family and shape share compiled code whatever their alpha or lambda).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# How a family turns scores into choice probabilities:
#   "argmax":  deterministic index; ties share (1-eps) mass uniformly.
#   "dist":    the family defines its own base distribution (EXP3, epsilon-greedy) and samples it.
#   "sampled": Thompson-style; scores are random draws, choice = argmax of the draw. Base
#              probabilities come from ``sample_probs`` (in-jit) or host Monte Carlo.
KINDS = ("argmax", "dist", "sampled")
REWARD_KINDS = ("binary", "bounded", "real")


@dataclass(frozen=True)
class Hyper:
    default: Any
    doc: str
    static: bool = False  # shapes the program (recompiles) rather than a traced scalar
    check: Callable[[Any], bool] | None = None
    rule: str = ""  # what ``check`` requires, for the error message
    identity: bool = True  # changing it makes a new revision (stats would mean something else)


@dataclass(frozen=True)
class Family:
    name: str
    doc: str
    kind: str
    contextual: bool
    hypers: Mapping[str, Hyper]
    init_stats: Callable[..., dict]  # (cfg, capacity, dim) -> numpy zeros
    delta: Callable[
        ..., dict
    ]  # (cfg, h, state, ctx, arms, rewards, w, propensity, t) -> stats delta
    refresh: Callable[..., dict]  # (cfg, h, stats) -> cache
    # (cfg, h, old_state, new_stats, ctx, arms, weights) -> cache; cheaper than refresh after rows
    refresh_incremental: Callable[..., dict] | None = None
    # (cfg, h, state, ctx, arms, rewards, w, propensity, t) -> stats; must equal stats + delta
    accumulate: Callable[..., dict] | None = None
    # (cfg, h, state, delta) -> stats: the merge of a delta into stats for families whose stats
    # are not sums (``merge`` names the rule); None means stats + delta
    combine: Callable[..., dict] | None = None
    # The optional kernels are typed Any (callable or None) so call sites need no casts.
    scores: Any = None  # (cfg, h, state, ctx, keys, mask, t) -> [B, N]
    dist: Any = None  # (cfg, h, state, ctx, mask, t) -> (base probs, scores)
    sample_probs: Any = None  # (cfg, h, state, ctx, mask, t) -> base probs
    # Sampled families without an in-kernel rule: numpy draws of every arm's score,
    # (cfg, h_numpy, stats_numpy, draws, rng) -> [draws, N]; Monte Carlo'd on the host once per
    # (stats, eligible set) because numpy's gamma/beta samplers are ~50x faster than XLA's here.
    host_sampler: Any = None  # Callable[..., Any] | None; Any keeps call sites free of casts
    ranked: bool = False
    # Ranked families (a list of k items per decision): update rows are [B, k] with an
    # ``observed`` mask; "cascade" derives it from the clicks (slots after the first click are
    # unobserved), "all" observes every slot.
    observe: str = "all"
    # Ranked, sampled: a custom in-kernel slate rule (cfg, h, state, ctx, keys, mask, t, k) ->
    # (arms [B, k], scores [B, N]) replacing "top k of one draw" (in-slate TS).
    rank: Any = None
    # Ranked, sampled: (cfg, h_numpy, stats_numpy, cache_numpy, mask [N], ctx [N, d] | None, k)
    # -> a model with ``prefix(arms [k]) -> P(a_1..a_j are the first j), j = 1..k`` and
    # ``first() -> [N]``; built on the host once per (state, eligible set, context).
    rank_model: Any = None
    merge: str = "sum"  # how two replicas' stats combine
    reward_kinds: tuple[str, ...] = REWARD_KINDS
    needs_propensity: bool = False
    dim_stat: str | None = None  # stat whose last axis is the context dimension
    per_arm_contexts: str = "optional"  # "no" | "optional" | "required" ([B, N, d] contexts)
    # Checks the resolved hyperparameters together; it may normalize values in place.
    validate: Callable[[dict[str, Any]], None] | None = None
    # The service passes event times as ``t``: each update row's decision time and, to select,
    # the request time (Unix seconds; the simulator passes the round index). Families that
    # ignore ``t`` leave this False and get zeros, which spares a transfer per call.
    uses_time: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def host_mc(self) -> bool:
        return self.host_sampler is not None

    def metadata(self) -> dict[str, Any]:
        return {
            "doc": self.doc,
            "contextual": self.contextual,
            "ranked": self.ranked,
            "feedback": _FEEDBACK[self.observe] if self.ranked else "one reward per decision",
            "merge": self.merge,
            "reward_kinds": list(self.reward_kinds),
            "propensity": self._propensity_doc(),
            "needs_propensity": self.needs_propensity,
            "per_arm_contexts": self.per_arm_contexts,
            "hyperparameters": {
                k: {"default": v.default, "doc": v.doc, "identity": v.identity}
                for k, v in self.hypers.items()
            },
        }

    def _propensity_doc(self) -> str:
        if self.ranked:
            if self.kind == "argmax":
                return "per slot P(a_k | a_<k), closed form (ties share mass)"
            return f"per slot P(a_k | a_<k), {self.extra.get('rank_probs', 'host model')}"
        if self.kind == "sampled":
            return (
                "Monte Carlo once per (state, eligible set)"
                if self.host_mc
                else "integrated in-kernel"
            )
        return {"argmax": "closed form (ties share mass)", "dist": "closed form"}[self.kind]


_FEEDBACK = {
    "cascade": "per-slot clicks; slots after the first click are unobserved",
    "all": "per-slot rewards; every slot observed",
}


def positive(x: Any) -> bool:
    return x is not None and float(x) > 0


def non_negative(x: Any) -> bool:
    return x is not None and float(x) >= 0


def unit_interval(x: Any) -> bool:
    return x is not None and 0.0 <= float(x) <= 1.0


def positive_int(x: Any) -> bool:
    return isinstance(x, int | float) and float(x) >= 1 and float(x) == int(x)


def zeros_init(names: tuple[str, ...]) -> Callable[..., dict]:
    """``init_stats`` for families whose stats are per-arm scalar sums."""

    def init(cfg: Mapping[str, Any], cap: int, dim: int) -> dict:
        return {k: np.zeros(cap) for k in names}

    return init


def no_cache(cfg: Mapping[str, Any], h: Mapping[str, Any], stats: dict) -> dict:
    """``refresh`` for families that derive nothing from their stats ahead of select."""
    return {}
