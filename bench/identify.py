"""Samples to identify the best arm: successive elimination and sequential halving vs a
fixed-horizon A/B test at the same error rate.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/identify.py [--seeds 200] [--delta 0.05]

One Bernoulli environment (``--means``, the first arm best). For each method the table gives the
samples it used and its measured error rate (identified arm != the best) over ``--seeds`` runs:

* successive_elimination (fixed confidence delta): ``banditd.sim.run`` over all seeds in one
  vmapped scan; it has identified its arm at the first round from which it plays one arm with
  propensity 1 to the end. Samples = that round; mean, median and p90 over seeds.
* sequential_halving (fixed budget): the smallest budget (doubling, then bisection on a grid of
  ``--sh-steps``) whose measured error rate is at most delta.
* A/B test, fixed horizon: every arm gets n samples, then the best empirical mean wins (ties
  split at random). The smallest n with error rate <= delta, measured by ``--ab-reps``
  replications per n (an oracle design: it knows the means; a real test must guess the gap).
  Also the textbook size: a one-sided two-proportion z-test of the best arm against the
  runner-up at alpha = delta / (K - 1) (Bonferroni over K - 1 comparisons), power 1 - delta.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from banditd import sim  # noqa: E402
from banditd.policies import make  # noqa: E402
from common import print_header, table  # noqa: E402
from scipy import stats as sps  # noqa: E402

DEFAULT_MEANS = (0.5, 0.4, 0.35, 0.3, 0.25)


def ab_error(means: np.ndarray, n: int, reps: int, rng: np.random.Generator) -> float:
    """Error rate of "n samples per arm, then the best empirical mean" (ties at random)."""
    wins = rng.binomial(n, means, size=(reps, means.size)).astype(np.float64)
    wins += rng.random(wins.shape) * 1e-3  # a random tie-break below one success
    return float(np.mean(np.argmax(wins, axis=1) != int(np.argmax(means))))


def ab_oracle_n(means: np.ndarray, delta: float, reps: int, seed: int) -> tuple[int, float]:
    """The smallest n per arm whose measured error rate is <= delta (doubling, then bisection;
    every n is measured on fresh draws, so the search sees the noise of ``reps``)."""
    rng = np.random.default_rng(seed)
    hi = 1
    while ab_error(means, hi, reps, rng) > delta:
        hi *= 2
    lo = hi // 2
    while hi - lo > max(1, hi // 200):
        mid = (lo + hi) // 2
        if ab_error(means, mid, reps, rng) > delta:
            lo = mid
        else:
            hi = mid
    return hi, ab_error(means, hi, reps, rng)


def ab_textbook_n(means: np.ndarray, delta: float) -> int:
    """Per-arm size of a one-sided two-proportion z-test, best vs runner-up, Bonferroni."""
    p = np.sort(means)[::-1]
    p1, p2 = float(p[0]), float(p[1])
    alpha = delta / (means.size - 1)
    za, zb = sps.norm.ppf(1 - alpha), sps.norm.ppf(1 - delta)
    pbar = (p1 + p2) / 2
    root = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root**2 / (p1 - p2) ** 2)


def identified_round(arms: np.ndarray, prop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: the first round from which one arm is played with propensity 1 to the end (T if
    never), and that arm (-1 if never)."""
    S, T = arms.shape
    sure = (prop == 1.0) & (arms == arms[:, -1:])
    # rounds from the end that are all sure: the suffix length
    tail = np.argmin(sure[:, ::-1], axis=1)
    tail = np.where(sure.all(axis=1), T, tail)
    first = T - tail
    arm = np.where(tail > 0, arms[:, -1], -1)
    return first, arm


def run_se(env: Any, delta: float, T: int, seeds: range, c: float = 4.0) -> dict[str, Any]:
    res = sim.run(make("successive_elimination", delta=delta, c=c), env, T, seeds)
    first, arm = identified_round(np.asarray(res.arms), np.asarray(res.propensity))
    done = arm >= 0
    err = float(np.mean(arm != 0))  # not identified by T counts as an error
    used = first[done]
    return {
        "method": f"successive_elimination (delta={delta:g}, c={c:g})",
        "samples mean": float(used.mean()) if used.size else float("nan"),
        "samples p50": float(np.median(used)) if used.size else float("nan"),
        "samples p90": float(np.quantile(used, 0.9)) if used.size else float("nan"),
        "error rate": err,
        "finished": f"{int(done.sum())}/{len(seeds)} by T={T}",
        "seconds": res.run_seconds + res.compile_seconds,
    }


def sh_error(env: Any, budget: int, T: int, seeds: range) -> tuple[float, float]:
    res = sim.run(make("sequential_halving", budget=budget), env, T, seeds)
    _, arm = identified_round(np.asarray(res.arms), np.asarray(res.propensity))
    return float(np.mean(arm != 0)), res.run_seconds + res.compile_seconds


