"""Best-arm identification: Successive Elimination, Sequential Halving, bracketing SH.

algorithms.md §7. These families look for the best arm rather than minimising regret: while
exploring they spread the traffic uniformly over the arms still in the running, and once an arm
is identified they play it. ``identified(family, hyper, state)`` reads the answer off a state.

Successive Elimination (§7.1, fixed confidence delta). Stats: per arm ``n``, ``s`` (sums) and
``elim`` (0/1). Feedback is asynchronous and pulls are unequal, so the per-arm generalization of
the spec is used [recon]: with ``N`` = the experiment's active arms,

    radius_i = sqrt(ln(c * N * n_i^2 / delta) / n_i)      (+inf when n_i = 0)
    UCB_i = mean_i + radius_i,   LCB_i = mean_i - radius_i

and a surviving arm ``i`` is eliminated when ``UCB_i < max_j LCB_j`` over the surviving active
arms ``j``. Elimination is sticky: the ``elim`` flags are recomputed from the merged sums at each
apply and OR-ed with the old ones, so an arm never comes back even if later estimates would
revive it. The arm with the largest LCB can never be eliminated, so one pass is a fixed point and
at least one active arm survives (unless arms are retired). Selection (kind "dist"): uniform over
the surviving eligible arms, or with ``allocation="least_pulled"`` uniform over the least-pulled
of them (exact round-robin SE when feedback is immediate); a row whose eligible set holds no
survivor falls back to uniform over its eligible arms. Scores are the UCBs (+inf unplayed, -inf
eliminated). Identified: exactly one active arm survives, with confidence 1 - delta.

Sequential Halving (§7.2, fixed budget T = ``budget``). SH starts at the first apply (or is
previewed by select before it) on the ``N`` arms active then: ``R = ceil(log2 N)`` rounds; in
round r every arm of ``S_r`` gets ``t_r = floor(T / (|S_r| R))`` pulls and the ``ceil(|S_r|/2)``
best by empirical mean survive (``reuse=True``: all the samples of the arm since SH started,
``False``: that round's samples only). Ties go to the lower slot index; an arm without samples
ranks last. Selection is uniform over the alive arms whose round quota is not reached yet; after
the last round only the survivor is played (exploitation, not budget). Budget: pulls are counted
from *applied* observations (``spent``); a round ends at the first apply after which every alive
arm has its quota. With delayed feedback more decisions than T can be issued while rewards are
outstanding, and observations are credited to the round in which they are applied.

Bracketing SH (§7.3; a **reconstruction** [recon] from the paper's abstract, not checked against
its Algorithm "BSH"). For the data-poor regime ``T < N ceil(log2 N)`` (``bracketing="auto"``
uses it exactly when ``t_0`` would be 0; "on" always; "off" never, and then ``t_r`` is at least 1
so the budget can be exceeded). Brackets ``l = 1..L``, ``L = ceil(log2 N)``: bracket ``l`` is the
``m_l = min(N, 2^l)`` arms of the starting set with the smallest hash ``u(seed, l, slot)`` (a
seeded uniform random subset; ties by slot) and has budget ``T_l = floor(T / L)``; brackets that
cannot afford ``m_l ceil(log2 m_l)`` pulls are skipped (their budget is not redistributed). The
brackets run one after another, SH inside each on that bracket's own samples, and the output is
the bracket winner with the best empirical mean over all its samples (ties: lower slot). If no
bracket is affordable nothing is identified and selection is uniform over the eligible arms.

    u(seed, l, slot) = f(f(f(seed + 0x9E3779B9) ^ l) ^ f(slot + 0x7F4A7C15))

with ``f`` murmur3's 32-bit finalizer (``base._fmix32``) on uint32 with wrap-around.

Merge: SH's round, bracket and alive set are derived state owned by the single learner (the
service's one writer per experiment): deltas are sums (``n``, ``s``) and ``combine`` replays the
schedule on the merged sums at each apply; a cut is computed once, from the merged stats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .base import _fmix32
from .family import Family, Hyper, no_cache, positive, positive_int
from .thompson import count_sum_delta

_POW2 = 2.0 ** np.arange(64)  # exact powers of two, for ceil(log2 x) without a log
_LS = np.arange(1.0, 65.0)  # bracket indices 1..64 (L = ceil(log2 N) <= 63 for any capacity)


def clog2(x):
    """ceil(log2 x) for x >= 1 (0 for x <= 1), exact: the number of k >= 0 with 2^k < x."""
    x = jnp.asarray(x, jnp.float64)
    return jnp.sum(x[..., None] > _POW2, axis=-1).astype(jnp.float64)


def _rank(keep_first, score, cap: int):
    """Rank of every slot: ``keep_first`` slots first, then by score descending, then by slot."""
    slot = jnp.arange(cap)
    order = jnp.lexsort((slot, -score, ~keep_first))
    return jnp.zeros(cap, slot.dtype).at[order].set(slot)


def _uniform_rows(cand, mask):
    """Uniform over ``cand & mask`` per row; uniform over ``mask`` where that is empty."""
    c = cand & mask
    c = jnp.where(jnp.any(c, axis=-1, keepdims=True), c, mask)
    return c / jnp.maximum(c.sum(-1, keepdims=True), 1)


def _mean(n, s, empty):
    return jnp.where(n > 0, s / jnp.where(n > 0, n, 1.0), empty)


# --- Successive Elimination -------------------------------------------------------------------


def se_bounds(h, stats, active):
    """(mean, radius, LCB, UCB) per slot; unplayed arms have an infinite radius."""
    n, s = stats["n"], stats["s"]
    n_act = jnp.maximum(jnp.sum(active), 1).astype(n.dtype)
    safe = jnp.where(n > 0, n, 1.0)
    log_term = jnp.log(h["c"] * n_act * safe**2 / h["delta"])
    radius = jnp.where(n > 0, jnp.sqrt(jnp.maximum(log_term, 0.0) / safe), jnp.inf)
    mean = _mean(n, s, 0.0)
    return mean, radius, mean - radius, mean + radius


def se_eliminate(h, stats, active):
    """The surviving arms that the stats eliminate now: UCB_i < max_j LCB_j over survivors."""
    _, _, lcb, ucb = se_bounds(h, stats, active)
    surv = active & (stats["elim"] == 0)
    best = jnp.max(jnp.where(surv, lcb, -jnp.inf))
    return surv & (ucb < best)


def _se_init(cfg, cap, dim):
    return {k: np.zeros(cap) for k in ("n", "s", "elim")}


def _se_combine(cfg, h, state, delta):
    stats = {"n": state.stats["n"] + delta["n"], "s": state.stats["s"] + delta["s"]}
    stats["elim"] = state.stats["elim"]
    out = se_eliminate(h, stats, state.meta.active)
    stats["elim"] = jnp.maximum(state.stats["elim"], out.astype(stats["n"].dtype))
    return stats


def _se_accumulate(cfg, h, state, x, arms, r, w, prop, t):
    return _se_combine(cfg, h, state, count_sum_delta(cfg, h, state, x, arms, r, w, prop, t))


def _se_dist(cfg, h, state, ctx, mask, t):
    st, active = state.stats, state.meta.active
    surv = active & (st["elim"] == 0)
    cand = jnp.broadcast_to(surv, mask.shape)
    if cfg["allocation"] == "least_pulled":
        n = jnp.where(cand & mask, st["n"], jnp.inf)
        cand = cand & (n == jnp.min(n, axis=-1, keepdims=True))
    _, _, _, ucb = se_bounds(h, st, active)
    scores = jnp.where(st["elim"] > 0, -jnp.inf, ucb)
    return _uniform_rows(cand, mask), jnp.broadcast_to(scores, mask.shape)


def _unit_open(x) -> bool:
    return x is not None and 0.0 < float(x) < 1.0


def _allocation_ok(x) -> bool:
    return x in ("uniform", "least_pulled")


SE_MERGE = (
    "n and sums add; the eliminated set is owned by the single learner: recomputed from the "
    "merged sums at each apply and never shrinks"
)

SUCCESSIVE_ELIMINATION = Family(
    name="successive_elimination",
    doc="Successive Elimination (Even-Dar et al. 2006), fixed confidence delta, rewards in "
    "[0,1]: per-arm radii sqrt(ln(c N n_i^2 / delta) / n_i) [recon, unequal pulls]; arm i is "
    "eliminated for good when UCB_i < max LCB of the survivors; uniform over survivors.",
    kind="dist",
    contextual=False,
    reward_kinds=("binary", "bounded"),
    merge=SE_MERGE,
    hypers={
        "delta": Hyper(
            0.05, "confidence: P(wrong arm identified) <= delta", check=_unit_open, rule="in (0, 1)"
        ),
        "c": Hyper(4.0, "constant c in ln(c N n^2 / delta)", check=positive, rule="> 0"),
        "allocation": Hyper(
            "uniform",
            "'uniform' over the surviving arms or 'least_pulled' (uniform over the least-pulled "
            "survivors: round-robin when feedback is immediate)",
            static=True,
            check=_allocation_ok,
            rule="'uniform' or 'least_pulled'",
            identity=False,
        ),
    },
    init_stats=_se_init,
    delta=count_sum_delta,
    combine=_se_combine,
    accumulate=_se_accumulate,
    refresh=no_cache,
    dist=_se_dist,
)


# --- Sequential Halving (plain and bracketing) ---------------------------------------------------

_SH_ARM = ("n", "s", "bn", "bs", "rn", "rs", "alive", "start", "win")
# N0: arms at the start (0 = not started); R = ceil(log2 N0) (= L, the bracket count); mode: 1 =
# bracketing; bracket: current bracket l (0 in plain SH); round: r within it; size: |S_r|;
# done: 1 once the survivor is known (or nothing can be); spent: pulls applied before done.
_SH_SCALAR = ("N0", "R", "mode", "bracket", "round", "size", "done", "spent")


def _sh_init(cfg, cap, dim):
    out = {k: np.zeros(cap) for k in _SH_ARM}
    out.update({k: np.zeros(()) for k in _SH_SCALAR})
    return out


def bracket_hash(seed, ell, slots):
    """u(seed, l, slot) as uint32 (see the module doc)."""
    k = _fmix32(jnp.uint32(seed) + jnp.uint32(0x9E3779B9))
    k = _fmix32(k ^ jnp.asarray(ell).astype(jnp.uint32))
    return _fmix32(k ^ _fmix32(jnp.asarray(slots).astype(jnp.uint32) + jnp.uint32(0x7F4A7C15)))


def _bracket_size(st, ell):
    return jnp.minimum(st["N0"], 2.0**ell)


def _members(cfg, st, ell, m):
    start = st["start"] > 0
    cap = start.shape[0]
    u = bracket_hash(cfg["seed"], ell, jnp.arange(cap)).astype(jnp.float64)
    return start & (_rank(start, -u, cap) < m)


def _next_bracket(h, st, ell):
    """The first bracket l' > ell in 1..L with T_l' >= m_l' ceil(log2 m_l'); 0 if none."""
    L = st["R"]
    m = jnp.minimum(st["N0"], 2.0**_LS)
    ok = (ell < _LS) & (_LS <= L) & (jnp.floor(h["budget"] / jnp.maximum(L, 1.0)) >= m * clog2(m))
    return jnp.where(jnp.any(ok), jnp.min(jnp.where(ok, _LS, jnp.inf)), 0.0)


def _begin_bracket(cfg, st, ell):
    """Start bracket ``ell`` (plain SH: the one bracket of all the starting arms)."""
    f = st["n"].dtype
    plain = st["mode"] == 0
    members = jnp.where(
        plain, st["start"] > 0, _members(cfg, st, ell, _bracket_size(st, ell))
    ).astype(f)
    zero = jnp.zeros_like(st["n"])
    out = dict(st)
    out.update(alive=members, bn=zero, bs=zero, rn=zero, rs=zero, bracket=ell)
    out.update(round=jnp.zeros((), f), size=jnp.sum(members))
    return out


def _finish(st, win):
    """Done: the winner with the best empirical mean over all its samples (ties: lower slot)."""
    cap = win.shape[0]
    rank = _rank(win, _mean(st["n"], st["s"], -jnp.inf), cap)
    out = dict(st)
    out.update(win=win.astype(st["n"].dtype), done=jnp.ones((), st["n"].dtype))
    out["alive"] = ((rank == 0) & jnp.any(win)).astype(st["n"].dtype)
    return out


def _start(cfg, h, st, active):
    """SH's start on the arms active now: N0, R, the mode and the first bracket."""
    f = st["n"].dtype
    n0 = jnp.sum(active).astype(f)
    big_r = clog2(n0)
    if cfg["bracketing"] == "on":
        mode = n0 >= 2
    elif cfg["bracketing"] == "off":
        mode = jnp.zeros((), bool)
    else:  # t_0 = floor(T / (N R)) would be 0
        mode = (n0 >= 2) & (h["budget"] < n0 * big_r)
    out = dict(st)
    out.update(N0=n0, R=big_r, mode=mode.astype(f), start=active.astype(f))
    first = jnp.where(mode, _next_bracket(h, out, 0.0), 0.0)
    begun = _begin_bracket(cfg, out, first)
    none = mode & (first == 0)  # bracketing, but no bracket is affordable: nothing to identify
    nothing = _finish(out, jnp.zeros(active.shape, bool))
    return jax.tree.map(lambda a, b: jnp.where(none, a, b), nothing, begun)


