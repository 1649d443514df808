"""PostgreSQL outage, on a private cluster this module creates on its own loopback port (never
the machine's server on 5432), under one `banditd serve` on it (embedded mode: in-process state,
the log in PostgreSQL). While PostgreSQL is stopped: Update answers UNAVAILABLE and never
acknowledges, Select goes on from the last state and buffers its decisions up to
--decision-buffer, then answers UNAVAILABLE. When PostgreSQL is back everything resumes by
itself: Updates acknowledged again, the buffered decisions in the log, the learner applying."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import psycopg
import pytest
import sqlalchemy as sa
from banditd.clients import Client
from banditd.clients.errors import BanditdError
from banditd.clients.ids import new_event_id
from banditd.service.orphans import SKEW_S
from banditd.store.schema import decisions, experiments, feedback
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from server_proc import ServerProcess

NS, NAME = "pgdown", "ab"
ARMS = ["a", "b", "c"]
P = {"a": 0.2, "b": 0.5, "c": 0.8}
RECOVERY_S = 10.0  # bound on "resumes by itself"


def _pg_version() -> str | None:
    """The newest PostgreSQL major version with a server binary installed (Debian layout)."""
    root = pathlib.Path("/usr/lib/postgresql")
    found = sorted(
        (p.name for p in root.glob("*") if (p / "bin" / "postgres").exists()),
        key=lambda v: float(v) if v.replace(".", "").isdigit() else 0.0,
    )
    return found[-1] if found else None


def _skip_reason() -> str | None:
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian's postgresql-common): no private cluster"
    if _pg_version() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    if os.geteuid() != 0:
        return "pg_createcluster needs root here (the cluster runs as the postgres user)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*cmd: str, timeout: float = 60.0) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")


class PrivateCluster:
    """A PostgreSQL cluster of our own (``pg_createcluster``: initdb refuses root), trust auth
    on 127.0.0.1:<free port>; dropped at the end whatever happened."""

    def __init__(self) -> None:
        self.version = str(_pg_version())
        self.name = f"banditd_{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.created = False

    def create(self) -> None:
        _run(
            "pg_createcluster", self.version, self.name, "-p", str(self.port),
            "--", "--auth=trust", "--no-sync",
        )  # fmt: skip
        self.created = True
        self.start()

    def start(self) -> None:
        _run("pg_ctlcluster", self.version, self.name, "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "private PostgreSQL did not come up"
                time.sleep(0.05)

    def start_in_background(self) -> tuple[threading.Thread, float]:
        """Start it from another thread; returns that thread and the monotonic time PostgreSQL
        first accepted a connection (what recovery times are measured from)."""
        starter = threading.Thread(target=self.start, daemon=True)
        starter.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=1).close()
                return starter, time.monotonic()
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "private PostgreSQL did not come up"
                time.sleep(0.01)

    def stop(self) -> None:
        """A fast shutdown: sessions are terminated, new connections refused."""
        _run("pg_ctlcluster", self.version, self.name, "stop", "-m", "fast")

    def running(self) -> bool:
        try:
            psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def drop(self) -> None:
        if self.created:
            _run("pg_dropcluster", "--stop", self.version, self.name)
            self.created = False

    def dsn(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        db = f"banditd_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{db}"')
        return self.url(db)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    pg = PrivateCluster()
    try:
        pg.create()
        yield pg
    finally:
        pg.drop()


@pytest.fixture
def pg(cluster: PrivateCluster) -> Iterator[PrivateCluster]:
    """The cluster, running at the start of the test and after it (for the next one)."""
    if not cluster.running():
        cluster.start()
    yield cluster
    if not cluster.running():
        cluster.start()


class Server(ServerProcess):
    started_at = 0.0  # monotonic, once it listens (after its servicer noted its start)


def settled(srv: Server) -> None:
    """Wait until ``srv`` has run for SKEW_S: before that, a Select with a client-chosen event id
    (the Python client always sends one) asks the log whether an earlier run decided it, and so
    answers UNAVAILABLE while the log is down. After it, the id's time proves it new."""
    time.sleep(max(0.0, srv.started_at + SKEW_S + 0.5 - time.monotonic()))


