"""Production mode (two replicas on Redis + PostgreSQL) against the embedded default, one run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/replicas.py [--seconds N] [--quick]

Everything on 127.0.0.1, in one run, with the same workload on both setups:

* embedded: ``banditd serve --port 0 --data-dir D --no-precompile`` (SQLite event log +
  in-process state).
* production: replicas A and B, each ``banditd serve --port 0 --data-dir D --database-url
  postgresql+psycopg://.../<fresh db> --redis-url redis://127.0.0.1:6379/0 --redis-prefix <fresh>
  --no-precompile``, sharing one PostgreSQL database (created here, dropped at the end) and one
  Redis key prefix (its keys deleted at the end). One of them learns the experiment (Redis lease)
  and publishes the state to Redis; the other polls it.
* One experiment on each setup: beta_ts, 10 arms (state float64: the server runs JAX with x64),
  created on the embedded server and on replica A (B loads it from the log on first use).
  Bernoulli rewards with arm-dependent means. Every request is what ``banditd.clients.Client``
  sends (a client-generated UUIDv7 event id per Select item, a reward id per reward).

Measurements (this process is the load generator):

1. Select latency under Update load. Open loop: Select i (1 item) is scheduled at t0 + i/rate and
   sent then without waiting for earlier answers (``stub.future``); latency = completion time -
   scheduled time, so a stalled server cannot hide queueing. The same total rate goes to each
   setup: all of it to the embedded server, half to A and half to B (alternating). Every
   decision (``--reward-fraction``: that share of them, at random; 0 = Selects alone) is
   rewarded by a second thread per server, on the server that made it, as soon as the Select
   returns (one Update per call carrying every reward queued meanwhile, <= 100). The
   time is split in ``--rounds`` rounds alternating embedded / production, so slow drift of the
   machine's load hits both alike. Production Selects are also classed by the role their replica
   had when each was sent (learner or follower: the lease holder, polled every 20 ms).
2. Update throughput: ``--threads`` client threads (production: half on A, half on B), closed
   loop, each call rewarding 1 or 100 decisions made beforehand (untimed Selects of 1,000 items
   on the server that is rewarded); acknowledged rewards/s, and how long after the last ack the
   learner had applied everything (every server's Select watermark >= the highest ack).
3. Freshness: an Update (1 reward) on one server, then from its ack a Select on the other one
   every ``--poll-ms`` until it answers ``applied_watermark >= the ack's sequence``; the time
   from ack to that answer. A -> B and B -> A (one of the two replicas is the learner, the
   output says which), the learner's own replica (ack and Select on it: its part of the path),
   and embedded (ack -> Select on the same server) as the baseline. Samples one after the
   other, a random 0-10 ms apart (no lock-step with the replicas' timers).

Learner takeovers (the lease's fence counter, which grows by one on each) are counted per phase:
with both replicas alive there should be one, at the start.

Default run about 3 minutes; ``--quick`` about one (3 s of Selects per setup, 1.5 s throughput
rows, 100 freshness samples, only embedded and A -> B): a smoke test, not a measurement.

All server processes are pinned to one CPU and this generator to another (``--no-pin``: none;
``--core-per-replica``: replica B shares the generator's CPU instead of A's, as replicas on
their own hosts would not share one core);
PostgreSQL and Redis are the machine's own services and float. Per phase, a CPU table gives what
each server, this process, PostgreSQL + Redis and everything else on the machine used.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import pathlib
import queue
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import latency  # noqa: E402
import numpy as np  # noqa: E402
from common import print_header, table  # noqa: E402
from latency import (  # noqa: E402
    Child,
    _child_env,
    _machine_busy,
    _pin_process,
    _proc_cpu,
    log,
    quiesce,
)

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
REDIS_URL = "redis://127.0.0.1:6379/0"
NS, NAME = "bench", "replicas"
FAMILY = "beta_ts"
ARMS = [f"arm{i}" for i in range(10)]
P_ARM = {a: 0.05 + 0.08 * i for i, a in enumerate(ARMS)}
PREDECIDE = 1000  # items per untimed Select that makes decisions to reward later
UPDATE_MAX = 100  # rewards per Update call from the rewarder of the latency phase
P50_RATIO_MAX = 1.5
FRESH_P99_MS = 100.0


# --- processes and CPU -----------------------------------------------------------------------


def _pin_pid(pid: int, cpus: list[int]) -> None:
    """Pin every current thread of ``pid``; threads it starts later inherit the mask."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