def run_sh(env: Any, delta: float, seeds: range, steps: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    budget = 64 * env.n_arms
    errs: dict[int, float] = {}
    while True:
        errs[budget], _ = sh_error(env, budget, budget + 64, seeds)
        print(f"  sequential_halving budget {budget}: error {errs[budget]:.3f}", file=sys.stderr)
        if errs[budget] <= delta:
            break
        budget *= 2
    lo, hi = budget // 2, budget
    for _ in range(steps):
        mid = (lo + hi) // 2
        errs[mid], _ = sh_error(env, mid, mid + 64, seeds)
        print(f"  sequential_halving budget {mid}: error {errs[mid]:.3f}", file=sys.stderr)
        if errs[mid] <= delta:
            hi = mid
        else:
            lo = mid
    return {
        "method": "sequential_halving (smallest budget with error <= delta)",
        "samples mean": float(hi),
        "samples p50": float(hi),
        "samples p90": float(hi),
        "error rate": errs[hi],
        "finished": f"{len(seeds)}/{len(seeds)} (fixed budget)",
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--means", type=float, nargs="+", default=list(DEFAULT_MEANS))
    ap.add_argument("--T", type=int, default=100_000, help="rounds of the elimination runs")
    ap.add_argument("--ab-reps", type=int, default=20_000)
    ap.add_argument("--sh-steps", type=int, default=5, help="bisection steps on the SH budget")
    args = ap.parse_args()
    means = np.asarray(args.means, np.float64)
    if int(np.argmax(means)) != 0 or np.sum(means == means.max()) != 1:
        raise SystemExit("--means: the first arm must be the unique best")
    env = sim.bernoulli(means.size, seed=0, means=means)
    seeds = range(args.seeds)
    print_header(
        "best-arm identification: samples to identify vs a fixed-horizon A/B test",
        extra={
            "env": f"Bernoulli means {list(map(float, means))} (arm 0 best; gap to the "
            f"runner-up {means[0] - np.sort(means)[-2]:.3g})",
            "delta": f"{args.delta:g} (target error rate of every method)",
            "seeds": f"{args.seeds} runs per banditd row; A/B rows {args.ab_reps} replications",
        },
        pkgs=("jax", "jaxlib", "numpy", "scipy"),
    )
    rows = [run_se(env, args.delta, args.T, seeds)]
    print("  done successive_elimination", file=sys.stderr, flush=True)
    # Its union bound over every n makes SE's error far below delta. Calibrated: the smallest
    # constant c, in decades down from 4 and then delta / N itself (below it ln(c N n^2 / delta)
    # is negative at n = 1), whose measured error rate is still <= delta: allocations compared
    # at equal error.
    best = None
    floor = args.delta / means.size
    grid = [c for c in (4.0 * 10.0**-k for k in range(1, 9)) if c > floor] + [floor]
    for c in grid:
        row = run_se(env, args.delta, args.T, seeds, c=c)
        print(f"  {row['method']}: error {row['error rate']:.3f}", file=sys.stderr, flush=True)
        if row["error rate"] > args.delta:
            break
        best = row
    if best is not None:
        best["method"] += " calibrated"
        rows.append(best)
    rows.append(run_sh(env, args.delta, seeds, args.sh_steps))
    t0 = time.perf_counter()
    n, err = ab_oracle_n(means, args.delta, args.ab_reps, seed=1)
    total = n * means.size
    rows.append(
        {
            "method": "A/B test, fixed horizon, oracle n",
            "samples mean": float(total),
            "samples p50": float(total),
            "samples p90": float(total),
            "error rate": err,
            "finished": f"n = {n} per arm",
            "seconds": time.perf_counter() - t0,
        }
    )
    nt = ab_textbook_n(means, args.delta)
    err_t = ab_error(means, nt, args.ab_reps, np.random.default_rng(2))
    rows.append(
        {
            "method": "A/B test, textbook z-test size",
            "samples mean": float(nt * means.size),
            "samples p50": float(nt * means.size),
            "samples p90": float(nt * means.size),
            "error rate": err_t,
            "finished": f"n = {nt} per arm",
            "seconds": 0.0,
        }
    )
    print(table(rows))
    print()
    for r in rows:
        if r["method"].startswith(("successive", "sequential")):
            print(
                f"{r['method']}: {r['samples mean'] / total:.2f}x the samples of the oracle-sized"
                f" A/B test, {r['samples mean'] / (nt * means.size):.2f}x the textbook-sized one"
            )
    print(
        "error rate: share of runs whose identified arm is not arm 0 (SE: not identified by T "
        "counts as an error). SE and SH keep playing their identified arm afterwards."
    )


if __name__ == "__main__":
    main()