def _like(new, ref):
    """``new`` with ``ref``'s dtypes and shapes (loop carries and cond branches must agree)."""
    return {k: jnp.broadcast_to(jnp.asarray(new[k], ref[k].dtype), ref[k].shape) for k in ref}


def _ensure_started(cfg, h, st, active):
    go = (st["N0"] == 0) & jnp.any(active)
    return jax.lax.cond(
        go, lambda s: _like(_start(cfg, h, s, active), s), lambda s: _like(s, s), st
    )


def sh_quota(h, st):
    """t_r of the current round: floor(B / (|S_r| R_b)), at least 1 (B, R_b: the bracket's)."""
    brk = st["mode"] > 0
    budget = jnp.where(brk, jnp.floor(h["budget"] / jnp.maximum(st["R"], 1.0)), h["budget"])
    rounds = jnp.where(brk, clog2(_bracket_size(st, st["bracket"])), st["R"])
    denom = st["size"] * rounds
    return jnp.maximum(1.0, jnp.floor(budget / jnp.where(denom > 0, denom, 1.0)))


def _cut_needed(h, st, active):
    alive = (st["alive"] > 0) & active
    met = jnp.all(jnp.where(alive, st["rn"] >= sh_quota(h, st), True))
    return (st["N0"] > 0) & (st["done"] == 0) & ((st["size"] <= 1) | met)


