"""``banditd simulate``: drive a ``banditd.sim`` environment against a running server.

The environment plays the world, the server plays the policy: each round the environment shows a
context, the server chooses (Select, ``batch`` rounds per call), the environment pays the chosen
arm (or list) and the reward goes back (Update, by the decisions' event ids). Round ``t`` uses
``banditd.sim.runner.round_keys(PRNGKey(seed), t)`` exactly as ``banditd.sim.run`` does, so a run
sees the same contexts and reward draws as an in-process simulation with the same seed (common
random numbers), and two runs with the same seeds are paired.

Tracked per round: the realized reward, the pseudo-regret of the choice (``max(means) -
means[arm]``; slates: ``best_value - slate_value``) and the expected regret a uniformly random
choice would have had on the same round (the baseline the summary compares against).

>>> from banditd.clients import Client
>>> from banditd.clients.simulate import simulate
>>> with Client("127.0.0.1:50051") as c:
...     res = simulate(c, "bernoulli", arms=5, rounds=2000)
>>> res.cumulative_regret < res.uniform_regret
True
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from banditd import sim
from banditd.policies import get as get_family
from banditd.sim.runner import round_keys
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .client import Client
from .errors import NotFound
from .models import ExperimentInfo, Reward, RewardKind

__all__ = [
    "ENVS",
    "Plan",
    "ProgressFn",
    "SimResult",
    "Snapshot",
    "ensure_experiment",
    "make_env",
    "plan",
    "plot_regret",
    "require_matplotlib",
    "rich_progress",
    "simulate",
    "summary_table",
]

# ---------------------------------------------------------------------------------------------
# Environments: name -> constructor with the common options mapped onto its signature


def _reject(env: str, **given: int | None) -> None:
    for opt, value in given.items():
        if value is not None:
            raise ValueError(f"--{opt}: environment {env!r} does not take it")


def _bernoulli(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    _reject("bernoulli", dim=dim or None, slots=slots)
    return sim.bernoulli(10 if arms is None else arms, seed=seed)


def _gaussian(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    _reject("gaussian", dim=dim or None, slots=slots)
    return sim.gaussian(10 if arms is None else arms, seed=seed)


def _linear_disjoint(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    _reject("linear_disjoint", slots=slots)
    return sim.linear_disjoint(10 if arms is None else arms, 10 if dim is None else dim, seed=seed)


def _linear_per_arm(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    _reject("linear_per_arm", slots=slots)
    return sim.linear_per_arm(10 if arms is None else arms, 10 if dim is None else dim, seed=seed)


def _digits(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    _reject("digits", slots=slots)
    if arms not in (None, 10):
        raise ValueError(f"--arms: digits has 10 arms (the classes), got {arms}")
    if dim not in (None, 65):
        raise ValueError(f"--dim: digits contexts have 65 values (64 pixels and 1), got {dim}")
    return sim.digits(seed=seed)


def _prompt_routing(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    _reject("prompt_routing", slots=slots)
    return sim.prompt_routing(4 if arms is None else arms, 2 if dim is None else dim, seed=seed)


def _cluster_matching(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    _reject("cluster_matching", slots=slots)
    # --arms is the item count, --dim the cluster count (the context is a [C] weight vector).
    return sim.cluster_matching(10 if arms is None else arms, 20 if dim is None else dim, seed=seed)


def _cascade(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    return sim.cascade(
        16 if arms is None else arms, 4 if slots is None else slots, dim=dim or 0, seed=seed
    )


def _pbm(arms: int | None, dim: int | None, slots: int | None, seed: int) -> Any:
    return sim.pbm(
        16 if arms is None else arms, 4 if slots is None else slots, dim=dim or 0, seed=seed
    )


def _default_family(env: Any) -> tuple[str, dict[str, Any]]:
    """The family ``simulate`` serves an environment with when none is given (and its
    hyperparameters, which ``--hyper`` overrides)."""
    name = env.name
    if name == "bernoulli":
        return "beta_ts", {}
    if name == "gaussian":
        return "gaussian_ts", {}
    if name in ("linear_disjoint", "digits"):
        return "linucb", {}
    if name == "linear_per_arm":
        return "linucb", {"shared": True}
    if name == "prompt_routing":
        # Prompts lie in [-1, 1]^d and the bumps' width is 0.35 (as in tests/test_regret.py).
        return "rff_ucb", {"n_features": 64, "bandwidth": 0.5}
    if name == "cluster_matching":
        return "diag_linucb", {}
    if name == "cascade":
        return ("cascade_linucb" if env.dim else "cascade_ts"), {}
    if name == "pbm":
        return ("slate_inslate_ts" if env.dim else "slate_pbm_ts"), {}
    raise ValueError(f"env: no default family for {name!r}; pass --family")


# name -> (arms, dim, slots, env_seed) -> environment
ENVS: dict[str, Callable[[int | None, int | None, int | None, int], Any]] = {
    "bernoulli": _bernoulli,
    "gaussian": _gaussian,
    "linear_disjoint": _linear_disjoint,
    "linear_per_arm": _linear_per_arm,
    "digits": _digits,
    "prompt_routing": _prompt_routing,
    "cluster_matching": _cluster_matching,
    "cascade": _cascade,
    "pbm": _pbm,
}


def make_env(
    name: str,
    *,
    arms: int | None = None,
    dim: int | None = None,
    slots: int | None = None,
    env_seed: int = 0,
) -> Any:
    """The ``banditd.sim`` environment ``name`` (ValueError listing the known ones if unknown)."""
    build = ENVS.get(name)
    if build is None:
        raise ValueError(f"env: unknown environment {name!r} (known: {', '.join(ENVS)})")
    return build(arms, dim, slots, env_seed)


# ---------------------------------------------------------------------------------------------
# The experiment an environment needs


@dataclass(frozen=True)
class Plan:
    """How an environment maps onto an experiment and onto Select requests.

    ``context``: "none" (no context sent), "shared" (one ``[d]`` vector per decision),
    "per_arm" (per-request arm features ``[N, d]``) or "static" (arm features fixed at creation,
    none sent per request).
    """

    env_name: str
    env: Any
    family: str
    hyper: dict[str, Any]
    ranked: bool
    context: str
    dim: int
    arm_feature_dim: int
    slate_size: int
    reward_kind: str
    arm_ids: tuple[str, ...]
    arm_features: np.ndarray | None  # [N, d] static features (context == "static")


def plan(
    env_name: str,
    *,
    arms: int | None = None,
    dim: int | None = None,
    slots: int | None = None,
    env_seed: int = 0,
    family: str | None = None,
    hyper: Mapping[str, Any] | None = None,
) -> Plan:
    """Build the environment and check that ``family`` can serve it; ValueError if not."""
    env = make_env(env_name, arms=arms, dim=dim, slots=slots, env_seed=env_seed)
    hp: dict[str, Any] = {}
    if family is None:
        family, hp = _default_family(env)
    hp.update(hyper or {})
    fam = get_family(family)
    ranked = bool(getattr(env, "ranked", False))
    if fam.ranked != ranked:
        want = "a ranked (slate) environment: cascade, pbm" if fam.ranked else "one arm per round"
        raise ValueError(f"--family: {family!r} needs {want}; {env_name!r} is not one")
    d = int(env.dim)
    if not fam.contextual:
        context = "none"
    elif d == 0:
        hint = " (give it features with --dim)" if ranked else ""
        raise ValueError(f"--family: {family!r} is contextual; {env_name!r} has no context{hint}")
    elif ranked:
        context = "static"
    elif env.per_arm:
        context = "per_arm"
    else:
        context = "shared"
    if context in ("per_arm", "static") and fam.per_arm_contexts == "no":
        raise ValueError(
            f"--family: {family!r} takes one context vector per decision; {env_name!r} has "
            "per-arm features"
        )
    if context == "shared" and fam.per_arm_contexts == "required":
        raise ValueError(f"--family: {family!r} needs per-arm features; {env_name!r} has none")
    n = int(env.n_arms)
    feats = np.asarray(env.features, np.float64) if context == "static" else None
    return Plan(
        env_name=env_name,
        env=env,
        family=family,
        hyper=hp,
        ranked=ranked,
        context=context,
        dim=d if context == "shared" else 0,
        arm_feature_dim=d if context in ("per_arm", "static") else 0,
        slate_size=int(env.slots) if ranked else 1,
        reward_kind=str(env.reward_kind),
        arm_ids=tuple(f"arm-{i}" for i in range(n)),
        arm_features=feats,
    )


def _mismatches(info: ExperimentInfo, p: Plan, epsilon: float) -> list[str]:
    out = []

    def check(what: str, have: Any, want: Any) -> None:
        if have != want:
            out.append(f"{what} is {have!r}, the simulation needs {want!r}")

    check("family", info.family, p.family)
    check("active arms", info.active_arm_ids, p.arm_ids)
    check("context dimension", info.dim, p.dim)
    check("arm feature dimension", info.arm_feature_dim, p.arm_feature_dim)
    check("reward kind", info.reward_kind, p.reward_kind)
    check("slate size", max(info.slate_size, 1), p.slate_size)
    for k, v in p.hyper.items():
        check(f"hyperparameter {k}", info.hyperparameters.get(k), v)
    if not math.isclose(info.epsilon, epsilon, abs_tol=1e-12):
        check("epsilon", info.epsilon, epsilon)
    if p.arm_features is not None and not out:
        have = np.array([a.features for a in info.arms if a.active], np.float64)
        if have.shape != p.arm_features.shape or not np.allclose(have, p.arm_features):
            out.append("the arms' static features differ (another --env-seed?)")
    return out


def ensure_experiment(
    client: Client, namespace: str, name: str, p: Plan, epsilon: float = 0.0
) -> tuple[ExperimentInfo, bool]:
    """(experiment, created): create it, or reuse an existing one that matches the plan."""
    try:
        info = client.get_experiment(namespace, name)
    except NotFound:
        info = client.create_experiment(
            namespace,
            name,
            p.family,
            list(p.arm_ids),
            hyperparameters=p.hyper or None,
            dim=p.dim,
            arm_feature_dim=p.arm_feature_dim,
            reward_kind=cast(RewardKind, p.reward_kind),
            epsilon=epsilon,
            slate_size=p.slate_size,
            arm_features=p.arm_features,
        )
        return info, True
    problems = _mismatches(info, p, epsilon)
    if problems:
        raise ValueError(
            f"--name: experiment {namespace}/{name} exists and does not match this simulation: "
            f"{'; '.join(problems)} (choose another --name)"
        )
    return info, False


# ---------------------------------------------------------------------------------------------
# Environment steps, compiled: one call per batch, vmapped over its rounds


def _uniform_value(env: Any, means: Any) -> Any:
    """Expected value of a uniformly random ordered list of ``env.slots`` distinct items."""
    if isinstance(env, sim.PositionBased):
        # Each slot holds each item with probability 1/N.
        return jnp.sum(env.kappa) * jnp.mean(means)
    if isinstance(env, sim.CascadeClicks):
        # 1 - E[prod_{j in S} (1 - w_j)] over k-subsets S: the k-th elementary symmetric
        # polynomial of (1 - w) over C(N, k).
        k = int(env.slots)
        n = means.shape[0]

        def add(e: Any, q: Any) -> tuple[Any, None]:
            return e.at[1:].add(q * e[:-1]), None

        e0 = jnp.zeros(k + 1, means.dtype).at[0].set(1.0)
        e, _ = jax.lax.scan(add, e0, 1.0 - means)
        return 1.0 - e[k] / math.comb(n, k)
    raise ValueError(f"env: no uniform baseline for the slate environment {env.name!r}")


@jax.jit
def _observe(env: Any, key: Any, ts: Any) -> tuple[Any, Any, Any]:
    """(contexts [B, ...], means [B, N], uniform choice's expected regret [B]) of rounds ts."""

    def one(t: Any) -> tuple[Any, Any, Any]:
        k_obs, _, _ = round_keys(key, t)
        ctx, means = env.observe(k_obs, t)
        if getattr(env, "ranked", False):
            gap = env.best_value(means) - _uniform_value(env, means)
        else:
            gap = jnp.max(means) - jnp.mean(means)
        return ctx, means, gap

    return jax.vmap(one)(ts)


@jax.jit
def _outcome(env: Any, key: Any, ts: Any, means: Any, arms: Any) -> tuple[Any, Any, Any]:
    """(reward [B], per-slot rewards [B, k] (slates; else [B, 1]), pseudo-regret [B])."""

    def one(t: Any, m: Any, a: Any) -> tuple[Any, Any, Any]:
        _, _, k_rew = round_keys(key, t)
        if getattr(env, "ranked", False):
            slots = env.slate_rewards(k_rew, m, a)
            return jnp.sum(slots), slots, env.best_value(m) - env.slate_value(m, a)
        r = env.reward(k_rew, m, a)
        return r, r[None], jnp.max(m) - m[a]

    return jax.vmap(one)(ts, means, arms)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class Snapshot:
    """What a progress callback sees after each batch."""

    rounds: int  # completed rounds
    total: int
    decisions_per_s: float
    mean_reward: float


ProgressFn = Callable[[Snapshot], None]


@dataclass
class SimResult:
    env: str
    family: str
    namespace: str
    name: str
    created: bool  # False: an existing experiment was reused
    rounds_requested: int
    batch: int
    seed: int
    env_seed: int
    decisions: int = 0  # decisions the server made (Select items answered)
    rewards: int = 0  # rewards the server stored as training rewards
    seconds: float = 0.0
    interrupted: bool = False
    select_seconds: list[float] = field(default_factory=list)  # one per Select call
    reward: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per completed round
    regret: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per round pseudo-regret
    uniform: np.ndarray = field(default_factory=lambda: np.zeros(0))  # uniform's expected regret

    @property
    def rounds(self) -> int:
        """Completed rounds (decided and rewarded)."""
        return int(self.regret.shape[0])

    @property
    def cumulative_reward(self) -> float:
        return float(self.reward.sum())

    @property
    def cumulative_regret(self) -> float:
        return float(self.regret.sum())

    @property
    def uniform_regret(self) -> float:
        return float(self.uniform.sum())

    @property
    def decisions_per_s(self) -> float:
        return self.rounds / self.seconds if self.seconds > 0 else 0.0

    def select_ms(self, q: float) -> float:
        if not self.select_seconds:
            return float("nan")
        return float(np.quantile(np.asarray(self.select_seconds), q) * 1e3)

    def summary(self) -> dict[str, Any]:
        """The end-of-run numbers (what the table and ``--json`` show)."""
        return {
            "env": self.env,
            "family": self.family,
            "experiment": f"{self.namespace}/{self.name}",
            "created": self.created,
            "rounds": self.rounds,
            "rounds_requested": self.rounds_requested,
            "batch": self.batch,
            "decisions": self.decisions,
            "rewards": self.rewards,
            "cumulative_reward": self.cumulative_reward,
            "mean_reward": self.cumulative_reward / self.rounds if self.rounds else float("nan"),
            "cumulative_regret": self.cumulative_regret,
            "uniform_regret": self.uniform_regret,
            "regret_vs_uniform": (
                self.cumulative_regret / self.uniform_regret
                if self.uniform_regret > 0
                else float("nan")
            ),
            "seconds": self.seconds,
            "decisions_per_s": self.decisions_per_s,
            "select_calls": len(self.select_seconds),
            "select_p50_ms": self.select_ms(0.5),
            "select_p99_ms": self.select_ms(0.99),
            "seed": self.seed,
            "env_seed": self.env_seed,
            "interrupted": self.interrupted,
        }


def _select(client: Client, namespace: str, name: str, p: Plan, ctx: np.ndarray, b: int) -> Any:
    if p.context == "shared":
        return client.select(namespace, name, ctx)
    if p.context == "per_arm":
        feats = {a: ctx[:, i, :] for i, a in enumerate(p.arm_ids)}
        return client.select(namespace, name, b, arm_features=feats)
    return client.select(namespace, name, b)  # no context, or static arm features


def simulate(
    client: Client,
    env: str,
    *,
    arms: int | None = None,
    dim: int | None = None,
    slots: int | None = None,
    env_seed: int = 0,
    family: str | None = None,
    hyper: Mapping[str, Any] | None = None,
    rounds: int = 1000,
    batch: int = 20,
    epsilon: float = 0.0,
    seed: int = 0,
    namespace: str = "default",
    name: str | None = None,
    progress: ProgressFn | None = None,
) -> SimResult:
    """Run ``rounds`` rounds of environment ``env`` against the server behind ``client``.

    Creates the experiment (default name ``sim-<env>-<family>``) or reuses a matching one.
    Ctrl-C (KeyboardInterrupt) stops after the current batch's calls and returns the rounds
    completed so far with ``interrupted=True``. ``progress`` is called once the experiment is
    ready (0 rounds) and after every batch.
    """
    if rounds < 1:
        raise ValueError(f"--rounds: must be >= 1, got {rounds}")
    if batch < 1:
        raise ValueError(f"--batch: must be >= 1, got {batch}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"--epsilon: must be in [0, 1], got {epsilon}")
    p = plan(env, arms=arms, dim=dim, slots=slots, env_seed=env_seed, family=family, hyper=hyper)
    if p.ranked and "slot_values" not in Reward.__dataclass_fields__:
        raise ValueError(f"env: {env!r} is ranked and this client cannot send per-slot rewards")
    name = name or f"sim-{p.env_name}-{p.family}"
    _, created = ensure_experiment(client, namespace, name, p, epsilon)
    res = SimResult(
        env=env,
        family=p.family,
        namespace=namespace,
        name=name,
        created=created,
        rounds_requested=rounds,
        batch=batch,
        seed=seed,
        env_seed=env_seed,
    )
    key = jax.random.PRNGKey(seed)
    index = {a: i for i, a in enumerate(p.arm_ids)}
    k = p.slate_size
    # Every batch is computed at full size (the last one padded) so each function compiles once.
    warm = jnp.arange(batch)
    _, warm_means, _ = _observe(p.env, key, warm)
    warm_arms = jnp.tile(jnp.arange(k), (batch, 1)) if p.ranked else jnp.zeros(batch, jnp.int32)
    jax.block_until_ready(_outcome(p.env, key, warm, warm_means, warm_arms))

    rewards: list[np.ndarray] = []
    regrets: list[np.ndarray] = []
    uniforms: list[np.ndarray] = []
    done = 0
    total_reward = 0.0
    t0 = time.perf_counter()
    try:
        if progress is not None:
            progress(Snapshot(0, rounds, 0.0, float("nan")))
        while done < rounds:
            b = min(batch, rounds - done)
            ts = jnp.arange(done, done + batch)
            ctx_j, means_j, uni_j = _observe(p.env, key, ts)
            ctx = np.asarray(ctx_j)[:b]
            s0 = time.perf_counter()
            decisions = _select(client, namespace, name, p, ctx, b)
            res.select_seconds.append(time.perf_counter() - s0)
            res.decisions += len(decisions)
            chosen = np.zeros((batch, k) if p.ranked else (batch,), np.int32)
            for j, d in enumerate(decisions):
                if p.ranked:
                    if len(d.arm_ids) != k:
                        raise ValueError(
                            f"server: decision {d.event_id} ranks {len(d.arm_ids)} arms, the "
                            f"environment shows {k}"
                        )
                    chosen[j] = [index[a] for a in d.arm_ids]
                else:
                    chosen[j] = index[d.arm_id]
            r_j, slots_j, gap_j = _outcome(p.env, key, ts, means_j, jnp.asarray(chosen))
            r = np.asarray(r_j)[:b]
            per_slot = np.asarray(slots_j)[:b]
            if p.ranked:
                sent = [
                    Reward(d.event_id, float(r[j]), slot_values=per_slot[j].tolist())
                    for j, d in enumerate(decisions)
                ]
            else:
                sent = [Reward(d.event_id, float(r[j])) for j, d in enumerate(decisions)]
            acks = client.update(namespace, name, sent)
            res.rewards += sum(1 for a in acks if a.kind == "reward")
            rewards.append(r)
            regrets.append(np.asarray(gap_j)[:b])
            uniforms.append(np.asarray(uni_j)[:b])
            done += b
            total_reward += float(r.sum())
            if progress is not None:
                elapsed = time.perf_counter() - t0
                progress(Snapshot(done, rounds, done / elapsed, total_reward / done))
    except KeyboardInterrupt:
        res.interrupted = True
    res.seconds = time.perf_counter() - t0
    if rewards:
        res.reward = np.concatenate(rewards)
        res.regret = np.concatenate(regrets)
        res.uniform = np.concatenate(uniforms)
    return res


# ---------------------------------------------------------------------------------------------
# Presentation: progress bar, summary table, regret plot


@contextlib.contextmanager
def rich_progress(console: Console, total: int) -> Iterator[ProgressFn]:
    """A rich progress bar (rounds, decisions/s, running mean reward); yields the callback.

    The bar appears at the first call (``simulate`` makes it once the experiment is ready)."""
    bar = Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} decisions/s"),
        TextColumn("mean reward {task.fields[mean]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task("simulate", total=total, start=False, rate="-", mean="-")
    started = False

    def update(s: Snapshot) -> None:
        nonlocal started
        if not started:  # from the first call: setup errors are not drawn under a bar
            bar.start()
            bar.start_task(task)
            started = True
        if s.rounds:
            rate, mean = f"{s.decisions_per_s:,.0f}", f"{s.mean_reward:.4g}"
            bar.update(task, completed=s.rounds, rate=rate, mean=mean)

    try:
        yield update
    finally:
        if started:
            bar.stop()


def summary_table(res: SimResult) -> Table:
    s = res.summary()
    title = f"{s['experiment']}: {res.env} / {res.family}"
    if res.interrupted:
        title += " (interrupted)"
    table = Table(title=title)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("value", justify="right")

    def num(x: float) -> str:
        return f"{x:,.4g}" if math.isfinite(x) else "-"

    ratio = s["regret_vs_uniform"]
    rows = [
        ("rounds", f"{s['rounds']:,} of {s['rounds_requested']:,}"),
        ("experiment", "created" if s["created"] else "reused"),
        ("decisions / rewards stored", f"{s['decisions']:,} / {s['rewards']:,}"),
        ("cumulative reward", num(s["cumulative_reward"])),
        ("mean reward", num(s["mean_reward"])),
        ("cumulative regret", num(s["cumulative_regret"])),
        ("uniform random regret (expected)", num(s["uniform_regret"])),
        ("regret / uniform", f"{ratio:.3f}" if math.isfinite(ratio) else "-"),
        ("decisions/s", f"{s['decisions_per_s']:,.0f}"),
        ("Select p50 / p99 (ms)", f"{num(s['select_p50_ms'])} / {num(s['select_p99_ms'])}"),
        ("Select calls (batch)", f"{s['select_calls']:,} ({s['batch']})"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib (pip install matplotlib)") from None


def plot_regret(res: SimResult, path: str) -> None:
    """Write the cumulative regret curve and the uniform baseline's to a PNG at ``path``."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(1, res.rounds + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        ax.plot(t, np.cumsum(res.regret), label=f"{res.family} (via the server)")
        ax.plot(t, np.cumsum(res.uniform), "--", color="gray", label="uniform random (expected)")
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative pseudo-regret")
        ax.set_title(f"{res.env}: {res.namespace}/{res.name}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
