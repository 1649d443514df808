"""Feedback path: sustained rewards/s (unary Update vs StreamUpdates), freshness, durability cost.

    .venv/bin/python bench/feedback.py [--seconds 20] [--out bench/out] [--profile]

One run against a real ``banditd serve`` subprocess on the embedded default (SQLite with
``synchronous=FULL`` + in-process state) in a temporary data directory:

1. Throughput. Event ids are decided before the timed phases (Selects of 1000 items), then one
   sender pushes rewards, ``--batch`` (<= 100) per message, as fast as acks come back: unary
   ``Update`` from ``--unary-callers`` threads, or one ``StreamUpdates`` stream with up to
   ``--stream-window`` unacknowledged messages. Rewards/s are counted from acks. Meanwhile another
   process runs an open-loop Select generator at ``--select-rate`` (1 item per Select, on the
   experiment receiving the rewards; latency measured from the scheduled send time, so a stalled
   server cannot hide behind a waiting generator). Same-run baselines: Selects alone, and each
   sender alone. Every phase reports the CPU used by the server, by the bench's clients and by
   any other process on the machine. At the end the log is checked: every acknowledged reward is
   stored exactly once under its acknowledged sequence, applied once, and GetStats agrees.
2. Freshness (``immediate`` apply mode): time from an Update's ack to the first Select answered
   with ``applied_watermark`` >= the reward's ``sequence``. Measured idle (one reward, then
   back-to-back Selects) and under the load of part 1 (each message's ack against the Select
   generator's answers; resolution = the generator's interval); and how long the learner took to
   apply everything after the last ack.
3. Durability cost: commit latency of ``SqlEventLog.insert_feedback`` (1 row and 100 rows) on a
   SQLite file with the service's ``synchronous=FULL`` against ``synchronous=NORMAL`` (the pragma
   overridden on the bench's own connections), calls interleaved; baselines: a raw sqlite3
   transaction and a bare 4 KiB write + fsync on the same filesystem.
4. With ``--profile``: where the server's time goes during ``Selects alone`` and
   ``stream + Selects``: CPU per thread (/proc), CPU per shared object (perf, if installed) and
   Python time per function (py-spy ``--gil``, if installed: ``pip install py-spy``).

Client and server share the machine's cores; by default the server is pinned to the last CPU and
every client process to the others (``--no-pin`` lets the OS place them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pathlib
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
from common import pct, print_header, table  # noqa: E402

NS = "bench"
ARMS = [f"arm{i}" for i in range(10)]
FAMILY = "beta_ts"


# --- helpers ---------------------------------------------------------------------------------


def _stub(target: str) -> tuple[Any, Any]:
    import grpc
    from banditd.v1 import bandit_pb2_grpc as pb_grpc

    ch = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    grpc.channel_ready_future(ch).result(timeout=30)
    return ch, pb_grpc.BanditServiceStub(ch)


def _fs_of(path: pathlib.Path) -> str:
    """'<fstype> on <device>' of the mount holding ``path``."""
    best = ("", "?", "?")
    p = str(path.resolve())
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, *_ = line.split()
            if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best[0]):
                best = (mnt, fstype, dev)
    return f"{best[1]} on {best[2]}"


def _stat_times(stat_path: str) -> tuple[int, float] | None:
    """(ppid, user+system CPU seconds) from a /proc/.../stat file."""
    try:
        with open(stat_path) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def _proc_times() -> dict[int, tuple[int, float]]:
    """{pid: (ppid, CPU seconds)} of every process on the machine."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (t := _stat_times(f"/proc/{d}/stat")) is not None:
            out[int(d)] = t
    return out


def _thread_times(pid: int) -> dict[int, float]:
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        if (t := _stat_times(f"/proc/{pid}/task/{tid}/stat")) is not None:
            out[int(tid)] = t[1]
    return out