def _cut(cfg, h, st, active):
    """End the current round: keep the ceil(|A|/2) best alive arms; end the bracket at one."""
    f = st["n"].dtype
    cap = active.shape[0]
    alive = (st["alive"] > 0) & active
    k = jnp.ceil(jnp.sum(alive) / 2.0)
    n, s = (st["bn"], st["bs"]) if cfg["reuse"] else (st["rn"], st["rs"])
    keep = alive & (_rank(alive, _mean(n, s, -jnp.inf), cap) < k)
    zero = jnp.zeros_like(st["n"])
    cont = dict(st)
    cont.update(alive=keep.astype(f), rn=zero, rs=zero, round=st["round"] + 1.0, size=k)
    win = (st["win"] > 0) | keep
    nxt = jnp.where(st["mode"] > 0, _next_bracket(h, st, st["bracket"]), 0.0)
    following = _begin_bracket(cfg, dict(st, win=win.astype(f)), nxt)
    end = jax.tree.map(lambda a, b: jnp.where(nxt > 0, a, b), following, _finish(st, win))
    return _like(jax.tree.map(lambda a, b: jnp.where(k <= 1, a, b), end, cont), st)


def _sh_combine(cfg, h, state, delta):
    active = state.meta.active
    st = _ensure_started(cfg, h, state.stats, active)
    dn, ds = delta["n"], delta["s"]
    running = (st["N0"] > 0) & (st["done"] == 0)
    alive = jnp.where(running, st["alive"], 0.0)  # after the last round nothing is credited
    st = dict(st)
    st.update(n=st["n"] + dn, s=st["s"] + ds)
    st.update(bn=st["bn"] + alive * dn, bs=st["bs"] + alive * ds)
    st.update(rn=st["rn"] + alive * dn, rs=st["rs"] + alive * ds)
    st["spent"] = st["spent"] + jnp.where(running, jnp.sum(dn), 0.0)
    # Each pass ends a round; a bracket's first round has rn = 0 < t_r, so one apply cuts at most
    # once per bracket (more only when brackets end at once, e.g. all their arms retired).
    limit = 4 * (len(_LS) + 1)

    def cond(carry):
        s, i = carry
        return _cut_needed(h, s, active) & (i < limit)

    def body(carry):
        s, i = carry
        return _cut(cfg, h, s, active), i + 1

    st, _ = jax.lax.while_loop(cond, body, (st, jnp.zeros((), jnp.int32)))
    return st


