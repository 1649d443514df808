"""Family registry: ``make(name, **hyper)`` and ``families()``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Policy
from .builder import build
from .cascade import CASCADE_KLUCB, CASCADE_LINTS, CASCADE_LINUCB, CASCADE_TS, CASCADE_UCB1
from .classic import EPSILON_GREEDY, EXP3, UCB1
from .diag import DIAG_LINUCB
from .drift import D_UCB, DISCOUNTED_TS, SW_UCB
from .elimination import SEQUENTIAL_HALVING, SUCCESSIVE_ELIMINATION
from .family import Family
from .kernel import PAK_UCB, RFF_UCB
from .linear import LIN_TS, LINUCB
from .slate import SLATE_INSLATE_TS, SLATE_PBM_TS
from .split import FIXED_SPLIT
from .thompson import BETA_TS, GAUSSIAN_TS, NIG_TS

_REGISTRY: dict[str, Family] = {}


def register(fam: Family) -> Family:
    if fam.name in _REGISTRY:
        raise ValueError(f"family: {fam.name!r} is already registered")
    _REGISTRY[fam.name] = fam
    return fam


for _f in (BETA_TS, GAUSSIAN_TS, NIG_TS, LIN_TS, UCB1, EPSILON_GREEDY, EXP3, LINUCB):
    register(_f)
for _f in (DIAG_LINUCB, PAK_UCB, RFF_UCB):
    register(_f)
for _f in (CASCADE_UCB1, CASCADE_KLUCB, CASCADE_TS, CASCADE_LINUCB, CASCADE_LINTS):
    register(_f)
for _f in (SLATE_PBM_TS, SLATE_INSLATE_TS):
    register(_f)
for _f in (DISCOUNTED_TS, D_UCB, SW_UCB):
    register(_f)
for _f in (SUCCESSIVE_ELIMINATION, SEQUENTIAL_HALVING):
    register(_f)
register(FIXED_SPLIT)


def get(name: str) -> Family:
    fam = _REGISTRY.get(name)
    if fam is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"family: unknown policy family {name!r} (known: {known})")
    return fam


def resolve(name: str, hyper: Mapping[str, Any]) -> dict[str, Any]:
    """Validated, complete hyperparameters for ``name``; ValueError names the offending one."""
    fam = get(name)
    derived = {k for k, v in fam.hypers.items() if v.doc.startswith("derived")}
    for k in hyper:
        if k not in fam.hypers or k in derived:
            settable = ", ".join(k2 for k2 in fam.hypers if k2 not in derived)
            raise ValueError(f"{k}: not a hyperparameter of {name!r} (it takes: {settable})")
    params = {k: hyper.get(k, v.default) for k, v in fam.hypers.items()}
    for k, v in fam.hypers.items():
        # JSON and protobuf Struct carry every number as a float; integer settings stay integers.
        val = params[k]
        if (
            isinstance(v.default, int)
            and not isinstance(v.default, bool)
            and isinstance(val, float)
            and val.is_integer()
        ):
            params[k] = int(val)
    for k, v in fam.hypers.items():
        if k in derived:
            continue
        val = params[k]
        if isinstance(v.default, bool) and not isinstance(val, bool):
            raise ValueError(f"{k}: must be true or false, got {val!r}")
        if v.check is not None:
            try:
                ok = v.check(val)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{k}: must be {v.rule} for {name!r}, got {val!r}")
    if "auto_alpha" in fam.hypers:
        params["auto_alpha"] = params["alpha"] is None
    if fam.validate is not None:
        fam.validate(params)
    return params


def make(name: str, **hyper: Any) -> Policy:
    """Build a policy: ``make("linucb", alpha=1.0, lam=1.0)``."""
    return build(get(name), resolve(name, hyper))


def families() -> dict[str, dict[str, Any]]:
    return {name: fam.metadata() for name, fam in sorted(_REGISTRY.items())}
