"""Cumulative regret of every policy family on its environments, with MABWiser side by side.

    .venv/bin/python bench/regret.py [--seeds 10] [--T 5000] [--out bench/out]

banditd runs are one compiled ``lax.scan`` vmapped over seeds (``banditd.sim.run``); MABWiser runs
its online ``predict``/``partial_fit`` loop in numpy on exactly the same rounds (``sim.realize``
replays the contexts and the reward every arm would have paid), on the first ``--mw-seeds`` seeds
because it is slow. Prints a table and writes ``regret.png`` and ``regret.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from banditd import sim  # noqa: E402
from banditd.policies import make  # noqa: E402
from common import print_header, table  # noqa: E402


@dataclass(frozen=True)
class Entry:
    family: str
    hyper: dict[str, Any] = field(default_factory=dict)
    horizon_is_T: bool = False  # EXP3's automatic gamma takes a bound on total reward: T here
    mabwiser: tuple[str, dict[str, Any]] | None = None  # LearningPolicy name and arguments

    @property
    def label(self) -> str:
        if self.hyper.get("shared"):
            return self.family + "(shared)"
        extra = ", ".join(f"{k}={v:g}" for k, v in self.hyper.items())
        return f"{self.family}({extra})" if extra else self.family


@dataclass(frozen=True)
class Suite:
    name: str
    env: Callable[..., Any]
    entries: list[Entry]
    timed: bool = False  # env takes T (breakpoints at fractions of the run)


MW_TS = ("ThompsonSampling", {})
MW_UCB1 = ("UCB1", {"alpha": 1.0})
MW_EG = ("EpsilonGreedy", {"epsilon": 0.1})
MW_RANDOM = ("Random", {})
MW_LINUCB = ("LinUCB", {"alpha": 1.0, "l2_lambda": 1.0})
MW_LINTS = ("LinTS", {"alpha": 1.0, "l2_lambda": 1.0})

SUITES = [
    Suite("bernoulli10", lambda: sim.bernoulli(10, seed=0), [
        Entry("beta_ts", mabwiser=MW_TS),
        Entry("ucb1", mabwiser=MW_UCB1),
        Entry("epsilon_greedy", mabwiser=MW_EG),
        Entry("exp3", horizon_is_T=True),
        Entry("fixed_split", mabwiser=MW_RANDOM),  # the A/B control: an even split
        Entry("sequential_halving"),  # budget 1000, then its survivor
        Entry("successive_elimination"),  # pure exploration until one arm is left
        Entry("discounted_ts"),  # drift families on a stationary problem: what forgetting costs
        Entry("d_ucb"),
        Entry("sw_ucb"),
    ]),
    # The best arm changes at T/2 to the former worst (algorithms.md §8.4-8.5); MABWiser has no
    # discounted or windowed policy, so its stationary counterparts run alongside.
    Suite("abrupt_switch(5)", lambda T: sim.abrupt_switch(
        [0.9, 0.2, 0.2, 0.2, 0.1], [0.2, 0.2, 0.2, 0.2, 0.6], T // 2), [
        Entry("beta_ts", mabwiser=MW_TS),
        Entry("discounted_ts"),
        Entry("discounted_ts", {"gamma": 0.99}),
        Entry("ucb1", mabwiser=MW_UCB1),
        Entry("d_ucb"),
        Entry("sw_ucb"),
    ], timed=True),
    # The best arm moves every T/4.
    Suite("rotating(5)", lambda T: sim.switching_bernoulli(
        [[0.9, 0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.9, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3, 0.9],
         [0.3, 0.9, 0.3, 0.3, 0.3]], [T // 4, T // 2, 3 * T // 4]), [
        Entry("beta_ts", mabwiser=MW_TS),
        Entry("discounted_ts"),
        Entry("ucb1", mabwiser=MW_UCB1),
        Entry("d_ucb"),
        Entry("sw_ucb"),
    ], timed=True),
    Suite("gaussian10", lambda: sim.gaussian(10, seed=0), [
        Entry("gaussian_ts"),
        Entry("nig_ts"),
        Entry("epsilon_greedy", mabwiser=MW_EG),
    ]),
    Suite("linear_disjoint(10x10)", lambda: sim.linear_disjoint(10, 10, seed=0), [
        Entry("linucb", mabwiser=MW_LINUCB),
        Entry("lin_ts", mabwiser=MW_LINTS),
    ]),
    Suite("linear_per_arm(10x10)", lambda: sim.linear_per_arm(10, 10, seed=0), [
        Entry("linucb", {"shared": True}),
        Entry("lin_ts", {"shared": True}),
    ]),
    Suite("digits", sim.digits, [
        Entry("linucb", mabwiser=MW_LINUCB),
        Entry("lin_ts", mabwiser=MW_LINTS),
        Entry("ucb1", mabwiser=MW_UCB1),  # blind to the image: what context is worth
    ]),
]


def mabwiser_run(policy: tuple[str, dict[str, Any]], env: Any, T: int, seed: int):
    """MABWiser's online loop on the rounds ``sim.run`` shows with ``seed``: (regret[T], s)."""
    from mabwiser.mab import MAB, LearningPolicy

    real = sim.realize(env, T, seed)
    n = env.n_arms
    contextual = policy[0].startswith("Lin")
    ctx = real.contexts.reshape(T, -1) if contextual else None
    mab = MAB(list(range(n)), getattr(LearningPolicy, policy[0])(**policy[1]), seed=seed)
    arms = np.empty(T, np.int64)
    t0 = time.perf_counter()
    # MABWiser cannot predict before a first fit: round 0 plays a uniformly random arm.
    arms[0] = np.random.default_rng(seed).integers(n)
    first = [real.rewards[0, arms[0]]]
    mab.fit([arms[0]], first, ctx[:1] if contextual else None)
    for t in range(1, T):
        x = ctx[t : t + 1] if contextual else None
        a = int(mab.predict(x))
        arms[t] = a
        mab.partial_fit([a], [real.rewards[t, a]], x)
    seconds = time.perf_counter() - t0
    rows = np.arange(T)
    gap = real.means.max(1) - real.means[rows, arms]
    return np.cumsum(gap), seconds


