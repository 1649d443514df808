"""The environment contract shared by every simulator environment.

An environment is a frozen dataclass registered as a JAX pytree: its arrays are pytree leaves (so
it is an ordinary argument of a jitted function and the digits images are not baked into the
program as constants), its Python settings are static metadata (so they select the compiled
program). Methods are pure functions of their arguments and may be called inside ``jax.lax.scan``
and ``jax.vmap``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, TypeVar, dataclass_transform, runtime_checkable

import jax

jax.config.update("jax_enable_x64", True)

Array = Any

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def env_dataclass(cls: type[T]) -> type[T]:
    """Frozen dataclass + pytree node; fields marked ``static()`` become compile-time metadata."""
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


def static(default: Any = dataclasses.MISSING) -> Any:
    return dataclasses.field(default=default, metadata={"static": True})


@runtime_checkable
class Env(Protocol):
    """What ``banditd.sim.run`` needs from an environment (documented in ``banditd.sim``)."""

    name: ClassVar[str]
    reward_kind: ClassVar[str]  # "binary" | "bounded" | "real"
    per_arm: ClassVar[bool]  # contexts are per-arm feature rows [N, d]

    @property
    def n_arms(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]: ...

    def reward(self, key: Array, means: Array, arm: Array) -> Array: ...


@runtime_checkable
class RankedEnv(Protocol):
    """A slate environment: each round shows an ordered list of ``slots`` distinct items."""

    name: ClassVar[str]
    reward_kind: ClassVar[str]
    ranked: ClassVar[bool]  # True

    @property
    def n_arms(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def per_arm(self) -> bool: ...

    @property
    def slots(self) -> int: ...

    def observe(self, key: Array, t: Array) -> tuple[Array, Array]: ...

    def slate_rewards(self, key: Array, means: Array, arms: Array) -> Array: ...

    def slate_value(self, means: Array, arms: Array) -> Array: ...

    def best_value(self, means: Array) -> Array: ...
