"""The asyncio client (``AsyncClient``) against a real in-process banditd server.

Parity with the sync ``Client``: the same public surface (signatures compared), the same results
for the same calls, the same exceptions. Concurrency: many Selects in flight on one client. Retry
safety: a proxy between client and server forwards each request to the server and then fails
the first attempt of every distinct request, so every call is an ambiguous failure the client
must retry -- the log must still hold exactly one decision per event id and one reward per
reward, and a retried Select must return the decision that was recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from banditd.clients import (
    AsyncClient,
    BanditdError,
    Client,
    Decision,
    ExperimentInfo,
    InvalidArgument,
    NotFound,
    Observation,
    Reward,
    Unavailable,
)
from banditd.service.config import ServerConfig
from banditd.service.server import Running, start

NS = "aio"
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Server, and a proxy that fails the first attempt of each request after forwarding it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start(ServerConfig(port=0, data_dir=str(tmp_path_factory.mktemp("aio"))))
    try:
        yield running
    finally:
        running.stop()


def target_of(running: Running) -> str:
    return f"127.0.0.1:{running.port}"


class FlakyProxy(grpc.GenericRpcHandler):
    """Forwards every unary call to ``upstream`` as raw bytes. For the methods in ``fail`` the
    first attempt of each distinct request (same method, same bytes) is forwarded -- the server
    acts on it -- and then answered with the given status instead of the server's answer, as if
    the connection broke on the way back. Counts the attempts per method."""

    def __init__(self, upstream: str, fail: dict[str, grpc.StatusCode]) -> None:
        self.fail = fail
        self.attempts: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._seen: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(upstream)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers((self,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.stop(None)
        self._channel.close()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        full = details.method  # "/banditd.v1.BanditService/Select"
        short = full.rsplit("/", 1)[-1]
        upstream = self._channel.unary_unary(full, None, None)  # bytes in and out

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.attempts[short] += 1
            try:
                answer = upstream(request, timeout=30)
            except grpc.RpcError as e:
                context.abort(e.code(), e.details() or "")
            with self._lock:
                first = (full, request) not in self._seen
                self._seen.add((full, request))
                fail = first and short in self.fail
                if fail:
                    self.failed[short] += 1
            if fail:
                context.abort(self.fail[short], "proxy: connection reset after the server answered")
            return answer

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture
def proxy_factory(server: Running) -> Iterator[Callable[[dict[str, grpc.StatusCode]], FlakyProxy]]:
    made: list[FlakyProxy] = []

    def make(fail: dict[str, grpc.StatusCode]) -> FlakyProxy:
        p = FlakyProxy(target_of(server), fail)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def runtime(running: Running, name: str) -> Any:
    rt = running.servicer.registry.get(NS, name)
    assert rt is not None, name
    return rt


def settle(running: Running, name: str) -> None:
    """Commit queued decisions and apply every ready feedback row now."""
    running.servicer.decisions.flush()
    running.learner.drain(runtime(running, name))


def log_counts(running: Running, name: str) -> tuple[int, dict[str, int]]:
    """(decisions, feedback rows per kind) in the server's event log."""
    running.servicer.decisions.flush()
    rt = runtime(running, name)
    c = running.servicer.log.counts(rt.exp.id)
    return c.decisions, {k: v for k, v in c.feedback.items() if v}


def logged_arms(running: Running, name: str, event_ids: list[str]) -> dict[str, tuple[str, ...]]:
    """The arm ids recorded for each event id."""
    running.servicer.decisions.flush()
    rt = runtime(running, name)
    log = running.servicer.log
    by_slot = {a.slot: a.arm_id for a in log.list_arms(rt.exp.id)}
    rows = log.get_decisions(rt.exp.id, event_ids)
    return {e: tuple(by_slot[s] for s in r.chosen) for e, r in rows.items()}


def fast_async(target: str, **kw: Any) -> AsyncClient:
    return AsyncClient(target, timeout=30, backoff=0.005, max_backoff=0.02, **kw)


