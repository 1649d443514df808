"""Production mode: several replicas on one Redis and one PostgreSQL.

Every replica serves Select from its in-process snapshot and commits Updates to the shared log.
Per experiment one replica learns: the one holding its Redis lease. Taking the lease over, a
replica rebuilds the state from the log (checkpoint + apply records) and takes a new fence in the
log, which deposes any earlier learner: its next apply record, checkpoint or publication carries
an older fence and is refused. The learner publishes its state to Redis (at most ``publish_hz``
times a second; a burst of applies publishes its last state); the other replicas poll the
published version and fetch a state only when it moved.

Redis is a cache: if it loses a state, the learner publishes again at its next apply, and a new
learner rebuilds from the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
import threading
import time
from typing import Any

import numpy as np
from banditd.policies import State
from banditd.store import serialize
from banditd.store.errors import Conflict, StaleFence, StoreError
from banditd.store.lease import RedisLease
from banditd.store.state_redis import RedisStateStore

from .registry import Registry, compile_policy, load_state
from .runtime import Runtime

log = logging.getLogger("banditd.replicas")

# The published header: applied watermark, layout length, layout JSON (capacity and the per-arm
# leaves), then the serialized rest of the state. Each arm's blob: its slice of every per-arm
# leaf, raw, in layout order.
_WM = struct.Struct("<q")
_LEN = struct.Struct("<I")


class Replicas:
    def __init__(
        self,
        registry: Registry,
        store: RedisStateStore,
        lease: RedisLease,
        holder: str,
        *,
        lease_ttl_s: float = 5.0,
        publish_hz: float = 20.0,
        poll_s: float = 0.02,
        experiment_poll_s: float = 1.0,
    ) -> None:
        self.registry = registry
        self.store = store
        self.lease = lease
        self.holder = holder
        self.lease_ttl_s = lease_ttl_s
        self.publish_every = 1.0 / publish_hz
        self.poll_s = poll_s
        self.experiment_poll_s = experiment_poll_s
        self._led: dict[int, int] = {}  # experiment -> the lease fence we took it with
        self._published: dict[int, float] = {}  # experiment -> monotonic time of last put
        self._dirty: set[int] = set()
        # last published arms, per experiment: (layout, host arrays, version)
        self._sent: dict[int, tuple[Any, dict[str, np.ndarray], int]] = {}
        self._held: dict[int, _Held] = {}  # followers: the arms fetched so far
        self._stop = threading.Event()
        self._quiet_until = 0.0  # the follower's outage warnings are quiet until then
        self._thread = threading.Thread(target=self._follow, name="replica-follow", daemon=True)

    # --- learning side (called from the learner thread) --------------------------------------

    def leads(self, rt: Runtime) -> bool:
        """Whether this replica learns ``rt`` now; takes the lease over when it is free."""
        exp = rt.exp.id
        try:
            fence = self.lease.acquire(exp, self.holder, self.lease_ttl_s)
        except StoreError as e:
            log.warning("lease of %s: %s", rt.key, e)
            self._led.pop(exp, None)
            return False
        if fence is None:
            self._led.pop(exp, None)
            return False
        if self._led.get(exp) != fence:
            # A takeover (or our own lease lapsed meanwhile): first a fence in the log, which
            # stops whoever learned before us at its next write, then the state from the log,
            # which can no longer move under us.
            self.registry.fences[exp] = self.registry.log.acquire_fence(exp)
            self.registry.rebuild(rt)
            compile_policy(rt.config, rt.policy, len(rt.arms))
            self._sent.pop(exp, None)  # publish every arm, over whatever was published before
            self._held.pop(exp, None)
            self._led[exp] = fence
            self._dirty.add(exp)
            log.info("%s: learning here (fence %d)", rt.key, self.registry.fences[exp])
        return True

    def lost(self, rt: Runtime, why: Exception) -> None:
        """A write was refused (a stale fence: another replica learns ``rt`` now; or a version
        already applied: our state is behind the log). The next ``leads`` starts over."""
        log.info("%s: no longer learning here (%s)", rt.key, why)
        self._led.pop(rt.exp.id, None)
        self._dirty.discard(rt.exp.id)

    def applied(self, rt: Runtime) -> None:
        self._dirty.add(rt.exp.id)
        self.publish_due(rt)

    def next_publish_in(self, cap: float) -> float:
        """Seconds until the earliest held-back publication may go out (at most ``cap``)."""
        waiting = [e for e in self._dirty if e in self._led]
        if not waiting:
            return cap
        now = time.monotonic()
        due = min(self._published.get(e, 0.0) + self.publish_every for e in waiting)
        return max(0.001, min(cap, due - now))

    def publish_due(self, rt: Runtime) -> None:
        exp = rt.exp.id
        if exp not in self._dirty or exp not in self._led:
            return
        now = time.monotonic()
        if now - self._published.get(exp, 0.0) < self.publish_every:
            return
        self._dirty.discard(exp)
        self._published[exp] = now
        with rt.lock:
            state, wm = rt.state, rt.watermark
        header, parts, base = self._split(rt, state, wm)
        try:
            self.store.put_parts(
                exp,
                int(state.meta.version),
                header,
                parts,
                fence=self.registry.fences[exp],
                reset=base is None,
                base=base,
            )
        except StaleFence as e:
            self.lost(rt, e)
        except Conflict as e:  # Redis lost our last publication: every arm again, at once
            log.warning("publishing %s: %s; publishing every arm", rt.key, e)
            self._sent.pop(exp, None)
            self._dirty.add(exp)
            self._published.pop(exp, None)
        except StoreError as e:  # Redis down: Selects elsewhere go stale, nothing is lost
            self._dirty.add(exp)
            self._sent.pop(exp, None)  # unsure what landed: publish every arm next time
            log.warning("publishing %s: %s", rt.key, e)

    def _split(
        self, rt: Runtime, state: State, wm: int
    ) -> tuple[bytes, dict[int, bytes], int | None]:
        """The header (watermark, layout, everything not per arm), the blobs of the arms whose
        statistics changed since the last publication, and that publication's version (None:
        every arm, after a takeover, a new layout or a lost publication)."""
        cap = rt.capacity
        per_arm = sorted(
            k for k, v in state.stats.items() if np.ndim(v) >= 1 and np.shape(v)[0] == cap
        )
        host = {k: np.asarray(state.stats[k]) for k in per_arm}
        layout = [[k, host[k].dtype.str, list(host[k].shape[1:])] for k in per_arm]
        prev = self._sent.get(rt.exp.id)
        reset = prev is None or prev[0] != (cap, layout)
        base = None if reset or prev is None else prev[2]
        if reset:
            changed = np.ones(cap, bool)
        else:
            assert prev is not None
            changed = np.zeros(cap, bool)
            for k in per_arm:
                diff = host[k] != prev[1][k]
                changed |= diff.reshape(cap, -1).any(axis=1) if diff.ndim > 1 else diff
        self._sent[rt.exp.id] = (
            (cap, layout),
            {k: host[k].copy() for k in per_arm},
            int(state.meta.version),
        )
        parts = {
            int(slot): b"".join(np.ascontiguousarray(host[k][slot]).tobytes() for k in per_arm)
            for slot in np.flatnonzero(changed)
        }
        rest = state._replace(
            stats={k: v for k, v in state.stats.items() if k not in per_arm}, cache={}
        )
        meta = json.dumps({"capacity": cap, "per_arm": layout}).encode()
        header = (
            _WM.pack(wm)
            + _LEN.pack(len(meta))
            + meta
            + serialize.dumps(
                rest,
                family=rt.config["family"],
                revision=rt.revision,
                version=int(state.meta.version),
                capacity=cap,
            )
        )
        return header, parts, base

    def learning(self) -> set[int]:
        return set(self._led)

    # --- following side ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for exp, fence in list(self._led.items()):
            with contextlib.suppress(StoreError):  # it expires on its own
                self.lease.release(exp, self.holder, fence)

    def _follow(self) -> None:
        last_check = 0.0
        while not self._stop.wait(self.poll_s):
            check = time.monotonic() - last_check > self.experiment_poll_s
            if check:
                last_check = time.monotonic()
            for rt in self.registry.all():
                try:
                    if check:
                        self.sync_experiment(rt)
                    if rt.exp.id not in self._led:
                        self.refresh(rt)
                except StoreError as e:  # Redis or PostgreSQL down: keep serving what we hold
                    now = time.monotonic()
                    if now - self._quiet_until > 0:
                        self._quiet_until = now + 10.0  # one line per outage-ish, not per second
                        log.warning("refreshing %s: %s (serving the last state)", rt.key, e)
                    self._stop.wait(1.0)
                    break
                except Exception:  # noqa: BLE001 - a bad blob: keep serving
                    log.warning("refreshing %s failed", rt.key, exc_info=True)
                    self._stop.wait(1.0)

    def sync_experiment(self, rt: Runtime) -> bool:
        """Reload ``rt`` from the log if another replica changed it (arms, revision, status,
        settings); True if it did."""
        exp = self.registry.log.get_experiment_by_id(rt.exp.id)
        if exp is None or exp.updated_at <= rt.exp.updated_at:
            return False
        if rt.exp.id in self._led:
            # The learner thread reloads it: its next pass takes the lease over again, with a
            # new fence and the state rebuilt from the log, never racing its own apply.
            self._led.pop(rt.exp.id, None)
        else:
            self.registry.rebuild(rt)
            compile_policy(rt.config, rt.policy, len(rt.arms))
        log.info("%s: reloaded after a change on another replica", rt.key)
        return True

    def refresh(self, rt: Runtime) -> bool:
        """Take the published state if it is newer than ours, fetching only the arms that
        changed since our last fetch; True if it was newer."""
        exp = rt.exp.id
        v = self.store.version(exp)
        if v is None or v <= int(rt.state.meta.version):
            return False
        held = self._held.get(exp)
        got = self.store.get_parts(exp, held.versions if held is not None else None)
        if got is None or got.version <= int(rt.state.meta.version):
            return False
        (wm,) = _WM.unpack_from(got.header)
        (n,) = _LEN.unpack_from(got.header, _WM.size)
        at = _WM.size + _LEN.size
        meta = json.loads(got.header[at : at + n])
        layout = (meta["capacity"], meta["per_arm"])
        if held is None or held.layout != layout:
            if held is not None:  # a new layout: everything again, from scratch
                got = self.store.get_parts(exp, None)
                if got is None:
                    return False
            held = _Held.empty(layout)
        held.take(got.parts)
        self._held[exp] = held
        state = load_state(
            rt.policy, got.header[at + n :], rt.config["family"], rt.revision, held.arrays
        )
        rt.policy.warm(state)
        with rt.lock:
            if int(state.meta.version) > int(rt.state.meta.version):
                rt.state = state
                rt.watermark = max(rt.watermark, int(wm))
        return True


class _Held:
    """A follower's host copy of an experiment's per-arm statistics and their part versions."""

    def __init__(self, layout: tuple[int, list[Any]], arrays: dict[str, np.ndarray]) -> None:
        self.layout = layout
        self.arrays = arrays
        self.versions: dict[int, int] = {}

    @classmethod
    def empty(cls, layout: tuple[int, list[Any]]) -> _Held:
        cap, per_arm = layout
        return cls(layout, {k: np.zeros((cap, *shape), np.dtype(dt)) for k, dt, shape in per_arm})

    def take(self, parts: dict[int, tuple[int, bytes]]) -> None:
        _, per_arm = self.layout
        leaves = [(k, np.dtype(dt), tuple(shape)) for k, dt, shape in per_arm]
        for slot, (version, blob) in parts.items():
            at = 0
            for k, dt, shape in leaves:
                count = int(np.prod(shape, dtype=np.int64))
                self.arrays[k][slot] = np.frombuffer(blob, dt, count, at).reshape(shape)
                at += count * dt.itemsize
            self.versions[slot] = version
