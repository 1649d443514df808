"""``banditd serve``: the gRPC server on the embedded default (SQLite + in-process state).

Start-up order matters for users: migrate, load and compile every experiment, and only then
report SERVING on the standard health service, so no caller pays for a compile.
"""

from __future__ import annotations

import gc
import logging
import os
import pathlib
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import grpc  # noqa: E402
from banditd.store import migrate  # noqa: E402
from banditd.store.errors import StoreError, Unavailable  # noqa: E402
from banditd.store.lease import RedisLease  # noqa: E402
from banditd.store.rows import Decision, Feedback  # noqa: E402
from banditd.store.signal import FeedbackSignal  # noqa: E402
from banditd.store.signal_local import LocalSignal  # noqa: E402
from banditd.store.signal_redis import RedisSignal  # noqa: E402
from banditd.store.sql import SqlEventLog  # noqa: E402
from banditd.store.state_redis import RedisStateStore  # noqa: E402
from banditd.v1 import bandit_pb2, bandit_pb2_grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection  # noqa: E402

from .config import ServerConfig, redacted  # noqa: E402
from .learner import Learner  # noqa: E402
from .orphans import CrashWindows  # noqa: E402
from .precompile import Precompiler  # noqa: E402
from .registry import Registry, compile_policy  # noqa: E402
from .replicas import Replicas  # noqa: E402
from .servicer import Servicer  # noqa: E402
from .writer import GroupCommitter  # noqa: E402

log = logging.getLogger("banditd.server")


def hint(notify: Callable[[int], None], quiet_s: float = 10.0) -> Callable[[int], None]:
    """``notify`` for after a commit: the signal is only a hint (the learner also sweeps the
    log every second), so a Redis outage must not turn a committed Update into an error. One
    warning per ``quiet_s`` while it lasts."""
    last = [0.0]

    def safe(experiment_id: int) -> None:
        try:
            notify(experiment_id)
        except StoreError as e:
            now = time.monotonic()
            if now - last[0] > quiet_s:
                last[0] = now
                log.warning("learner signal not sent (the learner's sweep picks it up): %s", e)

    return safe


# The test suite turns this off: background compiles of every experiment shape would compete
# with the tests for the CI machine's two cores.
PRECOMPILE = True
SERVICE_NAME = bandit_pb2.DESCRIPTOR.services_by_name["BanditService"].full_name


