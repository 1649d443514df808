"""The ``banditd`` command line: run the server, migrate its database, and drive experiments.

Human output is rich tables; ``--json`` prints JSON for scripts. A failed call prints one red
line ``error: <GRPC_CODE>: <message>`` on stderr and exits with status 1.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .client import DEFAULT_TARGET, Client
from .errors import BanditdError, InvalidArgument
from .models import Ack, Decision, ExperimentInfo, Observation, Reward, Stats

__all__ = ["app", "main"]

app = typer.Typer(
    name="banditd",
    help="banditd: a self-hosted online bandit decision service.",
    no_args_is_help=True,
    add_completion=False,
    # Errors are reported as one line by each command; a traceback would only bury them.
    pretty_exceptions_enable=False,
)
experiment_app = typer.Typer(
    help="Create, list, show and update experiments.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")

P = ParamSpec("P")
R = TypeVar("R")


# ---------------------------------------------------------------------------------------------
# Shared options

TargetOpt = Annotated[
    str,
    typer.Option("--target", envvar="BANDITD_TARGET", help="Server address host:port."),
]
NamespaceOpt = Annotated[
    str,
    typer.Option("--namespace", "-n", envvar="BANDITD_NAMESPACE", help="Namespace (tenant)."),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", envvar="BANDITD_TIMEOUT", help="Seconds per attempt."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
NameArg = Annotated[str, typer.Argument(help="Experiment name.", show_default=False)]


class RewardKindChoice(enum.StrEnum):
    binary = "binary"
    bounded = "bounded"
    real = "real"


class ApplyModeChoice(enum.StrEnum):
    immediate = "immediate"
    at_window_close = "at_window_close"


def _out() -> Console:
    # Built per call: CliRunner and redirections swap sys.stdout after import. No markup: arm
    # ids, metadata and messages are user text, and "[b]" in an arm id must print as itself.
    return Console(highlight=False, markup=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    text = Text("error: ", style="bold red")
    text.append(" ".join(message.split()), style="red")
    _err().print(text)
    raise typer.Exit(1)


def _errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn client and input errors into the one-line report and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BanditdError as e:
            _fail(str(e))
        except (ValueError, OSError) as e:  # bad configuration (BANDITD_* values), files
            _fail(str(e))

    return wrapper


def _client(target: str, timeout: float) -> Client:
    return Client(target, timeout=timeout)


def _json_arg(raw: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{what}: not valid JSON ({e.msg} at column {e.colno})") from None


def _json_obj(raw: str | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = _json_arg(raw, what)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: expected a JSON object")
    return value


def _pairs(items: Sequence[str], what: str) -> dict[str, Any]:
    """``key=value`` options; values parse as JSON when they can (``alpha=0.5`` is a number)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{what}: expected key=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _split(items: Sequence[str] | None) -> list[str]:
    """Repeated and/or comma-separated ids: ``-a x -a y`` or ``-a x,y``."""
    return [p.strip() for item in items or () for p in item.split(",") if p.strip()]


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no NaN/inf
    return obj


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(_jsonable(obj), indent=2))


def _num(x: float) -> str:
    return f"{x:.4g}"


# ---------------------------------------------------------------------------------------------
# Server-side commands


