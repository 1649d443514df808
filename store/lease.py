"""``RedisLease``: at most one learner per experiment, with a fencing token.

Any replica may learn any experiment, but only one should at a time: the holder of the
experiment's lease. A lease alone is not enough. A learner can lose it without noticing — a GC
pause, a long compile, a network partition outlasting the TTL — and another replica takes over;
when the first one resumes, it still believes it holds the lease and would apply a batch, write
a checkpoint or publish a state on top of (or under) the new holder's. So every takeover hands
out a *fence*: a counter that only grows, per experiment. The learner stamps its fence on every
apply record, checkpoint and state publication, and the stores refuse a write carrying a fence
lower than the highest they have seen (``errors.StaleFence``). A deposed learner is thereby
stopped at its first write, whatever it believes about its lease; the lease only keeps two
learners from wasting work at once, the fence is what keeps the data right.

Keys, under the experiment's hash tag ``{<prefix>:exp:<id>}`` (one Redis Cluster slot, so the
Lua scripts may touch both):

* ``…:lease`` — a hash ``{holder, fence}`` with a ``PX`` expiry. Expiry is judged by the Redis
  server's clock alone; no client clock is compared with anything.
* ``…:lease_fence`` — the fence counter, no expiry (``…:fence`` is the state store's highest
  fence seen). ``INCR``ed on every takeover: when the lease was
  free (never taken, expired or released) or held by someone else whose lease lapsed.

``holder`` names one learner incarnation (e.g. ``host:pid:uuid``): two processes using the same
holder string are treated as one. A holder re-acquiring its own live lease renews it and keeps
the fence; after its lease has lapsed it gets a new fence like anyone else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .errors import Unavailable
from .redis_client import UNAVAILABLE_ERRORS, Client, client_from_url
from .state_redis import keys_for

_CONNECTION_ERRORS = UNAVAILABLE_ERRORS

# KEYS: lease, fence counter. ARGV: holder, ttl in ms. Returns the fence, or nil when another
# live holder has the lease.
_ACQUIRE = """
local cur = redis.call('HMGET', KEYS[1], 'holder', 'fence')
if cur[1] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(cur[2])
end
if cur[1] then
  return false
end
local fence = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'fence', fence)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return fence
"""

# KEYS: lease. ARGV: holder, fence, ttl in ms. 1 if renewed.
_RENEW = """
local cur = redis.call('HMGET', KEYS[1], 'holder', 'fence')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: holder, fence. 1 if released.
_RELEASE = """
local cur = redis.call('HMGET', KEYS[1], 'holder', 'fence')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except _CONNECTION_ERRORS as e:
        raise Unavailable(f"Redis lease store unreachable: {e}") from e


def _tag(prefix: str, experiment_id: int) -> str:
    return keys_for(prefix, experiment_id).tag


def _ttl_ms(ttl_s: float) -> int:
    if not ttl_s > 0:
        raise ValueError(f"lease ttl must be positive, got {ttl_s!r}")
    return max(1, round(ttl_s * 1000))


class RedisLease:
    """Leases for every experiment under one prefix. Thread-safe (the client pools connections).

    ``client`` should have socket timeouts (``from_url`` sets them); connection errors raise
    ``errors.Unavailable``. A learner that cannot renew should stop writing before its TTL runs
    out — and the fence refuses its writes if it does not.
    """

    def __init__(self, client: Client, *, prefix: str = "banditd") -> None:
        self._client = client
        self._owns_client = False
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "banditd", socket_timeout: float = 2.0
    ) -> RedisLease:
        """Connect to ``url`` (``redis://host:port/db``, or a cluster: ``redis_client``);
        ``close`` also closes this client."""
        client = client_from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1),
        )
        lease = cls(client, prefix=prefix)
        lease._owns_client = True
        return lease

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def lease_key(self, experiment_id: int) -> str:
        return f"{_tag(self.prefix, experiment_id)}:lease"

    def fence_key(self, experiment_id: int) -> str:
        return f"{_tag(self.prefix, experiment_id)}:lease_fence"

    def acquire(self, experiment_id: int, holder: str, ttl_s: float) -> int | None:
        """Take the lease for ``ttl_s`` seconds if it is free, expired or already ours.

        Returns the fence: a new, higher one on a takeover; the current one when ``holder``
        already held it (the lease is renewed). None while another holder's lease is live."""
        ttl = _ttl_ms(ttl_s)
        keys = [self.lease_key(experiment_id), self.fence_key(experiment_id)]
        with _unavailable():
            fence = self._acquire(keys=keys, args=[holder, ttl])
        return None if fence is None else int(fence)

    def renew(self, experiment_id: int, holder: str, fence: int, ttl_s: float) -> bool:
        """Extend the lease to ``ttl_s`` from now; False if ``holder`` no longer holds it with
        ``fence`` (it lapsed, or someone took over — stop writing)."""
        ttl = _ttl_ms(ttl_s)
        with _unavailable():
            ok = self._renew(keys=[self.lease_key(experiment_id)], args=[holder, int(fence), ttl])
        return bool(ok)

    def release(self, experiment_id: int, holder: str, fence: int) -> None:
        """Give the lease up now, if ``holder`` still holds it with ``fence``; else nothing."""
        with _unavailable():
            self._release(keys=[self.lease_key(experiment_id)], args=[holder, int(fence)])

    def current_fence(self, experiment_id: int) -> int:
        """The highest fence handed out for the experiment; 0 if its lease was never taken."""
        with _unavailable():
            value = self._client.get(self.fence_key(experiment_id))
        return 0 if value is None else int(value)
