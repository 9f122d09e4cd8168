"""The native async Redis adapter: ``redis.asyncio``, no thread, the same bytes as the sync one.

Built from the sync :class:`~.redis_py.RedisAdapter` of the same store: its
codec (serializer, compressor, key function, learnt stamps) and its primary's
connection settings (URL, credentials, socket timeouts, pool class and
``CONNECTION_POOL_KWARGS``: ``max_connections``, a ``BlockingConnectionPool``
and its ``timeout``). For django-redis's ``SentinelClient``, the primary
``redis.asyncio.sentinel.Sentinel(...).master_for(service)`` names, from the
same sentinels and options (:class:`SentinelConnection`), with the
store's failover epoch checked on each new connection. Each call is one round
trip, as in the sync adapter, awaited on the event loop: the cache path of a
native async caller (an ASGI view) uses no thread.

An asyncio connection belongs to the loop that opened it, and
``async_to_sync`` runs a new loop per call: :func:`for_running_loop` keeps one
client per loop and per process, and drops those of closed loops.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
from redis.exceptions import NoScriptError, ResponseError

from .base import AsyncStoreAdapter, StoreAdapter, ThreadedAsyncAdapter
from .redis_codec import Plan, RedisCodec
from .redis_ops import AsyncCodecRequests

__all__ = ["AsyncRedisAdapter", "Connection", "SentinelConnection", "for_running_loop"]

_lock = threading.Lock()
# This process's id, kept by a fork hook (os.getpid() is a system call on every read).
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
#: Clean connections an async adapter keeps between calls (more go back to the pool).
_IDLE = 16


@dataclass(frozen=True)
class SentinelConnection:
    """How this module reaches a Sentinel-managed primary: django-redis's settings.

    What django-redis's ``SentinelConnectionFactory`` builds its sync pool from:
    *sentinels* (the ``SENTINELS`` option: ``(host, port)`` pairs),
    *service_name* (the ``LOCATION`` URL's host), *sentinel_kwargs* (the
    ``SENTINEL_KWARGS`` option, or ``None``: the sentinels then take the
    ``socket_*`` options of *connection_kwargs*), *connection_kwargs* (the
    factory's connection options: ``USERNAME``, ``PASSWORD``, ``SOCKET_TIMEOUT``,
    ``SOCKET_CONNECT_TIMEOUT`` in seconds, and ``CONNECTION_POOL_KWARGS``) and
    *url_kwargs* (the ``LOCATION`` URL's own: ``db``, credentials, query
    options; they win, as in redis-py's ``from_url``).
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    sentinel_kwargs: dict[str, Any] | None
    connection_kwargs: dict[str, Any] = field(default_factory=dict)
    url_kwargs: dict[str, Any] = field(default_factory=dict)


#: How this module reaches a store's primary: ``(url, pool class, pool kwargs)``,
#: a :class:`SentinelConnection`, or ``None`` (a custom connection factory: a worker thread).
Connection = tuple[str, type, dict[str, Any]] | SentinelConnection | None


class AsyncRedisAdapter(AsyncCodecRequests):
    """A :class:`~.base.AsyncStoreAdapter` on a ``redis.asyncio`` client bound to one event loop.

    Each method sends the same :class:`~.redis_codec.Plan` as the sync adapter's
    (see :mod:`.redis_py`), in one round trip, awaited.
    """

    stamps = True
    atomic_create = True
    drops_writes = False

    def __init__(self, codec: RedisCodec, client: aioredis.Redis, epoch: Any = None) -> None:
        self.store = codec.store
        self.codec = codec
        #: The store's :class:`~.failover.FailoverEpoch`, or ``None``.
        self._epoch = epoch
        self._client = client
        self._pool = client.connection_pool
        # Connections that finished an exchange cleanly, kept for the next call on this
        # loop (taking one from the pool and giving it back cost about 10 % of a call).
        self._idle: list[Any] = []

    async def _do(self, plan: Plan) -> Any:
        """Send *plan* on a connection (retry policy as redis.asyncio's); finish it.

        A connection whose exchange did not finish (an error, a cancelled
        task: its reply may still be on the way) goes back to the pool, which
        checks it before lending it again.
        """
        idle = self._idle
        conn = idle.pop() if idle else await self._pool.get_connection()
        clean = False
        epoch = self._epoch
        try:
            if epoch is None:
                replies = await conn.retry.call_with_retry(
                    lambda: _exchange(conn, plan), lambda _error: conn.disconnect()
                )
            else:  # each (re)connection checked before its first command

                async def exchange() -> list[Any]:
                    await epoch.acheck(conn)  # runs the health check first
                    replies = await _exchange(conn, plan, check_health=False)
                    epoch.aconfirm(conn)
                    return replies

                replies = await conn.retry.call_with_retry(
                    exchange, lambda _error: conn.disconnect()
                )
            clean = True
        finally:
            if clean and len(idle) < _IDLE:
                idle.append(conn)
            else:
                await self._pool.release(conn)
        return plan.finish(replies)

    async def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await self._do(self.codec.evalsha(keys, args))
        except NoScriptError:  # first call on a server
            await self._do(self.codec.script_load())
            return await self._do(self.codec.evalsha(keys, args))


async def _exchange(conn: Any, plan: Plan, check_health: bool = True) -> list[Any]:
    """Send *plan* on *conn* and read every reply (see ``redis_py._exchange``)."""
    await conn.send_packed_command((plan.packed,), check_health=check_health)
    replies, error = [], None
    for _ in range(plan.replies):
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:  # Redis replied with an error: read the others first
            error = error or exc
            replies.append(None)
    if error is not None:
        raise error
    return replies


def _async_options(kwargs: dict[str, Any], classes: Any) -> dict[str, Any]:
    """redis-py connection options *kwargs* for ``redis.asyncio``: its twin classes.

    A ``connection_class`` becomes the class of the same name in module
    *classes* (``redis.asyncio.connection`` or ``.sentinel``), or is left to the
    pool's default (the URL's scheme, ``ssl``) when there is none; a ``retry``
    becomes ``redis.asyncio``'s with the same backoff and retries.
    """
    options = dict(kwargs)
    connection_class = options.pop("connection_class", None)
    if connection_class is not None:
        same = getattr(classes, connection_class.__name__, None)
        if same is not None:
            options["connection_class"] = same
    retry = options.pop("retry", None)
    if retry is not None:
        from redis.asyncio.retry import Retry

        options["retry"] = Retry(retry._backoff, retry._retries)
    return options


def _async_pool(url: str, pool_class: type, kwargs: dict[str, Any]) -> aioredis.ConnectionPool:
    """A ``redis.asyncio`` pool with the settings of a redis-py pool (class, kwargs) for *url*."""
    cls = (
        aioredis.BlockingConnectionPool
        if issubclass(pool_class, redis.BlockingConnectionPool)
        else aioredis.ConnectionPool
    )
    return cls.from_url(url, **_async_options(kwargs, aioredis.connection))


def _sentinel_client(settings: SentinelConnection) -> aioredis.Redis:
    """A ``redis.asyncio`` client of the primary the sentinels of *settings* name.

    ``redis.asyncio.sentinel.Sentinel(...).master_for(service)``, as django-redis's
    ``SentinelConnectionFactory`` builds its sync pool: the sentinels get
    ``SENTINEL_KWARGS`` (or the ``socket_*`` options), the primary's connections
    the factory's options and the ``LOCATION`` URL's (``db``, credentials). Its
    connections ask the sentinels for the primary on each (re)connection and
    drop one that reaches a demoted primary; never a replica.
    """
    options = _async_options(settings.connection_kwargs, aiosentinel)
    primary = dict(settings.url_kwargs)
    scheme_class = primary.pop("connection_class", None)  # rediss://: TLS to the primary
    if scheme_class is not None and issubclass(scheme_class, redis.SSLConnection):
        primary["ssl"] = True
    sentinel = aiosentinel.Sentinel(
        list(settings.sentinels), sentinel_kwargs=settings.sentinel_kwargs, **options
    )
    return sentinel.master_for(settings.service_name, redis_class=aioredis.Redis, **primary)


def for_running_loop(
    registry: dict[int, tuple[Any, int, AsyncStoreAdapter]],
    adapter: StoreAdapter,
    codec: RedisCodec,
    connection: Connection,
    epoch: Any = None,
) -> AsyncStoreAdapter:
    """Return the async adapter of a Redis store for the running loop, made once per loop and process.

    *registry* is the sync *adapter*'s ``{id(loop): (loop, pid, async adapter)}``;
    *codec* and *connection* (``(url, pool class, pool kwargs)``, or a
    :class:`SentinelConnection`) are its encoding and its primary's
    settings; *epoch* its failover epoch, if any (:mod:`.failover`). Without
    connection settings (a custom connection factory) the sync adapter runs in
    a worker thread instead.
    """
    loop = asyncio.get_running_loop()
    hit = registry.get(id(loop))
    pid = _pid[0]
    if hit is not None and hit[0] is loop and hit[1] == pid:
        return hit[2]
    with _lock:
        for key, (other, other_pid, _) in list(registry.items()):
            if other.is_closed() or other_pid != pid:
                del registry[key]  # its connections are closed when collected
        if connection is None:
            made: AsyncStoreAdapter = ThreadedAsyncAdapter(adapter)
        elif isinstance(connection, SentinelConnection):
            made = AsyncRedisAdapter(codec, _sentinel_client(connection), epoch)
        else:
            url, pool_class, kwargs = connection
            client = aioredis.Redis(connection_pool=_async_pool(url, pool_class, kwargs))
            made = AsyncRedisAdapter(codec, client, epoch)
        registry[id(loop)] = (loop, pid, made)
    return made
