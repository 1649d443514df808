"""Experiment specifications: parse and validate a proto Experiment into a plain config dict.

The config is what the event log stores (JSON) and what a restart rebuilds the experiment from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from banditd import policies
from banditd.v1 import bandit_pb2 as pb
from google.protobuf import json_format

from .errors import invalid, precondition

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
REWARD_KINDS = {
    pb.REWARD_KIND_BINARY: "binary",
    pb.REWARD_KIND_BOUNDED: "bounded",
    pb.REWARD_KIND_REAL: "real",
}
APPLY_MODES = {
    pb.APPLY_MODE_IMMEDIATE: "immediate",
    pb.APPLY_MODE_AT_WINDOW_CLOSE: "at_window_close",
}
MAX_ARMS = 100_000
MAX_DIM = 65_536
MAX_WAIT_WINDOW_S = 315_576_000_000  # google.protobuf.Duration's range (10,000 years)


def check_name(field: str, value: str) -> str:
    if not value:
        raise invalid(field, "is required")
    if not NAME_RE.match(value):
        raise invalid(field, f"{value!r} must match {NAME_RE.pattern}")
    return value


def finite(field: str, x: float) -> float:
    if not math.isfinite(x):
        raise invalid(field, f"must be finite, got {x}")
    return float(x)


def _finite_value(v: Any) -> bool:
    """Whether a google.protobuf.Value holds only finite numbers (JSON has no NaN or inf)."""
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        return math.isfinite(v.number_value)
    if kind == "struct_value":
        return all(_finite_value(x) for x in v.struct_value.fields.values())
    if kind == "list_value":
        return all(_finite_value(x) for x in v.list_value.values)
    return True


def struct_to_dict(field: str, s: Any) -> dict[str, Any]:
    """A Struct as plain JSON values; a NaN or infinite number (which JSON cannot hold) is
    INVALID_ARGUMENT naming its top-level key."""
    if s is None:
        return {}
    for key, v in s.fields.items():
        if not _finite_value(v):
            raise invalid(f"{field}.{key}", "numbers must be finite (JSON has no NaN or inf)")
    return json_format.MessageToDict(s)


def check_reward(field: str, value: float, kind: str) -> float:
    finite(field, value)
    if kind == "binary" and value not in (0.0, 1.0):
        raise invalid(field, f"must be 0 or 1 for binary rewards, got {value}")
    if kind == "bounded" and not 0.0 <= value <= 1.0:
        raise invalid(field, f"must be in [0, 1] for bounded rewards, got {value}")
    return value


@dataclass(frozen=True)
class ArmDef:
    arm_id: str
    metadata: dict[str, Any]
    features: tuple[float, ...] | None


def parse_arms(field: str, arms: Any, arm_feature_dim: int, existing: set[str]) -> list[ArmDef]:
    out: list[ArmDef] = []
    seen = set(existing)
    for i, a in enumerate(arms):
        f = f"{field}[{i}].id"
        if not a.id:
            raise invalid(f, "arm id must not be empty")
        if len(a.id) > 256:
            raise invalid(f, "arm id is longer than 256 characters")
        if a.id in seen:
            raise invalid(f, f"duplicate arm id {a.id!r}")
        seen.add(a.id)
        feats = None
        if len(a.features):
            if len(a.features) != arm_feature_dim:
                raise invalid(
                    f"{field}[{i}].features",
                    f"expected {arm_feature_dim} values "
                    f"(feature_schema.arm_feature_dimension), got {len(a.features)}",
                )
            feats = tuple(finite(f"{field}[{i}].features", v) for v in a.features)
        out.append(
            ArmDef(
                a.id,
                struct_to_dict(f"{field}[{i}].metadata", a.metadata)
                if a.HasField("metadata")
                else {},
                feats,
            )
        )
    if len(seen) > MAX_ARMS:
        raise invalid(field, f"at most {MAX_ARMS} arms")
    return out


def resolve_hyper(field: str, family: str, hyper: Mapping[str, Any]) -> dict[str, Any]:
    try:
        params = policies.resolve(family, dict(hyper))
        fam = policies.get(family)
        # Derived settings (e.g. exp3's auto_alpha) are recomputed by make(); never stored.
        return {k: v for k, v in params.items() if not fam.hypers[k].doc.startswith("derived")}
    except ValueError as e:
        msg = str(e)
        name = msg.split(":", 1)[0]
        if name == "family":
            raise invalid("experiment.family", msg.split(":", 1)[1].strip()) from None
        raise invalid(f"{field}.{name}", msg.split(":", 1)[1].strip()) from None


def parse_experiment(e: pb.Experiment) -> tuple[dict[str, Any], list[ArmDef]]:
    """(config, arms) from a CreateExperiment request; raises ServiceError naming the field."""
    check_name("experiment.namespace", e.namespace)
    check_name("experiment.name", e.name)
    if not e.family:
        raise invalid("experiment.family", "is required (see the families list)")
    hyper = resolve_hyper(
        "experiment.hyperparameters",
        e.family,
        struct_to_dict("experiment.hyperparameters", e.hyperparameters)
        if e.HasField("hyperparameters")
        else {},
    )
    fam = policies.get(e.family)
    fs = e.feature_schema
    if fs.dimension > MAX_DIM or fs.arm_feature_dimension > MAX_DIM:
        raise invalid("experiment.feature_schema.dimension", f"at most {MAX_DIM}")
    policy_dim = int(fs.dimension) + int(fs.arm_feature_dimension)
    if fam.contextual and policy_dim == 0:
        raise invalid(
            "experiment.feature_schema.dimension",
            f"family {fam.name!r} is contextual: set the context dimension (or "
            "arm_feature_dimension)",
        )
    if fam.per_arm_contexts == "required" and fs.arm_feature_dimension == 0:
        raise invalid(
            "experiment.feature_schema.arm_feature_dimension",
            f"family {fam.name!r} scores per-item features; set their length (arm features "
            "come from Arm.features and per-request arm_features)",
        )
    if fam.contextual and fam.per_arm_contexts == "no" and fs.arm_feature_dimension:
        raise invalid(
            "experiment.feature_schema.arm_feature_dimension",
            f"family {fam.name!r} scores one context per decision, not per-arm features; "
            "leave it 0",
        )
    check_shared("experiment.feature_schema.arm_feature_dimension", hyper, fs.arm_feature_dimension)
    kind = REWARD_KINDS.get(e.reward.kind, "binary" if e.reward.kind == 0 else None)
    if kind is None:
        raise invalid("experiment.reward.kind", f"unknown reward kind {e.reward.kind}")
    if kind not in fam.reward_kinds:
        raise invalid(
            "experiment.reward.kind",
            f"family {fam.name!r} takes {' or '.join(fam.reward_kinds)} rewards, not {kind}",
        )
    window = e.reward.wait_window.seconds + e.reward.wait_window.nanos / 1e9
    if window < 0:
        raise invalid("experiment.reward.wait_window", "must not be negative")
    if window > MAX_WAIT_WINDOW_S:
        raise invalid(
            "experiment.reward.wait_window",
            f"at most {MAX_WAIT_WINDOW_S} s (the range of a Duration), got {window:g} s",
        )
    default = None
    if e.reward.HasField("default_reward"):
        default = check_reward("experiment.reward.default_reward", e.reward.default_reward, kind)
    if e.reward.apply_mode not in (0, *APPLY_MODES):
        raise invalid("experiment.reward.apply_mode", f"unknown apply mode {e.reward.apply_mode}")
    apply_mode = APPLY_MODES.get(e.reward.apply_mode) or (
        "at_window_close" if default is not None else "immediate"
    )
    if apply_mode == "at_window_close" and window <= 0:
        raise invalid(
            "experiment.reward.wait_window",
            "apply mode at_window_close needs a wait window > 0",
        )
    if default is not None and window <= 0:
        raise invalid(
            "experiment.reward.wait_window",
            "a default reward is applied when the wait window closes; set a window > 0",
        )
    eps = finite("experiment.epsilon", e.epsilon)
    if not 0.0 <= eps <= 1.0:
        raise invalid("experiment.epsilon", f"must be in [0, 1], got {eps}")
    hold = finite("experiment.holdout_fraction", e.holdout_fraction)
    if not 0.0 <= hold < 1.0:
        raise invalid("experiment.holdout_fraction", f"must be in [0, 1), got {hold}")
    k = int(e.slate_size) or 1
    if e.status == pb.EXPERIMENT_STATUS_PAUSED:
        status = "paused"
    elif e.status in (pb.EXPERIMENT_STATUS_UNSPECIFIED, pb.EXPERIMENT_STATUS_ACTIVE):
        status = "active"
    else:
        raise invalid("experiment.status", f"unknown status {e.status}")
    arms = parse_arms("experiment.arms", e.arms, int(fs.arm_feature_dimension), set())
    if not arms:
        raise invalid("experiment.arms", "an experiment needs at least one arm")
    if k > len(arms):
        raise invalid("experiment.slate_size", f"{k} is more than the {len(arms)} arms")
    if k > 1 and not fam.ranked:
        raise precondition(
            "experiment.slate_size",
            f"family {fam.name!r} chooses one arm; slate_size must be 0 or 1",
        )
    check_slate("experiment.slate_size", fam.name, hyper, k)
    config = {
        "family": fam.name,
        "hyperparameters": hyper,
        "dim": int(fs.dimension),
        "sparse": bool(fs.sparse),
        "arm_feature_dim": int(fs.arm_feature_dimension),
        "policy_dim": policy_dim,
        "feature_schema": {"name": fs.name, "version": int(fs.version)},
        "reward": {
            "kind": kind,
            "wait_window_s": window,
            "default_reward": default,
            "apply_mode": apply_mode,
            "train_on_holdout": bool(e.reward.train_on_holdout),
        },
        "epsilon": eps,
        "slate_size": k,
        "holdout_fraction": hold,
        "status": status,
    }
    return config, arms


def check_shared(field: str, hyper: Mapping[str, Any], arm_feature_dim: int) -> None:
    """``shared=True`` (one model over per-arm features) needs an arm feature length."""
    if hyper.get("shared") and arm_feature_dim == 0:
        raise invalid(
            field,
            "shared=True learns one parameter over per-arm features; set their length "
            "(feature_schema.arm_feature_dimension)",
        )


def check_slate(field: str, family: str, hyper: Mapping[str, Any], k: int) -> None:
    """Families with per-position statistics (slate_pbm_ts ``positions``) must cover the slate."""
    positions = hyper.get("positions")
    if policies.get(family).ranked and positions is not None and k > int(positions):
        raise invalid(
            field,
            f"slate_size {k} is more than the {int(positions)} positions of the policy "
            "(hyperparameters.positions)",
        )


def identity_changed(family: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    fam = policies.get(family)
    return any(v.identity and old.get(k) != new.get(k) for k, v in fam.hypers.items())
