"""Turns a ``Family`` into a ``Policy``: jitted kernels, batch buckets, capacity growth."""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .base import (
    Meta,
    Policy,
    SelectOutput,
    State,
    capacity_for,
    masked,
    mix_epsilon,
    next_pow2,
    row_keys,
    sample_from,
    tie_probs,
    to_key_array,
)
from .family import Family

# How many times each (family, kernel) was traced. Tests use it to prove that batch buckets and
# capacity doubling bound compilation; it costs one dict increment per trace, nothing per call.
TRACES: Counter[tuple[str, str]] = Counter()

MC_DRAWS = 32768  # SE of a Monte Carlo choice probability <= sqrt(0.25 / 32768) = 0.0028
MC_CHUNK = 4096
MC_MEMO = 256


class Kernels(NamedTuple):
    """Un-padded, jittable pure functions (vmap them for many simulated experiments)."""

    select: Any  # (h, state, ctx, keys, eligible, eps, t, base) -> arms, propensity, scores, probs
    choose: Any  # (h, state, ctx, keys, eligible, eps, t) -> arms, probs-or-nan (no host MC)
    delta: Any  # (h, state, ctx, arms, rewards, weights, propensity, t) -> stats delta
    apply: Any  # (h, state, delta) -> state (merge + refresh + version bump)
    update: Any  # delta then apply
    refresh: Any  # (h, stats) -> cache
    h: Mapping[str, Any]  # traced hyperparameters as float64 scalars


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
        ks = row_keys(keys, 3)
        scores = fam.scores(cfg, h, state, ctx, ks[:, 0], mask, t)
        greedy = jnp.argmax(masked(scores, mask), axis=-1)
        uniform = mask / jnp.maximum(mask.sum(-1, keepdims=True), 1)
        explore = sample_from(uniform, ks[:, 1])
        coin = jax.vmap(jax.random.uniform)(ks[:, 2]) < eps
        arms = jnp.where(coin, explore, greedy)
        if base is None and fam.sample_probs is not None:
            base = fam.sample_probs(cfg, h, state, ctx, mask, t)
        probs = (
            mix_epsilon(base, mask, eps)
            if base is not None
            else jnp.full(scores.shape, jnp.nan, scores.dtype)
        )
    propensity = jnp.take_along_axis(probs, arms[:, None], axis=1)[:, 0]
    return arms, propensity, scores, probs


def _apply(fam: Family, cfg, h, state: State, delta) -> State:
    stats = {k: state.stats[k] + delta[k] for k in state.stats}
    cache = fam.refresh(cfg, h, stats)
    meta = state.meta._replace(version=state.meta.version + 1)
    return State(stats, meta, cache)


def _mc_probs(fam: Family, cfg, h, state, mask, key, draws: int):
    """Monte Carlo choice probabilities of the greedy draw over one eligible mask [N]."""
    n = mask.shape[0]
    chunks = draws // MC_CHUNK

    def body(counts, k):
        keys = jax.random.split(k, MC_CHUNK)
        ctx = jnp.zeros((MC_CHUNK, 0))
        t = jnp.zeros((MC_CHUNK,))
        m = jnp.broadcast_to(mask, (MC_CHUNK, n))
        s = fam.scores(cfg, h, state, ctx, keys, m, t)
        win = jnp.argmax(masked(s, m), axis=-1)
        return counts + jnp.bincount(win, length=n), None

    counts, _ = jax.lax.scan(body, jnp.zeros(n, jnp.int64), jax.random.split(key, chunks))
    return counts / draws


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
    elif name == "choose":

        def choose(h, state, ctx, keys, elig, eps, t):
            arms, _, _, probs = _select_core(fam, cfg, h, state, ctx, keys, elig, eps, t, None)
            return arms, jnp.take_along_axis(probs, arms[:, None], axis=1)[:, 0]

        f = jax.jit(counted(choose))
    elif name == "delta":
        f = jax.jit(counted(partial(fam.delta, cfg)))
    elif name in ("apply", "apply_donate"):
        f = jax.jit(counted(partial(_apply, fam, cfg)), donate_argnums=(1,) if "donate" in name else ())
    elif name in ("update", "update_donate"):

        def upd(h, state, *rows):
            return _apply(fam, cfg, h, state, fam.delta(cfg, h, state, *rows))

        f = jax.jit(counted(upd), donate_argnums=(1,) if "donate" in name else ())
    elif name == "refresh":
        f = jax.jit(counted(partial(fam.refresh, cfg)))
    elif name == "mc":
        f = jax.jit(counted(partial(_mc_probs, fam, cfg)), static_argnums=(4,))
    else:  # pragma: no cover - internal names only
        raise KeyError(name)
    _JIT_MEMO[memo_key] = f
    return f


def _pad_rows(a: np.ndarray, rows: int, fill: Any = 0) -> np.ndarray:
    if a.shape[0] == rows:
        return a
    pad = np.full((rows - a.shape[0], *a.shape[1:]), fill, dtype=a.dtype)
    return np.concatenate([a, pad], axis=0)


def _digest(state: State) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(state.stats):
        h.update(np.asarray(state.stats[k]).tobytes())
    h.update(np.asarray(state.meta.active).tobytes())
    return h.digest()


