"""Redis ``StateStore``: the hot copy of each experiment's serialized state, shared by processes.

A cache, never the truth: Redis may run without persistence and lose everything, since the event
log's checkpoints and apply records rebuild every state. So this store adds nothing to recover,
only the same never-backwards and fencing rules as ``MemoryStateStore``.

Key layout, all keys of one experiment under one Redis Cluster hash tag (``keys_for``) so they
share a slot, and one script may touch them all:

* ``{<prefix>:exp:<id>}:state`` — hash ``version``, ``value`` (the bytes), ``fence`` (the token
  the snapshot was published with; absent if none), read together by one HMGET.
* ``{<prefix>:exp:<id>}:fence`` — the highest fence seen. Kept apart from the snapshot because a
  put that loses on version still records its (newer) fence, as in ``MemoryStateStore``.

``put`` is one Lua script: check the fence, check the version, write, with no other command
in between, so racing publishers across processes cannot interleave a compare and a write.

The client may be one server's or a cluster's (``redis_client.client_from_url``): each command
and script names keys of one experiment only, hence of one slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from .errors import Conflict, StaleFence, Unavailable
from .redis_client import UNAVAILABLE_ERRORS, Client, client_from_url
from .state import Snapshot, StateStore

# For clients this module makes; redis-py lets options in the URL override these.
CLIENT_DEFAULTS = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}

# Redis Lua numbers are doubles: beyond 2**53 two versions could compare equal.
_EXACT = 2**53

# Check the fence (recording it), check the version, write the value (a whole state or a parts
# header), then each given slot's blob and version. ARGV: version, value, fence, reset ("1":
# forget every earlier part), base (a partial publication continues this published version;
# '' = none), then slot, blob pairs. Returns {1} written, {0} not newer (fence still recorded),
# {-1, seen} stale fence, {-2, current} the base is not what is published (Redis lost it).
_PUT_PARTS = """
local fence = ARGV[3]
if fence ~= '' then
  local seen = redis.call('GET', KEYS[2])
  if seen and tonumber(fence) < tonumber(seen) then
    return {-1, seen}
  end
  redis.call('SET', KEYS[2], fence)
end
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(ARGV[1]) <= tonumber(current) then
  return {0}
end
if ARGV[5] ~= '' and (not current or tonumber(current) ~= tonumber(ARGV[5])) then
  return {-2, current or ''}
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'value', ARGV[2])
if fence ~= '' then
  redis.call('HSET', KEYS[1], 'fence', fence)
else
  redis.call('HDEL', KEYS[1], 'fence')
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[3], KEYS[4])
end
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[1])
end
return {1}
"""

# get_parts: version, fence, header, then slot, part version, blob for every slot whose part
# version is above what the reader has (ARGV: slot, version pairs), in one atomic read.
_GET_PARTS = """
local head = redis.call('HMGET', KEYS[1], 'version', 'fence', 'value')
if not head[1] then
  return {}
end
local have = {}
for i = 1, #ARGV, 2 do
  have[ARGV[i]] = tonumber(ARGV[i + 1])
end
local out = {head[1], head[2] or '', head[3]}
local vers = redis.call('HGETALL', KEYS[2])
for i = 1, #vers, 2 do
  local slot, v = vers[i], tonumber(vers[i + 1])
  if not have[slot] or have[slot] < v then
    table.insert(out, slot)
    table.insert(out, vers[i + 1])
    table.insert(out, redis.call('HGET', KEYS[3], slot))
  end