def _jax_setup(config: ServerConfig) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    # Single requests are latency-bound: synchronous dispatch avoids a thread hop per call.
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    cache = os.environ.get("BANDITD_JAX_CACHE") or str(pathlib.Path(config.data_dir) / "jax-cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@dataclass
class Running:
    server: grpc.Server
    port: int
    servicer: Servicer
    learner: Learner
    health: health.HealthServicer
    closers: list[Any]

    def stop(self, grace: float = 5.0) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        for c in self.closers:
            c()


def start(config: ServerConfig, *, clock: Callable[[], float] = time.time) -> Running:
    """Start serving in background threads; returns once health reports SERVING.

    ``clock`` is the server's notion of time (decision times, wait windows, commit times):
    tests pass a fake one so windows need no real sleeps."""
    config = config.resolved()
    if config.decision_buffer < 1:
        raise SystemExit(f"--decision-buffer: must be >= 1, got {config.decision_buffer}")
    pathlib.Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    _jax_setup(config)
    if not migrate.is_current(config.database_url):
        log.info("migrating %s", config.database_url)
        migrate.upgrade(config.database_url)
    event_log = SqlEventLog.from_url(config.database_url, clock=clock)
    crash = CrashWindows(config.data_dir)
    if crash.started(event_log.last_decision_time(), clock()):
        log.warning("recovering from an unclean stop")
    replicas: Replicas | None = None
    sig: FeedbackSignal
    if config.redis_url:
        if not config.lease_ttl_s > 0:
            raise SystemExit(f"--lease-ttl-s: must be > 0, got {config.lease_ttl_s}")
        registry = Registry(event_log, acquire_fences=False)
        sig = RedisSignal.from_url(config.redis_url, prefix=config.redis_prefix)
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        replicas = Replicas(
            registry,
            RedisStateStore.from_url(config.redis_url, prefix=config.redis_prefix),
            RedisLease.from_url(config.redis_url, prefix=config.redis_prefix),
            holder,
            lease_ttl_s=config.lease_ttl_s,
        )
        log.info("production mode: Redis %s, replica %s", redacted(config.redis_url), holder)
    else:
        registry = Registry(event_log)
        sig = LocalSignal()
    n = registry.load_all()
    log.info("loaded %d experiments", n)
    learner = Learner(
        registry,
        sig,
        batch=config.learner_batch,
        checkpoint_every=config.checkpoint_every,
        linger_s=config.learner_linger_ms / 1000,
        clock=clock,
        replicas=replicas,
    )

    def commit_decisions(rows: list[Decision]) -> list[bool]:
        skipped = event_log.insert_decisions(rows)
        return [(r.experiment_id, r.event_id) in skipped for r in rows]

    # Rides out a database outage: Selects go on while their decisions wait (up to the bound),
    # written when the database returns. The feedback writer fails fast: Update waits for it.
    decisions: GroupCommitter[Decision, bool] = GroupCommitter(
        "decision-writer",
        commit_decisions,
        max_wait_s=config.decision_flush_ms / 1000,
        retry_on=(Unavailable,),
        max_buffered_rows=config.decision_buffer,
    )
    feedback: GroupCommitter[Feedback, Any] = GroupCommitter(
        "feedback-writer", event_log.insert_feedback, max_wait_s=config.writer_flush_ms / 1000
    )
    servicer = Servicer(
        config, registry, learner, decisions, feedback, hint(sig.notify), clock=clock, orphans=crash
    )
    servicer.shared_log = replicas is not None
    if config.precompile and PRECOMPILE:
        servicer.precompiler = Precompiler(
            select_rows=64, update_rows=min(config.learner_batch, 512)
        )
    for rt in registry.all():  # compile now, before SERVING
        compile_policy(rt.config, rt.policy, len(rt.arms))
        if servicer.precompiler is not None:
            servicer.precompiler.submit(rt.config, rt.policy, len(rt.arms))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers),
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)],
    )
    bandit_pb2_grpc.add_BanditServiceServicer_to_server(servicer, server)
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise SystemExit(f"--port: cannot listen on {config.host}:{config.port}")
    server.start()
    learner.start()
    if replicas is not None:
        replicas.start()
    for name in ("", SERVICE_NAME):
        hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("banditd serving on %s:%d (database %s)", config.host, port, config.database_url)

    def close_all() -> None:
        if servicer.precompiler is not None:
            servicer.precompiler.stop()
        learner.stop()
        # Decisions still buffered with the database down past the writer's grace are lost:
        # the crash marker stays, so the next start opens a crash window over them and their
        # rewards are acknowledged as orphans instead of NOT_FOUND.
        lost = decisions.close()
        feedback.close()
        # Apply what was acknowledged but not yet learned, so a clean stop leaves no backlog
        # (in production, of the experiments this replica learns; the others' learners go on).
        mine = registry.all()
        if replicas is not None:
            led = replicas.learning()
            mine = [rt for rt in mine if rt.exp.id in led]
        for rt in mine:
            try:
                learner.drain(rt)
                registry.checkpoint(rt)
                if replicas is not None:
                    replicas.applied(rt)
                    replicas.publish_due(rt)
            except Unavailable as e:  # the feedback stays pending: the next start applies it
                log.warning("final apply of %s skipped: %s", rt.key, e)
            except Exception:  # noqa: BLE001 - recovery replays it at the next start
                log.exception("final apply of %s failed", rt.key)
        if replicas is not None:
            replicas.stop()
        sig.close()
        event_log.close()
        if lost:
            log.error(
                "%d decisions were not logged (the database was unavailable): the next start "
                "treats this stop as a crash, so rewards for them are acknowledged as orphans",
                lost,
            )
        else:
            crash.stopped()

    return Running(server, port, servicer, learner, hs, [close_all])


def serve(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    running = start(config)
    # What start-up, experiment changes and compiles leave behind (jax, numpy, grpc, traced and
    # compiled programs) lives as long as the process. Frozen, the collector's full passes skip
    # it: unfrozen, each pass walked it for 10-50 ms while every Select waited.
    gc.freeze()
    running.servicer.after_admin = gc.freeze
    if running.servicer.precompiler is not None:
        running.servicer.precompiler.on_idle = gc.freeze
    print(f"banditd listening on {config.host}:{running.port}", flush=True)
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    done.wait()
    log.info("shutting down")
    running.stop()
