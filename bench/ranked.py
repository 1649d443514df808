"""Ranked families (cascades, slates): select and update cost at 1,000 items, k = 5.

Run:
    .venv/bin/python bench/ranked.py [--n 300] [--cpu 1]

Each family is trained on 5,000 simulated impressions first (a cascade click model, or a
position-based model for the slate families), so posteriors and caches are realistic. Rows:
  * select, 1 row / batch of 100: the list and its per-slot propensities, state unchanged (the
    Thompson families' list-probability model is memoized per state and already built);
  * list-probability model, new state: what the first select of a new state adds for Thompson
    families (the service's learner builds it before publishing the state, off the hot path,
    for the context-free ones; the linear ones build one per (state, context));
  * update B=1 / B=64: cascade feedback rows (slots after the click unobserved).
The nearest core families run in the same process at the same size: UCB1 and Beta TS with 1,000
arms (one arm per select), shared-feature LinUCB / LinTS with 1,000 arms at d=20.
Everything is pinned to one CPU (``--cpu``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import banditd.policies as P  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from banditd import sim  # noqa: E402
from common import pct, print_header, table, time_calls  # noqa: E402

jax.config.update("jax_cpu_enable_async_dispatch", False)

ITEMS, K, DIM, TRAIN = 1000, 5, 20, 5000


def _row(family: str, what: str, t_us: np.ndarray, **extra: Any) -> dict:
    p50, p99 = pct(t_us)
    return {"family": family, "what": what, "n": len(t_us), "p50_us": p50, "p99_us": p99, **extra}


def _keys(n: int, tag: str = "") -> np.ndarray:
    return P.derive_keys("bench-ranked" + tag, [str(i) for i in range(n)])


def _training(env, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random lists with the environment's clicks: (features [N, d] | None, lists, rewards)."""
    rng = np.random.default_rng(seed)
    lists = np.stack([rng.choice(ITEMS, K, replace=False) for _ in range(TRAIN + 2000)])
    ctx, means = env.observe(jax.random.PRNGKey(0), 0)
    keys = jax.random.split(jax.random.PRNGKey(seed), lists.shape[0])
    r = np.asarray(jax.vmap(env.slate_rewards, in_axes=(0, None, 0))(keys, means, lists))
    feats = np.asarray(ctx) if env.dim else None
    return feats, lists, r


def family_rows(family: str, env, n: int, **hyper: Any) -> list[dict]:
    feats, lists, r = _training(env)
    pol = P.make(family, **hyper)
    contextual = feats is not None

    def ctx(rows: int) -> np.ndarray | None:
        return np.broadcast_to(feats, (rows, *feats.shape)) if contextual else None

    st = pol.init(ITEMS, dim=DIM if contextual else None)
    st = pol.update(st, ctx(TRAIN), lists[:TRAIN], r[:TRAIN])
    k1, k100 = _keys(1), _keys(100, "b")
    t0 = time.perf_counter()
    pol.select(st, ctx(1), k1, k=K)
    rows = [
        _row(
            family,
            "compile + first select (+ list model)",
            np.array([time.perf_counter() - t0]) * 1e6,
        )
    ]
    rows.append(
        _row(family, "select, 1 row", time_calls(lambda: pol.select(st, ctx(1), k1, k=K), n))
    )
    pol.select(st, ctx(100), k100, k=K)
    rows.append(
        _row(
            family,
            "select, batch of 100",
            time_calls(lambda: pol.select(st, ctx(100), k100, k=K), max(n // 10, 10), 2),
        )
    )
    if P.get(family).kind == "sampled":
        fresh = []
        for i in range(5):  # a new state each time: the first select builds the model
            s2 = pol.update(
                st, ctx(1), lists[TRAIN + i : TRAIN + i + 1], r[TRAIN + i : TRAIN + i + 1]
            )
            jax.block_until_ready(s2.cache)
            t0 = time.perf_counter()
            pol.select(s2, ctx(1), k1, k=K)
            fresh.append((time.perf_counter() - t0) * 1e6)
        warm = rows[1]["p50_us"]
        rows.append(
            _row(
                family,
                "select on a new state (builds the list model)",
                np.asarray(fresh),
                model_us=float(np.median(fresh) - warm),
            )
        )
    for b in (1, 64):
        holder = [st]
        it = iter(range(10**9))

        def upd(b: int = b) -> None:
            i = TRAIN + (next(it) * b) % 1900
            holder[0] = pol.update(holder[0], ctx(b), lists[i : i + b], r[i : i + b])
            jax.block_until_ready(holder[0].cache)

        t = time_calls(upd, max(n // 5, 30), 3)
        rows.append(_row(family, f"update B={b}", t, obs_per_s=b / (pct(t)[0] / 1e6)))
    return rows


def core_rows(n: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(5)
    arms = rng.integers(0, ITEMS, TRAIN)
    r = (rng.random(TRAIN) < 0.1).astype(float)
    k1 = _keys(1)
    for fam in ("ucb1", "beta_ts"):
        pol = P.make(fam)
        st = pol.update(pol.init(ITEMS), None, arms, r)
        pol.select(st, None, k1)
        rows.append(
            _row(fam, "select, 1 row (one arm)", time_calls(lambda: pol.select(st, None, k1), n))
        )
    X = np.abs(rng.normal(size=(ITEMS, DIM)))
    for fam in ("linucb", "lin_ts"):
        pol = P.make(fam, shared=True)
        st = pol.update(pol.init(ITEMS, dim=DIM), np.broadcast_to(X, (TRAIN, ITEMS, DIM)), arms, r)
        c1 = X[None]
        pol.select(st, c1, k1)
        rows.append(
            _row(
                f"{fam} shared",
                "select, 1 row (one arm)",
                time_calls(lambda: pol.select(st, c1, k1), n),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="timed calls per single-row figure")
    cpus = sorted(os.sched_getaffinity(0))
    ap.add_argument("--cpu", type=int, default=cpus[-1], help="CPU to pin the process to")
    args = ap.parse_args()
    os.sched_setaffinity(0, [args.cpu])
    print_header(
        "ranked families: select / update cost",
        extra={
            "sizes": f"{ITEMS:,} items, k={K}, linear families d={DIM}; trained on {TRAIN:,} lists",
            "note": "wall-clock per call in microseconds, pinned to one CPU; load average "
            + " ".join(f"{x:.1f}" for x in os.getloadavg()),
        },
    )
    cascade = sim.cascade(ITEMS, K, seed=0)
    cascade_lin = sim.cascade(ITEMS, K, dim=DIM, seed=0)
    pbm = sim.pbm(ITEMS, K, seed=0)
    pbm_lin = sim.pbm(ITEMS, K, dim=DIM, seed=0)
    rows: list[dict] = []
    rows += family_rows("cascade_ucb1", cascade, args.n)
    rows += family_rows("cascade_klucb", cascade, args.n)
    rows += family_rows("cascade_ts", cascade, args.n)
    rows += family_rows("slate_pbm_ts", pbm, args.n)
    rows += family_rows("cascade_linucb", cascade_lin, args.n)
    rows += family_rows("cascade_lints", cascade_lin, max(args.n // 10, 20), mc_draws=4096)
    rows += family_rows("slate_inslate_ts", pbm_lin, max(args.n // 10, 20), mc_draws=1024)
    rows += core_rows(args.n)
    print(table(rows))


if __name__ == "__main__":
    main()