def _service_pids() -> list[int]:
    """PostgreSQL and Redis server processes on this machine (all their clients, not only ours)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith(("postgres", "redis-server")):
            out.append(int(p))
    return out


class Meter(latency.Meter):
    """latency's CPU meter, plus the machine's PostgreSQL and Redis servers in a column."""

    def start(self) -> None:
        self.svc = {p: _proc_cpu(p) for p in _service_pids()}
        super().start()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.t, 1e-9)
        svc = sum(_proc_cpu(p) - self.svc.get(p, 0.0) for p in _service_pids())
        out = super().stop()
        other = out.pop("other")  # keep "other" the last column
        out["postgres+redis"] = max(svc, 0.0) / wall
        out["other"] = max(other - out["postgres+redis"], 0.0)
        return out


@dataclass
class Server:
    name: str  # "embedded", "A", "B"
    child: Child
    channel: Any = None
    stub: Any = None

    @property
    def target(self) -> str:
        return self.child.target

    def connect(self) -> None:
        import grpc
        from banditd.v1 import bandit_pb2_grpc as pb_grpc

        self.channel = grpc.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.stub = pb_grpc.BanditServiceStub(self.channel)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def _select_req(items: int = 1) -> Any:
    from banditd.clients.ids import new_event_id
    from banditd.v1 import bandit_pb2 as pb

    return pb.SelectRequest(
        namespace=NS,
        name=NAME,
        items=[pb.SelectItem(event_id=new_event_id()) for _ in range(items)],
    )


def _update_req(rewards: list[tuple[str, float]]) -> Any:
    from banditd.clients.ids import new_event_id
    from banditd.v1 import bandit_pb2 as pb

    return pb.UpdateRequest(
        namespace=NS,
        name=NAME,
        rewards=[pb.Reward(event_id=e, value=v, reward_id=new_event_id()) for e, v in rewards],
    )


def _reward_for(arm: str) -> float:
    return float(random.random() < P_ARM[arm])


def predecide(srv: Server, n: int, timeout: float) -> list[tuple[str, str]]:
    """``n`` decisions on ``srv`` (Selects of PREDECIDE items): [(event_id, arm)]."""
    out: list[tuple[str, str]] = []
    while len(out) < n:
        resp = srv.stub.Select(_select_req(min(PREDECIDE, n - len(out))), timeout=timeout)
        out += [(d.event_id, d.arm_ids[0]) for d in resp.decisions]
    return out


def _each(fn: Any, items: list[Any]) -> list[Any]:
    """``fn(item)`` for every item at once, one thread each; the first error is raised."""
    with ThreadPoolExecutor(max_workers=max(len(items), 1)) as ex:
        return list(ex.map(fn, items))


def predecide_all(servers: list[Server], n: int, timeout: float) -> dict[str, list]:
    """``predecide`` on every server at once (one thread each)."""
    got = _each(lambda s: predecide(s, n, timeout), servers)
    return {s.name: g for s, g in zip(servers, got, strict=True)}


def watermark(srv: Server, timeout: float) -> int:
    return int(srv.stub.Select(_select_req(), timeout=timeout).decisions[0].applied_watermark)


def wait_applied(servers: list[Server], top: int, timeout: float, poll: float = 0.005) -> float:
    """Seconds until every server's Select reports a watermark >= top (nan on timeout)."""
    t0 = time.perf_counter()
    left = list(servers)
    while left and time.perf_counter() - t0 < timeout:
        left = [s for s in left if watermark(s, 10.0) < top]
        if left:
            time.sleep(poll)
    return float("nan") if left else time.perf_counter() - t0


def leader(prefix: str, servers: list[Server]) -> str:
    """Which replica holds the experiment's learner lease (from its Redis key)."""
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(match="{" + prefix + ":exp:*}:lease", count=1000))
        holders = [r.hget(k, "holder") for k in keys]
    finally:
        r.close()
    names = []
    for h in holders:
        if h is None:
            continue
        pid = int(h.decode().split(":")[1])
        names += [s.name for s in servers if s.child.proc is not None and s.child.pid == pid]
    return ",".join(names) or "none"


def takeovers(prefix: str) -> int:
    """Learner takeovers so far: the lease's fence counter (INCRed on every takeover, the first
    one included), summed over the experiments under ``prefix``."""
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(match="{" + prefix + ":exp:*}:lease_fence", count=1000))
        return sum(int(v) for v in r.mget(keys) if v is not None) if keys else 0
    finally:
        r.close()


class LeaseWatch:
    """Polls the experiment's learner lease holder every ``every`` seconds in a thread, so each
    Select can be classed by the role its replica had when it was sent."""

    def __init__(self, prefix: str, servers: list[Server], every: float = 0.02) -> None:
        self.prefix = prefix
        self.by_pid = {s.child.pid: s.name for s in servers}
        self.every = every
        self.t: list[float] = []
        self.who: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(r.scan_iter(match="{" + self.prefix + ":exp:*}:lease", count=1000))
            key = keys[0] if keys else None
            while not self._stop.is_set():
                h = r.hget(key, "holder") if key is not None else None
                name = "none"
                if h is not None:
                    name = self.by_pid.get(int(h.decode().split(":")[1]), "other")
                self.t.append(time.perf_counter())
                self.who.append(name)
                self._stop.wait(self.every)
        finally:
            r.close()

    def holder_at(self, times: np.ndarray) -> np.ndarray:
        """The holder seen by the last poll at or before each time (the first poll's before)."""
        if not self.t:
            return np.full(len(times), "none", dtype=object)
        i = np.searchsorted(np.array(self.t), times, side="right") - 1
        return np.array(self.who, dtype=object)[np.clip(i, 0, len(self.who) - 1)]


# --- phase 1: Select latency under Update load -----------------------------------------------


@dataclass
class LatencyRow:
    setup: str
    servers: list[str]
    rate: float
    lat_ms: dict[str, list[np.ndarray]] = field(default_factory=dict)
    upd_ms: dict[str, list[float]] = field(default_factory=dict)
    upd_calls: int = 0
    rewards_acked: int = 0
    top_seq: dict[str, int] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    details: set = field(default_factory=set)
    catchup_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""
    cpu: list[dict[str, float]] = field(default_factory=list)
    takeovers: int = 0
    role_lat: dict[str, list[np.ndarray]] = field(default_factory=dict)


