"""Non-stationary (drift) families: discounted Thompson sampling, D-UCB, SW-UCB.

algorithms.md §8.4-8.5, in the additive form of §8.5 ("Making these additive/distributed").

Time. ``t`` is the event time (DESIGN.md §4): the round index in the simulator, Unix seconds in
the service -- each update row's decision time, and the request time for select. An event at
time ``t_e`` seen at time ``t_now`` weighs ``gamma^((t_now - t_e) / time_unit)``: ``time_unit``
is 1 round in the simulator by default; a service user sets e.g. 60 (decay per minute).

Anchored decayed sums (discounted_ts, d_ucb). Per arm the stats keep

    S~_i = sum_e w_e r_e gamma^(-(t_e - t0) / time_unit)

relative to an anchor ``t0`` held in the stats, and a read at ``t_now`` multiplies by
``gamma^((t_now - t0) / time_unit)``. An update is then a plain add for the arms it touches.
The anchor is the latest event time of the first update (not 0: Unix times would overflow);
``t_last`` (the latest event time seen) and ``rows`` (rows applied) ride along. Events may
arrive in any order (delayed feedback): an event older than the anchor gets a weight below 1.
The exponent ``(t - t0) ln(1/gamma) / time_unit`` of every stored event stays <= REANCHOR (256
nats; float64 overflows near 709): a batch reaching past it is anchored at its own latest time,
and ``combine`` -- the single learner's merge -- moves the stats to the later anchor, rescaling
every sum at once (one multiplication by gamma^(shift) <= 1, so nothing can overflow).
Deltas computed against one state share its anchor and add as they are; in general two of them
merge by the same rule as a delta into stats (``merge_anchored``).

Time buckets (sw_ucb). The window ``tau = window * time_unit`` is cut into ``buckets`` buckets
of width ``tau / buckets``; an event at ``t`` is in bucket (epoch) ``floor(t / width)``, held in
ring slot ``epoch mod buckets``. Per arm the stats keep counts ``n[N, buckets]``, reward sums
``s[N, buckets]`` and the epoch each slot holds (``-inf``: empty). Merging: per (arm, slot) the
same epoch adds, a newer epoch replaces the slot, an older one is dropped (it has left every
window the stats can still be read at). Epochs are per arm, so an update rewrites only the arms
it touches, as with sums. A read at ``t_now`` sums the slots whose epoch lies in
``(e_now - buckets, e_now]``: the window covers between ``tau - width`` and ``tau`` of time before
``t_now`` -- exact to one bucket width.

Read time. A select reads at ``max(t, t_last)``: never before an event already applied, so a
select without a time (``t`` zeros) reads the model as of its latest event. Discounted TS reads
at ``t_last`` always: its choice probabilities are integrated on the host from the stats alone
(``Family.host_sampler`` / ``extra["host_probs"]`` take no time), and the in-kernel draw must
follow the same posterior. That is Raj & Kalyani's recursion exactly (decay applied when an
observation arrives; a select sees the posterior after the latest one).

Everything is float64, jittable with fixed shapes (padded arm capacity), pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from .base import segment_sum
from .family import Family, Hyper, no_cache, positive, positive_int
from .thompson import BETA_TS

# Largest exponent (nats) of a stored anchored weight: float64 overflows near e^709, so sums of
# weights up to e^256 (1.5e111) stay finite for any realistic number of rows.
REANCHOR = 256.0
MAX_BUCKETS = 1 << 16
ANCHOR_KEYS = ("t0", "t_last", "rows")


def _gamma_ok(x: Any) -> bool:
    return x is not None and 0.0 < float(x) <= 1.0


def _rate(h: Mapping[str, Any], xp: Any = jnp) -> Any:
    """Decay in nats per unit of t: ln(1/gamma) / time_unit (0 when gamma = 1)."""
    return -xp.log(h["gamma"]) / h["time_unit"]


_TIME_UNIT = Hyper(
    1.0,
    "length of one decay step in units of t (simulator: rounds; service: seconds, e.g. 60)",
    check=positive,
    rule="> 0",
)


# --- anchored decayed sums ---------------------------------------------------------------------


def _anchored_init(names: tuple[str, ...]):
    def init(cfg: Mapping[str, Any], cap: int, dim: int) -> dict:
        out = {k: np.zeros(cap) for k in names}
        out.update({k: np.zeros(()) for k in ANCHOR_KEYS})
        return out

    return init


def anchored_delta(h, stats, arms, w, t, values: Mapping[str, Any]) -> dict:
    """Rows -> anchored sums ``sum w v gamma^(-(t - a)/time_unit)`` per arm for each named value
    [B], plus the delta's anchor ``a``, latest time and row count. ``a`` is the stats' anchor
    when they have one and the batch stays within REANCHOR of it, else the batch's latest time.
    Rows of weight 0 (padding) contribute nothing, whatever their time."""
    k = _rate(h)
    live = w > 0
    any_live = jnp.any(live)
    tmax = jnp.where(any_live, jnp.max(jnp.where(live, t, -jnp.inf)), 0.0)
    have = stats["rows"] > 0
    keep = have & (~any_live | ((tmax - stats["t0"]) * k <= REANCHOR))
    a = jnp.where(keep, stats["t0"], tmax)
    # exponent <= REANCHOR; rows far older than the anchor underflow to 0 (their weight at any
    # read time is smaller still)
    wt = jnp.where(live, w * jnp.exp(jnp.where(live, (t - a) * k, 0.0)), 0.0)
    n = stats[next(iter(values))].shape[0]
    out = {name: segment_sum(wt * v, arms, n) for name, v in values.items()}
    out["t0"] = a
    out["t_last"] = tmax
    out["rows"] = jnp.sum(live).astype(wt.dtype)
    return out


def merge_anchored(h, x: Mapping[str, Any], y: Mapping[str, Any]) -> dict:
    """x (+) y for anchored sums (stats or deltas): both move to the later anchor (a factor
    gamma^shift <= 1 each; 1 exactly when the anchors agree, so the add is plain), then re-anchor
    at the latest event time if its exponent would exceed REANCHOR. Commutative; associative up
    to rounding (a re-anchor changes the representation, not the decayed values)."""
    k = _rate(h)
    hx, hy = x["rows"] > 0, y["rows"] > 0
    a = jnp.where(hx & hy, jnp.maximum(x["t0"], y["t0"]), jnp.where(hx, x["t0"], y["t0"]))
    t_last = jnp.where(
        hx & hy, jnp.maximum(x["t_last"], y["t_last"]), jnp.where(hx, x["t_last"], y["t_last"])
    )
    fx = jnp.where(hx, jnp.exp(-jnp.maximum(a - x["t0"], 0.0) * k), 1.0)
    fy = jnp.where(hy, jnp.exp(-jnp.maximum(a - y["t0"], 0.0) * k), 1.0)
    over = (t_last - a) * k > REANCHOR
    g = jnp.where(over, jnp.exp(-(t_last - a) * k), 1.0)
    out = {name: (x[name] * fx + y[name] * fy) * g for name in x if name not in ANCHOR_KEYS}
    out["t0"] = jnp.where(over, t_last, a)
    out["t_last"] = t_last
    out["rows"] = x["rows"] + y["rows"]
    return out


def read_factor(h, stats, t_read, xp: Any = jnp) -> Any:
    """gamma^((t_read - t0)/time_unit) for ``t_read >= t_last``, computed as two factors so that
    the first (>= e^-REANCHOR) never underflows: stats * factor = the decayed sums at t_read."""
    k = _rate(h, xp)
    first = xp.exp(-(stats["t_last"] - stats["t0"]) * k)
    return first * xp.exp(-xp.maximum(t_read - stats["t_last"], 0.0) * k)


def decayed(h, stats, t_read=None, xp: Any = jnp) -> dict:
    """Every per-arm anchored sum decayed to ``max(t_read, t_last)`` (``t_last`` if None)."""
    tr = stats["t_last"] if t_read is None else xp.maximum(t_read, stats["t_last"])
    f = read_factor(h, stats, tr, xp)
    return {k: v * f for k, v in stats.items() if k not in ANCHOR_KEYS}


def _anchored_combine(cfg, h, state, delta):
    return merge_anchored(h, state.stats, delta)


def _anchored_accumulate(delta_fn):
    def accumulate(cfg, h, state, ctx, arms, r, w, prop, t):
        return merge_anchored(h, state.stats, delta_fn(cfg, h, state, ctx, arms, r, w, prop, t))

    return accumulate


# --- discounted Thompson sampling (§8.4) ---------------------------------------------------------


def _dts_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    # Fractional rewards are pseudo-counts, as in beta_ts (algorithms.md §1.1 option (b)).
    return anchored_delta(h, state.stats, arms, w, t, {"s": r, "f": 1.0 - r})


def dts_counts(h, stats, xp: Any = jnp) -> dict:
    """Discounted (S, F) read at the latest event time: the stats beta_ts's kernels take."""
    return decayed(h, stats, None, xp)


