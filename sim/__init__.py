"""Bandit environments as pure JAX objects, and a compiled simulator for policies.

Environment interface (``banditd.sim.env.Env``). An environment is a frozen dataclass registered
as a JAX pytree (arrays are leaves, Python settings are static), so it can be passed to jitted
functions and used inside ``jax.lax.scan`` / ``jax.vmap``:

* ``name`` -- kind of environment; ``reward_kind`` -- ``"binary"`` | ``"bounded"`` | ``"real"``.
* ``n_arms`` -- N; ``dim`` -- context dimension d, 0 for non-contextual environments.
* ``per_arm`` -- contexts are per-arm feature rows ``[N, d]`` rather than one ``[d]`` vector.
* ``observe(key, t) -> (context, means)`` -- round ``t``'s context (``[d]``, ``[N, d]`` or shape
  ``[0]``) and the expected reward of every arm given it (``[N]``). ``t`` is the 0-based round
  index, so non-stationary environments (abrupt switches) fit the same signature.
* ``reward(key, means, arm) -> r`` -- a sampled reward. It must be a deterministic function of
  ``key`` whatever the arm, so the reward every arm would have paid in a round is fixed by the
  round's key (``realize`` relies on this to replay rounds for numpy libraries).

Ranked (slate) environments (``cascade`` -> ``CascadeClicks``, ``pbm`` -> ``PositionBased``)
have ``ranked = True`` and ``slots`` (k, static). A ranked policy shows ``arms: int[k]``, k
distinct items; ``observe`` is as above (the context is the item features ``[N, d]``, or shape
``[0]``; ``means`` the items' attraction probabilities) and, instead of ``reward``:

* ``slate_rewards(key, means, arms) -> float[k]`` -- per-slot clicks (0/1), a deterministic
  function of ``key`` whatever the list (the cascade draws one uniform per item, the PBM one per
  (item, slot)); a cascade pays at most one click and zeros after it.
* ``slate_value(means, arms)`` -- the list's expected reward; ``best_value(means)`` -- the best
  list's, so pseudo-regret is ``best_value - slate_value(arms)``.

Constructors take a ``seed`` for the environment's own parameters (arm means, true ``theta``);
the randomness of rounds comes from the run's seeds.

>>> from banditd import sim
>>> from banditd.policies import make
>>> env = sim.bernoulli(10, seed=0)
>>> res = sim.run(make("ucb1"), env, T=1000, seeds=range(4))
>>> res.regret.shape
(4, 1000)
"""

from .arms import BernoulliArms, GaussianArms, bernoulli, gaussian
from .cascade import CascadeClicks, cascade
from .clusters import ClusterMatching, cluster_matching
from .digits import Digits, digits
from .env import Env, RankedEnv
from .linear import LinearDisjoint, LinearPerArm, linear_disjoint, linear_per_arm
from .routing import PromptRouting, prompt_routing
from .runner import Realization, Run, realize, round_keys, run, seed_keys, uniform
from .slate import PositionBased, pbm
from .switch import SwitchingBernoulli, abrupt_switch, switching_bernoulli

__all__ = [
    "BernoulliArms",
    "CascadeClicks",
    "ClusterMatching",
    "Digits",
    "Env",
    "GaussianArms",
    "LinearDisjoint",
    "LinearPerArm",
    "PositionBased",
    "PromptRouting",
    "RankedEnv",
    "Realization",
    "Run",
    "SwitchingBernoulli",
    "abrupt_switch",
    "bernoulli",
    "cascade",
    "cluster_matching",
    "digits",
    "gaussian",
    "linear_disjoint",
    "linear_per_arm",
    "pbm",
    "prompt_routing",
    "realize",
    "round_keys",
    "run",
    "seed_keys",
    "switching_bernoulli",
    "uniform",
]