def fast_sync(target: str, **kw: Any) -> Client:
    return Client(target, timeout=30, backoff=0.005, max_backoff=0.02, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Surface parity


def _public_methods(cls: type) -> dict[str, Any]:
    return {
        n: m
        for n, m in inspect.getmembers(cls, inspect.isfunction)
        if not n.startswith("_") or n == "__init__"
    }


def test_async_client_has_exactly_the_sync_surface() -> None:
    sync, aio = _public_methods(Client), _public_methods(AsyncClient)
    assert sorted(aio) == sorted(sync), "method names differ"
    assert len(sync) >= 10  # close, wait_ready, 4 experiment calls, select, update, ...
    for name in sorted(sync):
        s, a = inspect.signature(sync[name]), inspect.signature(aio[name])
        s_params = [(p.name, p.kind, p.default, p.annotation) for p in s.parameters.values()]
        a_params = [(p.name, p.kind, p.default, p.annotation) for p in a.parameters.values()]
        assert a_params == s_params, f"{name}: parameters differ"
        assert a.return_annotation == s.return_annotation, f"{name}: return types differ"
        if name != "__init__":
            assert inspect.iscoroutinefunction(aio[name]), f"{name} is not a coroutine function"
    # Same attributes, and the async context manager in place of the sync one.
    c = AsyncClient("127.0.0.1:1", timeout=3, retries=2, backoff=0.1, max_backoff=1.0)
    s_client = Client("127.0.0.1:1", timeout=3, retries=2, backoff=0.1, max_backoff=1.0)
    for attr in ("target", "timeout", "retries", "backoff", "max_backoff"):
        assert getattr(c, attr) == getattr(s_client, attr)
    s_client.close()
    assert inspect.iscoroutinefunction(AsyncClient.__aenter__)
    assert inspect.iscoroutinefunction(AsyncClient.__aexit__)
    assert repr(c) == "AsyncClient('127.0.0.1:1', timeout=3, retries=2)"


def test_constructor_checks_match_the_sync_client() -> None:
    kws: list[dict[str, Any]] = [{"timeout": 0}, {"retries": -1}]
    for kw in kws:
        with pytest.raises(ValueError) as s_err:
            Client("127.0.0.1:1", **kw)
        with pytest.raises(ValueError) as a_err:
            AsyncClient("127.0.0.1:1", **kw)
        assert str(a_err.value) == str(s_err.value)


# ---------------------------------------------------------------------------------------------
# Same calls, same results


def _without(info: ExperimentInfo, **fields: Any) -> ExperimentInfo:
    return dataclasses.replace(info, **fields)


def test_same_results_as_the_sync_client(server: Running) -> None:
    target = target_of(server)
    sync = fast_sync(target)
    create_kw: dict[str, Any] = dict(
        hyperparameters={"prior_a": 2.0},
        wait_window=60.0,
        default_reward=0.0,
        arm_metadata={"a": {"cost": 0.5}},
    )

    async def main() -> None:
        async with fast_async(target) as c:
            await c.wait_ready(timeout=30)
            # create: twin experiments, one per client, compare all but the name and times.
            made = await c.create_experiment(NS, "eq-a", "beta_ts", ["a", "b", "c"], **create_kw)
            twin = sync.create_experiment(NS, "eq-s", "beta_ts", ["a", "b", "c"], **create_kw)
            blank = {"name": "", "create_time": None, "update_time": None}
            assert _without(made, **blank) == _without(twin, **blank)
            assert made.hyperparameters["prior_a"] == 2.0 and made.wait_window == 60.0

            # reads of one experiment agree exactly
            assert await c.get_experiment(NS, "eq-a") == sync.get_experiment(NS, "eq-a")
            a_list = await c.list_experiments(NS)
            assert a_list == sync.list_experiments(NS)
            assert {"eq-a", "eq-s"} <= {e.name for e in a_list}

            # select: the same event ids through the sync client replay the async decisions
            ctx_free = await c.select(NS, "eq-a", 5, unit_ids="u1")
            assert all(isinstance(d, Decision) and not d.replayed for d in ctx_free)
            again = sync.select(NS, "eq-a", 5, event_ids=[d.event_id for d in ctx_free])
            assert all(d.replayed for d in again)
            assert [dataclasses.replace(d, replayed=False) for d in again] == ctx_free
            # and the other way round
            s_dec = sync.select(NS, "eq-a", 3, eligible=["a", "b"])
            a_again = await c.select(NS, "eq-a", 3, event_ids=[d.event_id for d in s_dec])
            assert [dataclasses.replace(d, replayed=False) for d in a_again] == s_dec
            assert {d.arm_id for d in s_dec} <= {"a", "b"}

            # update: the same reward ids give the same (first) acks through either client
            rewards = [
                Reward(d.event_id, float(i % 2), reward_id=f"r-{d.event_id}")
                for i, d in enumerate(ctx_free)
            ]
            a_acks = await c.update(NS, "eq-a", rewards)
            assert [a.kind for a in a_acks] == ["reward"] * 5
            assert sync.update(NS, "eq-a", rewards) == a_acks
            # a second reward for a rewarded event: a duplicate for both clients alike
            [a_dup] = await c.update(NS, "eq-a", {ctx_free[0].event_id: 1.0})
            [s_dup] = sync.update(NS, "eq-a", {ctx_free[0].event_id: 1.0})
            assert a_dup.kind == s_dup.kind == "duplicate" and a_dup.duplicate
            assert (a_dup.event_id, a_dup.duplicate) == (s_dup.event_id, s_dup.duplicate)
            # direct observations
            [obs] = await c.update(NS, "eq-a", observations=[Observation("b", 1.0)])
            assert obs.kind == "observation"

            # update_experiment, then both clients see the same experiment
            upd = await c.update_experiment(NS, "eq-a", epsilon=0.1, arm_metadata=None)
            assert not upd.new_revision and upd.experiment.epsilon == pytest.approx(0.1)
            assert upd.experiment == sync.get_experiment(NS, "eq-a")
            s_upd = sync.update_experiment(NS, "eq-s", epsilon=0.1)
            assert _without(upd.experiment, **blank, version=0) == _without(
                s_upd.experiment, **blank, version=0
            )

            # activate: deferred decisions, half activated by each client
            deferred = await c.select(NS, "eq-a", 4, deferred=True)
            assert all(d.deferred for d in deferred)
            ids = [d.event_id for d in deferred]
            assert await c.activate(NS, "eq-a", ids[:2]) == 2
            assert sync.activate(NS, "eq-a", ids[2:]) == 2
            assert await c.activate(NS, "eq-a", ids[0]) == sync.activate(NS, "eq-a", ids[1])

            # stats agree once nothing is left to apply
            settle(server, "eq-a")
            a_stats = await c.stats(NS, "eq-a")
            assert a_stats == sync.stats(NS, "eq-a")
            assert a_stats.decisions == 12 and a_stats.feedback.rewards == 5

    try:
        run(main())
    finally:
        sync.close()


def test_errors_are_the_sync_client_errors(server: Running, proxy_factory) -> None:
    proxy = proxy_factory({})  # counts attempts, fails nothing
    sync = fast_sync(proxy.target, retries=3)
    sync.create_experiment(NS, "err", "beta_ts", ["a", "b"])
    [d] = sync.select(NS, "err")

    # each call fails without retry: (callable on a client, expected type)
    cases: list[tuple[str, Callable[[Any], Any], type[BanditdError]]] = [
        ("Update", lambda c: c.update(NS, "err", {d.event_id: 2.0}), InvalidArgument),
        ("Select", lambda c: c.select(NS, "err", [[1.0, 2.0]]), InvalidArgument),
        ("GetExperiment", lambda c: c.get_experiment(NS, "missing"), NotFound),
        ("CreateExperiment", lambda c: c.create_experiment(NS, "x", "nope", ["a"]), BanditdError),
    ]

    async def main() -> None:
        # backoff of 5 s: a retry would be seen in the elapsed time as well as in the count
        async with AsyncClient(proxy.target, retries=3, backoff=5.0, max_backoff=5.0) as c:
            fields_seen: dict[str, str | None] = {}
            for method, call, kind in cases:
                with pytest.raises(BanditdError) as s_err:
                    call(sync)
                before = proxy.attempts[method]
                t0 = time.monotonic()
                with pytest.raises(BanditdError) as a_err:
                    await call(c)
                assert time.monotonic() - t0 < 2.0, method
                assert proxy.attempts[method] == before + 1, f"{method} was retried"
                got, want = a_err.value, s_err.value
                assert isinstance(got, kind), (method, got)
                assert type(got) is type(want)
                assert (got.code, got.field, str(got)) == (want.code, want.field, str(want))
                fields_seen[method] = got.field
            # the server named the offending field of each invalid request
            assert fields_seen["Update"] == "rewards[0].value", fields_seen
            assert str(fields_seen["Select"]).startswith("items[0]"), fields_seen
            # errors found before any request: same type and message, nothing sent
            sent = sum(proxy.attempts.values())
            for bad in (
                lambda c: c.select(NS, "err", 2, event_ids=["e1", "e1"]),
                lambda c: c.update(NS, "err", {}),
                lambda c: c.activate(NS, "err", []),
                lambda c: c.create_experiment(NS, "x", "beta_ts", ["a"], reward_kind="money"),
            ):
                with pytest.raises(InvalidArgument) as s_err:
                    bad(sync)
                with pytest.raises(InvalidArgument) as a_err:
                    await bad(c)
                assert str(a_err.value) == str(s_err.value)
                assert a_err.value.field == s_err.value.field is not None
            assert sum(proxy.attempts.values()) == sent

    try:
        run(main())
    finally:
        sync.close()


def test_wait_ready_times_out_without_a_server() -> None:
    async def main() -> None:
        async with AsyncClient(f"127.0.0.1:{_free_port()}") as c:
            t0 = time.monotonic()
            with pytest.raises(Unavailable, match="not serving"):
                await c.wait_ready(timeout=0.5)
            assert time.monotonic() - t0 < 5

    run(main())


def test_unreachable_server_is_retried_then_unavailable() -> None:
    """Retries wait with asyncio.sleep: other tasks keep running while a call backs off."""
    beats: list[float] = []

    async def heartbeat(stop: asyncio.Event) -> None:
        while not stop.is_set():
            beats.append(time.monotonic())
            await asyncio.sleep(0.005)

    async def main() -> None:
        async with AsyncClient(
            f"127.0.0.1:{_free_port()}", timeout=2, retries=2, backoff=0.5, max_backoff=0.5
        ) as c:
            stop = asyncio.Event()
            hb = asyncio.create_task(heartbeat(stop))
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                await c.stats(NS, "x")
            elapsed = time.monotonic() - t0
            stop.set()
            await hb
        # two backoffs of 0.25-0.5 s each: the retries happened...
        assert elapsed >= 0.5
        # ...and did not block the loop (a blocking sleep would stop the heartbeat for >= 0.25 s)
        gaps = np.diff(beats)
        assert len(beats) > 20 and gaps.max() < 0.2, gaps.max()

    run(main())


# ---------------------------------------------------------------------------------------------
# Concurrency


def test_200_concurrent_selects_on_one_client(server: Running) -> None:
    target = target_of(server)
    with fast_sync(target) as sync:
        sync.create_experiment(NS, "conc", "beta_ts", ["a", "b", "c", "d"])

    async def main() -> list[list[Decision]]:
        async with fast_async(target) as c:
            return await asyncio.gather(*(c.select(NS, "conc") for _ in range(200)))

    results = run(main())
    assert all(len(r) == 1 for r in results)
    decisions = [r[0] for r in results]
    ids = [d.event_id for d in decisions]
    assert len(set(ids)) == 200
    assert not any(d.replayed for d in decisions)
    decided, _ = log_counts(server, "conc")
    assert decided == 200
    recorded = logged_arms(server, "conc", ids)
    assert {e: d.arm_ids for e, d in zip(ids, decisions, strict=True)} == recorded


# ---------------------------------------------------------------------------------------------
# Retry safety


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED],
    ids=lambda c: c.name,
)
def test_ambiguous_failures_are_retried_without_duplicates(
    server: Running, proxy_factory, code: grpc.StatusCode
) -> None:
    name = f"retry-{code.name.lower()}"
    with fast_sync(target_of(server)) as direct:
        direct.create_experiment(NS, name, "beta_ts", ["a", "b", "c"])
    proxy = proxy_factory({m: code for m in ("Select", "Update", "GetStats", "Activate")})

    async def main() -> tuple[list[Decision], list[Decision], Any, Any]:
        async with fast_async(proxy.target) as c:
            singles = await asyncio.gather(*(c.select(NS, name) for _ in range(20)))
            batch = await c.select(NS, name, 10, unit_ids="u")
            deferred = await c.select(NS, name, 2, deferred=True)
            decisions = [d for r in singles for d in r] + batch
            acks = await asyncio.gather(
                *(c.update(NS, name, {d.event_id: 1.0}) for d in decisions[:20]),
                c.update(NS, name, [(d.event_id, 0.0) for d in decisions[20:]]),
            )
            await c.activate(NS, name, [d.event_id for d in deferred])
            settle(server, name)
            stats = await c.stats(NS, name)
            return decisions, deferred, acks, stats

    decisions, deferred, acks, stats = run(main())
    # every call failed once after the server acted, and was retried once
    assert proxy.failed == Counter({"Select": 22, "Update": 21, "GetStats": 1, "Activate": 1})
    assert proxy.attempts == Counter({"Select": 44, "Update": 42, "GetStats": 2, "Activate": 2})
    # Select: the retry returned the recorded decision, and nothing was decided twice
    assert all(d.replayed for d in decisions + deferred)
    ids = [d.event_id for d in decisions + deferred]
    assert len(set(ids)) == 32
    recorded = logged_arms(server, name, ids)
    assert {d.event_id: d.arm_ids for d in decisions + deferred} == recorded
    # Update: the retry was acknowledged with the first attempt's acks, nothing applied twice
    flat = [a for group in acks for a in group]
    assert [a.kind for a in flat] == ["reward"] * 30
    # Activate: applied by the first attempt; the retry finds nothing left to activate (its
    # count is the retry's, as with the sync client), and the decisions are activated once.
    rt = runtime(server, name)
    rows = server.servicer.log.get_decisions(rt.exp.id, [d.event_id for d in deferred])
    assert len(rows) == 2 and not any(r.deferred for r in rows.values())
    decided, feedback = log_counts(server, name)
    assert decided == 32
    assert feedback == {"reward": 30}
    assert stats.decisions == 32 and stats.feedback.rewards == 30
    assert stats.feedback.duplicates == 0
    assert sum(a.rewards for a in stats.arms) == 30