def build(fam: Family, params: Mapping[str, Any]) -> Policy:
    cfg_items = tuple(sorted((k, params[k]) for k, v in fam.hypers.items() if v.static))
    cfg = dict(cfg_items)
    traced = {
        k: np.float64(params[k])
        for k, v in fam.hypers.items()
        if not v.static and params[k] is not None
    }
    h = {k: jnp.asarray(v) for k, v in traced.items()}
    k_select = _jitted(fam, cfg_items, "select")
    k_update = _jitted(fam, cfg_items, "update")
    k_update_donate = _jitted(fam, cfg_items, "update_donate")
    k_refresh = _jitted(fam, cfg_items, "refresh")
    mc_memo: OrderedDict[tuple[bytes, bytes], np.ndarray] = OrderedDict()

    def dim_of(state: State) -> int:
        if not fam.contextual or fam.dim_stat is None:
            return 0
        return int(np.shape(state.stats[fam.dim_stat])[-1])

    def init(n_arms: int, dim: int | None = None, *, revision: int = 0) -> State:
        if int(n_arms) < 0:
            raise ValueError(f"n_arms: must be >= 0, got {n_arms}")
        if fam.contextual and (dim is None or int(dim) < 1):
            raise ValueError(f"dim: family {fam.name!r} is contextual and needs dim >= 1")
        cap = capacity_for(int(n_arms))
        stats = {
            k: jnp.asarray(v) for k, v in fam.init_stats(cfg, cap, int(dim or 0)).items()
        }
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
            new_cap = capacity_for(new_used)
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

    def _contexts(state: State, contexts: Any, rows: int | None) -> np.ndarray:
        if not fam.contextual:
            n = rows if rows is not None else (0 if contexts is None else len(contexts))
            return np.zeros((n, 0), np.float64)
        if contexts is None:
            raise ValueError(f"contexts: family {fam.name!r} is contextual; contexts are required")
        x = np.asarray(contexts, dtype=np.float64)
        d = dim_of(state)
        cap = int(np.shape(state.meta.active)[0])
        rule = "required" if cfg.get("shared") else fam.per_arm_contexts
        if x.ndim == 2 and rule == "required":
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

    def _host_base(state: State, elig: np.ndarray) -> np.ndarray:
        digest = _digest(state)
        uniq, inverse = np.unique(elig, axis=0, return_inverse=True)
        rows = []
        for m in uniq:
            key = (digest, m.tobytes())
            p = mc_memo.get(key)
            if p is None:
                mask = jnp.asarray(m & np.asarray(state.meta.active))
                p = np.asarray(
                    _jitted(fam, cfg_items, "mc")(
                        h, state, mask, jax.random.PRNGKey(0), MC_DRAWS
                    )
                )
                mc_memo[key] = p
                if len(mc_memo) > MC_MEMO:
                    mc_memo.popitem(last=False)
            else:
                mc_memo.move_to_end(key)
            rows.append(p)
        return np.stack(rows)[inverse.reshape(-1)]

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
        cap = int(np.shape(state.meta.active)[0])
        if eligible is None:
            elig = np.ones((rows, cap), bool)
        else:
            e = np.asarray(eligible, bool)
            e = np.broadcast_to(e, (rows, e.shape[-1])) if e.ndim == 1 else e
            if e.shape[0] != rows or e.shape[1] > cap:
                raise ValueError(f"eligible: expected [B, <= {cap}] mask, got {list(e.shape)}")
            elig = np.zeros((rows, cap), bool)
            elig[:, : e.shape[1]] = e
        if not (elig & np.asarray(state.meta.active)[None, :]).any(axis=1).all():
            raise ValueError("eligible: a row has no active eligible arm")
        bucket = next_pow2(rows)
        base = None
        if fam.host_mc:
            base = jnp.asarray(_pad_rows(_host_base(state, elig), bucket, 0.0))
        out = k_select(
            h,
            state,
            jnp.asarray(_pad_rows(x, bucket)),
            jnp.asarray(_pad_rows(keys_np, bucket)),
            jnp.asarray(_pad_rows(elig, bucket, True)),
            np.float64(epsilon),
            jnp.asarray(_pad_rows(_times(t, rows), bucket)),
            base,
        )
        arms, prop, scores, probs = (np.asarray(o)[:rows] for o in out)
        return SelectOutput(arms, prop, scores, probs)

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
        x = _contexts(state, contexts, rows)
        if x.ndim == 3 and not fam.ranked:
            # per-arm features: the played arm's feature vector is what was observed
            x = x[np.arange(rows), a]
        bucket = next_pow2(rows)
        fn = k_update_donate if donate else k_update
        return fn(
            h,
            state,
            jnp.asarray(_pad_rows(x, bucket)),
            jnp.asarray(_pad_rows(a, bucket)),
            jnp.asarray(_pad_rows(r, bucket)),
            jnp.asarray(_pad_rows(w, bucket, 0.0)),
            jnp.asarray(_pad_rows(p, bucket, 1.0)),
            jnp.asarray(_pad_rows(_times(t, rows), bucket)),
        )

    kernels = Kernels(
        select=k_select,
        choose=_jitted(fam, cfg_items, "choose"),
        delta=_jitted(fam, cfg_items, "delta"),
        apply=_jitted(fam, cfg_items, "apply"),
        update=k_update,
        refresh=k_refresh,
        h=h,
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
    )
