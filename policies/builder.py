"""Turns a ``Family`` into a ``Policy``: jitted kernels, batch buckets, capacity growth."""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import ranked
from .base import (
    Meta,
    Policy,
    SelectOutput,
    State,
    capacity_for,
    key_uniform,
    key_uniform_host,
    mix_epsilon,
    next_pow2,
    sample_from,
    tie_probs,
    to_key_array,
)
from .family import Family
from .ranked_ops import Helpers, RankedOps

# How many times each (family, kernel) was traced. Tests use it to prove that batch buckets and
# capacity doubling bound compilation; it costs one dict increment per trace, nothing per call.
TRACES: Counter[tuple[str, str]] = Counter()

MC_DRAWS = 32768  # SE of a Monte Carlo choice probability <= sqrt(0.25 / 32768) = 0.0028
MC_CHUNK = 4096
MC_MEMO = 256
HOST_ROWS = 64  # host-MC families select up to this many rows with numpy (see _host_select)


class Kernels(NamedTuple):
    """Un-padded, jittable pure functions (vmap them for many simulated experiments)."""

    select: Any  # (h, state, ctx, keys, eligible, eps, t, base) -> arms, propensity, scores, probs
    choose: Any  # (h, state, ctx, keys, eligible, eps, t) -> arms, probs-or-nan (no host MC)
    delta: Any  # (h, state, ctx, arms, rewards, weights, propensity, t) -> stats delta
    apply: Any  # (h, state, delta) -> state (merge + refresh + version bump)
    update: Any  # delta then apply
    refresh: Any  # (h, stats) -> cache
    h: Mapping[str, Any]  # traced hyperparameters as float64 scalars
    # ranked families: k -> (h, state, ctx, keys, eligible, eps, t) -> (arms [B, k], per-slot
    # propensity (index families) or uniform prefix probabilities, scores, first-slot probs)
    rank: Any = None


def _select_core(fam: Family, cfg: Mapping[str, Any], h, state, ctx, keys, elig, eps, t, base):
    mask = state.meta.active[None, :] & elig
    if fam.kind == "argmax":
        scores = fam.scores(cfg, h, state, ctx, keys, mask, t)
        probs = mix_epsilon(tie_probs(scores, mask), mask, eps)
        arms = sample_from(probs, keys)
    elif fam.kind == "dist":
        dist, scores = fam.dist(cfg, h, state, ctx, mask, t)
        probs = mix_epsilon(dist, mask, eps)
        arms = sample_from(probs, keys)
    else:
        scores = fam.scores(cfg, h, state, ctx, keys, mask, t)
        # One uniform decides both: u < eps explores, and then u/eps is itself uniform on [0, 1).
        # It is read from the key's bits; the draws above hash the key, so the two are unrelated.
        u = key_uniform(keys).astype(scores.dtype)
        # Exact ties in a draw (zero posterior variance: alpha = 0, an all-zero context, identical
        # per-arm features) split the greedy mass as the logged probabilities assume; otherwise
        # arm order would decide. When not exploring, (1-u)/(1-eps) is uniform on (0, 1].
        ct = jnp.cumsum(tie_probs(scores, mask), axis=-1)
        g = jnp.clip((1.0 - u) / jnp.maximum(1.0 - eps, 1e-300), 1e-12, 1.0)
        greedy = jnp.sum(ct < g[:, None] * ct[:, -1:], axis=-1)
        c = jnp.cumsum(mask, axis=-1)
        v = 1.0 - u / jnp.maximum(eps, 1e-300)  # in (0, 1] when exploring
        explore = jnp.sum(c < v[:, None] * c[:, -1:], axis=-1)
        arms = jnp.where(u < eps, explore, greedy)
        if base is None and fam.sample_probs is not None:
            base = fam.sample_probs(cfg, h, state, ctx, mask, t)
        probs = (
            mix_epsilon(base, mask, eps)
            if base is not None
            else jnp.full(scores.shape, jnp.nan, scores.dtype)
        )
    propensity = jnp.take_along_axis(probs, arms[:, None], axis=1)[:, 0]
    return arms, propensity, scores, probs


def _select_packed(fam: Family, cfg, *args):
    """select as one [B, 2 + 2N] array: a device->host copy costs ~15 us per array here, so one
    copy instead of four. It has the scores' dtype (a float32 serving cache halves the copy);
    arm indices are exact in float32 below 2**24 arms."""
    arms, propensity, scores, probs = _select_core(fam, cfg, *args)
    f = jnp.float64 if scores.dtype == jnp.float64 else jnp.float32
    return jnp.concatenate(
        [arms[:, None].astype(f), propensity[:, None].astype(f), scores.astype(f), probs.astype(f)],
        axis=1,
    )