def test_create_after_an_ambiguous_failure_accepts_its_own_experiment(
    server: Running, proxy_factory
) -> None:
    proxy = proxy_factory({"CreateExperiment": grpc.StatusCode.UNAVAILABLE,
                           "GetExperiment": grpc.StatusCode.UNAVAILABLE})  # fmt: skip

    async def main() -> ExperimentInfo:
        async with fast_async(proxy.target) as c:
            return await c.create_experiment(NS, "created", "beta_ts", ["a", "b"])

    info = run(main())
    assert info.name == "created" and info.arm_ids == ("a", "b")
    # created by the first attempt; the retry saw ALREADY_EXISTS and found it is ours
    assert proxy.attempts["CreateExperiment"] == 2
    assert proxy.attempts["GetExperiment"] == 2

    # Not retried on DEADLINE_EXCEEDED: without a client id the outcome cannot be reconciled.
    proxy2 = proxy_factory({"CreateExperiment": grpc.StatusCode.DEADLINE_EXCEEDED})

    async def slow() -> None:
        async with fast_async(proxy2.target) as c:
            await c.create_experiment(NS, "created-2", "beta_ts", ["a", "b"])

    with pytest.raises(BanditdError) as err:
        run(slow())
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert proxy2.attempts["CreateExperiment"] == 1