def _dts_scores(cfg, h, state, ctx, keys, mask, t):
    st = state._replace(stats=dts_counts(h, state.stats))
    return BETA_TS.scores(cfg, h, st, ctx, keys, mask, t)


def _dts_host_sampler(cfg, h, stats, draws, rng):
    return BETA_TS.host_sampler(cfg, h, dts_counts(h, stats, np), draws, rng)


def _dts_host_probs(cfg, h, stats, mask):
    return BETA_TS.extra["host_probs"](cfg, h, dts_counts(h, stats, np), mask)


_ANCHORED_MERGE = (
    "anchored decayed sums: per-arm sums relative to an anchor time t0 add; a delta carries its "
    "anchor and both operands move to the later anchor first (deltas against one state share "
    "its anchor and add as they are); t_last merges by max, rows by +; the single learner "
    f"re-anchors at the latest event time when an exponent would exceed {REANCHOR:g} nats"
)

DISCOUNTED_TS = Family(
    name="discounted_ts",
    doc="Discounted Thompson sampling (Raj & Kalyani 2017): Beta(prior_a + S, prior_b + F) with "
    "S, F decayed by gamma per time_unit of event time; the prior is not decayed. The posterior "
    "is read at the latest event applied.",
    kind="sampled",
    contextual=False,
    reward_kinds=("binary", "bounded"),
    hypers={
        "gamma": Hyper(
            0.95,
            "discount per time_unit, in (0, 1] (SMPyBandits DiscountedBeta: 0.95; 1 = beta_ts)",
            check=_gamma_ok,
            rule="in (0, 1]",
        ),
        "time_unit": _TIME_UNIT,
        "prior_a": Hyper(
            1.0, "Beta prior alpha_0 (pseudo-successes, not decayed)", check=positive, rule="> 0"
        ),
        "prior_b": Hyper(
            1.0, "Beta prior beta_0 (pseudo-failures, not decayed)", check=positive, rule="> 0"
        ),
    },
    init_stats=_anchored_init(("s", "f")),
    delta=_dts_delta,
    accumulate=_anchored_accumulate(_dts_delta),
    combine=_anchored_combine,
    merge=_ANCHORED_MERGE,
    refresh=no_cache,
    scores=_dts_scores,
    host_sampler=_dts_host_sampler,
    uses_time=True,
    extra={"host_probs": _dts_host_probs},
)