def select_with_rewards(
    row: LatencyRow,
    servers: list[Server],
    rate: float,
    seconds: float,
    meter: Meter,
    timeout: float,
    backlog_s: float = 2.0,
    watch: LeaseWatch | None = None,
    reward_fraction: float = 1.0,
) -> None:
    """Open-loop Selects over ``servers`` (round robin) at ``rate``, each decision rewarded on
    the server that made it by that server's rewarder thread. Appends to ``row`` (with
    ``watch``: also by the role of the replica, learner or follower, when the Select was sent)."""
    import grpc

    n = max(int(round(rate * seconds)), 1)
    period = 1.0 / rate
    who = [i % len(servers) for i in range(n)]
    t_done = np.full(n, np.nan)
    ok = np.zeros(n, bool)
    done: list[int] = []
    lock = threading.Lock()
    queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in servers]
    stop = threading.Event()
    upd_ms: list[list[float]] = [[] for _ in servers]
    acked = [0] * len(servers)
    calls = [0] * len(servers)
    top = [0] * len(servers)
    OK = grpc.StatusCode.OK

    def on_done(fut: Any, i: int) -> None:
        t_done[i] = time.perf_counter()
        try:
            if fut.code() is OK:
                ok[i] = True
                d = fut.result().decisions[0]
                if reward_fraction >= 1.0 or random.random() < reward_fraction:
                    queues[who[i]].put((d.event_id, _reward_for(d.arm_ids[0])))
            else:
                with lock:
                    row.errors[f"Select {fut.code().name}"] += 1
                    if len(row.details) < 4:
                        row.details.add(f"Select {fut.code().name}: {fut.details()}")
        except Exception as e:  # noqa: BLE001 - counted
            with lock:
                row.errors["Select CLIENT_ERROR"] += 1
                row.details.add(f"Select client error: {e!r}"[:200])
        finally:
            done.append(i)

    def rewarder(k: int) -> None:
        q, srv = queues[k], servers[k]
        while True:
            try:
                first = q.get(timeout=0.005)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < UPDATE_MAX:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            t = time.perf_counter()
            try:
                resp = srv.stub.Update(_update_req(batch), timeout=timeout)
            except grpc.RpcError as e:
                with lock:
                    row.errors[f"Update {e.code().name}"] += 1
                    if len(row.details) < 4:
                        row.details.add(f"Update {e.code().name}: {e.details()}")
                continue
            upd_ms[k].append((time.perf_counter() - t) * 1e3)
            calls[k] += 1
            acked[k] += sum(1 for a in resp.acks if not a.duplicate)
            top[k] = max(top[k], *(a.sequence for a in resp.acks))

    threads = [
        threading.Thread(target=rewarder, args=(k,), daemon=True) for k in range(len(servers))
    ]
    for t in threads:
        t.start()
    stopped = ""
    sent = 0
    gc.collect()
    gc.disable()
    meter.start()
    t0 = time.perf_counter() + 0.005
    for i in range(n):
        ts = t0 + i * period
        delay = ts - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        req = _select_req()
        now = time.perf_counter()
        if now - ts > backlog_s or sent - len(done) > max(rate * backlog_s, 100):
            stopped = f"stopped at {now - t0:.1f} s: > {backlog_s:g} s behind"
            break
        fut = servers[who[i]].stub.Select.future(req, timeout=timeout)
        fut.add_done_callback(functools.partial(on_done, i=i))
        sent += 1
    deadline = time.perf_counter() + timeout + 5
    while len(done) < sent and time.perf_counter() < deadline:
        time.sleep(0.002)
    stop.set()
    for t in threads:
        t.join(timeout + 5)
    row.cpu.append(meter.stop())
    gc.enable()
    t_end = time.perf_counter()
    fin = t_done[:sent]
    missing = np.isnan(fin)
    if missing.any():
        row.errors["Select NO_ANSWER"] += int(missing.sum())
        fin = np.where(missing, t_end, fin)
    t_sched = t0 + np.arange(sent) * period
    lat = (fin - t_sched) * 1e3
    w = np.array(who[:sent])
    if watch is not None:
        holder = watch.holder_at(t_sched)
        names = np.array([servers[k].name for k in w], dtype=object)
        role = np.where(holder == names, "learner", "follower")
        for rl in ("learner", "follower"):
            row.role_lat.setdefault(rl, []).append(lat[role == rl])
    for k, s in enumerate(servers):
        row.lat_ms.setdefault(s.name, []).append(lat[w == k])
        row.upd_ms.setdefault(s.name, []).extend(upd_ms[k])
        row.top_seq[s.name] = max(row.top_seq.get(s.name, 0), top[k])
    row.upd_calls += sum(calls)
    row.rewards_acked += sum(acked)
    row.seconds += seconds
    if stopped:
        row.stopped = stopped
    # The learner catching up with every acknowledged reward, seen by every server.
    row.catchup_s.append(wait_applied(servers, max(top), timeout=30.0))


# --- phase 2: Update throughput --------------------------------------------------------------