def _apply(fam: Family, cfg, h, state: State, delta) -> State:
    if fam.combine is not None:
        stats = fam.combine(cfg, h, state, delta)
    else:
        stats = {k: state.stats[k] + delta[k] for k in state.stats}
    cache = fam.refresh(cfg, h, stats)
    meta = state.meta._replace(version=state.meta.version + 1)
    return State(stats, meta, cache)


def _host_mc_probs(fam: Family, cfg, h_np, state: State, mask: np.ndarray, seed: int):
    """Monte Carlo choice probabilities of the greedy draw over one eligible mask [N]."""
    stats = {k: np.asarray(v) for k, v in state.stats.items()}
    rng = np.random.default_rng(seed)
    counts = np.zeros(mask.shape[0])
    for _ in range(MC_DRAWS // MC_CHUNK):
        s = fam.host_sampler(cfg, h_np, stats, MC_CHUNK, rng)
        s = np.where(mask[None, :], s, -np.inf)
        counts += np.bincount(np.argmax(s, axis=1), minlength=mask.shape[0])
    return counts / MC_DRAWS


_JIT_MEMO: dict[Any, Any] = {}


def _jitted(fam: Family, cfg_items: tuple, name: str):
    """One compiled program per (family, static config, kernel); shared by every experiment."""
    memo_key = (fam.name, cfg_items, name)
    if memo_key in _JIT_MEMO:
        return _JIT_MEMO[memo_key]
    cfg = dict(cfg_items)

    def counted(fn):
        def wrapper(*args):
            TRACES[(fam.name, name)] += 1
            return fn(*args)

        return wrapper

    if name == "select":
        f = jax.jit(counted(partial(_select_core, fam, cfg)))
    elif name == "select_packed":
        f = jax.jit(counted(partial(_select_packed, fam, cfg)))
    elif name == "choose":

        def choose(h, state, ctx, keys, elig, eps, t):
            arms, _, _, probs = _select_core(fam, cfg, h, state, ctx, keys, elig, eps, t, None)
            return arms, jnp.take_along_axis(probs, arms[:, None], axis=1)[:, 0]

        f = jax.jit(counted(choose))
    elif name == "delta":
        f = jax.jit(counted(partial(fam.delta, cfg)))
    elif name in ("apply", "apply_donate"):
        f = jax.jit(
            counted(partial(_apply, fam, cfg)), donate_argnums=(1,) if "donate" in name else ()
        )
    elif name in ("update", "update_donate", "update_full", "update_full_donate"):
        incremental = fam.refresh_incremental is not None and "full" not in name

        def upd(h, state, ctx, arms, rewards, w, prop, t):
            rows = (ctx, arms, rewards, w, prop, t)
            if fam.accumulate is not None:
                stats = fam.accumulate(cfg, h, state, *rows)
            else:
                delta = fam.delta(cfg, h, state, *rows)
                stats = {k: state.stats[k] + delta[k] for k in state.stats}
            if incremental:
                cache = fam.refresh_incremental(cfg, h, state, stats, ctx, arms, w)
            else:
                cache = fam.refresh(cfg, h, stats)
            meta = state.meta._replace(version=state.meta.version + 1)
            return State(stats, meta, cache)

        f = jax.jit(counted(upd), donate_argnums=(1,) if "donate" in name else ())
    elif name == "refresh":
        f = jax.jit(counted(partial(fam.refresh, cfg)))
    elif name.startswith("rank_select:"):  # the list length k shapes the program
        f = jax.jit(counted(partial(ranked.rank_core, fam, cfg, int(name.split(":")[1]))))
    else:  # pragma: no cover - internal names only
        raise KeyError(name)
    _JIT_MEMO[memo_key] = f
    return f


def _pad_rows(a: np.ndarray, rows: int, fill: Any = 0) -> np.ndarray:
    if a.shape[0] == rows:
        return a
    pad = np.full((rows - a.shape[0], *a.shape[1:]), fill, dtype=a.dtype)
    return np.concatenate([a, pad], axis=0)


_DIGESTS: dict[int, tuple[Any, Any, bytes]] = {}


def _digest(state: State) -> bytes:
    """Content hash of (stats, active); memoized on the arrays' identity (held weakly)."""
    first = state.stats[min(state.stats)]
    hit = _DIGESTS.get(id(first))
    if hit is not None and hit[0]() is first and hit[1]() is state.meta.active:
        return hit[2]
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(state.stats):
        h.update(np.asarray(state.stats[k]).tobytes())
    h.update(np.asarray(state.meta.active).tobytes())
    digest = h.digest()
    if len(_DIGESTS) > 4096:
        _DIGESTS.clear()
    _DIGESTS[id(first)] = (weakref.ref(first), weakref.ref(state.meta.active), digest)
    return digest


def build(fam: Family, params: Mapping[str, Any]) -> Policy:
    cfg_items = tuple(sorted((k, params[k]) for k, v in fam.hypers.items() if v.static))
    cfg = dict(cfg_items)
    traced = {
        k: np.float64(params[k])
        for k, v in fam.hypers.items()
        if not v.static and params[k] is not None
    }
    h = {k: jnp.asarray(v) for k, v in traced.items()}
    k_select = _jitted(fam, cfg_items, "select_packed")
    k_update = _jitted(fam, cfg_items, "update")
    k_update_donate = _jitted(fam, cfg_items, "update_donate")
    refresh_every = int(cfg.get("refresh_every", 0) or 0)
    k_refresh = _jitted(fam, cfg_items, "refresh")
    mc_memo: OrderedDict[tuple[bytes, bytes], np.ndarray] = OrderedDict()
    const_memo: dict[tuple, Any] = {}
    mc_lock = threading.Lock()  # device-resident all-true masks / zero times per bucket

    def dim_of(state: State) -> int:
        if not fam.contextual or fam.dim_stat is None:
            return 0
        return int(state.stats[fam.dim_stat].shape[-1])

    def init(n_arms: int, dim: int | None = None, *, revision: int = 0) -> State:
        if int(n_arms) < 0:
            raise ValueError(f"n_arms: must be >= 0, got {n_arms}")
        if fam.contextual and (dim is None or int(dim) < 1):
            raise ValueError(f"dim: family {fam.name!r} is contextual and needs dim >= 1")
        cap = capacity_for(int(n_arms))
        stats = {k: jnp.asarray(v) for k, v in fam.init_stats(cfg, cap, int(dim or 0)).items()}
        meta = Meta(
            active=jnp.asarray(np.arange(cap) < int(n_arms)),
            n_arms=jnp.asarray(int(n_arms), jnp.int64),
            version=jnp.asarray(0, jnp.int64),
            revision=jnp.asarray(int(revision), jnp.int64),
        )
        return State(stats, meta, k_refresh(h, stats))

    def add_arms(state: State, count: int = 1) -> State:
        if int(count) < 1:
            raise ValueError(f"count: must be >= 1, got {count}")
        used = int(state.meta.n_arms)
        new_used = used + int(count)
        cap = int(np.shape(state.meta.active)[0])
        stats, cache = state.stats, state.cache
        if new_used > cap:
            new_cap = capacity_for(new_used, cap)
            fresh = fam.init_stats(cfg, new_cap, dim_of(state))
            grown = {}
            for k, old in state.stats.items():
                old_np = np.asarray(old)
                if fresh[k].shape == old_np.shape:
                    grown[k] = old
                else:
                    buf = np.array(fresh[k])
                    buf[tuple(slice(0, s) for s in old_np.shape)] = old_np
                    grown[k] = jnp.asarray(buf)
            stats = grown
            cache = k_refresh(h, stats)
            cap = new_cap
        active = np.zeros(cap, bool)
        active[: np.shape(state.meta.active)[0]] = np.asarray(state.meta.active)
        active[used:new_used] = True
        meta = state.meta._replace(
            active=jnp.asarray(active), n_arms=jnp.asarray(new_used, jnp.int64)
        )
        return State(stats, meta, cache)

    def retire_arms(state: State, arms: Any) -> State:
        idx = np.atleast_1d(np.asarray(arms, dtype=np.int64))
        used = int(state.meta.n_arms)
        if idx.size and (idx.min() < 0 or idx.max() >= used):
            raise ValueError(f"arms: retire index out of range [0, {used})")
        active = np.array(state.meta.active)
        active[idx] = False
        return state._replace(meta=state.meta._replace(active=jnp.asarray(active)))

    def _contexts(
        state: State, contexts: Any, rows: int | None, played: bool = False
    ) -> np.ndarray:
        """Validated float64 contexts; ``played``: update rows may be the played arm's [B, d]."""
        if not fam.contextual:
            n = rows if rows is not None else (0 if contexts is None else len(contexts))
            return np.zeros((n, 0), np.float64)
        if contexts is None:
            raise ValueError(f"contexts: family {fam.name!r} is contextual; contexts are required")
        x = np.asarray(contexts, dtype=np.float64)
        d = dim_of(state)
        cap = int(state.meta.active.shape[0])
        rule = "required" if cfg.get("shared") else fam.per_arm_contexts
        if x.ndim == 2 and rule == "required" and not played:
            raise ValueError("contexts: this configuration needs per-arm contexts [B, N, d]")
        if x.ndim == 3 and rule == "no":
            raise ValueError("contexts: this family takes one context per row [B, d]")
        if x.ndim not in (2, 3) or x.shape[-1] != d:
            raise ValueError(f"contexts: expected [B, {d}] or [B, N, {d}], got {list(x.shape)}")
        if x.ndim == 3 and x.shape[1] != cap:
            if x.shape[1] > cap or x.shape[1] < int(state.meta.n_arms):
                raise ValueError(
                    f"contexts: per-arm axis must cover the arms in use "
                    f"({int(state.meta.n_arms)}..{cap}), got {x.shape[1]}"
                )
            x = np.concatenate([x, np.zeros((x.shape[0], cap - x.shape[1], d))], axis=1)
        return x

    def _times(t: Any, rows: int) -> np.ndarray:
        if t is None:
            return np.zeros(rows, np.float64)
        ta = np.broadcast_to(np.asarray(t, np.float64), (rows,))
        return np.array(ta)

    def _mc_row(state: State, digest: bytes, mbytes: bytes) -> np.ndarray:
        key = (digest, mbytes)
        p = mc_memo.get(key)
        if p is not None:
            return p
        # One computation per key even when many threads meet a new state at once.
        with mc_lock:
            p = mc_memo.get(key)
            if p is None:
                mask = np.frombuffer(mbytes, dtype=bool)
                exact = fam.extra.get("host_probs")
                if exact is not None:
                    stats = {k: np.asarray(v) for k, v in state.stats.items()}
                    p = np.asarray(exact(cfg, traced, stats, mask), np.float64)
                else:
                    seed = int.from_bytes(digest[:8], "little")
                    p = _host_mc_probs(fam, cfg, traced, state, mask, seed)
                mc_memo[key] = p
                if len(mc_memo) > MC_MEMO:
                    mc_memo.popitem(last=False)
        return p

    def warm(state: State) -> None:
        """Compute what the first select of ``state`` would (Thompson choice probabilities for
        the active set), so a learner can do it before publishing, off the request path."""
        if fam.host_mc:
            active, _ = _host_active(state)
            _mc_row(state, _digest(state), active.tobytes())
        if rops is not None:
            rops.warm(state)

    def _host_base(state: State, elig: np.ndarray | None, rows: int) -> np.ndarray:
        """Choice probabilities per row, Monte Carlo'd once per (stats, eligible set)."""
        digest = _digest(state)
        active, _ = _host_active(state)
        if elig is None:
            return np.broadcast_to(_mc_row(state, digest, active.tobytes()), (rows, len(active)))
        out = np.empty((rows, active.shape[0]))
        for i, m in enumerate(elig & active[None, :]):
            out[i] = _mc_row(state, digest, m.tobytes())
        return out

    def _host_select(
        state: State,
        keys_np: np.ndarray,
        elig: np.ndarray | None,
        active: np.ndarray,
        base: np.ndarray,
        eps: float,
    ) -> SelectOutput:
        """Thompson draws with numpy for a few rows of a small non-contextual family.

        Same distribution as the jitted kernel (an argmax of one posterior draw, or uniform with
        probability eps), several times cheaper here: a select of ten arms is dispatch-bound in
        XLA. The draw is a pure function of the row key (Philox keyed by it), so decisions replay.
        """
        stats = _host_stats(state)
        rows, cap = keys_np.shape[0], active.shape[0]
        mask = active[None, :] if elig is None else elig & active[None, :]
        if elig is None:
            # the common case: one mixed row per (state, epsilon), memoized with the state
            mkey = ("mixed", _digest(state), eps)
            mixed = const_memo.get(mkey)
            if mixed is None:
                n = max(int(active.sum()), 1)
                mixed = np.where(active, (1.0 - eps) * base[0] + eps / n, 0.0)[None, :]
                const_memo[mkey] = mixed
            probs = np.broadcast_to(mixed, (rows, cap))
        else:
            n_e = mask.sum(axis=1, keepdims=True)
            probs = np.where(mask, (1.0 - eps) * base + eps / n_e, 0.0)
        scores = np.empty((rows, cap))
        arms = np.empty(rows, np.int64)
        everyone = elig is None and n_active_all(active)
        for i in range(rows):
            k0, k1 = int(keys_np[i, 0]), int(keys_np[i, 1])
            rng = np.random.Generator(np.random.Philox(key=(k0 << 32) | k1))
            draw = fam.host_sampler(cfg, traced, stats, 1, rng)[0]
            scores[i] = draw
            u = key_uniform_host(k0, k1)
            m = mask[0] if elig is None else mask[i]
            if u < eps:
                slots = np.flatnonzero(m)
                arms[i] = slots[min(int(u / eps * slots.size), slots.size - 1)]
            else:
                arms[i] = int(np.argmax(draw if everyone else np.where(m, draw, -np.inf)))
        return SelectOutput(arms, probs[np.arange(rows), arms], scores, probs)

    def n_active_all(active: np.ndarray) -> bool:
        key = ("all", id(active))
        hit = const_memo.get(key)
        if hit is None or hit[0] is not active:
            hit = (active, bool(active.all()))
            const_memo[key] = hit
        return hit[1]

    def _host_stats(state: State) -> dict[str, np.ndarray]:
        digest = _digest(state)
        hit = const_memo.get(("stats", digest))
        if hit is None:
            hit = {k: np.asarray(v) for k, v in state.stats.items()}
            const_memo[("stats", digest)] = hit
        return hit

    def _host_active(state: State) -> tuple[np.ndarray, bool]:
        """The active mask on the host, memoized on the (immutable) mask array's identity."""
        arr = state.meta.active
        hit = const_memo.get(("active", id(arr)))
        if hit is not None and hit[0]() is arr:
            return hit[1], hit[2]
        host = np.asarray(arr)
        if len(const_memo) > 512:
            const_memo.clear()
        const_memo[("active", id(arr))] = (weakref.ref(arr), host, bool(host.any()))
        return host, bool(host.any())

    def _ones(rows: int, cap: int) -> Any:
        key = ("ones", rows, cap)
        if key not in const_memo:
            const_memo[key] = jnp.ones((rows, cap), bool)
        return const_memo[key]

    def _zeros(rows: int) -> Any:
        key = ("zeros", rows)
        if key not in const_memo:
            const_memo[key] = jnp.zeros(rows)
        return const_memo[key]

    def select(
        state: State,
        contexts: Any,
        keys: Any,
        eligible: Any = None,
        *,
        epsilon: float = 0.0,
        t: Any = None,
    ) -> SelectOutput:
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {epsilon}")
        rows = int(np.shape(keys)[0])
        keys_np = to_key_array(keys, rows)
        x = _contexts(state, contexts, rows)
        if x.shape[0] != rows:
            raise ValueError(f"contexts: {x.shape[0]} rows but {rows} keys")
        active, any_active = _host_active(state)
        cap = active.shape[0]
        bucket = next_pow2(rows)
        if eligible is None:
            if not any_active:
                raise ValueError("eligible: the experiment has no active arm")
            elig = None
            elig_dev = _ones(bucket, cap)
        else:
            e = np.asarray(eligible, bool)
            e = np.broadcast_to(e, (rows, e.shape[-1])) if e.ndim == 1 else e
            if e.ndim != 2 or e.shape[0] != rows or e.shape[1] > cap:
                raise ValueError(f"eligible: expected [B, <= {cap}] mask, got {list(e.shape)}")
            elig = np.zeros((rows, cap), bool)
            elig[:, : e.shape[1]] = e
            if not (elig & active[None, :]).any(axis=1).all():
                raise ValueError("eligible: a row has no active eligible arm")
            elig_dev = _pad_rows(elig, bucket, True)
        base = None
        if fam.host_mc:
            probs_rows = _host_base(state, elig, rows)
            if rows <= HOST_ROWS:
                return _host_select(state, keys_np, elig, active, probs_rows, float(epsilon))
            base = _pad_rows(probs_rows, bucket, 0.0)
        out = k_select(
            h,
            state,
            _pad_rows(x, bucket),
            _pad_rows(keys_np, bucket),
            elig_dev,
            np.float64(epsilon),
            _zeros(bucket) if t is None else _pad_rows(_times(t, rows), bucket),
            base,
        )
        packed = np.asarray(out)[:rows]  # float32 when serving in float32
        n = (packed.shape[1] - 2) // 2
        return SelectOutput(
            packed[:, 0].astype(np.int64), packed[:, 1], packed[:, 2 : 2 + n], packed[:, 2 + n :]
        )

    def update(
        state: State,
        contexts: Any,
        arms: Any,
        rewards: Any,
        *,
        observed: Any = None,
        propensity: Any = None,
        t: Any = None,
        donate: bool = False,
    ) -> State:
        if rops is not None:
            x, a, r, w, p = rops.update_rows(state, contexts, arms, rewards, observed, propensity)
            bucket = next_pow2(a.shape[0])
            fn = k_update_donate if donate else k_update
            return fn(
                h,
                state,
                _pad_rows(x, bucket),
                _pad_rows(a, bucket),
                _pad_rows(r, bucket),
                _pad_rows(w, bucket, 0.0),
                _pad_rows(p, bucket, 1.0),
                _pad_rows(_times(t, a.shape[0]), bucket),
            )
        a = np.asarray(arms, dtype=np.int64)
        rows = int(a.shape[0])
        r = np.asarray(rewards, dtype=np.float64)
        if r.shape != a.shape:
            raise ValueError(f"rewards: shape {list(r.shape)} != arms shape {list(a.shape)}")
        used = int(state.meta.n_arms)
        if a.size and (a.min() < 0 or a.max() >= used):
            raise ValueError(f"arms: index out of range [0, {used})")
        if not np.isfinite(r).all():
            raise ValueError("rewards: must be finite")
        w = np.ones(a.shape) if observed is None else np.asarray(observed, np.float64)
        if w.shape != a.shape:
            raise ValueError(f"observed: shape {list(w.shape)} != arms shape {list(a.shape)}")
        if propensity is None:
            if fam.needs_propensity:
                raise ValueError(f"propensity: family {fam.name!r} needs the logged propensity")
            p = np.ones(a.shape)
        else:
            p = np.asarray(propensity, np.float64).reshape(a.shape)
            if not ((p > 0) & (p <= 1)).all():
                raise ValueError("propensity: must be in (0, 1]")
        x = _contexts(state, contexts, rows, played=True)
        if x.ndim == 3 and not fam.ranked:
            # per-arm features: the played arm's feature vector is what was observed
            x = x[np.arange(rows), a]
        bucket = next_pow2(rows)
        name = "update_donate" if donate else "update"
        if refresh_every and (int(state.meta.version) + 1) % refresh_every == 0:
            # A periodic full refactorization bounds the drift of incremental cache updates; the
            # host decides (a traced lax.cond would copy the cache through both branches).
            name = name.replace("update", "update_full")
        fn = k_update_donate if name == "update_donate" else _jitted(fam, cfg_items, name)
        # numpy arguments go to the jitted call as they are: its C++ path transfers them far
        # faster than one jnp.asarray each (~35 us apiece here).
        return fn(
            h,
            state,
            _pad_rows(x, bucket),
            _pad_rows(a, bucket),
            _pad_rows(r, bucket),
            _pad_rows(w, bucket, 0.0),
            _pad_rows(p, bucket, 1.0),
            _pad_rows(_times(t, rows), bucket),
        )

    rops: RankedOps | None = None
    if fam.ranked:
        rops = RankedOps(
            fam,
            Helpers(
                cfg=cfg,
                traced=traced,
                h=h,
                jitted=lambda name: _jitted(fam, cfg_items, name),
                contexts=_contexts,
                host_active=_host_active,
                digest=_digest,
                times=_times,
                pad_rows=_pad_rows,
            ),
        )
        select = rops.select  # type: ignore[assignment]
    kernels = Kernels(
        select=_jitted(fam, cfg_items, "select"),
        choose=_jitted(fam, cfg_items, "choose"),
        delta=_jitted(fam, cfg_items, "delta"),
        apply=_jitted(fam, cfg_items, "apply"),
        update=k_update,
        refresh=k_refresh,
        h=h,
        rank=(lambda k: _jitted(fam, cfg_items, f"rank_select:{int(k)}")) if fam.ranked else None,
    )
    hyper = {k: params[k] for k in fam.hypers}
    return Policy(
        family=fam.name,
        hyper=hyper,
        init=init,
        add_arms=add_arms,
        retire_arms=retire_arms,
        update=update,
        select=select,
        kernels=kernels,
        warm=warm,
    )