def _sh_accumulate(cfg, h, state, x, arms, r, w, prop, t):
    return _sh_combine(cfg, h, state, count_sum_delta(cfg, h, state, x, arms, r, w, prop, t))


def _sh_dist(cfg, h, state, ctx, mask, t):
    active = state.meta.active
    st = _ensure_started(cfg, h, state.stats, active)
    alive = (st["alive"] > 0) & active
    under = alive & (st["rn"] < sh_quota(h, st))
    cand = jnp.where(st["done"] > 0, alive, jnp.where(jnp.any(under), under, alive))
    scores = _mean(st["n"], st["s"], 0.0)
    return _uniform_rows(cand, mask), jnp.broadcast_to(scores, mask.shape)


def _bracketing_ok(x) -> bool:
    return x in ("auto", "on", "off")


def _seed_ok(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32


SH_MERGE = (
    "n and sums add; rounds, brackets and the alive set are owned by the single learner: "
    "recomputed from the merged sums at each apply (a cut once per round, from merged stats)"
)

SEQUENTIAL_HALVING = Family(
    name="sequential_halving",
    doc="Sequential Halving (Karnin et al. 2013), fixed budget T: R = ceil(log2 N) rounds of "
    "floor(T/(|S_r| R)) pulls per alive arm, the better half by empirical mean survives (ties: "
    "lower slot); uniform over the alive arms under quota, then the survivor only. Pulls count "
    "applied observations: with delayed feedback more than T decisions can be issued. For "
    "T < N ceil(log2 N), bracketing SH (Zhao et al. 2023) as a reconstruction [recon], not "
    "verified against the paper's algorithm: seeded random brackets of size min(N, 2^l), "
    "budget floor(T/L) each, the best bracket winner. Fixed budget: no confidence level.",
    kind="dist",
    contextual=False,
    reward_kinds=("binary", "bounded"),
    merge=SH_MERGE,
    hypers={
        "budget": Hyper(1000, "total pull budget T", check=positive_int, rule="integer >= 1"),
        "reuse": Hyper(
            True,
            "rank on all the samples of the arm (True) or on that round's only (False)",
            static=True,
        ),
        "bracketing": Hyper(
            "auto",
            "'auto' (bracketing SH when floor(T/(N R)) = 0), 'on' or 'off'",
            static=True,
            check=_bracketing_ok,
            rule="'auto', 'on' or 'off'",
        ),
        "seed": Hyper(
            0, "seed of the bracket draws", static=True, check=_seed_ok, rule="in [0, 2^32)"
        ),
    },
    init_stats=_sh_init,
    delta=count_sum_delta,
    combine=_sh_combine,
    accumulate=_sh_accumulate,
    refresh=no_cache,
    dist=_sh_dist,
)


# --- answers ------------------------------------------------------------------------------------


def _full(fam: Family, hyper: Mapping[str, Any]) -> dict[str, Any]:
    return {k: hyper.get(k, v.default) for k, v in fam.hypers.items()}


def identified(fam_name: str, hyper_dict: Mapping[str, Any], state: Any) -> tuple[int, float]:
    """(slot, confidence) of the identified best arm, or (-1, nan) while there is none.

    Successive Elimination: once exactly one active arm survives, with confidence 1 - delta.
    Sequential Halving: the survivor once every round (every bracket) is done; the confidence
    is NaN: SH is a fixed-budget method and makes no confidence statement.
    """
    st = {k: np.asarray(v) for k, v in state.stats.items()}
    active = np.asarray(state.meta.active, bool)
    if fam_name == SUCCESSIVE_ELIMINATION.name:
        hyper = _full(SUCCESSIVE_ELIMINATION, hyper_dict)
        surv = np.flatnonzero(active & (st["elim"] == 0))
        if surv.size == 1:
            return int(surv[0]), 1.0 - float(hyper["delta"])
        return -1, math.nan
    if fam_name == SEQUENTIAL_HALVING.name:
        alive = np.flatnonzero(st["alive"] > 0)
        if st["done"] > 0 and alive.size == 1:
            return int(alive[0]), math.nan
        return -1, math.nan
    raise ValueError(f"family: {fam_name!r} is not a best-arm-identification family")


__all__ = [
    "SEQUENTIAL_HALVING",
    "SE_MERGE",
    "SH_MERGE",
    "SUCCESSIVE_ELIMINATION",
    "bracket_hash",
    "clog2",
    "identified",
    "se_bounds",
    "se_eliminate",
    "sh_quota",
]