# --- D-UCB (§8.5) --------------------------------------------------------------------------------


def _ducb_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    return anchored_delta(h, state.stats, arms, w, t, {"n": jnp.ones_like(r), "s": r})


def ducb_index(h, stats, t):
    """[B, N] D-UCB indices at read times max(t, t_last) [B]:
    X_i/N_i + 2B sqrt(xi ln n_t / N_i), n_t = sum_i N_i (every slot, as UCB1's total), ln taken
    of max(n_t, 1); arms with N_i = 0 (never played, or decayed below the smallest double)
    first."""
    f = read_factor(h, stats, jnp.maximum(t, stats["t_last"]))[:, None]  # [B, 1]
    n_anch, s_anch = stats["n"][None, :], stats["s"][None, :]
    N = n_anch * f
    n_t = jnp.sum(N, axis=1, keepdims=True)
    safe = jnp.maximum(N, 1e-300)
    mean = s_anch / jnp.maximum(n_anch, 1e-300)  # the read factor cancels
    bonus = 2.0 * h["bound"] * jnp.sqrt(h["xi"] * jnp.log(jnp.maximum(n_t, 1.0)) / safe)
    return jnp.where(N > 0, mean + bonus, jnp.inf)


def _ducb_scores(cfg, h, state, ctx, keys, mask, t):
    return jnp.broadcast_to(ducb_index(h, state.stats, t), mask.shape)