def serve(tmp: pathlib.Path, url: str, *extra: str) -> Server:
    # `banditd migrate` first, as an operator would (serve would migrate on its own too).
    subprocess.run(
        [sys.executable, "-m", "banditd.clients.cli", "migrate", "--database-url", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    srv = Server(tmp / "srv", "--database-url", url, "--no-precompile", *extra)
    srv.start()
    srv.started_at = time.monotonic()
    return srv


@dataclasses.dataclass
class Call:
    rpc: str
    t0: float
    t1: float
    code: str  # "OK" or the status name
    event_id: str
    arm: str = ""
    value: float = 0.0
    seq: int = 0
    kind: str = ""
    message: str = ""


class Load(threading.Thread):
    """Select then Update the decision, in a loop, without client retries: every call's outcome
    as the server gave it."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.calls: list[Call] = []
        self.halt = threading.Event()
        self.rng = random.Random(7)

    def run(self) -> None:
        with Client(self.target, retries=0, timeout=5.0) as c:
            while not self.halt.is_set():
                t0 = time.monotonic()
                try:
                    (d,) = c.select(NS, NAME)
                except BanditdError as e:
                    self.calls.append(
                        Call("Select", t0, time.monotonic(), e.code_name, "", message=e.message)
                    )
                    time.sleep(0.01)
                    continue
                self.calls.append(
                    Call("Select", t0, time.monotonic(), "OK", d.event_id, d.arm_ids[0])
                )
                v = float(self.rng.random() < P[d.arm_ids[0]])
                t0 = time.monotonic()
                try:
                    (ack,) = c.update(NS, NAME, {d.event_id: v})
                except BanditdError as e:
                    self.calls.append(
                        Call(
                            "Update",
                            t0,
                            time.monotonic(),
                            e.code_name,
                            d.event_id,
                            message=e.message,
                        )
                    )
                    time.sleep(0.01)
                    continue
                self.calls.append(
                    Call("Update", t0, time.monotonic(), "OK", d.event_id, d.arm_ids[0], v,
                         ack.sequence, str(ack.kind))
                )  # fmt: skip


def logged_decisions(url: str, event_ids: list[str]) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found: set[str] = set()
            for i in range(0, len(event_ids), 1000):
                q = sa.select(decisions.c.event_id).where(
                    decisions.c.event_id.in_(event_ids[i : i + 1000])
                )
                found.update(conn.execute(q).scalars())
            return found
    finally:
        engine.dispose()


def feedback_rows(url: str) -> list[sa.Row]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(
                        feedback.c.seq,
                        feedback.c.event_id,
                        feedback.c.kind,
                        feedback.c.reward,
                        feedback.c.applied_version,
                    )
                )
            )
    finally:
        engine.dispose()


def wait_until(what: str, cond: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - t0


def check_acked(url: str, acked: list[Call]) -> None:
    """Every acknowledged reward in the log exactly once (as acknowledged), and applied."""

    def applied() -> bool:
        rows = {r.seq: r for r in feedback_rows(url)}
        return all(rows[a.seq].applied_version is not None for a in acked)

    wait_until("the learner applies every acknowledged reward", applied, RECOVERY_S)
    rows = feedback_rows(url)
    by_seq = {r.seq: r for r in rows}
    for a in acked:
        r = by_seq[a.seq]
        assert (r.event_id, r.kind, r.reward) == (a.event_id, "reward", a.value), (a, r)
    winners = [r.event_id for r in rows if r.kind == "reward"]
    assert len(winners) == len(set(winners)), "an event with two winning rewards"
    acked_ids = [a.event_id for a in acked]
    assert len(acked_ids) == len(set(acked_ids))


def test_postgres_down_mid_load_update_unavailable_select_buffers_then_resumes(
    tmp_path: pathlib.Path, pg: PrivateCluster
) -> None:
    url = pg.new_database()
    srv = serve(tmp_path, url)
    load: Load | None = None
    try:
        with Client(srv.target) as c:
            c.create_experiment(NS, NAME, "beta_ts", ARMS)
        load = Load(srv.target)
        load.start()
        settled(srv)
        t_stop0 = time.monotonic()
        pg.stop()
        t_down = time.monotonic()
        time.sleep(3.0)
        t_start0 = time.monotonic()
        starter, t_up = pg.start_in_background()  # t_up: PostgreSQL accepts connections

        # Every decision Select returned while PostgreSQL was stopped gets to the log.
        outage_ids = [
            c.event_id
            for c in list(load.calls)
            if c.rpc == "Select" and c.code == "OK" and c.t0 >= t_stop0 and c.t1 <= t_up
        ]
        all_logged = wait_until(
            "the buffered decisions in the log",
            lambda: len(logged_decisions(url, outage_ids)) == len(outage_ids),
            RECOVERY_S,
        )
        starter.join(30)

        def update_acked_again() -> bool:
            return any(c.rpc == "Update" and c.code == "OK" and c.t1 > t_up for c in load.calls)

        wait_until(
            "an Update acknowledged after PostgreSQL returned", update_acked_again, RECOVERY_S
        )
        time.sleep(1.0)
        load.halt.set()
        load.join(30)
        assert not load.is_alive()
        calls = list(load.calls)

        # Only OK or UNAVAILABLE, ever: no NOT_FOUND, INTERNAL or deadline while it was down.
        assert {c.code for c in calls} <= {"OK", "UNAVAILABLE"}, {c.code for c in calls}
        before = [c for c in calls if c.t1 < t_stop0]
        assert sum(c.rpc == "Update" and c.code == "OK" for c in before) >= 20
        down = [c for c in calls if c.t0 >= t_down and c.t1 <= t_start0]
        down_updates = [c for c in down if c.rpc == "Update"]
        down_selects = [c for c in down if c.rpc == "Select"]
        timeline = "\n".join(
            f"{c.rpc:6} {c.t0 - t_down:+7.3f} {c.t1 - c.t0:6.3f}s {c.code} {c.message[:90]}"
            for c in calls
            if t_stop0 - 0.3 < c.t1 and c.t0 < t_up + 1.0
        )
        info = f"stop took {t_down - t_stop0:.2f} s, start {t_up - t_start0:.2f} s\n{timeline}"
        assert len(down_updates) >= 10 and len(down_selects) >= 10, info
        assert all(c.code == "UNAVAILABLE" for c in down_updates), (
            f"acknowledged while down\n{info}"
        )
        assert all(c.code == "OK" for c in down_selects), f"Select refused while down\n{info}"
        assert max(c.t1 - c.t0 for c in down_updates) < 2.0, "an Update hung while down"
        first_ack = min(c.t1 for c in calls if c.rpc == "Update" and c.code == "OK" and c.t1 > t_up)
        # The buffered decisions are usable: their rewards (never acknowledged while down) are
        # rewards now, not NOT_FOUND nor orphans.
        unrewarded = [c.event_id for c in down_selects]
        by_id = {c.event_id: c.arm for c in calls if c.rpc == "Select" and c.code == "OK"}
        late_acks: list[Call] = []
        with Client(srv.target, retries=3) as cl:
            for i in range(0, len(unrewarded), 500):
                chunk = unrewarded[i : i + 500]
                acks = cl.update(NS, NAME, {e: 1.0 for e in chunk})
                for e, ack in zip(chunk, acks, strict=True):
                    assert ack.kind == "reward", (e, ack)
                    late_acks.append(Call("Update", 0, 0, "OK", e, by_id[e], 1.0, ack.sequence))
        acked = [c for c in calls if c.rpc == "Update" and c.code == "OK"] + late_acks
        check_acked(url, acked)
        print(
            f"\nPostgreSQL down {t_start0 - t_down:.1f} s: {len(down_selects)} Selects served, "
            f"{len(down_updates)} Updates UNAVAILABLE, {len(outage_ids)} decisions buffered; "
            f"PostgreSQL accepted connections {t_up - t_start0:.2f} s after its start began; "
            f"then first Update acknowledged after {first_ack - t_up:.2f} s, all buffered "
            f"decisions in the log after {all_logged:.2f} s"
        )
    finally:
        if load is not None:
            load.halt.set()
            load.join(30)
        rc = srv.stop()
        text = srv.log()
    assert rc == 0, text[-3000:]
    # One warning per outage and component, no traceback per retry.
    assert "Traceback" not in text, text[-5000:]
    assert text.count("learner: database unavailable") == 1, text[-5000:]
    assert text.count("decision-writer: database unavailable") == 1, text[-5000:]
    assert "decision-writer: database available again" in text


def test_small_decision_buffer_fills_then_select_unavailable_and_recovers(
    tmp_path: pathlib.Path, pg: PrivateCluster
) -> None:
    url = pg.new_database()
    srv = serve(tmp_path, url, "--decision-buffer", "50")
    try:
        with Client(srv.target, retries=0, timeout=5.0) as c:
            c.create_experiment(NS, NAME, "beta_ts", ARMS)
            for _ in range(5):
                (d,) = c.select(NS, NAME)
                c.update(NS, NAME, {d.event_id: 1.0})  # committed, and so is its decision
            settled(srv)
            pg.stop()
            served: list[str] = []
            refused: BanditdError | None = None
            deadline = time.monotonic() + 20
            while refused is None and time.monotonic() < deadline:
                try:
                    (d,) = c.select(NS, NAME)
                    served.append(d.event_id)
                except BanditdError as e:
                    refused = e
            assert refused is not None, "Select never refused with the buffer full"
            assert refused.code_name == "UNAVAILABLE", refused
            assert "decision buffer is full" in refused.message, refused.message
            assert "event log (limit 50, --decision-buffer), which is unavailable" in (
                refused.message
            ), refused.message
            assert len(served) == 50  # exactly the buffer, all decisions before the refusal
            # Full: it stays refused (nothing drains while the database is down), and a refused
            # Select leaves nothing behind: the same event id later gets a fresh decision.
            held_id = new_event_id()
            with pytest.raises(BanditdError) as again:
                c.select(NS, NAME, event_ids=[held_id])
            assert again.value.code_name == "UNAVAILABLE"
            # An Update for a buffered decision: UNAVAILABLE at once, not NOT_FOUND.
            t0 = time.monotonic()
            with pytest.raises(BanditdError) as upd:
                c.update(NS, NAME, {served[0]: 1.0})
            assert upd.value.code_name == "UNAVAILABLE", upd.value
            assert time.monotonic() - t0 < 1.5
            # Reads of the log: UNAVAILABLE, not INTERNAL.
            with pytest.raises(BanditdError) as st:
                c.stats(NS, NAME)
            assert st.value.code_name == "UNAVAILABLE", st.value

            t_start0 = time.monotonic()
            starter, t_up = pg.start_in_background()

            def select_ok() -> bool:
                try:
                    c.select(NS, NAME)
                    return True
                except BanditdError as e:
                    assert e.code_name == "UNAVAILABLE", e
                    return False

            back = wait_until("Select served again", select_ok, RECOVERY_S)
            logged = wait_until(
                "the 50 buffered decisions in the log",
                lambda: len(logged_decisions(url, served)) == 50,
                RECOVERY_S,
            )
            starter.join(30)
            (ack,) = c.update(NS, NAME, {served[0]: 1.0})
            assert ack.kind == "reward"
            (d,) = c.select(NS, NAME, event_ids=[held_id])
            assert not d.replayed
            stats = c.stats(NS, NAME)
            print(
                f"\nbuffer of 50 full after {len(served)} Selects; Select served again "
                f"{back:.2f} s after PostgreSQL accepted connections ({t_up - t_start0:.2f} s "
                "after its start began); "
                f"buffered decisions in the log after {back + logged:.2f} s"
            )
        wait_until(
            "the refused id's fresh decision in the log",
            lambda: logged_decisions(url, [held_id]) == {held_id},
            RECOVERY_S,
        )
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                exp_id = conn.execute(
                    sa.select(experiments.c.id).where(experiments.c.name == NAME)
                ).scalar_one()
                n = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(decisions)
                    .where(decisions.c.experiment_id == exp_id)
                ).scalar_one()
        finally:
            engine.dispose()
        # 5 before, 50 buffered, the probe that got through, the refused id's later decision:
        # none of the refused Selects left a decision behind.
        assert n == 5 + 50 + 1 + 1
        assert stats.decisions >= 5 + 50
    finally:
        rc = srv.stop()
        text = srv.log()
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text, text[-5000:]
    assert text.count("decision-writer: 50 rows buffered, the limit is 50") == 1, text[-5000:]


def test_stop_while_postgres_down_leaves_the_buffered_decisions_to_the_crash_window(
    tmp_path: pathlib.Path, pg: PrivateCluster
) -> None:
    """A clean stop that cannot write its buffered decisions says so and leaves the crash marker:
    after the restart their rewards are acknowledged as orphans, not NOT_FOUND."""
    url = pg.new_database()
    srv = serve(tmp_path, url)
    with Client(srv.target, retries=0, timeout=5.0) as c:
        c.create_experiment(NS, NAME, "beta_ts", ARMS)
    pg.stop()
    # Server-chosen event ids: no look-up in the log, whenever the server started.
    with grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.BanditServiceStub(ch)
        resp = stub.Select(
            pb.SelectRequest(namespace=NS, name=NAME, items=[pb.SelectItem() for _ in range(3)]),
            timeout=5,
        )
    lost = [d.event_id for d in resp.decisions]
    t0 = time.monotonic()
    rc = srv.stop()
    stop_s = time.monotonic() - t0
    text = srv.log()
    assert rc == 0, text[-3000:]
    assert "decision-writer: closing with 3 rows not committed" in text, text[-3000:]
    assert "3 decisions were not logged" in text, text[-3000:]
    assert stop_s < 30
    pg.start()
    srv2 = ServerProcess(tmp_path / "srv", "--database-url", url, "--no-precompile").start()
    try:
        with Client(srv2.target, retries=0, timeout=5.0) as c:
            acks = c.update(NS, NAME, {e: 1.0 for e in lost})
        assert [a.kind for a in acks] == ["orphan"] * 3, acks
    finally:
        assert srv2.stop() == 0
    assert "previous run did not stop cleanly" in srv2.log()
