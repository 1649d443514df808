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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import redis

from .errors import StaleFence, Unavailable
from .state import Snapshot, StateStore

# For clients this module makes; redis-py lets options in the URL override these.
CLIENT_DEFAULTS = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}

# Redis Lua numbers are doubles: beyond 2**53 two versions could compare equal.
_EXACT = 2**53

# Returns {1} written, {0} not newer (fence still recorded), {-1, seen} stale fence.
_PUT = """
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
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'value', ARGV[2])
if fence ~= '' then
  redis.call('HSET', KEYS[1], 'fence', fence)
else
  redis.call('HDEL', KEYS[1], 'fence')
end
return {1}
"""


class ExperimentKeys(NamedTuple):
    tag: str  # "{<prefix>:exp:<id>}": other Redis modules append their own suffixes to it
    state: str
    fence: str


def keys_for(prefix: str, experiment_id: int) -> ExperimentKeys:
    """The keys of one experiment, all in one cluster slot (the braces are the hash tag)."""
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"prefix must not contain braces (it is inside a hash tag): {prefix!r}")
    tag = f"{{{prefix}:exp:{int(experiment_id)}}}"
    return ExperimentKeys(tag, f"{tag}:state", f"{tag}:fence")


@contextmanager
def _available() -> Iterator[None]:
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise Unavailable(str(e)) from e


class RedisStateStore(StateStore[bytes]):
    def __init__(self, client: redis.Redis, *, prefix: str = "banditd") -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must not decode responses: values are bytes")
        keys_for(prefix, 0)  # refuse a bad prefix now, not on the first call
        self._client = client
        self._prefix = prefix
        self._put = client.register_script(_PUT)  # no I/O: EVALSHA loads it on first use

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "banditd") -> RedisStateStore:
        """Timeouts default to 5 s (connect 2 s) so a hung Redis cannot hang a caller; options in
        the URL (``?socket_timeout=...``) win."""
        return cls(redis.Redis.from_url(url, **CLIENT_DEFAULTS), prefix=prefix)

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
        for n in (version, fence):
            if n is not None and not -_EXACT <= n <= _EXACT:
                raise ValueError(f"version and fence must be within ±2**53, got {n}")
        keys = keys_for(self._prefix, experiment_id)
        args: list[bytes | int | str] = [
            int(version),
            bytes(value),
            "" if fence is None else int(fence),
        ]
        with _available():
            reply = self._put(keys=[keys.state, keys.fence], args=args)
        if reply[0] == -1:
            raise StaleFence(f"fence: {fence} is older than {int(reply[1])}")
        return bool(reply[0] == 1)

    def delete(self, experiment_id: int) -> None:
        keys = keys_for(self._prefix, experiment_id)
        with _available():
            self._client.delete(keys.state, keys.fence)


__all__ = ["CLIENT_DEFAULTS", "ExperimentKeys", "RedisStateStore", "keys_for"]