_XI = Hyper(
    0.6,
    "exploration xi; the regret bounds of Garivier & Moulines (2011) need xi > 1/2 "
    "(their experiments: 0.6)",
    check=positive,
    rule="> 0",
)
_BOUND = Hyper(1.0, "reward bound B: rewards in [0, B]", check=positive, rule="> 0")

D_UCB = Family(
    name="d_ucb",
    doc="Discounted UCB (Garivier & Moulines 2011): X_i/N_i + 2B sqrt(xi ln n_t / N_i) with "
    "counts and rewards decayed by gamma per time_unit of event time, n_t = sum_i N_i; "
    "unplayed arms first.",
    kind="argmax",
    contextual=False,
    reward_kinds=("binary", "bounded"),
    hypers={
        "gamma": Hyper(
            0.99,
            "discount per time_unit, in (0, 1] (SMPyBandits DiscountedUCB: 0.99; theory "
            "1 - sqrt(breakpoints / T) / (4B))",
            check=_gamma_ok,
            rule="in (0, 1]",
        ),
        "time_unit": _TIME_UNIT,
        "xi": Hyper(
            0.125,
            "exploration xi; 1/8 makes the bonus SMPyBandits' sqrt(ln n_t / (2 N)) at B = 1. "
            "Garivier & Moulines' bounds need xi > 1/2, which with ~1/(1 - gamma) rounds of "
            "memory over-explores (measured: 0.65x uniform's regret on a stationary 10-arm "
            "Bernoulli at xi = 0.6, 0.43x at 1/8)",
            check=positive,
            rule="> 0",
        ),
        "bound": _BOUND,
    },
    init_stats=_anchored_init(("n", "s")),
    delta=_ducb_delta,
    accumulate=_anchored_accumulate(_ducb_delta),
    combine=_anchored_combine,
    merge=_ANCHORED_MERGE,
    refresh=no_cache,
    scores=_ducb_scores,
    uses_time=True,
)


# --- SW-UCB (§8.5) -------------------------------------------------------------------------------


def _sw_init(cfg: Mapping[str, Any], cap: int, dim: int) -> dict:
    b = int(cfg["buckets"])
    return {
        "n": np.zeros((cap, b)),
        "s": np.zeros((cap, b)),
        "epoch": np.full((cap, b), -np.inf),  # the epoch each (arm, slot) holds; -inf: empty
    }


def bucket_width(cfg, h):
    return h["window"] * h["time_unit"] / cfg["buckets"]


def epoch_of(cfg, h, t, xp: Any = jnp):
    """The time bucket of t: floor(t / width)."""
    return xp.floor(t / bucket_width(cfg, h))


def _sw_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    """Rows into ring layout: per (arm, slot) the rows of the newest epoch landing there."""
    K = int(cfg["buckets"])
    N = state.stats["n"].shape[0]
    live = w > 0
    e = epoch_of(cfg, h, t)
    slot = jnp.mod(jnp.where(live, e, 0.0), K).astype(jnp.int32)
    idx = arms * K + slot
    ep = jnp.full(N * K, -jnp.inf).at[idx].max(jnp.where(live, e, -jnp.inf))
    keep = live & (e == ep[idx])
    n = jnp.zeros(N * K).at[idx].add(jnp.where(keep, w, 0.0))
    s = jnp.zeros(N * K).at[idx].add(jnp.where(keep, w * r, 0.0))
    return {"n": n.reshape(N, K), "s": s.reshape(N, K), "epoch": ep.reshape(N, K)}


def merge_ring(x: Mapping[str, Any], y: Mapping[str, Any]) -> dict:
    """x (+) y per (arm, slot): the same epoch adds, the newer epoch replaces. Commutative and
    associative (exactly, up to the order of float additions)."""
    e = jnp.maximum(x["epoch"], y["epoch"])
    mx, my = x["epoch"] == e, y["epoch"] == e
    out = {k: jnp.where(mx, x[k], 0.0) + jnp.where(my, y[k], 0.0) for k in ("n", "s")}
    out["epoch"] = e
    return out


