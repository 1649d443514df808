"""Redis clients from a URL (``--redis-url``): one server, or a Redis Cluster.

URL forms:

* ``redis://[[user]:password@]host[:port][/db][?option=value...]``, ``rediss://...`` (TLS) and
  ``unix:///path/to/socket?db=N``: one server, ``redis.Redis``.
* ``redis+cluster://[[user]:password@]host:port[,host:port...][/][?option=value...]`` and
  ``rediss+cluster://...`` (TLS): a Redis Cluster, ``redis.cluster.RedisCluster``. The hosts are
  seed nodes: the client reads the slot map (``CLUSTER SLOTS``) from the first one that answers
  and from then on talks to every master itself, following ``MOVED`` when slots move. List more
  than one so a start survives a seed being down. Database 0 only, as in any cluster; query
  options are those of ``redis://`` URLs (``socket_timeout=...``) and win over the defaults.
  Percent-encode any ``@ / ? ,`` in the credentials.

A cluster is chosen by the scheme alone, never guessed from the server: a plain ``redis://``
URL pointing at one cluster node is one server, as it always was.

Differences that matter to the callers here:

* Every key one command or Lua script names must hash to one slot. All of an experiment's keys
  share the hash tag ``{<prefix>:exp:<id>}`` (``state_redis.keys_for``), so every script of
  the state store and the lease touches one slot; different experiments hash to different
  slots and spread over the masters.
* ``RedisCluster`` reads the slot map when it is made, so unlike ``redis.Redis`` (which
  connects on first use) ``client_from_url`` raises (``RedisClusterException``) when no seed
  node answers.
* ``health_check_interval`` is not passed on to a cluster's node connections (redis-py keeps
  it out of them); a pub/sub listener on a cluster notices a node going away when its TCP
  connection closes or errors.
* ``retry`` is the cluster client's own retry of a whole command (with a slot-map refresh
  after a connection error), not a per-connection one.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, TypeAlias

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)

Client: TypeAlias = redis.Redis | RedisCluster

# What a caller should report as "Redis unavailable" (``errors.Unavailable``) rather than as a
# bug: connection trouble, and a cluster that cannot serve a slot now (down, failing over, a
# slot being moved, no node reachable).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """Split a ``redis+cluster://`` URL into a ``redis://`` URL of its first seed (with the
    credentials, path and query, for redis-py to parse) and every seed's (host, port)."""
    scheme, _, rest = url.partition("://")
    base = CLUSTER_SCHEMES.get(scheme.lower())
    if base is None:
        raise ValueError(f"not a cluster URL ({' or '.join(CLUSTER_SCHEMES)}://): {url!r}")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    items = [item.strip() for item in hosts.split(",") if item.strip()]
    if not items:
        raise ValueError(f"cluster URL names no host:port: {url!r}")
    seeds: list[tuple[str, int]] = []
    for item in items:
        parts = urllib.parse.urlsplit(f"//{item}")
        try:
            port = parts.port or 6379
        except ValueError as e:
            raise ValueError(f"cluster URL: bad port in {item!r}") from e
        if not parts.hostname:
            raise ValueError(f"cluster URL: no host in {item!r}")
        seeds.append((parts.hostname, port))
    return f"{base}://{userinfo}{at}{items[0]}{tail}", seeds


def redact_url(url: str) -> str:
    """``url`` with the password hidden (in the credentials or a ``password=`` option), for
    logs. Unlike SQLAlchemy's ``make_url`` this also parses a cluster URL's host list."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    userinfo, at, hosts = rest[:end].rpartition("@")
    tail = re.sub(r"([?&]password=)[^&#]*", r"\1***", rest[end:], flags=re.IGNORECASE)
    if at:
        user, colon, _ = userinfo.partition(":")
        return f"{scheme}://{user}{':***' if colon else ''}@{hosts}{tail}"
    return f"{scheme}://{hosts}{tail}"


def client_from_url(url: str, **defaults: Any) -> Client:
    """A client for ``url`` (see the module docstring for the forms). ``defaults`` are client
    options (``socket_timeout``, ``retry``, ...) that options in the URL's query override."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **defaults)
    first, seeds = cluster_seeds(url)
    return RedisCluster(
        url=first, startup_nodes=[ClusterNode(host, port) for host, port in seeds], **defaults
    )


__all__ = [
    "CLUSTER_SCHEMES",
    "UNAVAILABLE_ERRORS",
    "Client",
    "client_from_url",
    "cluster_seeds",
    "is_cluster_url",
    "redact_url",
]
