"""A Django cache backend on a Redis Cluster (or a Valkey cluster), over redis-py's cluster clients.

``fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache``: Django's own
``RedisCache`` (its key function, timeouts, serializer, ``OPTIONS``) with a client that
talks to a cluster through redis-py's ``redis.cluster.RedisCluster``. Why our own: no
well-kept library fits Python 3.11 with async (django-valkey's cluster backend is
sync-only and its ``set_many`` takes no timeout; django-cachex needs Python 3.12;
django-redis and Django have no cluster client). See docs/deployments.md.

``LOCATION``: one or more seed nodes, ``"redis://host:port"`` (a list, or separated by
``,`` or ``;``); the client discovers the others (``CLUSTER SLOTS``) and follows
``MOVED``/``ASK`` redirects itself. ``OPTIONS`` are Django's ``RedisCache`` options
(``serializer``, ``parser_class``) and keyword arguments of ``RedisCluster``
(``socket_timeout``, ``password``, ``require_full_coverage``, ...).

Multi-key calls (``get_many``, ``set_many``, ``delete_many``) span hash slots: they are
split per slot and sent per node (redis-py's ``mget_nonatomic`` and cluster pipelines),
not atomic across slots, as Django's API does not promise atomicity anyway. ``clear()``
flushes every primary (``FLUSHDB`` on each): the whole cluster database.

The async ``a*`` methods are Django's (each call runs in a worker thread, as Django's own
``RedisCache`` does). The fragmented backend over this store does not use them: its store
adapter (:mod:`fragmented_keys_django.stores.redis_cluster`) drives the cluster natively,
on ``redis.asyncio.cluster.RedisCluster`` for async calls.

``cache.client`` (the store's :class:`RedisClusterCacheClient`) has ``.cluster()``: the
process's ``RedisCluster`` (thread-safe), e.g. for ``CLUSTER GETKEYSINSLOT`` on the node
owning a tenant's slot.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import urlsplit

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

__all__ = ["RedisClusterCache", "RedisClusterCacheClient", "startup_nodes"]

# One RedisCluster per (seeds, options) and process: Django builds a backend per thread
# and per async context (under ASGI, per request), and a cluster client discovers the
# slot map when built. Clients are thread-safe; each checks its pid (a forked child
# opens new connections).
_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


def startup_nodes(servers: list[str]) -> list[tuple[str, int]]:
    """Return ``(host, port)`` of each seed URL in *servers* (``redis://host:port``, ``rediss://``).

    Raises ``ValueError`` naming a URL without a port or of another scheme.
    """
    nodes = []
    for url in servers:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("redis", "rediss", "valkey", "valkeys") or not parts.port:
            raise ValueError(
                f"Redis Cluster LOCATION entries must be redis://host:port URLs, got {url!r}"
            )
        nodes.append((parts.hostname or "127.0.0.1", parts.port))
    return nodes


class RedisClusterCacheClient(RedisCacheClient):
    """Django's ``RedisCacheClient`` on one ``redis.cluster.RedisCluster`` (built on first use).

    *servers* are seed URLs; *options* are ``RedisCluster`` keyword arguments
    (``parser_class`` and ``pool_class`` are Django's and are not passed on;
    the URL's credentials and ``rediss://`` are).
    """

    def __init__(
        self,
        servers: list[str],
        serializer: Any = None,
        pool_class: Any = None,
        parser_class: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(servers, serializer, pool_class, parser_class, **options)
        self._nodes = startup_nodes(servers)
        self._cluster_options = dict(options)
        first = urlsplit(servers[0].strip())
        if first.username:
            self._cluster_options.setdefault("username", first.username)
        if first.password:
            self._cluster_options.setdefault("password", first.password)
        if first.scheme in ("rediss", "valkeys"):
            self._cluster_options.setdefault("ssl", True)
        self._key = (
            tuple(self._nodes),
            tuple(sorted((k, repr(v)) for k, v in self._cluster_options.items())),
        )

    def cluster(self) -> Any:
        """Return this process's ``redis.cluster.RedisCluster`` for these seeds and options.

        Built once per process (thread-safe) and shared by every backend
        instance with the same ``LOCATION`` and ``OPTIONS``.
        """
        client = _clients.get(self._key)
        if client is None:
            from redis.cluster import ClusterNode, RedisCluster

            with _lock:
                client = _clients.get(self._key)
                if client is None:
                    client = _clients[self._key] = RedisCluster(
                        startup_nodes=[ClusterNode(h, p) for h, p in self._nodes],
                        **self._cluster_options,
                    )
        return client

    def async_options(self) -> tuple[list[tuple[str, int]], dict[str, Any]]:
        """``(seed nodes, keyword arguments)`` for a ``redis.asyncio.cluster.RedisCluster``.

        A ``retry`` option (redis-py's sync ``Retry``) becomes its asyncio twin.
        """
        options = dict(self._cluster_options)
        retry = options.get("retry")
        if retry is not None:
            from redis.asyncio.retry import Retry

            options["retry"] = Retry(retry._backoff, retry._retries)
        return list(self._nodes), options

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        return self.cluster()

    def get_many(self, keys: Any) -> dict[Any, Any]:
        keys = list(keys)
        values = self.cluster().mget_nonatomic(keys) if keys else []
        loads = self._serializer.loads
        return {k: loads(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, data: dict[Any, Any], timeout: Any) -> None:
        if timeout == 0:  # expire at once, as Django's RedisCache does
            self.delete_many(list(data))
            return
        pipe = self.cluster().pipeline()
        dumps = self._serializer.dumps
        for key, value in data.items():
            pipe.set(key, dumps(value), ex=timeout)
        pipe.execute()

    def delete_many(self, keys: Any) -> None:
        pipe = self.cluster().pipeline()
        for key in keys:
            pipe.delete(key)
        pipe.execute()

    def clear(self) -> bool:
        """``FLUSHDB`` on every primary; a stale map of primaries (after a failover) is re-read first.

        A node the client still takes for a primary answers ``READONLY`` once it
        is a replica: the slot map is re-read and the flush sent again.
        """
        from redis.exceptions import ConnectionError, ReadOnlyError

        client = self.cluster()
        try:
            return bool(client.flushdb())
        except (ReadOnlyError, ConnectionError):
            client.nodes_manager.initialize()
            return bool(client.flushdb())

    def close(self) -> None:
        """Close the shared cluster client's connections and forget it (rebuilt on next use)."""
        with _lock:
            client = _clients.pop(self._key, None)
        if client is not None:
            client.close()


class RedisClusterCache(RedisCache):
    """Django's ``RedisCache`` on a Redis Cluster (see the module docstring).

    ``hash_slots = True`` tells the fragmented backend that keys live in hash
    slots: versions shared by every tenant are kept in each slot.
    """

    hash_slots = True

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        if isinstance(server, str):
            self._servers = [s for s in re.split("[;,]", server) if s.strip()]
        if not self._servers:
            raise ValueError(
                "RedisClusterCache needs LOCATION: one or more redis://host:port seeds"
            )
        self._class = RedisClusterCacheClient

    @property
    def client(self) -> RedisClusterCacheClient:
        """The store's client; ``client.cluster()`` is the process's ``RedisCluster``."""
        return self._cache

    def close(self, **kwargs: Any) -> None:
        """Keep connections open between requests: the cluster client is shared by the process.

        ``client.close()`` closes it (tests, shutdown).
        """
