"""Structured single-arm families: select and update cost at realistic sizes, next to LinUCB.

Run:
    .venv/bin/python bench/structured.py [--n 300] [--cpu 1]

Sizes (issue 5): Diag-LinUCB 10,000 items x 1,000 clusters with 10 non-zero cluster weights per
context; RFF-UCB D=200, 10 arms; PAK-UCB 10 arms at its 1,000-point cap. Prompts are 512-d (the
CLIP text embeddings of the PAK-UCB paper's harness). The nearest core family, LinUCB, is
measured in the same run: at d=200 (the linear algebra RFF-UCB runs on phi), on the raw 512-d
prompt, and at speed.py's K=100 d=64. Everything runs pinned to one CPU (``--cpu``); updates are
donated (in place) unless the row says otherwise, as the service's learner does not donate.
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import pct, print_header, table, time_calls  # noqa: E402

jax.config.update("jax_cpu_enable_async_dispatch", False)

PROMPT_DIM = 512


def _row(family: str, what: str, size: str, t_us: np.ndarray, **extra: Any) -> dict:
    p50, p99 = pct(t_us)
    return {
        "family": family,
        "what": what,
        "size": size,
        "n": len(t_us),
        "p50_us": p50,
        "p99_us": p99,
        **extra,
    }


def _once(fn) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return (time.perf_counter() - t0) * 1e6


def _keys(n: int) -> np.ndarray:
    return P.derive_keys("bench-structured", [str(i) for i in range(n)])


def _updates(pol, state, X, arms, r, rows: int, n: int, *, donate: bool = True) -> np.ndarray:
    """Per-call times of ``rows``-row updates, each on the state the previous call returned
    (a copy of ``state``: a donated update consumes its input)."""
    holder = [jax.tree.map(jnp.copy, state)]
    it = iter(range(10**9))

    def upd() -> None:
        i = (next(it) * rows) % (len(arms) - rows)
        holder[0] = pol.update(
            holder[0], X[i : i + rows], arms[i : i + rows], r[i : i + rows], donate=donate
        )
        jax.block_until_ready(holder[0].cache)

    return time_calls(upd, n, 3)


def _selects(fam: str, size: str, pol, st, X, n: int) -> list[dict]:
    k1, k100 = _keys(1), _keys(100)
    rows = [
        _row(
            fam,
            "compile+first select, 1 context",
            size,
            np.array([_once(lambda: pol.select(st, X[:1], k1).arms)]),
        )
    ]
    rows.append(
        _row(fam, "select, 1 context", size, time_calls(lambda: pol.select(st, X[:1], k1), n))
    )
    pol.select(st, X[:100], k100)
    rows.append(
        _row(
            fam,
            "select, batch of 100",
            size,
            time_calls(lambda: pol.select(st, X[:100], k100), max(n // 10, 10), 3),
        )
    )
    return rows


def diag_rows(n: int) -> list[dict]:
    items, clusters, nnz = 10_000, 1_000, 10
    rng = np.random.default_rng(0)
    m = 20_000
    X = np.zeros((m, clusters))
    for i in range(m):  # a user's top-10 clusters with softmax-like weights
        X[i, rng.choice(clusters, nnz, replace=False)] = rng.dirichlet(np.ones(nnz))
    arms = rng.integers(0, items, m)
    r = (rng.random(m) < 0.1).astype(float)
    size = f"{items:,} items x {clusters:,} clusters, {nnz} nnz"
    pol = P.make("diag_linucb")
    st = pol.update(pol.init(items, dim=clusters), X, arms, r)
    rows = _selects("diag_linucb", size, pol, st, X, n)
    dense = P.make("diag_linucb", max_nnz=0)  # same stats and cache layout
    rows.append(
        _row(
            "diag_linucb",
            "select, 1 context, dense product (max_nnz=0)",
            size,
            time_calls(lambda: dense.select(st, X[:1], _keys(1)), max(n // 10, 20)),
        )
    )
    for b in (1, 64):
        t = _updates(pol, st, X, arms, r, b, max(n // 5, 30))
        rows.append(_row("diag_linucb", f"update B={b}", size, t, obs_per_s=b / (pct(t)[0] / 1e6)))
    st2 = pol.update(pol.init(items, dim=clusters), X[:100], arms[:100], r[:100])
    t = _updates(pol, st2, X, arms, r, 1, 20, donate=False)
    rows.append(_row("diag_linucb", "update B=1, not donated (copies 320 MB of state)", size, t))
    return rows


def rff_rows(n: int) -> list[dict]:
    arms_n, D = 10, 200
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6000, PROMPT_DIM)) / np.sqrt(PROMPT_DIM)
    arms = rng.integers(0, arms_n, 6000)
    r = rng.uniform(-1, 1, 6000)
    size = f"D={D}, {arms_n} arms, prompt d={PROMPT_DIM}"
    pol = P.make("rff_ucb", n_features=D)
    st = pol.update(pol.init(arms_n, dim=PROMPT_DIM), X[:5000], arms[:5000], r[:5000])
    rows = _selects("rff_ucb", size, pol, st, X, n)
    for b in (1, 64):
        t = _updates(pol, st, X, arms, r, b, max(n // 5, 30))
        rows.append(_row("rff_ucb", f"update B={b}", size, t, obs_per_s=b / (pct(t)[0] / 1e6)))
    return rows


def pak_rows(n: int) -> list[dict]:
    arms_n, window = 10, 1000
    rng = np.random.default_rng(2)
    m = arms_n * window + 2000
    X = rng.normal(size=(m, PROMPT_DIM)) / np.sqrt(PROMPT_DIM)
    arms = np.tile(np.arange(arms_n), m // arms_n)
    r = rng.uniform(-1, 1, m)
    pol = P.make("pak_ucb", window=window)
    # below the cap: 50 points per arm
    few = pol.update(pol.init(arms_n, dim=PROMPT_DIM), X[:500], arms[:500], r[:500])
    rows = _selects("pak_ucb", f"{arms_n} arms, 50 points each", pol, few, X, n)
    size = f"{arms_n} arms at the {window:,}-point cap"
    fill = arms_n * window + 500
    t_fill = _once(
        lambda: pol.update(pol.init(arms_n, dim=PROMPT_DIM), X[:fill], arms[:fill], r[:fill]).cache
    )
    st = pol.update(pol.init(arms_n, dim=PROMPT_DIM), X[:fill], arms[:fill], r[:fill])
    assert int(np.asarray(st.stats["w"] > 0).sum()) == arms_n * window
    rows.append(
        _row(
            "pak_ucb",
            f"update B={fill:,} from empty (rebuild, incl. compile)",
            size,
            np.array([t_fill]),
        )
    )
    rows += _selects("pak_ucb", size, pol, st, X, max(n // 5, 30))[1:]
    for b in (1, 16):
        t = _updates(pol, st, X[fill:], arms[fill:], r[fill:], b, 30)
        rows.append(
            _row(
                "pak_ucb",
                f"update B={b} (window slides: downdate + insert)",
                size,
                t,
                obs_per_s=b / (pct(t)[0] / 1e6),
            )
        )
    refresh = pol.kernels.refresh
    t = time_calls(lambda: jax.block_until_ready(refresh(pol.kernels.h, st.stats)), 5, 1)
    rows.append(_row("pak_ucb", "full rebuild of M (every refresh_every=1024 versions)", size, t))
    return rows


def linucb_rows(n: int) -> list[dict]:
    rows: list[dict] = []
    rng = np.random.default_rng(3)
    for K, d in ((10, 200), (10, PROMPT_DIM), (100, 64)):
        X = rng.normal(size=(6000, d)) / np.sqrt(d)
        arms = rng.integers(0, K, 6000)
        r = rng.uniform(size=6000)
        size = f"K={K}, d={d}"
        pol = P.make("linucb")
        st = pol.update(pol.init(K, dim=d), X[:5000], arms[:5000], r[:5000])
        rows += _selects("linucb", size, pol, st, X, n)[1:]
        for b in (1, 64):
            t = _updates(pol, st, X, arms, r, b, max(n // 5, 30))
            rows.append(_row("linucb", f"update B={b}", size, t, obs_per_s=b / (pct(t)[0] / 1e6)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="timed calls per single-context row")
    cpus = sorted(os.sched_getaffinity(0))
    ap.add_argument("--cpu", type=int, default=cpus[-1], help="CPU to pin the process to")
    args = ap.parse_args()
    os.sched_setaffinity(0, [args.cpu])
    print_header(
        "structured single-arm families: select / update cost",
        extra={
            "sizes": "Diag-LinUCB 10,000 x 1,000 (10 nnz); RFF-UCB D=200 K=10; PAK-UCB K=10 at "
            "the 1,000-point cap; prompts d=512",
            "note": "wall-clock per call in microseconds, pinned to one CPU; load average "
            + " ".join(f"{x:.1f}" for x in os.getloadavg()),
        },
    )
    rows = diag_rows(args.n) + rff_rows(args.n) + pak_rows(args.n) + linucb_rows(args.n)
    print(table(rows))


if __name__ == "__main__":
    main()