@app.command()
@_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port.", show_default=False)] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(help="Data directory of the embedded default.", show_default=False),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of the event log.", show_default=False),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            help="Redis URL: production mode (replicas share this Redis and --database-url).",
            show_default=False,
        ),
    ] = None,
    redis_prefix: Annotated[
        str | None,
        typer.Option(help="Key prefix in Redis (default banditd).", show_default=False),
    ] = None,
    lease_ttl_s: Annotated[
        float | None,
        typer.Option(
            help="Production: seconds before a silent learner's experiments pass to another "
            "replica (default 5).",
            show_default=False,
        ),
    ] = None,
    max_items: Annotated[
        int | None, typer.Option(help="Items per request limit.", show_default=False)
    ] = None,
    writer_flush_ms: Annotated[
        float | None,
        typer.Option(
            help="Feedback writer group-commit wait (ms; Update waits for it; default 2).",
            show_default=False,
        ),
    ] = None,
    decision_flush_ms: Annotated[
        float | None,
        typer.Option(
            help="Decision writer group-commit wait (ms; Select does not wait; default 10).",
            show_default=False,
        ),
    ] = None,
    decision_buffer: Annotated[
        int | None,
        typer.Option(
            help="Decisions held while the database is unavailable; past this, Select answers "
            "UNAVAILABLE (default 100000).",
            show_default=False,
        ),
    ] = None,
    learner_batch: Annotated[
        int | None, typer.Option(help="Feedback rows per learner apply.", show_default=False)
    ] = None,
    learner_linger_ms: Annotated[
        float | None,
        typer.Option(
            help="Least time between two learner passes over one experiment (ms; rewards "
            "arriving meanwhile share one apply; default 10).",
            show_default=False,
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(help="Applied batches between checkpoints.", show_default=False),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="gRPC worker threads.", show_default=False)
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="Log level (DEBUG, INFO, ...).", show_default=False)
    ] = None,
    precompile: Annotated[
        bool | None,
        typer.Option(
            "--precompile/--no-precompile",
            help="Compile larger batch buckets in the background (default on).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the server (blocks until Ctrl-C / SIGTERM).

    Every flag can also be set as BANDITD_<FLAG> in the environment (e.g. BANDITD_PORT);
    flags win. With no flags: SQLite and in-process state under the data directory.
    """
    from banditd.service.config import ServerConfig

    config = ServerConfig.from_env(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        lease_ttl_s=lease_ttl_s,
        max_items=max_items,
        writer_flush_ms=writer_flush_ms,
        decision_flush_ms=decision_flush_ms,
        decision_buffer=decision_buffer,
        learner_linger_ms=learner_linger_ms,
        learner_batch=learner_batch,
        checkpoint_every=checkpoint_every,
        workers=workers,
        log_level=log_level,
        precompile=precompile,
    )
    from banditd.service.server import serve as run_server

    run_server(config)


@app.command()
@_errors
def migrate(
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL (default: SQLite under the data directory).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Data directory of the embedded default.", show_default=False)
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Upgrade the event-log schema to the newest Alembic revision."""
    from banditd.service.config import ServerConfig, redacted

    url = ServerConfig.from_env(database_url=database_url, data_dir=data_dir).database_url
    from banditd.store.migrate import current, upgrade

    upgrade(url)
    revision = current(url)
    if json_out:
        _print_json({"database_url": redacted(url), "revision": revision})
    else:
        _out().print(Text.assemble(f"{redacted(url)} at revision ", (str(revision), "bold")))


@app.command()
@_errors
def families(json_out: JsonOpt = False) -> None:
    """List the policy families this installation serves."""
    from banditd.policies import families as policy_families

    fams = policy_families()
    if json_out:
        _print_json(fams)
        return
    table = Table(title="Policy families")
    table.add_column("family", style="bold", no_wrap=True)
    table.add_column("contextual")
    table.add_column("rewards")
    table.add_column("hyperparameters (defaults)", overflow="fold")
    table.add_column("description")
    for name, meta in fams.items():
        hypers = ", ".join(
            f"{k}={h.get('default')!r}" for k, h in meta.get("hyperparameters", {}).items()
        )
        table.add_row(
            name,
            "yes" if meta.get("contextual") else "no",
            ", ".join(meta.get("reward_kinds", ())),
            hypers,
            str(meta.get("doc", "")),
        )
    _out().print(table)


# ---------------------------------------------------------------------------------------------
# Experiments


def _experiment_table(exps: Sequence[ExperimentInfo]) -> Table:
    table = Table(title="Experiments")
    for col in ("namespace", "name", "family", "arms", "rev", "version", "status"):
        table.add_column(col, no_wrap=col in ("namespace", "name", "family"))
    for e in exps:
        table.add_row(
            e.namespace,
            e.name,
            e.family,
            str(len(e.active_arm_ids)),
            str(e.revision),
            str(e.version),
            e.status,
        )
    return table


def _show_experiment(e: ExperimentInfo, new_revision: bool | None = None) -> None:
    out = _out()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    schema = "non-contextual" if not e.dim else f"{'sparse' if e.sparse else 'dense'} d={e.dim}"
    if e.arm_feature_dim:
        schema += f", arm features d={e.arm_feature_dim}"
    if e.schema_name:
        schema += f" ({e.schema_name} v{e.schema_version})"
    reward = e.reward_kind
    if e.wait_window is not None:
        reward += f", window {e.wait_window:g}s"
    if e.default_reward is not None:
        reward += f", default {e.default_reward:g}"
    reward += f", apply {e.apply_mode}"
    rows = [
        ("experiment", f"{e.namespace}/{e.name}"),
        ("family", e.family),
        ("status", e.status),
        ("revision", str(e.revision) + (" (new)" if new_revision else "")),
        ("version", str(e.version)),
        ("hyperparameters", json.dumps(e.hyperparameters, sort_keys=True)),
        ("contexts", schema),
        ("reward", reward),
        ("epsilon", _num(e.epsilon)),
        ("slate size", str(max(e.slate_size, 1))),
        ("holdout", _num(e.holdout_fraction)),
    ]
    if e.create_time is not None:
        rows.append(("created", e.create_time.isoformat(timespec="seconds")))
    for k, v in rows:
        grid.add_row(k, Text(v))
    out.print(grid)
    arms = Table(title="Arms")
    arms.add_column("arm", style="bold", no_wrap=True)
    arms.add_column("active")
    arms.add_column("metadata")
    arms.add_column("features")
    for a in e.arms:
        arms.add_row(
            a.id,
            "yes" if a.active else "retired",
            json.dumps(a.metadata, sort_keys=True) if a.metadata else "",
            f"[{len(a.features)}]" if a.features else "",
        )
    out.print(arms)


@experiment_app.command("create")
@_errors
def experiment_create(
    name: NameArg,
    family: Annotated[
        str, typer.Option("--family", "-f", help="Policy family (see `banditd families`).")
    ],
    arm: Annotated[
        list[str],
        typer.Option("--arm", "-a", help="Arm id; repeat or separate with commas."),
    ],
    hyper: Annotated[
        list[str] | None,
        typer.Option("--hyper", "-H", help="Hyperparameter key=value (repeatable)."),
    ] = None,
    hyperparameters: Annotated[
        str | None, typer.Option(help="Hyperparameters as a JSON object.", show_default=False)
    ] = None,
    dim: Annotated[int, typer.Option(help="Context dimension (0 = non-contextual).")] = 0,
    sparse: Annotated[bool, typer.Option(help="Contexts are sparse.")] = False,
    arm_feature_dim: Annotated[int, typer.Option(help="Per-arm feature dimension.")] = 0,
    reward_kind: Annotated[
        RewardKindChoice, typer.Option(help="What a reward is.")
    ] = RewardKindChoice.binary,
    wait_window: Annotated[
        float | None,
        typer.Option(help="Seconds a reward may take (default: no limit).", show_default=False),
    ] = None,
    default_reward: Annotated[
        float | None,
        typer.Option(help="Reward applied when a window closes empty.", show_default=False),
    ] = None,
    apply_mode: Annotated[
        ApplyModeChoice | None,
        typer.Option(help="When rewards train (default: server's choice).", show_default=False),
    ] = None,
    train_on_holdout: Annotated[bool, typer.Option(help="Holdout feedback trains too.")] = False,
    epsilon: Annotated[float, typer.Option(help="Exploration floor.")] = 0.0,
    slate_size: Annotated[int, typer.Option(help="Arms per decision.")] = 1,
    holdout_fraction: Annotated[float, typer.Option(help="Share of units held out.")] = 0.0,
    arm_features: Annotated[
        str | None,
        typer.Option(help='Static arm features, JSON {"arm": [..]}.', show_default=False),
    ] = None,
    arm_metadata: Annotated[
        str | None,
        typer.Option(help='Arm metadata, JSON {"arm": {"cost": 0.1}}.', show_default=False),
    ] = None,
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Create an experiment."""
    hp = _json_obj(hyperparameters, "--hyperparameters") or {}
    hp.update(_pairs(hyper or (), "--hyper"))
    with _client(target, timeout) as c:
        e = c.create_experiment(
            namespace,
            name,
            family,
            _split(arm),
            hyperparameters=hp or None,
            dim=dim,
            sparse=sparse,
            arm_feature_dim=arm_feature_dim,
            reward_kind=reward_kind.value,
            wait_window=wait_window,
            default_reward=default_reward,
            apply_mode=apply_mode.value if apply_mode is not None else None,
            train_on_holdout=train_on_holdout,
            epsilon=epsilon,
            slate_size=slate_size,
            holdout_fraction=holdout_fraction,
            arm_features=_json_obj(arm_features, "--arm-features"),
            arm_metadata=_json_obj(arm_metadata, "--arm-metadata"),
        )
    if json_out:
        _print_json(e)
    else:
        _show_experiment(e)


@experiment_app.command("list")
@_errors
def experiment_list(
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="List every namespace.")
    ] = False,
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """List experiments."""
    with _client(target, timeout) as c:
        exps = c.list_experiments(None if all_namespaces else namespace)
    if json_out:
        _print_json(exps)
    else:
        _out().print(_experiment_table(exps))


@experiment_app.command("show")
@_errors
def experiment_show(
    name: NameArg,
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Show one experiment with its arms."""
    with _client(target, timeout) as c:
        e = c.get_experiment(namespace, name)
    if json_out:
        _print_json(e)
    else:
        _show_experiment(e)


@experiment_app.command("update")
@_errors
def experiment_update(
    name: NameArg,
    add_arm: Annotated[
        list[str] | None, typer.Option("--add-arm", help="Arm id to add (repeatable).")
    ] = None,
    retire_arm: Annotated[
        list[str] | None, typer.Option("--retire-arm", help="Arm id to retire (repeatable).")
    ] = None,
    pause: Annotated[bool, typer.Option("--pause", help="Stop serving Select.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Serve Select again.")] = False,
    epsilon: Annotated[
        float | None, typer.Option(help="New exploration floor.", show_default=False)
    ] = None,
    holdout_fraction: Annotated[
        float | None, typer.Option(help="New holdout share.", show_default=False)
    ] = None,
    hyper: Annotated[
        list[str] | None,
        typer.Option("--hyper", "-H", help="Hyperparameter key=value (repeatable)."),
    ] = None,
    hyperparameters: Annotated[
        str | None, typer.Option(help="Hyperparameters as a JSON object.", show_default=False)
    ] = None,
    arm_features: Annotated[
        str | None,
        typer.Option(help='Features of added arms, JSON {"arm": [..]}.', show_default=False),
    ] = None,
    arm_metadata: Annotated[
        str | None,
        typer.Option(help='Metadata of added arms, JSON {"arm": {..}}.', show_default=False),
    ] = None,
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Add/retire arms, pause/resume, change epsilon, holdout or hyperparameters."""
    if pause and resume:
        raise InvalidArgument("--pause/--resume: choose one")
    hp = _json_obj(hyperparameters, "--hyperparameters") or {}
    hp.update(_pairs(hyper or (), "--hyper"))
    with _client(target, timeout) as c:
        res = c.update_experiment(
            namespace,
            name,
            add_arms=_split(add_arm) or None,
            retire_arms=_split(retire_arm) or None,
            status="paused" if pause else "active" if resume else None,
            epsilon=epsilon,
            holdout_fraction=holdout_fraction,
            hyperparameters=hp or None,
            arm_features=_json_obj(arm_features, "--arm-features"),
            arm_metadata=_json_obj(arm_metadata, "--arm-metadata"),
        )
    if json_out:
        _print_json(res)
    else:
        _show_experiment(res.experiment, new_revision=res.new_revision)


# ---------------------------------------------------------------------------------------------
# Decisions and feedback


def _parse_contexts(raw: Sequence[str]) -> list[Any]:
    """Each ``--context`` is one context (``[..]`` dense, ``{"3": 0.5}`` sparse) or a batch
    (a list of those)."""
    out: list[Any] = []
    for i, r in enumerate(raw):
        v = _json_arg(r, f"--context[{i}]")
        if isinstance(v, list) and v and all(isinstance(x, (list, dict)) for x in v):
            out.extend(v)
        elif isinstance(v, (list, dict)):
            out.append(v)
        else:
            raise InvalidArgument(f"--context[{i}]: expected a JSON list or object")
    return out


def _decision_table(decisions: Sequence[Decision]) -> Table:
    table = Table(title="Decisions")
    table.add_column("event id", no_wrap=True)
    table.add_column("arm(s)", style="bold")
    table.add_column("propensity", justify="right")
    table.add_column("rev/version", justify="right")
    table.add_column("flags")
    for d in decisions:
        marks = {"holdout": d.holdout, "replayed": d.replayed, "deferred": d.deferred}
        flags = [f for f, on in marks.items() if on]
        table.add_row(
            d.event_id,
            ", ".join(d.arm_ids),
            _num(d.propensity),
            f"{d.revision}/{d.version}",
            " ".join(flags),
        )
    return table


@app.command()
@_errors
def select(
    name: NameArg,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            "-c",
            help="Context as JSON: [0.1, 0.2] dense, '{\"3\": 0.5}' sparse, or a list of "
            "those for a batch (repeatable).",
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(help="Decisions to make without context (non-contextual).", min=1),
    ] = None,
    event_id: Annotated[
        list[str] | None,
        typer.Option("--event-id", help="Event id per decision (default: new UUIDv7s)."),
    ] = None,
    unit_id: Annotated[
        list[str] | None,
        typer.Option("--unit-id", help="Unit id (one for all, or one per decision)."),
    ] = None,
    eligible: Annotated[
        list[str] | None,
        typer.Option("--eligible", "-e", help="Eligible arm ids (repeat or comma-separate)."),
    ] = None,
    arm_features: Annotated[
        str | None,
        typer.Option(
            help='Per-request arm features: JSON {"arm": [..]} for all decisions or a list of '
            "those, one per decision.",
            show_default=False,
        ),
    ] = None,
    deferred: Annotated[
        bool, typer.Option(help="No wait window or default until activated.")
    ] = False,
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Choose arm(s): one decision per context (or --count without contexts)."""
    contexts: Any = _parse_contexts(context or ())
    if contexts and count is not None:
        raise InvalidArgument("--count: only without --context")
    if not contexts:
        contexts = count or 1
    units: Any = None
    if unit_id:
        units = unit_id[0] if len(unit_id) == 1 else list(unit_id)
    feats = _json_arg(arm_features, "--arm-features") if arm_features is not None else None
    with _client(target, timeout) as c:
        decisions = c.select(
            namespace,
            name,
            contexts,
            event_ids=list(event_id) if event_id else None,
            unit_ids=units,
            eligible=_split(eligible) or None,
            arm_features=feats,
            deferred=deferred,
        )
    if json_out:
        _print_json(decisions)
    else:
        _out().print(_decision_table(decisions))


def _ack_table(acks: Sequence[Ack]) -> Table:
    table = Table(title="Feedback")
    table.add_column("event id", no_wrap=True)
    table.add_column("sequence", justify="right")
    table.add_column("stored as", style="bold")
    for a in acks:
        table.add_row(a.event_id, str(a.sequence), a.kind)
    return table


def _parse_observation(raw: str, i: int) -> Observation:
    what = f"--observation[{i}]"
    v = _json_obj(raw, what)
    assert v is not None
    arms = v.get("arms", v.get("arm"))
    rewards = v.get("rewards", v.get("reward"))
    if arms is None or rewards is None:
        raise InvalidArgument(f'{what}: needs "arm" (or "arms") and "reward" (or "rewards")')
    unknown = set(v) - {"arm", "arms", "reward", "rewards", "context", "arm_features", "propensity"}
    if unknown:
        raise InvalidArgument(f"{what}: unknown keys {', '.join(sorted(unknown))}")
    return Observation(
        arm_ids=arms,
        rewards=rewards,
        context=v.get("context"),
        arm_features=v.get("arm_features"),
        propensity=v.get("propensity"),
    )


@app.command()
@_errors
def update(
    name: NameArg,
    reward: Annotated[
        list[str] | None,
        typer.Option("--reward", "-r", help="EVENT_ID=VALUE (repeatable)."),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="Raw metric key=value logged with the reward(s)."),
    ] = None,
    reward_id: Annotated[
        str | None,
        typer.Option(
            help="Idempotency id of a single reward (default: new UUIDv7).", show_default=False
        ),
    ] = None,
    observation: Annotated[
        list[str] | None,
        typer.Option(
            "--observation",
            help='Direct observation as JSON {"arm": "a", "reward": 1, "context": [..]} '
            "(repeatable).",
        ),
    ] = None,
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Report rewards by event id, or direct observations."""
    metrics = _pairs(metric or (), "--metric")
    for k, v in metrics.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise InvalidArgument(f"--metric {k}: expected a number, got {v!r}")
    rewards = []
    for i, item in enumerate(reward or ()):
        eid, sep, raw = item.rpartition("=")
        if not sep or not eid:
            raise InvalidArgument(f"--reward[{i}]: expected EVENT_ID=VALUE, got {item!r}")
        try:
            value = float(raw)
        except ValueError:
            raise InvalidArgument(f"--reward[{i}]: {raw!r} is not a number") from None
        rewards.append(Reward(event_id=eid, value=value, metrics=metrics or None))
    if reward_id is not None:
        if len(rewards) != 1:
            raise InvalidArgument("--reward-id: only with exactly one --reward")
        rewards[0] = dataclasses.replace(rewards[0], reward_id=reward_id)
    obs = [_parse_observation(r, i) for i, r in enumerate(observation or ())]
    if not rewards and not obs:
        raise InvalidArgument("--reward: give at least one --reward or --observation")
    with _client(target, timeout) as c:
        acks = c.update(namespace, name, rewards, observations=obs or None)
    if json_out:
        _print_json(acks)
    else:
        _out().print(_ack_table(acks))


@app.command()
@_errors
def activate(
    name: NameArg,
    event_ids: Annotated[
        list[str], typer.Argument(help="Event ids of deferred decisions.", show_default=False)
    ],
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Activate deferred decisions (their wait window starts now)."""
    with _client(target, timeout) as c:
        n = c.activate(namespace, name, event_ids)
    if json_out:
        _print_json({"activated": n})
    else:
        _out().print(f"activated {n} of {len(event_ids)} decisions")


def _stats_view(s: Stats, title: str) -> Table:
    lines = [
        f"decisions {s.decisions} (holdout {s.holdout_decisions}) · rewards "
        f"{s.feedback.rewards} · defaults {s.feedback.defaults} · duplicates "
        f"{s.feedback.duplicates} · late {s.feedback.late} · orphans {s.feedback.orphans} · "
        f"observations {s.feedback.observations} · revision {s.revision} · version "
        f"{s.version} · watermark {s.applied_watermark}",
        f"model: {s.model_method}",
        f"P(best): {s.prob_best_method}",
    ]
    if s.regret is not None:
        lines.append(f"estimated regret (plug-in, policy decisions): {_num(s.regret)}")
    if s.lift is not None:
        x = s.lift
        lines.append(
            f"lift vs holdout: {_num(x.lift)} [{_num(x.ci_low)}, {_num(x.ci_high)}] "
            f"(policy {_num(x.policy_mean)} over {x.policy_rewards} rewards, holdout "
            f"{_num(x.holdout_mean)} over {x.holdout_rewards})"
        )
    else:
        lines.append("lift vs holdout: needs 2 rewards on each side")
    table = Table(title=title, caption="\n".join(lines))
    table.add_column("arm", style="bold", no_wrap=True)
    table.add_column("active")
    table.add_column("decisions", justify="right")
    table.add_column("holdout", justify="right")
    table.add_column("rewards", justify="right")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("model", justify="right")
    table.add_column("model 95%", justify="right")
    table.add_column("P(best)", justify="right")

    def opt(x: float | None) -> str:
        return "" if x is None else _num(x)

    for a in s.arms:
        model_iv = (
            f"[{_num(a.model_low)}, {_num(a.model_high)}]"
            if a.model_low is not None and a.model_high is not None
            else ""
        )
        table.add_row(
            a.arm_id,
            "yes" if a.active else "retired",
            str(a.decisions),
            str(a.holdout_decisions),
            str(a.rewards),
            _num(a.mean_reward) if a.rewards else "",
            f"[{_num(a.ci_low)}, {_num(a.ci_high)}]" if a.rewards else "",
            opt(a.model_mean),
            model_iv,
            opt(a.prob_best),
        )
    return table


@app.command()
@_errors
def stats(
    name: NameArg,
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Per-arm decisions, rewards, mean reward (95% interval), model interval and P(best);
    estimated regret and lift over the holdout."""
    with _client(target, timeout) as c:
        s = c.stats(namespace, name)
    if json_out:
        _print_json(s)
    else:
        _out().print(_stats_view(s, f"{namespace}/{name}"))


@app.command()
@_errors
def simulate(
    env: Annotated[
        str,
        typer.Argument(
            help="banditd.sim environment: bernoulli, gaussian, linear_disjoint, "
            "linear_per_arm, digits, prompt_routing, cluster_matching, cascade, pbm.",
            show_default=False,
        ),
    ],
    arms: Annotated[
        int | None, typer.Option(help="Arms (items) of the environment.", show_default=False)
    ] = None,
    dim: Annotated[
        int | None,
        typer.Option(
            help="Context/feature dimension (cluster_matching: clusters).", show_default=False
        ),
    ] = None,
    slots: Annotated[
        int | None, typer.Option(help="List length (cascade, pbm).", show_default=False)
    ] = None,
    env_seed: Annotated[int, typer.Option(help="Seed of the environment's parameters.")] = 0,
    family: Annotated[
        str | None,
        typer.Option("--family", "-f", help="Policy family (default: one suited to ENV)."),
    ] = None,
    hyper: Annotated[
        str | None, typer.Option(help="Hyperparameters as a JSON object.", show_default=False)
    ] = None,
    rounds: Annotated[int, typer.Option(help="Rounds to simulate.", min=1)] = 1000,
    batch: Annotated[int, typer.Option(help="Rounds per Select/Update call.", min=1)] = 20,
    epsilon: Annotated[float, typer.Option(help="Exploration floor of a new experiment.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the rounds (contexts, rewards).")] = 0,
    name: Annotated[
        str | None,
        typer.Option(help="Experiment name (default: sim-ENV-FAMILY).", show_default=False),
    ] = None,
    plot: Annotated[
        str | None,
        typer.Option(help="Write the cumulative regret curve to this PNG.", show_default=False),
    ] = None,
    target: TargetOpt = DEFAULT_TARGET,
    namespace: NamespaceOpt = "default",
    timeout: TimeoutOpt = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Drive a simulated environment against the server: Select, reward, Update, for --rounds
    rounds; print cumulative reward, regret (and a uniform-random baseline's), decisions/s.

    Creates the experiment, or reuses one of the same name that matches. Ctrl-C stops, prints
    the summary so far and exits with status 130.
    """
    from . import simulate as simulation  # imports JAX: only for this command

    if plot is not None:
        simulation.require_matplotlib()
    with _client(target, timeout) as c, simulation.rich_progress(_err(), rounds) as progress:
        res = simulation.simulate(
            c,
            env,
            arms=arms,
            dim=dim,
            slots=slots,
            env_seed=env_seed,
            family=family,
            hyper=_json_obj(hyper, "--hyper"),
            rounds=rounds,
            batch=batch,
            epsilon=epsilon,
            seed=seed,
            namespace=namespace,
            name=name,
            progress=progress,
        )
    if plot is not None and res.rounds:
        simulation.plot_regret(res, plot)
    if json_out:
        _print_json(res.summary())
    else:
        _out().print(simulation.summary_table(res))
    if res.interrupted:
        raise typer.Exit(130)  # the shell's status for Ctrl-C, after the summary so far


def main() -> None:
    """Entry point of the ``banditd`` console script."""
    app()


if __name__ == "__main__":
    main()
