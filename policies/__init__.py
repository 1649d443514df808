"""Pure JAX bandit policies (optax style: a NamedTuple of pure functions over a pytree state).

>>> from banditd.policies import make, families
>>> pol = make("linucb", alpha=1.0, lam=1.0)
>>> state = pol.init(n_arms=3, dim=2)
"""

from .base import Meta, Policy, SelectOutput, State, capacity_for, next_pow2
from .builder import MC_DRAWS, TRACES
from .keys import derive_keys
from .registry import families, get, make, register, resolve

__all__ = [
    "MC_DRAWS",
    "TRACES",
    "Meta",
    "Policy",
    "SelectOutput",
    "State",
    "capacity_for",
    "derive_keys",
    "families",
    "get",
    "make",
    "next_pow2",
    "register",
    "resolve",
]