def _sw_combine(cfg, h, state, delta):
    return merge_ring(state.stats, delta)


def _sw_accumulate(cfg, h, state, ctx, arms, r, w, prop, t):
    return merge_ring(state.stats, _sw_delta(cfg, h, state, ctx, arms, r, w, prop, t))


def sw_window_sums(cfg, h, stats, t):
    """(N_tau [B, N], S_tau [B, N]): the slots whose epoch is in (e_now - buckets, e_now],
    e_now = max(epoch of t, the latest epoch held) per row."""
    K = cfg["buckets"]
    e_now = jnp.maximum(epoch_of(cfg, h, t), jnp.max(stats["epoch"]))[:, None, None]  # [B,1,1]
    ep = stats["epoch"][None]
    inside = (ep > e_now - K) & (ep <= e_now)  # [B, N, K], fused into the sums
    n = jnp.sum(jnp.where(inside, stats["n"][None], 0.0), axis=-1)
    s = jnp.sum(jnp.where(inside, stats["s"][None], 0.0), axis=-1)
    return n, s


def swucb_index(cfg, h, stats, t):
    """[B, N] SW-UCB indices: S_tau/N_tau + B sqrt(xi ln n_tau / N_tau). The "min(t, tau)" of
    Garivier & Moulines (rounds in the window) is n_tau = sum_i N_tau,i, the weighted rows in
    the window (every slot), ln taken of max(n_tau, 1); in the simulator (one row per round,
    time_unit 1) it is min(t, tau) to one bucket. Arms unplayed in the window first."""
    n, s = sw_window_sums(cfg, h, stats, t)
    n_tau = jnp.sum(n, axis=1, keepdims=True)
    safe = jnp.maximum(n, 1e-300)
    bonus = h["bound"] * jnp.sqrt(h["xi"] * jnp.log(jnp.maximum(n_tau, 1.0)) / safe)
    return jnp.where(n > 0, s / safe + bonus, jnp.inf)


def _sw_scores(cfg, h, state, ctx, keys, mask, t):
    return jnp.broadcast_to(swucb_index(cfg, h, state.stats, t), mask.shape)


SW_UCB = Family(
    name="sw_ucb",
    doc="Sliding-window UCB (Garivier & Moulines 2011): mean + B sqrt(xi ln n_tau / N_tau) over "
    "the events of the last `window` time_units (time buckets in a ring: exact to one bucket "
    "width); n_tau = rows in the window; arms unplayed in the window first.",
    kind="argmax",
    contextual=False,
    reward_kinds=("binary", "bounded"),
    hypers={
        "window": Hyper(
            1000.0,
            "window tau in time_units (SMPyBandits SWUCB: 1000; theory 2B sqrt(T ln T / "
            "breakpoints))",
            check=positive,
            rule="> 0",
        ),
        "buckets": Hyper(
            100,
            "time buckets in the window (the window is exact to window/buckets); shapes the "
            "stats [N, buckets]",
            static=True,
            check=lambda x: positive_int(x) and int(x) <= MAX_BUCKETS,
            rule=f"an integer in [1, {MAX_BUCKETS}]",
        ),
        "time_unit": _TIME_UNIT,
        "xi": _XI,
        "bound": _BOUND,
    },
    init_stats=_sw_init,
    delta=_sw_delta,
    accumulate=_sw_accumulate,
    combine=_sw_combine,
    merge="ring of time buckets: per arm and ring slot, counts of the same epoch add, a newer "
    "epoch replaces the slot and an older one is dropped",
    refresh=no_cache,
    scores=_sw_scores,
    uses_time=True,
)

__all__ = [
    "DISCOUNTED_TS",
    "D_UCB",
    "REANCHOR",
    "SW_UCB",
    "anchored_delta",
    "decayed",
    "dts_counts",
    "ducb_index",
    "epoch_of",
    "merge_anchored",
    "merge_ring",
    "read_factor",
    "sw_window_sums",
    "swucb_index",
]