def _comm(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


class CpuMeter:
    """CPU used between ``start`` and ``stop`` by the server (and by each of its threads), by
    this bench's client processes (this one and its children, but not a profiler) and by every
    other process on the machine, so a run disturbed by someone else's load says so."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.profiler_pids: set[int] = set()

    def _split(self, snap: dict[int, tuple[int, float]]) -> dict[str, dict[int, float]]:
        me = os.getpid()
        groups: dict[str, dict[int, float]] = {"server": {}, "client": {}, "other": {},
                                               "profiler": {}}
        for pid, (_, t) in snap.items():
            p, hops = pid, 0
            while p not in (0, 1, me, self.server_pid) and p in snap and hops < 64:
                if p in self.profiler_pids:
                    break
                p, hops = snap[p][0], hops + 1
            g = ("server" if p == self.server_pid else "profiler" if p in self.profiler_pids
                 else "client" if p == me else "other")
            groups[g][pid] = t
        return groups

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.a = self._split(_proc_times())
        self.a_threads = _thread_times(self.server_pid)
        # Server threads are sampled while the phase runs, so one that ends before the phase
        # does (a stream's reader) keeps the CPU it had used.
        self.last: dict[int, tuple[str, float]] = {}
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while True:
            for tid, t in _thread_times(self.server_pid).items():
                name = self.last[tid][0] if tid in self.last else _comm(self.server_pid, tid)
                self.last[tid] = (name, t)
            if self._done.wait(0.25):
                return

    def stop(self) -> dict[str, Any]:
        """Cores used on average (1.0 = one CPU busy) per group, and per server thread id."""
        self._done.set()
        self._sampler.join()
        b = self._split(_proc_times())
        for tid, t in _thread_times(self.server_pid).items():
            self.last[tid] = (self.last.get(tid, ("?",))[0], t)
        wall = time.monotonic() - self.t0
        out: dict[str, Any] = {}
        for g in b:
            # processes that started in between count from 0; ones that ended are lost
            used = sum(t - self.a[g].get(pid, 0.0) for pid, t in b[g].items())
            out[g] = max(used, 0.0) / wall
        out["threads"] = {tid: (name, (t - self.a_threads.get(tid, 0.0)) / wall)
                          for tid, (name, t) in self.last.items()}
        return out


def _ms(a: np.ndarray) -> tuple[float, float]:
    if a.size == 0:
        return float("nan"), float("nan")
    p50, p99 = pct(a)
    return p50 * 1e3, p99 * 1e3


def _reward_msgs(pb: Any, event_ids: list[str], batch: int, name: str) -> list[Any]:
    """UpdateRequests of ``batch`` rewards each, built as ``Client.update`` builds them (a
    UUIDv7 reward id per reward); binary values from a fixed seed."""
    from banditd.clients.ids import new_event_id

    rng = random.Random(0)
    out = []
    for k, i in enumerate(range(0, len(event_ids), batch), start=1):
        req = pb.UpdateRequest(namespace=NS, name=name, client_sequence=k)
        for e in event_ids[i : i + batch]:
            req.rewards.add(event_id=e, value=float(rng.random() < 0.3), reward_id=new_event_id())
        out.append(req)
    return out


# --- client processes ------------------------------------------------------------------------


def select_worker(target: str, name: str, rate: float, q: Any, go: Any, stop: Any) -> None:
    """Open-loop Selects (1 item each) at ``rate``/s until ``stop``; sends back per-call
    (scheduled time, answer time, applied watermark, status)."""
    import grpc
    from banditd.clients.ids import new_event_id
    from banditd.v1 import bandit_pb2 as pb

    ch, stub = _stub(target)
    cap = 2000  # outstanding calls; past it the generator waits (and the wait is counted)
    t_sched: list[float] = []
    done: list[tuple[int, float, int, int]] = []
    lock = threading.Lock()
    slots = threading.Semaphore(cap)
    for _ in range(5):  # connection warm-up, not timed
        req = pb.SelectRequest(namespace=NS, name=name)
        req.items.add(event_id=new_event_id())
        stub.Select(req, timeout=30)
    q.put("ready")
    go.wait()
    t0 = time.monotonic()
    i = 0
    while not stop.is_set() and time.monotonic() - t0 < 600:
        ts = t0 + i / rate
        delay = ts - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        req = pb.SelectRequest(namespace=NS, name=name)
        req.items.add(event_id=new_event_id())
        slots.acquire()
        t_sched.append(ts)
        fut = stub.Select.future(req, timeout=10)

        def cb(f: Any, i: int = i) -> None:
            t = time.monotonic()
            try:
                wm, code = int(f.result().decisions[0].applied_watermark), 0
            except grpc.RpcError as e:  # counted, not fatal
                wm, code = 0, int(e.code().value[0])
            except Exception:  # noqa: BLE001 - counted, not fatal
                wm, code = 0, -1
            with lock:
                done.append((i, t, wm, code))
            slots.release()

        fut.add_done_callback(cb)
        i += 1
    deadline = time.monotonic() + 30  # wait for every outstanding answer (they time out at 10)
    for _ in range(cap):
        if not slots.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            break
    ch.close()
    with lock:
        d = np.array(sorted(done), dtype=np.float64).reshape(-1, 4)
    q.put({"t_sched": np.array(t_sched)[d[:, 0].astype(int)], "t_done": d[:, 1],
           "wm": d[:, 2].astype(np.int64), "code": d[:, 3].astype(np.int64)})


def unary_worker(target: str, name: str, event_ids: list[str], batch: int, callers: int,
                 seconds: float, q: Any, go: Any, stop: Any) -> None:
    from banditd.v1 import bandit_pb2 as pb

    ch, stub = _stub(target)
    msgs = _reward_msgs(pb, event_ids, batch, name)
    it = iter(msgs)
    it_lock = threading.Lock()
    per_msg: list[tuple[float, float, int, int]] = []
    acks: list[tuple[str, int, int]] = []
    errors: list[str] = []
    rec = threading.Lock()
    q.put("ready")
    go.wait()
    t0 = time.monotonic()
    deadline = t0 + seconds

    def caller() -> None:
        while time.monotonic() < deadline:
            with it_lock:
                req = next(it, None)
            if req is None:
                return
            ts = time.monotonic()
            try:
                resp = stub.Update(req, timeout=30)
            except Exception as e:  # noqa: BLE001 - reported
                errors.append(str(e))
                return
            ta = time.monotonic()
            with rec:
                per_msg.append((ts, ta, len(resp.acks), max(a.sequence for a in resp.acks)))
                acks.extend((a.event_id, a.sequence, a.kind) for a in resp.acks)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ch.close()
    q.put(_sender_result(t0, per_msg, acks, errors, len(msgs)))
    stop.wait(60)  # stay alive until the parent has read this process's CPU time


def stream_worker(target: str, name: str, event_ids: list[str], batch: int, window: int,
                  seconds: float, q: Any, go: Any, stop: Any) -> None:
    from banditd.v1 import bandit_pb2 as pb

    ch, stub = _stub(target)
    msgs = _reward_msgs(pb, event_ids, batch, name)
    slots = threading.Semaphore(window)
    sent: dict[int, float] = {}
    per_msg: list[tuple[float, float, int, int]] = []
    acks: list[tuple[str, int, int]] = []
    errors: list[str] = []
    q.put("ready")
    go.wait()
    t0 = time.monotonic()
    deadline = t0 + seconds

    def requests() -> Any:
        for req in msgs:
            slots.acquire()
            now = time.monotonic()
            if now >= deadline:
                return
            sent[req.client_sequence] = now
            yield pb.StreamUpdatesRequest(update=req)

    expect = 1
    try:
        for resp in stub.StreamUpdates(requests(), timeout=seconds + 120):
            ta = time.monotonic()
            # One response per message, in order; committed_client_sequence is the highest
            # sequence whose rows are all committed.
            if resp.committed_client_sequence != expect:
                errors.append(f"ack for sequence {resp.committed_client_sequence}, "
                              f"expected {expect}")
            per_msg.append((sent[expect], ta, len(resp.acks), max(a.sequence for a in resp.acks)))
            acks.extend((a.event_id, a.sequence, a.kind) for a in resp.acks)
            expect += 1
            slots.release()
    except Exception as e:  # noqa: BLE001 - reported
        errors.append(str(e))
    ch.close()
    q.put(_sender_result(t0, per_msg, acks, errors, len(msgs)))
    stop.wait(60)  # stay alive until the parent has read this process's CPU time


def _sender_result(t0: float, per_msg: list, acks: list, errors: list[str], n_msgs: int) -> dict:
    m = np.array(sorted(per_msg), dtype=np.float64).reshape(-1, 4)
    return {"t0": t0, "t_send": m[:, 0], "t_ack": m[:, 1], "n": m[:, 2].astype(np.int64),
            "max_seq": m[:, 3].astype(np.int64), "acks": acks, "errors": errors[:5],
            "pool_exhausted": len(per_msg) == n_msgs}


# --- part 1 and 2 ----------------------------------------------------------------------------


def preselect(stub: Any, name: str, n: int) -> list[str]:
    """``n`` decided event ids of experiment ``name`` (Selects of 1000 items, the limit)."""
    from banditd.clients.ids import new_event_id
    from banditd.v1 import bandit_pb2 as pb

    out: list[str] = []
    while len(out) < n:
        req = pb.SelectRequest(namespace=NS, name=name)
        for _ in range(min(1000, n - len(out))):
            req.items.add(event_id=new_event_id())
        out.extend(d.event_id for d in stub.Select(req, timeout=60).decisions)
    return out


def run_phase(ctx: Any, label: str, sender: str | None, select_rate: float, server_pid: int,
              target: str, name: str, pool: list[str], args: argparse.Namespace, seconds: float,
                        tools: dict[str, str] | None = None, stub: Any = None) -> dict:
    """One timed phase: a reward sender (``unary``, ``stream`` or None) and/or the open-loop
    Select generator (``select_rate`` > 0), each in its own process, on experiment ``name``.
    ``tools`` ({"py-spy": path, "perf": path}) profile the server during the phase."""
    q_sel, q_snd = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    procs = []
    if select_rate > 0:
        procs.append(ctx.Process(target=select_worker,
                                 args=(target, name, select_rate, q_sel, go, stop)))
    if sender == "unary":
        procs.append(ctx.Process(target=unary_worker, args=(
            target, name, pool, args.batch, args.unary_callers, seconds, q_snd, go, stop)))
    elif sender == "stream":
        procs.append(ctx.Process(target=stream_worker, args=(
            target, name, pool, args.batch, args.stream_window, seconds, q_snd, go, stop)))
    tools = tools or {}
    base = pathlib.Path(tempfile.gettempdir()) / f"banditd-bench-{os.getpid()}-{name}"
    outs = {"py-spy": base.with_suffix(".spy"), "perf": base.with_suffix(".perf")}
    # Both stop a second before the phase would at the latest, so they see only loaded time.
    prof_s = str(max(int(seconds) - 1, 1))
    cmds = {
        # Samples only the thread holding the GIL: where the server's Python time goes.
        "py-spy": lambda exe: [exe, "record", "--pid", str(server_pid), "--gil", "--threads",
                               "--nonblocking", "--rate", "100", "--format", "raw", "--output",
                               str(outs["py-spy"]), "--duration", prof_s],
        # CPU samples of every server thread, native code included (no call graphs).
        "perf": lambda exe: [exe, "record", "-F", "499", "-p", str(server_pid), "-o",
                             str(outs["perf"]), "--", "sleep", prof_s],
    }
    running: dict[str, subprocess.Popen[bytes]] = {}
    meter = CpuMeter(server_pid)
    snd_res = sel_res = None
    profile: dict[str, str] = {}
    try:
        for p in procs:
            p.start()
        for qq in ([q_sel] if select_rate > 0 else []) + ([q_snd] if sender else []):
            assert qq.get(timeout=120) == "ready"
        v0 = learner_state(stub, name)[0] if sender else 0
        meter.start()
        go.set()
        t_go = time.monotonic()
        for tool, exe in tools.items():
            running[tool] = subprocess.Popen(cmds[tool](exe), stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
            meter.profiler_pids.add(running[tool].pid)
        learner = None
        if sender:
            snd_res = q_snd.get(timeout=seconds + 300)
            cpu = meter.stop()
            t_stop = time.monotonic()
            if snd_res["t_ack"].size:
                learner = drain(stub, name, v0, snd_res)
        else:
            time.sleep(seconds)
            cpu = meter.stop()
            t_stop = time.monotonic()
        time.sleep(0.1)
        stop.set()
        if select_rate > 0:
            sel_res = q_sel.get(timeout=60)
        for p in procs:
            p.join(timeout=30)
        for tool, proc in running.items():
            proc.wait(timeout=seconds + 60)
            if outs[tool].exists():
                profile[tool] = (outs[tool].read_text() if tool == "py-spy"
                                 else perf_dso_report(tools[tool], outs[tool]))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in outs.values():
            f.unlink(missing_ok=True)
    return {"label": label, "sender": snd_res, "select": sel_res, "cpu": cpu,
            "profile": profile, "window": (t_go, t_stop), "learner": learner}


def perf_dso_report(perf: str, data: pathlib.Path) -> str:
    """`perf report` by shared object: 'percent  dso' lines."""
    out = subprocess.run([perf, "report", "-i", str(data), "--sort", "dso", "--stdio",
                          "-g", "none"], capture_output=True, text=True, timeout=120).stdout
    return "\n".join(ln.strip() for ln in out.splitlines()
                     if ln.strip() and not ln.startswith("#"))


def phase_rows(res: dict, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rewards row, concurrent-Selects row) of a phase; the window is the sender's, from its
    first send to its last ack (or the whole phase when there is no sender)."""
    s, sel = res["sender"], res["select"]
    if s is not None and s["t_ack"].size:
        t_begin, t_end = float(s["t_send"].min()), float(s["t_ack"].max())
    else:
        t_begin, t_end = res["window"]
    dur = max(t_end - t_begin, 1e-9)
    r1: dict[str, Any] = {"phase": res["label"]}
    if s is not None:
        n_ok = int(sum(1 for _, _, k in s["acks"] if k == 1))  # FEEDBACK_KIND_REWARD
        mp50, mp99 = _ms(s["t_ack"] - s["t_send"])
        r1.update({
            "in_flight": (f"{args.unary_callers} calls" if "unary" in res["label"]
                          else f"{args.stream_window} msgs"),
            "messages": int(s["t_ack"].size),
            "rewards_acked": len(s["acks"]),
            "not_kind_reward": len(s["acks"]) - n_ok,
            "seconds": dur,
            "rewards_per_s": len(s["acks"]) / dur,
            "msg_ack_p50_ms": mp50,
            "msg_ack_p99_ms": mp99,
            "pool_used_up": "yes" if s["pool_exhausted"] else "no",
            "errors": "; ".join(s["errors"]) or "none",
        })
    r2: dict[str, Any] = {"phase": res["label"]}
    if sel is not None:
        in_win = (sel["t_sched"] >= t_begin) & (sel["t_sched"] <= t_end)
        ok = in_win & (sel["code"] == 0)
        sp50, sp99 = _ms(sel["t_done"][ok] - sel["t_sched"][ok])
        r2.update({"selects_per_s": int(ok.sum()) / dur, "select_p50_ms": sp50,
                   "select_p99_ms": sp99,
                   "select_errors": int((in_win & (sel["code"] != 0)).sum())})
    else:
        r2.update({"selects_per_s": 0.0, "select_p50_ms": None, "select_p99_ms": None,
                   "select_errors": None})
    r2.update({"cores_server": res["cpu"]["server"], "cores_bench_clients": res["cpu"]["client"],
               "cores_other_processes": res["cpu"]["other"]})
    if s is not None and sel is not None:
        res["fresh_under_load"] = freshness_under_load(s, sel)
    if s is not None and res.get("learner"):
        versions = res["learner"]["versions"]
        res["learner_row"] = {
            "phase": res["label"], "learner_batches": versions,
            "rewards_per_batch": len(s["acks"]) / max(versions, 1),
            "all_applied_s_after_last_ack": res["learner"]["drained_s"]}
    return r1, r2


def freshness_under_load(s: dict, sel: dict) -> np.ndarray:
    """Per acknowledged message: time from its ack to the first Select answered after it whose
    applied watermark covers the message's highest sequence (NaN when none did)."""
    order = np.argsort(sel["t_done"], kind="stable")
    t_done, wm = sel["t_done"][order], sel["wm"][order]
    ok = sel["code"][order] == 0
    t_done, wm = t_done[ok], wm[ok]
    out = np.full(s["t_ack"].size, np.nan)
    starts = np.searchsorted(t_done, s["t_ack"], side="left")
    for k, (j0, seq) in enumerate(zip(starts, s["max_seq"], strict=True)):
        hit = np.nonzero(wm[j0:] >= seq)[0]
        if hit.size:
            out[k] = t_done[j0 + hit[0]] - s["t_ack"][k]
    return out


def warm(stub: Any, name: str) -> None:
    """Single-item Selects on ``name`` before its phase: the first one on an experiment pays for
    its choice probabilities (Monte Carlo, tens of ms) and starts an open-loop backlog."""
    from banditd.clients.ids import new_event_id
    from banditd.v1 import bandit_pb2 as pb

    for _ in range(20):
        req = pb.SelectRequest(namespace=NS, name=name)
        req.items.add(event_id=new_event_id())
        stub.Select(req, timeout=30)


def learner_state(stub: Any, name: str) -> tuple[int, int]:
    """(state version, applied watermark) of experiment ``name``, from a 1-item Select."""
    from banditd.clients.ids import new_event_id
    from banditd.v1 import bandit_pb2 as pb

    req = pb.SelectRequest(namespace=NS, name=name)
    req.items.add(event_id=new_event_id())
    d = stub.Select(req, timeout=60).decisions[0]
    return int(d.version), int(d.applied_watermark)


def drain(stub: Any, name: str, v0: int, s: dict) -> dict[str, Any]:
    """Wait (at most 60 s) for the learner to apply everything acknowledged; how long that took
    after the last ack, and how many learner batches (state versions) the rewards took."""
    top = int(s["max_seq"].max())
    t_last = float(s["t_ack"].max())
    deadline = time.monotonic() + 60
    while True:
        v, wm = learner_state(stub, name)
        if wm >= top or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return {"drained_s": time.monotonic() - t_last if wm >= top else float("nan"),
            "versions": v - v0}


def freshness_idle(stub: Any, name: str, pool: list[str], gap_s: float,
                   acks: list[tuple[str, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """One reward at a time: Update, then back-to-back Selects until the watermark covers it.
    Returns the freshness samples and the duration of the Select that first saw the reward."""
    from banditd.clients.ids import new_event_id
    from banditd.v1 import bandit_pb2 as pb

    rng = random.Random(1)
    out, last = [], []
    for eid in pool:
        req = pb.UpdateRequest(namespace=NS, name=name)
        req.rewards.add(event_id=eid, value=1.0, reward_id=new_event_id())
        ack = stub.Update(req, timeout=10).acks[0]
        acks.append((ack.event_id, ack.sequence, ack.kind))
        seq = ack.sequence
        t_ack = time.monotonic()
        while True:
            sreq = pb.SelectRequest(namespace=NS, name=name)
            sreq.items.add(event_id=new_event_id())
            t_s = time.monotonic()
            wm = stub.Select(sreq, timeout=10).decisions[0].applied_watermark
            t = time.monotonic()
            if wm >= seq:
                out.append(t - t_ack)
                last.append(t - t_s)
                break
            if t - t_ack > 10:
                out.append(float("nan"))
                last.append(float("nan"))
                break
        time.sleep(rng.uniform(0, gap_s))  # no lockstep with the learner's wake-ups
    return np.array(out), np.array(last)


def _frame(f: str) -> tuple[str, str]:
    """('function (path)', package) of a py-spy frame 'function (path:line)'."""
    name, _, where = f.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    top = path.split("/", 1)[0]
    if top in ("service", "store", "policies", "clients", "sim"):
        pkg = f"banditd.{top}"
    elif "/" in path:
        pkg = top  # a site-packages package (sqlalchemy, grpc, jax...) or a stdlib package
    elif path == "<string>":
        pkg = "generated code (dataclass __init__ etc.)"
    else:
        pkg = "stdlib modules" if path.endswith(".py") else path
    return f"{name} ({path})", pkg


def _thread_group(name: str) -> str:
    import re

    return re.sub(r"-\d+_\d+$", "-*", name)


def spy_summary(raw: str, seconds: float, thread_cpu: dict[int, tuple[str, float]],
                rate: float = 100.0, top: int = 20) -> list[str]:
    """Tables from py-spy ``--gil --threads --format raw`` samples (the thread holding the GIL)
    and the per-thread CPU the bench read from /proc: CPU and GIL by thread, GIL self time by
    package, and GIL time by function (inclusive and self)."""
    import re

    names: dict[int, str] = {}
    gil_by_tid: dict[int, int] = {}
    pkgs: dict[str, int] = {}
    incl: dict[str, int] = {}
    self_t: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        m = re.match(r"thread \((\w+)\): ?(.*)", frames[0])
        tid = int(m.group(1), 0) if m else -1
        names[tid] = (m.group(2) if m else "") or "?"
        gil_by_tid[tid] = gil_by_tid.get(tid, 0) + n
        fr = [_frame(f) for f in frames[1:] if "threading.py" not in f]
        if fr:
            self_t[fr[-1][0]] = self_t.get(fr[-1][0], 0) + n
            pkgs[fr[-1][1]] = pkgs.get(fr[-1][1], 0) + n
        for f in {f for f, _ in fr}:
            incl[f] = incl.get(f, 0) + n
    wall = rate * seconds
    groups: dict[str, list[float]] = {}
    for tid in set(thread_cpu) | set(gil_by_tid):
        comm, cores = thread_cpu.get(tid, ("?", 0.0))
        g = _thread_group(names[tid]) if tid in names else f"{comm} (native, never held the GIL)"
        acc = groups.setdefault(g, [0.0, 0.0, 0.0])
        acc[0] += cores
        acc[1] += gil_by_tid.get(tid, 0) / wall
        acc[2] += 1
    cpu_total = sum(v[0] for v in groups.values())
    by_thread = table([
        {"thread": g, "threads": int(v[2]), "cpu_cores": v[0], "py_spy_gil_share": v[1]}
        for g, v in sorted(groups.items(), key=lambda kv: -kv[1][0]) if v[0] >= 0.005 or v[1]
    ])

    def rows(d: dict[str, int], key: str, k: int) -> str:
        best = sorted(d.items(), key=lambda kv: -kv[1])[:k]
        return table([{key: name, "%_of_gil_samples": 100 * v / total,
                       "%_of_wall": 100 * v / wall} for name, v in best])

    return [
        f"server CPU {cpu_total:.2f} cores by thread (from /proc); py_spy_gil_share = the "
        "fraction of py-spy samples in which that thread held the GIL (a lower bound: "
        "--nonblocking sampling misses some)",
        by_thread, "",
        f"py-spy: {total} samples with the GIL held, at {rate:g}/s over ~{seconds:.0f} s",
        rows(pkgs, "package (GIL self time)", 12), "",
        rows(incl, "function (GIL time, inclusive)", top), "",
        rows(self_t, "function (GIL self time)", 15),
    ] if total else [by_thread]


def perf_summary(report: str, top: int = 12) -> list[str]:
    rows = []
    for ln in report.splitlines():
        pct_s, _, dso = ln.partition("%")
        try:
            share = float(pct_s)
        except ValueError:
            continue
        rows.append({"shared object (perf, all server threads)": dso.strip(),
                     "%_of_server_cpu_samples": share})
    return [table(rows[:top])] if rows else ["(perf: no samples)"]


def verify(db: pathlib.Path, exp_ids: dict[str, int], acked: dict[str, list]) -> list[dict]:
    """Every acknowledged reward is in the log once, with its acknowledged sequence, applied
    once; and the log holds no feedback that was not acknowledged."""
    rows = []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for name, acks in acked.items():
            got = con.execute(
                "SELECT seq, event_id, kind, applied_version FROM feedback "
                "WHERE experiment_id = ?", (exp_ids[name],)).fetchall()
            by_seq = {r[0]: r for r in got}
            per_event: dict[str, int] = {}
            for r in got:
                per_event[r[1]] = per_event.get(r[1], 0) + 1
            missing = sum(1 for e, sq, _ in acks if by_seq.get(sq, (None, None))[1] != e)
            twice = sum(1 for n in per_event.values() if n > 1)
            acked_seqs = {sq for _, sq, _ in acks}
            rows.append({
                "experiment": name,
                "acked": len(acks),
                "log_rows": len(got),
                "acked_missing": missing,
                "event_ids_twice": twice,
                "rows_not_acked": sum(1 for r in got if r[0] not in acked_seqs),
                "not_kind_reward": sum(1 for r in got if r[2] != "reward"),
                "unapplied": sum(1 for r in got if r[3] is None),
                "ok": "yes" if (missing == 0 and twice == 0 and len(got) == len(acks)
                                and all(r[2] == "reward" and r[3] is not None for r in got))
                else "NO",
            })
    finally:
        con.close()
    return rows


# --- part 3: durability cost -----------------------------------------------------------------


def durability_rows(n1: int, nb: int, tmp: pathlib.Path) -> tuple[list[dict], dict[str, int]]:
    import sqlalchemy as sa
    from banditd.store import migrate
    from banditd.store.rows import ArmSpec, Decision, Feedback, RevisionSpec
    from banditd.store.sql import SqlEventLog

    db = tmp / "durability.db"
    url = f"sqlite:///{db}"
    migrate.upgrade(url)
    logs: dict[str, SqlEventLog] = {}
    seen: dict[str, int] = {}
    for mode in ("FULL", "NORMAL"):
        log = SqlEventLog.from_url(url)
        if mode != "FULL":
            # Runs after the store's own connect hook (registered first), so it wins.
            sa.event.listen(log.engine, "connect",
                            lambda c, _r, m=mode: c.execute(f"PRAGMA synchronous={m}"))
        with log.engine.connect() as c:
            seen[mode] = int(c.exec_driver_sql("PRAGMA synchronous").scalar() or -1)
        logs[mode] = log
    exp = logs["FULL"].create_experiment(
        NS, "durability", config={"reward": {"kind": "binary"}},
        revision=RevisionSpec(1, FAMILY, {}), arms=[ArmSpec(a) for a in ARMS])

    from banditd.clients.ids import new_event_id

    def decided(n: int) -> list[str]:
        ids = [new_event_id() for _ in range(n)]
        for i in range(0, n, 1000):
            logs["FULL"].insert_decisions([
                Decision(exp.id, e, 1, 0, (0,), (0.1,), time.time()) for e in ids[i : i + 1000]])
        return ids

    def timed(log: SqlEventLog, ids: list[str]) -> float:
        fb = [Feedback(exp.id, "reward", 1.0, e) for e in ids]
        t0 = time.perf_counter()
        log.insert_feedback(fb)
        return time.perf_counter() - t0

    times: dict[tuple[str, int], list[float]] = {(m, k): [] for m in logs for k in (1, 100)}
    for size, n in ((1, n1), (100, nb)):
        ids = decided(2 * size * (n + 5))
        it = iter(range(0, len(ids), size))
        for rep in range(n + 5):
            for mode in (("FULL", "NORMAL") if rep % 2 else ("NORMAL", "FULL")):
                i = next(it)
                t = timed(logs[mode], ids[i : i + size])
                if rep >= 5:  # warm-up
                    times[(mode, size)].append(t)
    for log in logs.values():
        log.close()

    rows = []
    for (mode, size), ts in times.items():
        a = np.array(ts)
        p50, p99 = _ms(a)
        rows.append({"what": f"SqlEventLog.insert_feedback, {size} row{'s' * (size > 1)}",
                     "synchronous": mode, "n": a.size, "p50_ms": p50, "p99_ms": p99,
                     "rows_per_s_at_p50": size / (p50 / 1e3)})
    rows.extend(raw_baselines(tmp, n1))
    return rows, seen


def raw_baselines(tmp: pathlib.Path, n: int) -> list[dict]:
    rows = []
    db = tmp / "raw.db"
    for mode in ("FULL", "NORMAL"):
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={mode}")
        con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
        ts = []
        payload = os.urandom(200)
        for i in range(n + 5):
            t0 = time.perf_counter()
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO t (v) VALUES (?)", (payload,))
            con.execute("COMMIT")
            if i >= 5:
                ts.append(time.perf_counter() - t0)
        con.close()
        p50, p99 = _ms(np.array(ts))
        rows.append({"what": "baseline: raw sqlite3 BEGIN IMMEDIATE/INSERT/COMMIT, 1 row",
                     "synchronous": mode, "n": n, "p50_ms": p50, "p99_ms": p99,
                     "rows_per_s_at_p50": 1 / (p50 / 1e3)})
    fd = os.open(tmp / "fsync.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        ts = []
        block = os.urandom(4096)
        for i in range(n + 5):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            if i >= 5:
                ts.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    p50, p99 = _ms(np.array(ts))
    rows.append({"what": "baseline: 4 KiB append + fsync (the disk's floor)", "synchronous": "-",
                 "n": n, "p50_ms": p50, "p99_ms": p99, "rows_per_s_at_p50": 1 / (p50 / 1e3)})
    return rows


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="longest timed phase per mode (shorter if its pool of ids runs out)")
    ap.add_argument("--baseline-seconds", type=float, default=5.0,
                    help="the baseline phases (Selects alone, stream alone)")
    ap.add_argument("--out", default=str(HERE / "out"), help="where feedback.json goes")
    ap.add_argument("--batch", type=int, default=100, help="rewards per message (<= 100)")
    ap.add_argument("--select-rate", type=float, default=500.0, help="concurrent Selects/s")
    ap.add_argument("--unary-callers", type=int, default=4, help="concurrent unary Update calls")
    ap.add_argument("--stream-window", type=int, default=16,
                    help="unacknowledged messages on the stream")
    ap.add_argument("--pool-unary", type=int, default=0,
                    help="decided event ids per unary phase (0 = 1500 x seconds with Selects, "
                         "6000 x seconds alone)")
    ap.add_argument("--pool-stream", type=int, default=0,
                    help="decided event ids per stream phase (0 = 6000 x seconds with Selects, "
                         "10000 x seconds alone)")
    ap.add_argument("--fresh-samples", type=int, default=200)
    ap.add_argument("--commit-n", type=int, default=300, help="timed commits per durability row")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the server and the clients to separate CPUs")
    ap.add_argument("--profile", action="store_true",
                    help="profile the server during `Selects alone` and `stream + Selects` with "
                         "py-spy (--gil; pip install py-spy) and perf, those that are installed")
    ap.add_argument("--py-spy", default="py-spy", help="py-spy binary for --profile")
    ap.add_argument("--perf", default="perf", help="perf binary for --profile")
    ap.add_argument("--server-flag", action="append", default=[],
                    help="extra `banditd serve` flag (repeatable), e.g. --server-flag=--workers=16")
    args = ap.parse_args()
    if not 1 <= args.batch <= 100:
        ap.error("--batch: must be in [1, 100]")
    pool_sizes = {
        "unary": args.pool_unary or int(1500 * args.seconds),
        "stream": args.pool_stream or int(6000 * args.seconds),
        "unary_alone": args.pool_unary or int(6000 * args.baseline_seconds),
        "stream_alone": args.pool_stream or int(10000 * args.baseline_seconds),
        "fresh": args.fresh_samples,
    }

    from server_proc import ServerProcess

    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    server_cpus, client_cpus = ([cpus[-1]], cpus[:-1]) if pin else (cpus, cpus)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="banditd-bench-feedback-"))
    ctx = mp.get_context("spawn")
    server = ServerProcess(tmp / "data", *args.server_flag)
    tools: dict[str, str] = {}
    if args.profile:
        for tool, exe in (("py-spy", args.py_spy), ("perf", args.perf)):
            found = shutil.which(exe)
            if found:
                tools[tool] = found
    try:
        # Part 3 first, while nothing else of the bench runs.
        os.sched_setaffinity(0, client_cpus)
        dur_rows, seen = durability_rows(args.commit_n, max(args.commit_n // 3, 20), tmp)

        os.sched_setaffinity(0, server_cpus)  # inherited by the server process
        server.start()
        os.sched_setaffinity(0, client_cpus)  # and this, by the client processes
        assert server.proc is not None
        flags = " ".join(args.server_flag)
        print_header(
            "banditd feedback path: rewards/s, freshness, durability cost",
            pkgs=("grpcio", "protobuf", "sqlalchemy", "jax", "numpy"),
            extra={
                "sqlite": f"{sqlite3.sqlite_version} (event log: WAL, synchronous=FULL)",
                "server": f"banditd serve --port 0 --data-dir <tmp>{' ' + flags if flags else ''}"
                          " (embedded default: SQLite + in-process state; 8 gRPC workers, "
                          "2 ms writer flush unless flags say otherwise)",
                "data": f"{tmp} ({_fs_of(tmp)})",
                "cpus": (f"{len(cpus)} cores shared by client and server: server pinned to CPU "
                         f"{server_cpus}, the bench's client processes to CPU {client_cpus}"
                         if pin else f"{len(cpus)} cores shared by client and server, unpinned"),
                "load": f"{FAMILY} K={len(ARMS)}, apply mode immediate; {args.batch} rewards/"
                        f"message; open-loop Selects at {args.select_rate:g}/s, 1 item each, on "
                        "the experiment receiving the rewards",
                "clients": "generated stubs (banditd.v1); each reward carries a UUIDv7 reward_id "
                           "as Client.update sends it; each process its own channel",
                "profile": (f"{' and '.join(tools) or 'nothing installed'} on the server "
                            "during `Selects alone` and `stream + Selects` (part 4)"
                            if args.profile else "off"),
            },
        )
        ch, stub = _stub(server.target)
        from banditd.clients import Client
        from banditd.v1 import bandit_pb2 as pb

        names = ["selects_alone", "unary_alone", "stream_alone", "unary", "stream", "fresh"]
        with Client(server.target) as c:
            c.wait_ready()
            for name in names:
                c.create_experiment(NS, name, FAMILY, ARMS, apply_mode="immediate")
        con = sqlite3.connect(f"file:{tmp / 'data' / 'banditd.db'}?mode=ro", uri=True)
        exp_ids = {n: int(i) for i, n in con.execute("SELECT id, name FROM experiments")}
        con.close()

        t0 = time.perf_counter()
        pools = {name: preselect(stub, name, n) for name, n in pool_sizes.items()}
        t_pre = time.perf_counter() - t0
        n_pre = sum(len(p) for p in pools.values())
        print(f"pre-selected {n_pre:,} event ids in {t_pre:.1f} s ({n_pre / t_pre:,.0f} "
              "decisions/s; Selects of 1000 items, nothing else running)\n")

        pid, target = server.proc.pid, server.target
        b_s = args.baseline_seconds
        plan = [  # label, sender, select rate, experiment, seconds
            (f"Selects alone ({args.select_rate:g}/s)", None, args.select_rate,
             "selects_alone", b_s),
            ("unary alone (no Selects)", "unary", 0.0, "unary_alone", b_s),
            ("stream alone (no Selects)", "stream", 0.0, "stream_alone", b_s),
            ("unary + Selects", "unary", args.select_rate, "unary", args.seconds),
            ("stream + Selects", "stream", args.select_rate, "stream", args.seconds),
        ]
        phases = []
        for label, sender, rate, name, secs in plan:
            warm(stub, name)
            ph = run_phase(ctx, label, sender, rate, pid, target, name, pools.get(name, []), args,
                           secs, tools if name in ("selects_alone", "stream") else None, stub)
            ph["experiment"] = name
            phases.append(ph)
        rows = [phase_rows(r, args) for r in phases]
        fresh_acks: list[tuple[str, int, int]] = []
        fresh_idle, fresh_last = freshness_idle(stub, "fresh", pools["fresh"], 0.02, fresh_acks)

        # The log check: GetStats first (it flushes the decision writer), then a clean stop
        # (the learner drains), then the SQLite file itself.
        acked = {r["experiment"]: r["sender"]["acks"] for r in phases if r["sender"]}
        acked["fresh"] = fresh_acks
        stats = {}
        for name in acked:
            st = stub.GetStats(pb.GetStatsRequest(namespace=NS, name=name), timeout=60)
            stats[name] = (int(st.feedback.rewards),
                           int(st.feedback.duplicates + st.feedback.late + st.feedback.orphans))
        ch.close()
        rc = server.stop()
        checks = verify(tmp / "data" / "banditd.db", exp_ids, acked)
        for row in checks:
            got, odd = stats[row["experiment"]]
            row["GetStats_rewards"] = got
            row["GetStats_dup_late_orphan"] = odd
            if got != row["acked"] or odd:
                row["ok"] = "NO"

        print("## 1. Sustained rewards/s, counted from acks, with concurrent open-loop Selects")
        print(table([r1 for r1, _ in rows if len(r1) > 1]))
        print()
        print("concurrent Selects (latency from the scheduled send time) and CPU, in cores "
              "(1.0 = one CPU busy), over each phase's window")
        print(table([r2 for _, r2 in rows]))
        sel_cpu = rows[0][1]["cores_server"] / max(rows[0][1]["selects_per_s"], 1e-9)
        per_reward = {r1["phase"]: r2["cores_server"] / r1["rewards_per_s"]
                      for r1, r2 in rows[1:3]}
        u_us, s_us = (v * 1e6 for v in per_reward.values())
        need = args.select_rate * sel_cpu + 5000 * min(per_reward.values())
        print(f"server CPU per request from the baselines: {sel_cpu * 1e3:.2f} ms per 1-item "
              f"Select, {u_us:.0f} us per reward (unary), {s_us:.0f} us per reward (stream); "
              f"{args.select_rate:g} Selects/s + 5,000 rewards/s would need ~{need:.2f} cores "
              "of this server")
        worst_other = max(r2["cores_other_processes"] for _, r2 in rows)
        if worst_other > 0.2:
            print(f"WARNING: other processes on this machine used up to {worst_other:.2f} cores "
                  "during a phase; the figures above are disturbed by them")
        print()
        print(f"log check after a clean stop (server exit code {rc}): each acknowledged reward "
              "stored once under its acked sequence, applied once, nothing unacknowledged; "
              "GetStats agrees")
        print(table(checks))
        stream_rate = rows[4][0]["rewards_per_s"]
        all_ok = all(r["ok"] == "yes" for r in checks)
        print(f"target: >= 5,000 rewards/s streamed with 500 Selects/s, nothing lost -> "
              f"{stream_rate:,.0f}/s, {'met' if stream_rate >= 5000 and all_ok else 'NOT met'}"
              f"{'' if all_ok else ' (LOG CHECK FAILED)'}")
        print()

        print("## 2. Freshness, apply mode `immediate`: Update ack -> first Select answered with "
              "applied_watermark >= the reward's sequence")
        rows2 = []
        p50, p99 = _ms(fresh_idle[np.isfinite(fresh_idle)])
        rows2.append({"when": "idle: 1 reward, then back-to-back Selects", "n": fresh_idle.size,
                      "never_seen": int(np.isnan(fresh_idle).sum()), "p50_ms": p50,
                      "p99_ms": p99, "max_ms": float(np.nanmax(fresh_idle)) * 1e3,
                      "p50_ms_of_the_select_that_saw_it":
                          _ms(fresh_last[np.isfinite(fresh_last)])[0]})
        for r in phases:
            f = r.get("fresh_under_load")
            if f is None:
                continue
            p50, p99 = _ms(f[np.isfinite(f)])
            rows2.append({"when": f"{r['label']} (per message; Selects every "
                                  f"{1e3 / args.select_rate:.0f} ms)",
                          "n": f.size, "never_seen": int(np.isnan(f).sum()),
                          "p50_ms": p50, "p99_ms": p99,
                          "max_ms": float(np.nanmax(f)) * 1e3 if np.isfinite(f).any() else None})
        print(table(rows2))
        print()
        print("the learner in each phase: batches applied (state versions), and how long after "
              "the last ack every acknowledged reward was applied")
        print(table([r["learner_row"] for r in phases if "learner_row" in r]))
        print(f"target: p99 <= 100 ms -> idle {rows2[0]['p99_ms']:.1f} ms; "
              + "; ".join(f"{r['when'].split(' (')[0]} {r['p99_ms']:.0f} ms" for r in rows2[1:]))
        print()

        print("## 3. Durability cost: commit latency on SQLite (WAL), synchronous=FULL (the "
              "service's) vs NORMAL, calls interleaved")
        print(f"effective PRAGMA synchronous read back: FULL -> {seen['FULL']}, "
              f"NORMAL -> {seen['NORMAL']} (2 = FULL, 1 = NORMAL); file in {_fs_of(tmp)}")
        print(table(dur_rows))
        get = {(r["what"], r["synchronous"]): r["p50_ms"] for r in dur_rows}
        f1 = get[("SqlEventLog.insert_feedback, 1 row", "FULL")]
        n1 = get[("SqlEventLog.insert_feedback, 1 row", "NORMAL")]
        f100 = get[("SqlEventLog.insert_feedback, 100 rows", "FULL")]
        n100 = get[("SqlEventLog.insert_feedback, 100 rows", "NORMAL")]
        print(f"FULL costs {f1 - n1:+.3f} ms per 1-row commit ({f1 / n1:.1f}x) and "
              f"{f100 - n100:+.3f} ms per 100-row commit ({f100 / n100:.2f}x) at p50")

        for k, ph in enumerate((phases[0], phases[4])):
            prof = ph["profile"]
            if not prof:
                continue
            print()
            print(f"## 4{'ab'[k]}. Where the server's time goes during `{ph['label']}`")
            if "perf" in prof:
                print("\n".join(perf_summary(prof["perf"])))
                print()
            secs = args.baseline_seconds if k == 0 else args.seconds
            print("\n".join(spy_summary(prof.get("py-spy", ""), max(int(secs) - 1, 1),
                                        ph["cpu"]["threads"])))

        json_out = {
            "argv": sys.argv, "throughput": [r1 for r1, _ in rows],
            "selects_and_cpu": [r2 for _, r2 in rows], "log_check": checks,
            "freshness": rows2, "learner": [r["learner_row"] for r in phases if "learner_row" in r],
            "durability": dur_rows, "pinned": pin,
            "server_cpus": server_cpus, "client_cpus": client_cpus, "preselect_s": t_pre,
            "preselected": n_pre,
        }
        (out_dir / "feedback.json").write_text(json.dumps(json_out, indent=1, default=str))
        print(f"\nwrote {out_dir / 'feedback.json'}")
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