def summarize(curves: np.ndarray, uniform_final: float) -> dict[str, Any]:
    final = curves[:, -1]
    sd = float(final.std(ddof=1)) if len(final) > 1 else float("nan")
    return {
        "regret": f"{final.mean():.1f} ± {sd:.1f}",
        "/uniform": float(final.mean() / uniform_final),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--T", type=int, default=5000)
    ap.add_argument("--mw-seeds", type=int, default=3, help="seeds for MABWiser (numpy, slow)")
    ap.add_argument("--no-mabwiser", action="store_true")
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--suites", help="comma-separated suite names (default: all)")
    args = ap.parse_args()
    suites = SUITES
    if args.suites:
        want = args.suites.split(",")
        unknown = sorted(set(want) - {s.name for s in SUITES})
        if unknown:
            ap.error(f"--suites: unknown {unknown} (known: {[s.name for s in SUITES]})")
        suites = [s for s in SUITES if s.name in want]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print_header(
        "regret: banditd.sim vs uniform vs MABWiser",
        extra={
            "rounds": f"T={args.T}",
            "seeds": f"banditd {args.seeds}; "
            f"MABWiser {0 if args.no_mabwiser else args.mw_seeds} (the first ones)",
        },
        pkgs=("jax", "jaxlib", "numpy", "mabwiser", "scikit-learn"),
    )
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    for suite in suites:
        env = suite.env(args.T) if suite.timed else suite.env()
        n_seeds = args.seeds
        seeds = range(n_seeds)
        base = sim.uniform(env, args.T, seeds)
        u_final = float(base.regret[:, -1].mean())
        curves[suite.name] = [("uniform", "uniform", base.regret)]
        rows.append({"env": suite.name, "policy": "uniform", "impl": "banditd", "seeds": n_seeds,
                     **summarize(base.regret, u_final), "µs/decision": base.us_per_decision,
                     "compile s": base.compile_seconds})
        for e in suite.entries:
            hyper = dict(e.hyper)
            if e.horizon_is_T:
                hyper["horizon"] = float(args.T)
            res = sim.run(make(e.family, **hyper), env, args.T, seeds)
            curves[suite.name].append((e.label, "banditd", res.regret))
            rows.append({"env": suite.name, "policy": e.label, "impl": "banditd",
                         "seeds": n_seeds, **summarize(res.regret, u_final),
                         "µs/decision": res.us_per_decision, "compile s": res.compile_seconds})
            print(f"  done {suite.name} {e.label}", file=sys.stderr, flush=True)
            if e.mabwiser is None or args.no_mabwiser:
                continue
            mw_seeds = range(min(args.mw_seeds, n_seeds))
            runs = [mabwiser_run(e.mabwiser, env, args.T, s) for s in mw_seeds]
            mw = np.stack([r for r, _ in runs])
            secs = sum(s for _, s in runs)
            curves[suite.name].append((e.label, "MABWiser", mw))
            rows.append({"env": suite.name, "policy": f"{e.label} ~ {e.mabwiser[0]}",
                         "impl": "MABWiser", "seeds": len(mw_seeds), **summarize(mw, u_final),
                         "µs/decision": secs / (len(mw_seeds) * args.T) * 1e6, "compile s": None})
            print(f"  done {suite.name} {e.label} (MABWiser)", file=sys.stderr, flush=True)

    print(table(rows))
    print()
    print("regret: cumulative pseudo-regret at T, mean ± sd over seeds; /uniform: mean regret over")
    print("the uniform-random baseline's (same seeds, same rounds). µs/decision: banditd = the")
    print("compiled scan's wall time / (seeds x T), all seeds in one vmapped program, choose +")
    print("update + environment; MABWiser = its predict + partial_fit loop, one seed at a time.")
    print("compile s: lowering + XLA compile of that program (no persistent cache in this bench).")
    if not args.no_mabwiser:
        print(f"MABWiser ran on the first {args.mw_seeds} seeds only (its loop is numpy, round by "
              "round); MABWiser's UCB1 does not force-play unplayed arms.")
    (out / "regret.json").write_text(json.dumps(rows, indent=1, default=float))
    plot(curves, args.T, out / "regret.png")
    print(f"wrote {out / 'regret.png'} and {out / 'regret.json'}")


def plot(curves: dict[str, list[tuple[str, str, np.ndarray]]], T: int, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(curves))
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    x = np.arange(1, T + 1)
    for ax, (name, lines) in zip(axes.flat, curves.items(), strict=False):
        colors: dict[str, Any] = {}
        for label, impl, c in lines:
            mean = c.mean(0)
            if impl == "uniform":
                ax.plot(x, mean, color="0.5", ls=":", label="uniform")
                continue
            color = colors.setdefault(label, f"C{len(colors)}")
            style = "-" if impl == "banditd" else "--"
            ax.plot(x, mean, color=color, ls=style, label=f"{label} ({impl})")
            if impl == "banditd" and c.shape[0] > 1:
                sd = c.std(0, ddof=1)
                ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15)
        ax.set_title(name)
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative regret")
        ax.set_yscale("symlog", linthresh=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
