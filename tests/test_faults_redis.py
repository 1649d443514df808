"""Redis loss in production mode, on a Redis server this test starts on its own loopback port
(never the machine's): FLUSHALL and a restart without persistence, both mid-load. Redis is a
cache; the log is the truth: nothing acknowledged is lost, Updates keep being acknowledged while
Redis is gone, and the replicas end on the exact state the applied rows give."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from banditd.clients import Client
from banditd.store.state_redis import RedisStateStore
from test_replicas import (
    ARMS,
    LOAD,
    NAME,
    NS,
    applied_means,
    assert_same_model,
    check_log,
    free_port,
    replica,
    shared,  # noqa: F401 - the fixture: this test's own database and key prefix
    wait_watermark,
)

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


class PrivateRedis:
    """A redis-server without persistence on a free loopback port, in ``tmp``."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> float:
        """Start it; returns the monotonic time it first answered PING."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return time.monotonic()
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: pathlib.Path) -> Iterator[PrivateRedis]:
    r = PrivateRedis(tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def read_load(outs: list[pathlib.Path]) -> tuple[list, int, dict[str, int]]:
    acked, backwards, failed = [], 0, {}
    for out in outs:
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            if isinstance(rec, dict):
                backwards += rec["backwards"]
                for k, v in rec["failed"].items():
                    failed[k] = failed.get(k, 0) + v
            else:
                eid, arm, v, seq, kind = rec
                assert kind == "reward"
                acked.append((eid, arm, v, seq))
    return acked, backwards, failed


def test_redis_flushall_and_restart_mid_load_lose_nothing(
    tmp_path: pathlib.Path,
    shared: tuple[str, str],  # noqa: F811
    private_redis: PrivateRedis,
) -> None:
    url, prefix = shared
    procs = [replica(tmp_path, n, url, prefix, private_redis.url).start() for n in ("a", "b")]
    loaders: list[subprocess.Popen] = []
    stop = tmp_path / "stop"
    outs = [tmp_path / f"load{i}.jsonl" for i in range(2)]
    try:
        with Client(procs[0].target) as c:
            c.create_experiment(NS, NAME, "beta_ts", ARMS)
        targets = [p.target for p in procs]
        for i in range(2):
            loaders.append(
                subprocess.Popen(
                    [sys.executable, str(LOAD), str(outs[i]), str(stop), str(i), *targets],
                    env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
                )
            )
        time.sleep(2.0)
        r = redis.Redis(port=private_redis.port)
        assert r.dbsize() > 0  # the lease, the published state
        r.flushall()  # everything Redis held, gone mid-load
        time.sleep(2.5)
        private_redis.stop()  # down: no lease, no publication, no signal
        time.sleep(2.0)
        private_redis.start()  # back, empty (no persistence)
        time.sleep(3.0)
        stop.touch()
        for lp in loaders:
            assert lp.wait(60) == 0
        acked, backwards, failed = read_load(outs)
        assert backwards == 0  # no replica ever served an older state version than before
        # Redis is not on the Select or Update path: nothing failed while it was lost or down.
        assert failed == {}, failed
        assert len(acked) >= 100, len(acked)
        top = max(x[3] for x in acked)
        for p in procs:  # learning resumed after the restart and covers every reward
            wait_watermark(p.target, top, timeout=60)
        check_log(url, acked)
        assert_same_model([p.target for p in procs], applied_means(url))
        # ... and Redis holds a complete publication again: a new reader gets every arm.
        client = redis.Redis(port=private_redis.port)
        (key,) = client.scan_iter(match="{" + prefix + ":exp:*}:state")
        exp_id = int(key.decode().split(":exp:")[1].split("}")[0])
        got = RedisStateStore(client, prefix=prefix).get_parts(exp_id)
        assert got is not None and set(range(len(ARMS))) <= set(got.parts), got
        print(f"acked {len(acked)}")
    finally:
        stop.touch()
        for lp in loaders:
            if lp.poll() is None:
                lp.kill()
        for p in procs:
            p.stop()