end
return out
"""


class ExperimentKeys(NamedTuple):
    tag: str  # "{<prefix>:exp:<id>}": other Redis modules append their own suffixes to it
    state: str
    fence: str
    parts: str  # per-arm blobs by slot (put_parts)
    part_versions: str  # the version each slot's blob was last written at


class Parts(NamedTuple):
    """A state published in parts: ``header`` (what is not per arm) and the per-arm blobs a
    reader did not have yet, each with the version it was written at."""

    version: int
    header: bytes
    fence: int | None
    parts: dict[int, tuple[int, bytes]]  # slot -> (part version, blob)


def keys_for(prefix: str, experiment_id: int) -> ExperimentKeys:
    """The keys of one experiment, all in one cluster slot (the braces are the hash tag)."""
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"prefix must not contain braces (it is inside a hash tag): {prefix!r}")
    tag = f"{{{prefix}:exp:{int(experiment_id)}}}"
    return ExperimentKeys(
        tag, f"{tag}:state", f"{tag}:fence", f"{tag}:parts", f"{tag}:part_versions"
    )


@contextmanager
def _available() -> Iterator[None]:
    try:
        yield
    except UNAVAILABLE_ERRORS as e:  # also a cluster that cannot serve the slot now
        raise Unavailable(str(e)) from e


class RedisStateStore(StateStore[bytes]):
    def __init__(self, client: Client, *, prefix: str = "banditd") -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must not decode responses: values are bytes")
        keys_for(prefix, 0)  # refuse a bad prefix now, not on the first call
        self._client = client
        self._prefix = prefix
        self._put_parts = client.register_script(_PUT_PARTS)  # no I/O: loads on first use
        self._get_parts = client.register_script(_GET_PARTS)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "banditd") -> RedisStateStore:
        """``url``: one server or a cluster (``redis_client``). Timeouts default to 5 s (connect
        2 s) so a hung Redis cannot hang a caller; options in the URL (``?socket_timeout=...``)
        win."""
        return cls(client_from_url(url, **CLIENT_DEFAULTS), prefix=prefix)

    def get(self, experiment_id: int) -> Snapshot[bytes] | None:
        key = keys_for(self._prefix, experiment_id).state
        with _available():
            version, fence, value = self._client.hmget(key, ["version", "fence", "value"])
        if version is None:
            return None
        assert isinstance(value, bytes)  # written with the version; a decoding client was refused
        return Snapshot(int(version), value, None if fence is None else int(fence))

    def version(self, experiment_id: int) -> int | None:
        key = keys_for(self._prefix, experiment_id).state
        with _available():
            version = self._client.hget(key, "version")
        return None if version is None else int(version)

    def put(
        self, experiment_id: int, version: int, value: bytes, *, fence: int | None = None
    ) -> bool:
        return self.put_parts(experiment_id, version, value, {}, fence=fence)

    def delete(self, experiment_id: int) -> None:
        keys = keys_for(self._prefix, experiment_id)
        with _available():
            self._client.delete(keys.state, keys.fence, keys.parts, keys.part_versions)

    # --- per-arm parts: a large state is published and fetched by the arms that changed ----

    def put_parts(
        self,
        experiment_id: int,
        version: int,
        header: bytes,
        parts: dict[int, bytes],
        *,
        fence: int | None = None,
        reset: bool = False,
        base: int | None = None,
    ) -> bool:
        """Publish ``version`` as ``header`` plus the blobs of the arms in ``parts`` (slots not
        given keep their blob and part version); ``reset`` drops every earlier part first (a
        new layout, e.g. a grown capacity). Same version and fence rules as ``put``.

        ``base``: the publication these parts continue. If Redis no longer holds it (a restart
        or FLUSHALL lost it, or another publisher moved on), the other arms' blobs may be gone
        too, so nothing is written and ``Conflict`` says to publish every arm."""
        for n in (version, fence, base):
            if n is not None and not -_EXACT <= n <= _EXACT:
                raise ValueError(f"version and fence must be within ±2**53, got {n}")
        keys = keys_for(self._prefix, experiment_id)
        args: list[bytes | int | str] = [
            int(version),
            bytes(header),
            "" if fence is None else int(fence),
            "1" if reset else "0",
            "" if base is None else int(base),
        ]
        for slot, blob in parts.items():
            args += [int(slot), bytes(blob)]
        with _available():
            reply = self._put_parts(
                keys=[keys.state, keys.fence, keys.parts, keys.part_versions], args=args
            )
        if reply[0] == -1:
            raise StaleFence(f"fence: {fence} is older than {int(reply[1])}")
        if reply[0] == -2:
            now = reply[1].decode() if reply[1] else "nothing"
            raise Conflict(f"base: version {base} is not published (Redis holds {now})")
        return bool(reply[0] == 1)

    def get_parts(self, experiment_id: int, have: dict[int, int] | None = None) -> Parts | None:
        """The published header and the parts newer than ``have`` (slot -> part version the
        reader holds), read atomically; None if nothing is published."""
        keys = keys_for(self._prefix, experiment_id)
        args: list[int] = []
        for slot, v in (have or {}).items():
            args += [int(slot), int(v)]
        with _available():
            reply = self._get_parts(keys=[keys.state, keys.part_versions, keys.parts], args=args)
        if not reply:
            return None
        version, fence, header = int(reply[0]), reply[1], reply[2]
        parts = {
            int(reply[i]): (int(reply[i + 1]), bytes(reply[i + 2])) for i in range(3, len(reply), 3)
        }
        return Parts(version, bytes(header), int(fence) if fence else None, parts)


__all__ = ["CLIENT_DEFAULTS", "ExperimentKeys", "Parts", "RedisStateStore", "keys_for"]