def update_throughput(
    servers: list[Server],
    ids: dict[str, list[tuple[str, str]]],
    batch: int,
    threads: int,
    seconds: float,
    meter: Meter,
    timeout: float,
) -> dict[str, Any]:
    """``threads`` closed-loop senders (spread over ``servers``), ``batch`` rewards per Update,
    for ``seconds``; each server's decisions rewarded on that server."""
    import grpc

    per = [max(threads // len(servers), 1)] * len(servers)
    jobs = []
    for k, s in enumerate(servers):
        pool = ids[s.name]
        chunk = len(pool) // per[k]
        jobs += [(s, pool[j * chunk : (j + 1) * chunk]) for j in range(per[k])]
    acked = [0] * len(jobs)
    calls = [0] * len(jobs)
    tops = [0] * len(jobs)
    lat: list[list[float]] = [[] for _ in jobs]
    last = [0.0] * len(jobs)
    ran_out = [False] * len(jobs)
    errs: Counter = Counter()
    details: set = set()
    lock = threading.Lock()
    start = threading.Barrier(len(jobs) + 1)
    t0_box: list[float] = []

    def sender(j: int) -> None:
        srv, mine = jobs[j]
        start.wait()
        t_stop = t0_box[0] + seconds
        pos = 0
        while time.perf_counter() < t_stop:
            if pos + batch > len(mine):
                ran_out[j] = True
                break
            rewards = [(e, _reward_for(a)) for e, a in mine[pos : pos + batch]]
            pos += batch
            req = _update_req(rewards)
            t = time.perf_counter()
            try:
                resp = srv.stub.Update(req, timeout=timeout)
            except grpc.RpcError as e:
                with lock:
                    errs[e.code().name] += 1
                    if len(details) < 3:
                        details.add(f"{e.code().name}: {e.details()}")
                continue
            now = time.perf_counter()
            lat[j].append((now - t) * 1e3)
            calls[j] += 1
            acked[j] += sum(1 for a in resp.acks if not a.duplicate)
            tops[j] = max(tops[j], *(a.sequence for a in resp.acks))
            last[j] = now

    ths = [threading.Thread(target=sender, args=(j,), daemon=True) for j in range(len(jobs))]
    for t in ths:
        t.start()
    gc.collect()
    meter.start()
    t0_box.append(time.perf_counter())
    start.wait()
    for t in ths:
        t.join(seconds + timeout + 10)
    cpu = meter.stop()
    t_end = max(last) if any(last) else time.perf_counter()
    span = max(t_end - t0_box[0], 1e-9)
    total = sum(acked)
    top = max(tops)
    catchup = wait_applied(servers, top, timeout=60.0)
    all_lat = np.array([x for ls in lat for x in ls]) if any(lat) else np.array([np.nan])
    return {
        "servers": [s.name for s in servers],
        "batch": batch,
        "threads": len(jobs),
        "calls": sum(calls),
        "acked": total,
        "span": span,
        "rate": total / span,
        "lat_ms": all_lat,
        "errors": dict(errs),
        "details": sorted(details),
        "ran_out": any(ran_out),
        "catchup_s": catchup,
        "cpu": cpu,
    }


# --- phase 3: freshness ----------------------------------------------------------------------


def freshness(
    writer: Server,
    reader: Server,
    ids: list[tuple[str, str]],
    n: int,
    poll_s: float,
    timeout: float,
    meter: Meter,
    give_up_s: float = 5.0,
) -> dict[str, Any]:
    """Ack on ``writer`` -> first Select on ``reader`` with applied_watermark >= the ack's
    sequence, polled every ``poll_s``; ``n`` samples one after the other."""
    rng = random.Random(7)
    samples: list[float] = []
    polls: list[int] = []
    gave_up = 0
    meter.start()
    for k in range(n):
        eid, arm = ids[k]
        resp = writer.stub.Update(_update_req([(eid, _reward_for(arm))]), timeout=timeout)
        t_ack = time.perf_counter()
        seq = resp.acks[0].sequence
        j = 0
        while True:
            d = reader.stub.Select(_select_req(), timeout=timeout).decisions[0]
            t = time.perf_counter()
            j += 1
            if d.applied_watermark >= seq:
                samples.append((t - t_ack) * 1e3)
                polls.append(j)
                break
            if t - t_ack > give_up_s:
                gave_up += 1
                samples.append((t - t_ack) * 1e3)
                break
            delay = t_ack + j * poll_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        time.sleep(rng.uniform(0.0, 0.01))
    cpu = meter.stop()
    return {
        "writer": writer.name,
        "reader": reader.name,
        "ms": np.array(samples),
        "polls": np.array(polls) if polls else np.array([0]),
        "gave_up": gave_up,
        "cpu": cpu,
    }


# --- main ------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import psycopg
    import redis

    out = {}
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3) as c:
            v = c.execute("SHOW server_version").fetchone()[0]
            sc = c.execute("SHOW synchronous_commit").fetchone()[0]
            fs = c.execute("SHOW fsync").fetchone()[0]
        out["postgres"] = f"PostgreSQL {v} (synchronous_commit={sc}, fsync={fs})"
    except psycopg.Error as e:
        out["postgres"] = f"unreachable: {e}"
    try:
        r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        info = r.info("server")
        per = r.info("persistence")
        r.close()
        out["redis"] = (
            f"Redis {info.get('redis_version')} (aof_enabled={per.get('aof_enabled')}, "
            f"rdb_bgsave_in_progress={per.get('rdb_bgsave_in_progress')})"
        )
    except redis.RedisError as e:
        out["redis"] = f"unreachable: {e}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--seconds", type=float, default=16.0, help="Select-latency time per setup (all rounds)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~60 s): 3 s of Selects per setup, 1.5 s throughput rows, 100 "
        "freshness samples, embedded and A -> B only",
    )
    ap.add_argument("--rate", type=float, default=200.0, help="Selects/s offered to each setup")
    ap.add_argument("--rounds", type=int, default=2, help="latency rounds, setups alternating")
    ap.add_argument("--tput-seconds", type=float, default=4.0, help="each throughput row")
    ap.add_argument("--threads", type=int, default=8, help="Update sender threads per setup")
    ap.add_argument("--fresh-samples", type=int, default=200, help="freshness samples per row")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="freshness poll interval")
    ap.add_argument("--timeout", type=float, default=10.0, help="deadline per call, seconds")
    ap.add_argument(
        "--reward-fraction",
        type=float,
        default=1.0,
        help="share of the latency rows' decisions rewarded (0: Selects alone)",
    )
    ap.add_argument("--no-pin", action="store_true", help="let the OS place every process")
    ap.add_argument(
        "--core-per-replica",
        action="store_true",
        help="pin replica B to the generator's CPU instead of A's: one core per replica",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = ap.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
        args.rounds = 1
        args.tput_seconds = min(args.tput_seconds, 1.5)
        args.fresh_samples = min(args.fresh_samples, 100)  # the default run takes 200
    run(args)


# Expected maximum rewards/s per setup, to size the pool of decisions made before a throughput
# row (a row that runs out stops early and says so: its rate is then a lower bound).
TPUT_GUESS = {1: 800.0, 100: 12000.0}


def run(args: argparse.Namespace) -> None:
    t_run = time.monotonic()
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    server_cpus = [cpus[-1]] if pin else None
    client_cpus = [cpus[0]] if pin else None
    if client_cpus:
        _pin_process(client_cpus)  # before grpc starts any thread here
    load_before = os.getloadavg()
    busy0, wall0 = _machine_busy(), time.monotonic()
    import psycopg
    import redis

    vers = _versions()
    tag = uuid.uuid4().hex[:10]
    db = f"banditd_bench_{tag}"
    prefix = f"banditd-bench-{tag}"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="banditd-bench-replicas-"))
    env = _child_env()
    base = [sys.executable, "-m", "banditd.clients.cli", "serve", "--host", "127.0.0.1"]
    base += ["--port", "0"]
    prod = [
        "--database-url",
        PG_URL.format(db=db),
        "--redis-url",
        REDIS_URL,
        "--redis-prefix",
        prefix,
        "--no-precompile",
    ]
    cmds = {
        "embedded": [*base, "--data-dir", str(tmp / "embedded"), "--no-precompile"],
        "A": [*base, "--data-dir", str(tmp / "a"), *prod],
        "B": [*base, "--data-dir", str(tmp / "b"), *prod],
    }
    servers = {
        k: Server(k, Child(f"banditd serve ({k})", v, None, env, tmp / f"{k}.log"))
        for k, v in cmds.items()
    }
    prev_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    db_created = False
    results: dict[str, Any] = {}
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{db}"')
        db_created = True
        log(f"database {db}, Redis prefix {prefix}, data in {tmp}")
        log("starting 3 servers (embedded, A, B) in parallel ...")
        t_started = time.monotonic()
        _each(lambda s: s.child.start(timeout=300), list(servers.values()))
        t_ready = time.monotonic()  # each server's start-up window began before this
        log(
            "started in "
            f"{time.monotonic() - t_started:.1f} s: "
            + ", ".join(f"{k} pid {s.child.pid} on {s.target}" for k, s in servers.items())
        )
        if server_cpus:
            for k, s in servers.items():
                own = client_cpus if (k == "B" and args.core_per_replica) else server_cpus
                _pin_pid(s.child.pid, own)
        for s in servers.values():
            s.connect()
        children = {k: s.child for k, s in servers.items()}
        meter = Meter(children)
        emb, a, b = servers["embedded"], servers["A"], servers["B"]
        from banditd.clients import Client

        for s in (emb, a):
            with Client(s.target, timeout=120) as c:
                c.wait_ready(timeout=120)
                c.create_experiment(NS, NAME, FAMILY, ARMS)
        with Client(b.target, timeout=120) as c:
            c.wait_ready(timeout=120)
        watermark(b, 120.0)  # B loads (and compiles) the experiment from the log
        log("experiment created on embedded and A; loaded on B")

        # Warm-up (untimed): every path once, compiles included, and past the start-up window
        # (in it every client-chosen event id is looked up in the log).
        from banditd.service.orphans import SKEW_S

        warm = LatencyRow("warm-up", [], args.rate)
        warm_s = 1.0 if args.quick else 2.0
        select_with_rewards(warm, [emb], args.rate, warm_s, meter, args.timeout)
        select_with_rewards(warm, [a, b], args.rate, warm_s, meter, args.timeout)
        for group in ([emb], [a, b]):
            top = 0
            for s in group:
                ids = predecide(s, 2 * PREDECIDE, args.timeout)
                for j in range(0, len(ids), 100):
                    resp = s.stub.Update(
                        _update_req([(e, _reward_for(x)) for e, x in ids[j : j + 100]]),
                        timeout=args.timeout,
                    )
                    top = max(top, *(x.sequence for x in resp.acks))
            wait_applied(group, top, 60.0)
        wait = t_ready + SKEW_S + 1.0 - time.monotonic()
        if wait > 0:
            log(f"waiting {wait:.1f} s: the servers' start-up window")
            time.sleep(wait)
        if warm.errors:
            log(f"warm-up errors: {dict(warm.errors)} {sorted(warm.details)}")
        lead0 = leader(prefix, [a, b])
        log(f"learner (lease holder): replica {lead0}")

        # 1. Select latency under Update load, rounds alternating embedded / production.
        rows = {
            "embedded": LatencyRow("embedded", ["embedded"], args.rate),
            "production": LatencyRow("production", ["A", "B"], args.rate),
        }
        secs = args.seconds / args.rounds
        for r in range(args.rounds):
            for setup, group in (("embedded", [emb]), ("production", [a, b])):
                quiesce(list(children.values()))
                log(
                    f"Select latency, {setup}, round {r + 1}/{args.rounds}: {args.rate:g}/s "
                    f"open loop for {secs:g} s, every decision rewarded ..."
                )
                row = rows[setup]
                f0 = takeovers(prefix)
                # Production Selects are also classed by their replica's role (the lease holder).
                watching = (
                    contextlib.nullcontext(None)
                    if setup == "embedded"
                    else LeaseWatch(prefix, [a, b])
                )
                with watching as watch:
                    select_with_rewards(
                        row,
                        group,
                        args.rate,
                        secs,
                        meter,
                        args.timeout,
                        watch=watch,
                        reward_fraction=args.reward_fraction,
                    )
                row.takeovers += takeovers(prefix) - f0
                p = {k: np.percentile(v[-1], [50, 99]) for k, v in row.lat_ms.items()}
                log(
                    "  "
                    + "; ".join(f"{k}: p50 {x[0]:.2f} ms p99 {x[1]:.2f} ms" for k, x in p.items())
                    + f"; catch-up {row.catchup_s[-1] * 1e3:.0f} ms"
                    + (f"; learner takeovers so far {row.takeovers}" if setup != "embedded" else "")
                    + (f"; errors {dict(row.errors)}" if row.errors else "")
                )
        results["latency"] = rows

        # 2. Update throughput, batches of 1 and 100.
        tput = []
        for batch in (1, 100):
            for setup, group in (("embedded", [emb]), ("production", [a, b])):
                need = int(TPUT_GUESS[batch] * args.tput_seconds * 1.3) // len(group)
                need = max(need, args.threads * batch * 4)
                log(f"throughput, {setup}, {batch}/call: deciding {need} x {len(group)} ...")
                ids = predecide_all(group, need, args.timeout * 6)
                quiesce(list(children.values()))
                log(f"  {args.threads} threads for {args.tput_seconds:g} s ...")
                f0 = takeovers(prefix)
                res = update_throughput(
                    group, ids, batch, args.threads, args.tput_seconds, meter, args.timeout
                )
                res["setup"] = setup
                res["takeovers"] = takeovers(prefix) - f0 if setup != "embedded" else None
                tput.append(res)
                log(
                    f"  {res['rate']:.0f} rewards/s ({res['acked']} acked, {res['calls']} calls)"
                    f"{'; RAN OUT of decisions' if res['ran_out'] else ''}; applied everything "
                    f"{res['catchup_s'] * 1e3:.0f} ms after the last ack"
                    + (f"; errors {res['errors']}" if res["errors"] else "")
                    + (f"; learner takeovers {res['takeovers']}" if res["takeovers"] else "")
                )
        results["tput"] = tput

        # 3. Freshness.
        n = args.fresh_samples
        fresh = []
        lead1 = leader(prefix, [a, b])
        pairs = [(emb, emb), (a, b), (b, a)]
        if lead1 in ("A", "B"):
            pairs.append((servers[lead1], servers[lead1]))  # the learner's own, local part
        if args.quick:
            pairs = pairs[:2]
        for w, rd in pairs:
            ids = predecide(w, n, args.timeout)
            quiesce(list(children.values()))
            # The learner's own replica is a decomposition row, not a target: half the samples.
            k = n // 2 if w is rd and w is not emb else n
            log(f"freshness: ack on {w.name} -> Select on {rd.name}, {k} samples ...")
            f0, lead = takeovers(prefix), leader(prefix, [a, b])
            res = freshness(w, rd, ids, k, args.poll_ms / 1e3, args.timeout, meter)
            res["learner"] = lead
            res["takeovers"] = takeovers(prefix) - f0
            ms = res["ms"]
            log(
                f"  p50 {np.percentile(ms, 50):.1f} ms p99 {np.percentile(ms, 99):.1f} ms "
                f"max {ms.max():.1f} ms" + (f"; gave up {res['gave_up']}" if res["gave_up"] else "")
            )
            fresh.append(res)
        results["fresh"] = fresh
        lead2 = leader(prefix, [a, b])
        results["leaders"] = (lead0, lead1, lead2)
        results["takeovers"] = takeovers(prefix)

        # Final consistency: both replicas serve the same state, covering every reward.
        quiesce(list(children.values()))
        with Client(a.target) as ca, Client(b.target) as cb, Client(emb.target) as ce:
            sa_, sb_, se_ = ca.stats(NS, NAME), cb.stats(NS, NAME), ce.stats(NS, NAME)
        results["final"] = {
            "A": (sa_.version, sa_.applied_watermark, sa_.feedback.rewards, sa_.decisions),
            "B": (sb_.version, sb_.applied_watermark, sb_.feedback.rewards, sb_.decisions),
            "embedded": (se_.version, se_.applied_watermark, se_.feedback.rewards, se_.decisions),
        }
        results["exit"] = {}
        for k, s in servers.items():
            s.close()
            results["exit"][k] = s.child.kill(grace=30)
        results["logs"] = {k: _warnings(tmp / f"{k}.log") for k in servers}
        results["lease_log"] = {k: _lease_lines(tmp / f"{k}.log") for k in ("A", "B")}
        load_after = os.getloadavg()
        machine = (_machine_busy() - busy0) / max(time.monotonic() - wall0, 1e-9)
        report(
            args,
            results,
            vers,
            server_cpus,
            client_cpus,
            cpus,
            load_before,
            load_after,
            machine,
            time.monotonic() - t_run,
        )
    finally:
        for s in servers.values():
            s.close()
            s.child.kill(grace=10)
        r = redis.Redis.from_url(REDIS_URL)
        try:
            keys = []
            for pat in ("{" + prefix + ":*", prefix + ":*"):
                keys += list(r.scan_iter(match=pat, count=1000))
            if keys:
                r.delete(*keys)
        except redis.RedisError as e:
            log(f"could not delete the Redis keys of {prefix}: {e}")
        finally:
            r.close()
        if db_created:
            try:
                with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except psycopg.Error as e:
                log(f"could not drop database {db}: {e}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, prev_term)
        log(f"cleaned up (database {db} dropped, Redis keys of {prefix} deleted)")


def _rewarded(fraction: float) -> str:
    if fraction >= 1.0:
        return "each decision rewarded"
    if fraction <= 0.0:
        return "no decision rewarded (Selects alone)"
    return f"a random {fraction:.0%} of the decisions rewarded"


def _lease_lines(path: pathlib.Path) -> list[str]:
    """The replica's log lines about taking or losing the learner lease."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [ln for ln in lines if "learning here" in ln]


def _warnings(path: pathlib.Path) -> list[str]:
    """WARNING/ERROR lines of a server log (tracebacks summarized by their first line)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [ln for ln in lines if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]


# --- report ----------------------------------------------------------------------------------


def _q(a: np.ndarray, p: float) -> float:
    return float(np.percentile(a, p)) if len(a) else float("nan")


def _avg_cpu(cpus: list[dict[str, float]]) -> dict[str, float]:
    keys = cpus[0].keys()
    return {k: float(np.mean([c[k] for c in cpus])) for k in keys}


def report(
    args: argparse.Namespace,
    results: dict[str, Any],
    vers: dict[str, str],
    server_cpus: list[int] | None,
    client_cpus: list[int] | None,
    cpus: list[int],
    load_before: tuple,
    load_after: tuple,
    machine: float,
    elapsed: float,
) -> None:
    rows: dict[str, LatencyRow] = results["latency"]
    lat = {k: np.concatenate(v) for r in rows.values() for k, v in r.lat_ms.items()}
    lat["A+B"] = np.concatenate([lat["A"], lat["B"]])
    p50e = _q(lat["embedded"], 50)
    tput = results["tput"]
    fresh = results["fresh"]
    lead0, lead1, lead2 = results["leaders"]
    cpu_rows: list[dict[str, Any]] = []

    def cpu_row(what: str, c: dict[str, float]) -> None:
        cpu_rows.append(
            {
                "phase": what,
                "embedded": c["embedded"],
                "A": c["A"],
                "B": c["B"],
                "generator": c["generator"],
                "postgres+redis": c["postgres+redis"],
                "other": c["other"],
            }
        )

    for r in rows.values():
        cpu_row(f"Select latency, {r.setup}", _avg_cpu(r.cpu))
    for t in tput:
        cpu_row(f"throughput, {t['setup']}, {t['batch']}/call", t["cpu"])
    for f in fresh:
        cpu_row(f"freshness {f['writer']} -> {f['reader']}", f["cpu"])
    worst_other = max(r["other"] for r in cpu_rows)

    verdict = []
    by_role = {
        rl: np.concatenate(rows["production"].role_lat.get(rl, [np.array([])]))
        for rl in ("learner", "follower")
    }
    for k, x in (
        ("replica A", lat["A"]),
        ("replica B", lat["B"]),
        ("replicas A+B", lat["A+B"]),
        ("the learner replica", by_role["learner"]),
    ):
        if not len(x):
            continue
        ratio = _q(x, 50) / p50e
        verdict.append(
            {
                "target": f"Select p50, {k} <= {P50_RATIO_MAX:g}x embedded",
                "measured": f"{ratio:.2f}x",
                "bound": f"{P50_RATIO_MAX:g}x",
                "result": "PASS" if ratio <= P50_RATIO_MAX else "FAIL",
            }
        )
    for f in fresh:
        if f["writer"] == f["reader"]:
            continue
        p99 = _q(f["ms"], 99)
        verdict.append(
            {
                "target": f"freshness p99, ack on {f['writer']} -> Select on {f['reader']}",
                "measured": f"{p99:.1f} ms",
                "bound": f"{FRESH_P99_MS:g} ms",
                "result": "PASS" if p99 <= FRESH_P99_MS else "FAIL",
            }
        )
    pinning = (
        f"the 3 server processes (every thread) pinned to CPU {server_cpus}, this generator "
        f"to CPU {client_cpus}; PostgreSQL and Redis not pinned"
        if server_cpus
        else f"unpinned: every process on CPUs {cpus}"
    )
    if server_cpus and args.core_per_replica:
        pinning = (
            f"embedded and replica A pinned to CPU {server_cpus}, replica B and this generator "
            f"to CPU {client_cpus} (--core-per-replica); PostgreSQL and Redis not pinned"
        )
    print_header(
        "banditd production mode: two replicas on Redis + PostgreSQL vs the embedded default",
        pkgs=("grpcio", "redis", "psycopg", "sqlalchemy", "jax", "numpy"),
        extra={
            "pinning": pinning,
            "postgres": vers["postgres"] + ", 127.0.0.1:5432, a fresh database (dropped after)",
            "redis": vers["redis"] + ", 127.0.0.1:6379/0, a fresh key prefix (deleted after)",
            "servers": "banditd serve --port 0 --data-dir D --no-precompile (embedded: SQLite + "
            "in-process state) | replicas A, B: + --database-url postgresql+psycopg://... "
            "--redis-url ... --redis-prefix P (lease TTL, publish <= 20 Hz, poll 20 ms: defaults)",
            "exp.": f"{FAMILY}, {len(ARMS)} arms, state float64 (x64), Bernoulli rewards "
            f"p = 0.05..0.77 by arm; non-contextual Selects of 1 item with a client UUIDv7 id, "
            f"rewards with a client reward id (as Client sends them)",
            "load": f"Select rows: open loop at {args.rate:g} Selects/s per setup (production: "
            f"alternating A/B, {args.rate / 2:g}/s each), latency from the scheduled send "
            f"time, {args.seconds:g} s per setup in {args.rounds} round(s) alternating "
            f"embedded/production; {_rewarded(args.reward_fraction)} at once on the server "
            f"that made it (one Update per call with all rewards queued, <= {UPDATE_MAX}). "
            f"Throughput: "
            f"{args.threads} closed-loop threads (production: {args.threads // 2} per replica), "
            f"{args.tput_seconds:g} s per row. Freshness: {args.fresh_samples} samples per "
            f"row (the learner's own replica: half), Select polled every {args.poll_ms:g} ms after "
            "the ack",
            "learner": f"replica {lead0} held the learner lease before the latency rows, "
            f"{lead1} before freshness, {lead2} at the end; {results['takeovers']} takeover(s) "
            "in all, the first one included (the lease's fence counter; per phase in the "
            "takeovers columns)",
            "n": "calls or samples in each row's n column",
            "noise": f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
            f"(1 min); machine {machine:.2f} of {len(cpus)} cores busy on average over the run; "
            f"other processes used up to {worst_other:.2f} cores during a phase (CPU table)"
            + (" -- QUICK RUN: smoke test, not a measurement" if args.quick else ""),
            "time": f"{elapsed:.0f} s in all",
        },
    )

    load = "under Update load" if args.reward_fraction > 0 else "alone (no rewards)"
    print(f"## 1. Select latency {load} (ms, from the scheduled send time; open loop)")
    lrows = []
    for name, setup in (("embedded", "embedded"), ("A", "production"), ("B", "production")):
        r = rows[setup]
        x = lat[name]
        role = "" if name == "embedded" else (" (learner" if name == lead0 else " (follower")
        if role and r.takeovers:
            role += " at start"
        role += ")" if role else ""
        lrows.append(
            {
                "server": "embedded" if name == "embedded" else f"replica {name}{role}",
                "rate_per_s": args.rate / len(r.servers),
                "n": len(x),
                "p50_ms": _q(x, 50),
                "p99_ms": _q(x, 99),
                "p99.9_ms": _q(x, 99.9),
                "max_ms": float(x.max()) if len(x) else float("nan"),
                "p50_vs_embedded": _q(x, 50) / p50e,
                "learner_takeovers": "" if name == "embedded" else r.takeovers,
            }
        )
    x = lat["A+B"]
    lrows.append(
        {
            "server": "replicas A+B",
            "rate_per_s": args.rate,
            "n": len(x),
            "p50_ms": _q(x, 50),
            "p99_ms": _q(x, 99),
            "p99.9_ms": _q(x, 99.9),
            "max_ms": float(x.max()),
            "p50_vs_embedded": _q(x, 50) / p50e,
            "learner_takeovers": rows["production"].takeovers,
        }
    )
    prod = rows["production"]
    for rl in ("learner", "follower"):
        x = np.concatenate(prod.role_lat.get(rl, [np.array([])]))
        if len(x):
            lrows.append(
                {
                    "server": f"the replica serving as {rl} (A or B)",
                    "rate_per_s": "",
                    "n": len(x),
                    "p50_ms": _q(x, 50),
                    "p99_ms": _q(x, 99),
                    "p99.9_ms": _q(x, 99.9),
                    "max_ms": float(x.max()),
                    "p50_vs_embedded": _q(x, 50) / p50e,
                    "learner_takeovers": "",
                }
            )
    print(table(lrows))
    print(
        "(the last two rows: the same production Selects, classed by the role their replica had "
        "when each was sent, from the lease holder polled every 20 ms)"
    )
    ratio = _q(lat["A+B"], 50) / p50e
    ra, rb = lrows[1]["p50_vs_embedded"], lrows[2]["p50_vs_embedded"]
    xl = np.concatenate(prod.role_lat.get("learner", [np.array([np.nan])]))
    rl_ = _q(xl, 50) / p50e
    met = max(ratio, ra, rb, rl_) <= P50_RATIO_MAX
    print(
        f"p50 production/embedded = {ratio:.2f}x (A {ra:.2f}x, B {rb:.2f}x; on the replica "
        f"serving as learner {rl_:.2f}x); target <= {P50_RATIO_MAX:g}x on each: "
        f"{'met' if met else 'NOT met'}"
    )
    print()
    print("Update load during those rows (the rewarder threads)")
    urows = []
    for r in rows.values():
        u = np.array([v for k in r.servers for v in r.upd_ms[k]])
        urows.append(
            {
                "setup": r.setup,
                "update_calls": r.upd_calls,
                "rewards_acked": r.rewards_acked,
                "rewards_per_call": r.rewards_acked / max(r.upd_calls, 1),
                "update_p50_ms": _q(u, 50),
                "update_p99_ms": _q(u, 99),
                "learner_caught_up_ms (max over rounds)": max(r.catchup_s) * 1e3,
                "errors": sum(r.errors.values()),
                "note": "; ".join(
                    x
                    for x in (
                        r.stopped,
                        ", ".join(f"{k} {v}" for k, v in r.errors.items()),
                        " | ".join(sorted(r.details)),
                    )
                    if x
                ),
            }
        )
    print(table(urows))
    print()

    print("## 2. Update throughput (acknowledged rewards/s; closed loop)")
    trows = []
    by = {(t["setup"], t["batch"]): t for t in tput}
    for t in tput:
        e = by[("embedded", t["batch"])]
        trows.append(
            {
                "setup": "embedded" if t["setup"] == "embedded" else "replicas A+B",
                "rewards_per_call": t["batch"],
                "threads": t["threads"],
                "n_calls": t["calls"],
                "rewards_acked": t["acked"],
                "seconds": t["span"],
                "rewards_per_s": t["rate"],
                "vs_embedded": t["rate"] / e["rate"] if e["rate"] else None,
                "call_p50_ms": _q(t["lat_ms"], 50),
                "call_p99_ms": _q(t["lat_ms"], 99),
                "applied_all_ms_after_last_ack": t["catchup_s"] * 1e3,
                "learner_takeovers": "" if t["takeovers"] is None else t["takeovers"],
                "note": "; ".join(
                    x
                    for x in (
                        "ran out of decisions: a lower bound" if t["ran_out"] else "",
                        ", ".join(f"{k} {v}" for k, v in t["errors"].items()),
                        " | ".join(t["details"]),
                        "GENERATOR near 1 core: maybe the generator's limit"
                        if t["cpu"]["generator"] >= 0.85
                        else "",
                    )
                    if x
                ),
            }
        )
    print(table(trows))
    print()

    print(
        f"## 3. Freshness: Update ack -> first Select with applied_watermark >= its sequence "
        f"(ms; Select polled every {args.poll_ms:g} ms)"
    )
    frows = []
    for f in fresh:
        ms = f["ms"]
        cross = f["writer"] != f["reader"]
        w = f["writer"] if f["writer"] == "embedded" else f"replica {f['writer']}"
        rd = f["reader"] if f["reader"] == "embedded" else f"replica {f['reader']}"
        lead = f.get("learner", "")
        if f["writer"] == "embedded":
            path = "embedded: SQLite commit, learner apply"
        elif f["writer"] == lead and f["reader"] == lead:
            path = "learner's own replica: PG apply record, no Redis"
        elif f["writer"] == lead:
            path = "learner applies + publishes -> follower polls Redis"
        elif f["reader"] == lead:
            path = "pub/sub signal -> learner applies locally"
        else:
            path = "?"
        frows.append(
            {
                "ack_on": w,
                "select_on": rd,
                "learner": f"replica {lead}" if f["writer"] != "embedded" else "embedded",
                "path": path,
                "n": len(ms),
                "p50_ms": _q(ms, 50),
                "p99_ms": _q(ms, 99),
                "max_ms": float(ms.max()),
                "polls_p50": _q(f["polls"], 50),
                "gave_up_after_5s": f["gave_up"],
                "learner_takeovers": f["takeovers"] if f["writer"] != "embedded" else "",
                "p99_le_100ms": ("yes" if _q(ms, 99) <= FRESH_P99_MS else "NO") if cross else "",
            }
        )
    print(table(frows))
    print(
        "resolution: the poll interval plus one Select round trip; the learner of the replicas "
        "publishes at most 20 times a second and the follower polls Redis every 20 ms"
    )
    print()

    print("## CPU per phase, in cores (1.0 = one CPU busy)")
    print(table(cpu_rows))
    if worst_other > 0.2:
        print(
            f"WARNING: other processes used up to {worst_other:.2f} cores during a phase; the "
            "figures above are disturbed by them"
        )
    print()

    fin = results["final"]
    top = max(max(r.top_seq.values()) for r in rows.values())
    same = fin["A"][:2] == fin["B"][:2]
    print(
        "end state (GetStats: version, applied watermark, rewards, decisions): "
        + "; ".join(f"{k} {v}" for k, v in fin.items())
        + f" -> replicas {'agree' if same else 'DISAGREE'}; exit codes "
        + ", ".join(f"{k} {v}" for k, v in results["exit"].items())
        + f" (highest seq acked in the latency rows: {top})"
    )
    for k, lines in results["logs"].items():
        if lines:
            print(f"server log {k}: {len(lines)} warning/error lines, e.g.: {lines[0][:240]}")
    for k, lines in results["lease_log"].items():
        took = sum("no longer" not in ln for ln in lines)
        lost = len(lines) - took
        print(
            f"replica {k} log: took the learner lease {took} time(s), lost it {lost} time(s) "
            "(the stop at the end included: the replica stopped last takes the lease over)"
        )
    if results["takeovers"] > 1:
        print(
            f"NOTE: {results['takeovers'] - 1} learner takeover(s) after the first, with both "
            "replicas alive all along (nothing was killed): each one is a rebuild from the log "
            "and a pause in learning"
        )
    print()
    print("## Targets")
    print(table(verdict))


if __name__ == "__main__":
    main()