def test_observations_are_not_retried_after_an_ambiguous_failure(
    server: Running, proxy_factory
) -> None:
    with fast_sync(target_of(server)) as direct:
        direct.create_experiment(NS, "obs", "beta_ts", ["a", "b"])
    proxy = proxy_factory({"Update": grpc.StatusCode.DEADLINE_EXCEEDED})

    async def main() -> None:
        async with fast_async(proxy.target) as c:
            await c.update(NS, "obs", observations=[Observation("a", 1.0)])

    with pytest.raises(BanditdError) as err:
        run(main())
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert proxy.attempts["Update"] == 1
    assert log_counts(server, "obs")[1] == {"observation": 1}  # applied once, not twice


def test_retries_give_up_after_the_budget(server: Running, proxy_factory) -> None:
    with fast_sync(target_of(server)) as direct:
        direct.create_experiment(NS, "budget", "beta_ts", ["a", "b"])

    class AlwaysFail(FlakyProxy):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
                with self._lock:
                    self.attempts[details.method.rsplit("/", 1)[-1]] += 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: down")

            return grpc.unary_unary_rpc_method_handler(handle)

    proxy = AlwaysFail(target_of(server), {})
    try:

        async def main() -> None:
            async with fast_async(proxy.target, retries=2) as c:
                await c.select(NS, "budget")

        with pytest.raises(Unavailable, match="UNAVAILABLE: proxy: down"):
            run(main())
        assert proxy.attempts["Select"] == 3
    finally:
        proxy.close()
