"""Policy speed: LinUCB K=100 d=64 and Beta TS K=10, against same-run baselines.

Run:
    .venv/bin/python bench/speed.py [--n 3000] [--no-mabwiser] [--cpu 1]

Single-call latency rows run pinned to one CPU (``--cpu``, via sched_setaffinity) for stable
figures; batch-of-1000 rows are measured twice, pinned and on every CPU (XLA's matmul uses the
cores it is given), and say which.

Baselines measured in the same run: a numpy float64 LinUCB (batched matmul over cached A^-1,
the way MABWiser and OBP compute it), the same in packed form, and MABWiser's LinUCB and
ThompsonSampling. Compile cost is reported on its own rows.
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
from common import pct, print_header, table, time_calls  # noqa: E402

jax.config.update("jax_cpu_enable_async_dispatch", False)

K, D = 100, 64


def _row(what: str, impl: str, dtype: str, n: int, t_us: np.ndarray, **extra: Any) -> dict:
    p50, p99 = pct(t_us)
    return {"what": what, "impl": impl, "dtype": dtype, "n": n, "p50_us": p50, "p99_us": p99,
            **extra}


def _timed_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e6


ALL_CPUS = sorted(os.sched_getaffinity(0))
PIN: list[int] = ALL_CPUS[-1:]


def pinned() -> None:
    os.sched_setaffinity(0, PIN)


def unpinned() -> None:
    os.sched_setaffinity(0, ALL_CPUS)


def linucb_rows(n: int, use_mabwiser: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, D)) / np.sqrt(D)
    arms = rng.integers(0, K, 4000)
    rewards = rng.random(4000)
    rows: list[dict] = []
    key1 = P.derive_keys("bench", ["single"])
    keysB = P.derive_keys("bench", [str(i) for i in range(1000)])
    x1, XB = X[:1], X[:1000]
    states = {}
    for dt in ("float64", "float32"):
        pol = P.make("linucb", alpha=1.0, lam=1.0, serving_dtype=dt)
        st = pol.init(K, dim=D)
        rows.append(_row("compile update (first call)", "banditd", dt, 1,
                         np.array([_timed_once(lambda: pol.update(st, X[:16], arms[:16],
                                                                   rewards[:16]))])))
        st = pol.update(st, X, arms, rewards)
        rows.append(_row("compile select (first call)", "banditd", dt, 1,
                         np.array([_timed_once(lambda: pol.select(st, x1, key1))])))
        states[dt] = (pol, st)
        rows.append(_row("select, 1 context", "banditd", dt, n,
                         time_calls(lambda: pol.select(st, x1, key1), n)))
        pol.select(st, XB, keysB)
        m = max(n // 50, 20)
        rows.append(_row("select, batch of 1000 (1 CPU)", "banditd", dt, m,
                         time_calls(lambda: pol.select(st, XB, keysB), m, 3)))
        unpinned()
        rows.append(_row(f"select, batch of 1000 ({len(ALL_CPUS)} CPUs)", "banditd", dt, m,
                         time_calls(lambda: pol.select(st, XB, keysB), m, 3)))
        pinned()

    # numpy float64 reference over the same state
    pol, st = states["float64"]
    G = np.asarray(st.stats["G"])[:K]
    b = np.asarray(st.stats["b"])[:K]
    Ainv = np.linalg.inv(G + np.eye(D))
    theta = np.einsum("nij,nj->ni", Ainv, b)
    iu, ju = np.triu_indices(D)
    qf = (Ainv[:, iu, ju] * np.where(iu == ju, 1.0, 2.0)).T.copy()

    def np_select(x: np.ndarray) -> int:
        s = theta @ x + np.sqrt(np.maximum((Ainv @ x) @ x, 0.0))
        return int(np.argmax(s))

    def np_packed(x: np.ndarray) -> int:
        s = theta @ x + np.sqrt(np.maximum((x[iu] * x[ju]) @ qf, 0.0))
        return int(np.argmax(s))

    def np_batch(Xb: np.ndarray) -> np.ndarray:
        var = np.einsum("bd,nde,be->bn", Xb, Ainv, Xb, optimize=True)
        return np.argmax(Xb @ theta.T + np.sqrt(np.maximum(var, 0.0)), axis=1)

    assert np_select(x1[0]) == int(np.argmax(pol.select(st, x1, key1).scores[0]))
    rows.append(_row("select, 1 context", "numpy reference (A^-1 @ x)", "float64", n,
                     time_calls(lambda: np_select(x1[0]), n)))
    rows.append(_row("select, 1 context", "numpy packed (same trick)", "float64", n,
                     time_calls(lambda: np_packed(x1[0]), n)))
    rows.append(_row("select, batch of 1000 (1 CPU)", "numpy reference", "float64",
                     max(n // 50, 20), time_calls(lambda: np_batch(XB), max(n // 50, 20), 3)))

    # batched update (donated, incremental cache) and the full refresh it avoids
    pol = P.make("linucb")
    st = pol.update(pol.init(K, dim=D), X, arms, rewards)
    Xu, au, ru = X[:256], arms[:256], rewards[:256]
    st = pol.update(st, Xu, au, ru, donate=True)
    holder = [st]

    def upd() -> None:
        holder[0] = pol.update(holder[0], Xu, au, ru, donate=True)
        jax.block_until_ready(holder[0].cache)

    t = time_calls(upd, max(n // 20, 50), 5)
    rows.append(_row("update B=256 incl. cache refresh", "banditd (donated)", "float64",
                     len(t), t, obs_per_s=256 / (pct(t)[0] / 1e6)))
    refresh = pol.kernels.refresh
    tr = time_calls(lambda: jax.block_until_ready(refresh(pol.kernels.h, holder[0].stats)),
                    30, 3)
    rows.append(_row("full cache refactorization (every 64 versions)", "banditd", "float64",
                     len(tr), tr))

    # select + update loop, one context at a time
    pol = P.make("linucb")
    loop_state = [pol.update(pol.init(K, dim=D), X[:500], arms[:500], rewards[:500])]
    it = iter(range(10**9))

    def loop() -> None:
        i = next(it) % 4000
        out = pol.select(loop_state[0], X[i : i + 1], key1)
        loop_state[0] = pol.update(loop_state[0], X[i : i + 1], out.arms, rewards[i : i + 1],
                                   donate=True)

    rows.append(_row("select+update loop, 1 context", "banditd", "float64", n // 2,
                     time_calls(loop, n // 2)))

    if use_mabwiser:
        from mabwiser.mab import MAB, LearningPolicy

        mab = MAB(arms=list(range(K)), learning_policy=LearningPolicy.LinUCB(alpha=1.0,
                                                                               l2_lambda=1.0))
        mab.fit(decisions=arms[:4000], rewards=rewards[:4000], contexts=X[:4000])
        m = max(n // 10, 100)
        rows.append(_row("select, 1 context", "MABWiser LinUCB", "float64", m,
                         time_calls(lambda: mab.predict(x1), m, 5)))
        it2 = iter(range(10**9))

        def mloop() -> None:
            i = next(it2) % 4000
            a = mab.predict(X[i : i + 1])
            mab.partial_fit([a], [rewards[i]], X[i : i + 1])

        rows.append(_row("select+update loop, 1 context", "MABWiser LinUCB", "float64", m,
                         time_calls(mloop, m, 5)))
    return rows


def beta_rows(n: int, use_mabwiser: bool) -> list[dict]:
    rng = np.random.default_rng(1)
    pol = P.make("beta_ts")
    st = pol.update(pol.init(10), None, rng.integers(0, 10, 5000),
                    (rng.random(5000) < 0.5).astype(float))
    key1 = P.derive_keys("bench", ["single"])
    rows = [_row("compile+first Beta TS select", "banditd", "float64", 1,
                 np.array([_timed_once(lambda: pol.select(st, None, key1))]))]
    t = time_calls(lambda: pol.select(st, None, key1), n)
    rows.append(_row("Beta TS K=10 select (propensity from cache)", "banditd", "float64", n, t))
    mc = []
    for i in range(10):
        st = pol.update(st, None, [i % 10], [1.0])
        mc.append(_timed_once(lambda: pol.select(st, None, key1)))
    mc_arr = np.array(mc)
    rows.append(_row("first select of a new version (MC probabilities, 32768 draws)",
                     "banditd", "float64", len(mc_arr), mc_arr))
    amort = pct(t)[0] + pct(mc_arr)[0] / 1000
    rows[-1]["amortized_us_at_1000_selects_per_version"] = amort
    if use_mabwiser:
        from mabwiser.mab import MAB, LearningPolicy

        mab = MAB(arms=list(range(10)), learning_policy=LearningPolicy.ThompsonSampling())
        mab.fit(decisions=rng.integers(0, 10, 500), rewards=(rng.random(500) < 0.5).astype(int))
        rows.append(_row("Beta TS K=10 select (no propensity)", "MABWiser ThompsonSampling",
                         "float64", n // 2, time_calls(mab.predict, n // 2)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="timed calls per single-call row")
    ap.add_argument("--no-mabwiser", action="store_true")
    ap.add_argument("--cpu", type=int, default=ALL_CPUS[-1], help="CPU for the pinned rows")
    args = ap.parse_args()
    PIN[:] = [args.cpu]
    pinned()
    print_header("banditd policy speed", pkgs=("jax", "jaxlib", "numpy", "mabwiser"),
                 extra={"sizes": f"LinUCB K={K} d={D}; Beta TS K=10",
                        "note": "times are wall-clock per call in microseconds"})
    rows = linucb_rows(args.n, not args.no_mabwiser) + beta_rows(args.n, not args.no_mabwiser)
    print(table(rows))
    get = {(r["what"], r["impl"], r["dtype"]): r["p50_us"] for r in rows}
    checks = [
        ("f64 single select <= numpy f64 reference",
         get[("select, 1 context", "banditd", "float64")],
         get[("select, 1 context", "numpy reference (A^-1 @ x)", "float64")]),
        ("f32 single select <= 50 us", get[("select, 1 context", "banditd", "float32")], 50.0),
        ("f32 batch of 1000 <= 12 ms (all CPUs)",
         get[(f"select, batch of 1000 ({len(ALL_CPUS)} CPUs)", "banditd", "float32")], 12000.0),
        ("f32 batch of 1000 <= 12 ms (1 CPU)",
         get[("select, batch of 1000 (1 CPU)", "banditd", "float32")], 12000.0),
        ("update B=256 >= 50k obs/s (p50 <= 5120 us)",
         get[("update B=256 incl. cache refresh", "banditd (donated)", "float64")], 5120.0),
        ("Beta TS K=10 select <= 50 us",
         get[("Beta TS K=10 select (propensity from cache)", "banditd", "float64")], 50.0),
    ]
    if not args.no_mabwiser:
        mw = get[("select, 1 context", "MABWiser LinUCB", "float64")]
        ml = get[("select+update loop, 1 context", "MABWiser LinUCB", "float64")]
        checks += [
            ("single select >= 5x MABWiser", get[("select, 1 context", "banditd", "float64")],
             mw / 5),
            ("select+update loop >= 10x MABWiser",
             get[("select+update loop, 1 context", "banditd", "float64")], ml / 10),
        ]
    print()
    print(table([{"target": c, "measured_p50": m, "bound": b, "met": "yes" if m <= b else "NO"}
                 for c, m, b in checks]))


if __name__ == "__main__":
    main()
