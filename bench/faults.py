"""Recovery after faults in production mode: how long until Select reflects new feedback again.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/faults.py [--repeats 5]

Two replicas (``banditd serve --database-url ... --redis-url ...``) on a PostgreSQL cluster and a
redis-server this script starts on free loopback ports (``pg_createcluster`` as in
tests/test_faults_postgres.py; never the machine's servers), dropped at the end. One beta_ts
experiment with 3 arms, a light background load (one Select + Update every 20 ms on each
replica, from threads here).

For each fault, ``--repeats`` times:

* ``FLUSHALL``: Redis loses everything (lease, published state, fence records) while up.
* restart: Redis is killed, stays down ``--down-s``, and comes back empty (no persistence).
* PostgreSQL outage: a fast shutdown, ``--down-s`` down (Updates answer UNAVAILABLE, Selects
  buffer their decisions), then started again.

Recovery is measured from the moment the server is back with nothing (the FLUSHALL returned,
the restarted redis-server answers PING, PostgreSQL accepts connections) to the first Select on
replica B whose ``applied_watermark`` covers a reward acknowledged by replica A *after* that
moment: a new reward went through the log, the learner (whichever replica holds the lease by
then: a takeover rebuilds the state from PostgreSQL) and, when A learns, Redis to B. The
baseline is the same measurement with no fault.
Updates and Selects that failed during the run are counted per RPC.

Then Select latency on a Redis Cluster against a single Redis, same run: two more replicas (their
own database) on a local 3-master cluster (``redis+cluster://``), and open-loop Selects at
``--rate`` per pair (half to each replica) with the same background Select + Update load on
both pairs, in ``--rounds`` rounds alternating single / cluster. Latency runs from the scheduled
send time. Nothing is pinned: both pairs share the machine alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
from common import print_header, table  # noqa: E402
from server_proc import ServerProcess  # noqa: E402
from test_faults_redis import PrivateRedis  # noqa: E402

NS, NAME = "faults", "recovery"
ARMS = ["a", "b", "c"]
P = {"a": 0.2, "b": 0.5, "c": 0.8}


class Load:
    """A Select + Update every ``period`` on each target, from one thread per target."""

    def __init__(self, targets: list[str], period: float = 0.02) -> None:
        self.targets, self.period = targets, period
        self.stop = threading.Event()
        self.failed: dict[str, int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in targets]

    def _run(self, target: str) -> None:
        from banditd.clients import Client
        from banditd.clients.errors import BanditdError

        rng = np.random.default_rng(abs(hash(target)) % 2**32)
        with Client(target, retries=0, timeout=2.0) as c:
            while not self.stop.wait(self.period):
                rpc = "Select"
                try:
                    (d,) = c.select(NS, NAME)
                    rpc = "Update"
                    c.update(NS, NAME, {d.event_id: float(rng.random() < P[d.arm_ids[0]])})
                except BanditdError as e:
                    with self.lock:
                        key = f"{rpc} {type(e).__name__}"
                        self.failed[key] = self.failed.get(key, 0) + 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def recovery(a: str, b: str, since: float, timeout: float = 60.0) -> float:
    """Seconds from ``since`` until a Select on ``b`` covers a reward acked on ``a`` after it."""
    from banditd.clients import Client
    from banditd.clients.errors import BanditdError

    with Client(a, retries=0, timeout=2.0) as ca, Client(b, retries=0, timeout=2.0) as cb:
        seq = None
        while time.monotonic() - since < timeout:
            try:
                if seq is None:
                    (d,) = ca.select(NS, NAME)
                    (ack,) = ca.update(NS, NAME, {d.event_id: 1.0})
                    seq = ack.sequence
                (s,) = cb.select(NS, NAME)
                if s.applied_watermark >= seq:
                    return time.monotonic() - since
            except BanditdError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"no recovery within {timeout} s")


def select_latency(targets: list[str], rate: float, seconds: float) -> np.ndarray:
    """Open loop: Select i at t0 + i/rate to targets[i % len], without waiting for earlier
    answers; ms from each scheduled time to its answer (failed calls: NaN)."""
    import grpc
    from banditd.clients.ids import new_event_id
    from banditd.v1 import bandit_pb2 as pb
    from banditd.v1 import bandit_pb2_grpc as pb_grpc

    channels = [grpc.insecure_channel(t) for t in targets]
    stubs = [pb_grpc.BanditServiceStub(c) for c in channels]
    n = int(rate * seconds)
    lat = np.full(n, np.nan)
    futs = []
    t0 = time.perf_counter() + 0.05
    for i in range(n):
        at = t0 + i / rate
        item = pb.SelectItem(event_id=new_event_id())
        req = pb.SelectRequest(namespace=NS, name=NAME, items=[item])
        while (left := at - time.perf_counter()) > 0:
            time.sleep(left)
        fut = stubs[i % len(stubs)].Select.future(req, timeout=5.0)

        def done(f: Any, i: int = i, at: float = at) -> None:
            if f.code() == grpc.StatusCode.OK:
                lat[i] = (time.perf_counter() - at) * 1e3

        fut.add_done_callback(done)
        futs.append(fut)
    for f in futs:
        with contextlib.suppress(grpc.RpcError):  # counted as NaN by its callback
            f.result()
    for c in channels:
        c.close()
    return lat


def cluster_vs_single(
    args: argparse.Namespace, tmp: pathlib.Path, single: list[str], new_db: Any
) -> None:
    """Select latency on replicas of a 3-master cluster against the single-Redis pair (both on
    the same PostgreSQL server, each pair with its own database)."""
    from banditd.clients import Client
    from test_redis_cluster import LocalCluster

    db_url = new_db()
    (tmp / "cluster").mkdir()
    cluster = LocalCluster(tmp / "cluster")
    procs: list[ServerProcess] = []
    try:
        cluster.start()
        for name in ("c1", "c2"):
            procs.append(
                ServerProcess(
                    tmp / name,
                    "--database-url", db_url,
                    "--redis-url", cluster.url,
                    "--redis-prefix", "bench",
                    env={"BANDITD_LEASE_TTL_S": str(args.lease_ttl_s)},
                ).start()
            )  # fmt: skip
        pair = [p.target for p in procs]
        with Client(pair[0]) as c:
            c.create_experiment(NS, NAME, "beta_ts", ARMS)
        setups = {"single Redis": single, "Redis Cluster (3 masters)": pair}
        lat: dict[str, list[np.ndarray]] = {k: [] for k in setups}
        with Load(single + pair) as load:
            time.sleep(3.0)
            for targets in setups.values():  # warm both pairs' paths
                select_latency(targets, args.rate, 1.0)
            for r in range(args.rounds):
                for k, targets in setups.items():
                    lat[k].append(select_latency(targets, args.rate, args.seconds))
                    x = lat[k][-1]
                    print(f"  round {r + 1} {k}: p50 {np.nanmedian(x):.2f} ms", file=sys.stderr,
                          flush=True)  # fmt: skip
        rows = []
        base = None
        for k, parts in lat.items():
            x = np.concatenate(parts)
            ok = x[np.isfinite(x)]
            p50 = float(np.median(ok))
            base = base or p50
            rows.append({"setup": k, "n": len(x), "failed": int(np.isnan(x).sum()),
                         "p50_ms": p50, "p99_ms": float(np.quantile(ok, 0.99)),
                         "max_ms": float(ok.max()), "p50_vs_single": p50 / base})  # fmt: skip
        print()
        print(f"## Select latency, Redis Cluster vs a single Redis ({args.rate:g} Selects/s per "
              f"pair, open loop, {args.rounds} x {args.seconds:g} s per setup)")  # fmt: skip
        print(table(rows))
        print(f"calls that failed in the background load: {load.failed or 'none'}")
    finally:
        for p in procs:
            p.stop()
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--down-s", type=float, default=2.0, help="how long Redis stays down")
    ap.add_argument("--lease-ttl-s", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=200.0, help="Selects/s per pair (latency)")
    ap.add_argument("--seconds", type=float, default=8.0, help="per latency round and setup")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-cluster", action="store_true", help="skip the cluster latency part")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    import redis
    from banditd.clients import Client
    from test_faults_postgres import PrivateCluster, _skip_reason

    why = _skip_reason()
    if why:
        raise SystemExit(f"cannot start a private PostgreSQL: {why}")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="banditd-bench-faults-"))
    prefix = f"banditd-bench-{uuid.uuid4().hex[:10]}"
    pg = PrivateCluster()
    rds = PrivateRedis(tmp)
    procs: list[ServerProcess] = []
    rows: list[dict[str, Any]] = []
    try:
        pg.create()
        db_url = pg.new_database()
        rds.start()
        for name in ("a", "b"):
            procs.append(
                ServerProcess(
                    tmp / name,
                    "--database-url", db_url,
                    "--redis-url", rds.url,
                    "--redis-prefix", prefix,
                    env={"BANDITD_LEASE_TTL_S": str(args.lease_ttl_s)},
                ).start()
            )  # fmt: skip
        started = time.monotonic()
        a, b = (p.target for p in procs)
        with Client(a) as c:
            c.create_experiment(NS, NAME, "beta_ts", ARMS)
        print_header(
            "recovery after Redis loss and a PostgreSQL outage (production mode, two replicas)",
            extra={
                "servers": f"2 x banditd serve on a private PostgreSQL {pg.version} "
                f"(pg_createcluster, 127.0.0.1:{pg.port}) and a private redis-server "
                f"(127.0.0.1:{rds.port}, no persistence); lease TTL {args.lease_ttl_s:g} s, "
                "precompile on",
                "load": "one Select + Update every 20 ms per replica in the background",
                "repeats": f"{args.repeats} per fault; Redis and PostgreSQL down {args.down_s:g} "
                "s per outage",
            },
            pkgs=("grpcio", "redis", "psycopg", "jax", "numpy"),
        )
        faults = ("no fault (baseline)", "Redis FLUSHALL", "Redis restart", "PostgreSQL outage")
        results: dict[str, list[float]] = {k: [] for k in faults}
        with Load([a, b]) as load:
            # Warm (learner elected, first publications out), and past the servers' first 10 s,
            # in which a Select with a client-chosen id needs the log to rule out a replay.
            time.sleep(max(3.0, started + 11.0 - time.monotonic()))
            for i in range(args.repeats):
                results[faults[0]].append(recovery(a, b, time.monotonic()))
                time.sleep(1.0)
                redis.Redis(port=rds.port).flushall()
                results[faults[1]].append(recovery(a, b, time.monotonic()))
                time.sleep(1.0)
                rds.stop()
                time.sleep(args.down_s)
                results[faults[2]].append(recovery(a, b, rds.start()))
                time.sleep(1.0)
                pg.stop()
                time.sleep(args.down_s)
                starter, up = pg.start_in_background()
                results[faults[3]].append(recovery(a, b, up))
                starter.join()
                print(f"  repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s"
                      for k, v in results.items()), file=sys.stderr, flush=True)  # fmt: skip
                time.sleep(1.0)
        for k, v in results.items():
            x = np.asarray(v)
            rows.append({"fault": k, "n": len(x), "p50_s": float(np.median(x)),
                         "max_s": float(x.max()), "mean_s": float(x.mean())})  # fmt: skip
        print(table(rows))
        print()
        print("recovery: from the server holding nothing again (FLUSHALL returned, the restarted")
        print("redis-server answers PING, PostgreSQL accepts connections) to the first Select on")
        print("replica B that covers a reward acknowledged on replica A after that moment.")
        print(f"calls that failed in the background load: {load.failed or 'none'} (Updates")
        print("answer UNAVAILABLE while PostgreSQL is down, by design; Redis fails nothing)")
        if not args.no_cluster:
            cluster_vs_single(args, tmp, [a, b], pg.new_database)
    finally:
        for p in procs:
            p.stop()
        rds.stop()
        pg.drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
