"""The redis-py adapter (sync): one round trip per call, through the store's own client.

Used for django-redis (its default client, or a subclass of it that keeps its
connection handling) and Django's ``RedisCache``, subclasses included
(django-prometheus's instrumented backends, a team's own). It talks to the
store's redis-py client (same connection pool, serializer and compressor),
always to the primary: a replica's lag could serve an entry whose tag was
already bumped there. The encoding is :mod:`.redis_codec`'s.

* :meth:`RedisAdapter.read` is one ``MGET``, packed once per set of keys and
  sent on a pooled connection with redis-py's own connection calls and retry
  policy (``get_connection``, ``send_packed_command``, ``read_response``,
  ``release``): ``execute_command`` packed the same keys again on every call
  and recorded redis-py's OpenTelemetry metrics, about 5 µs of a 20 µs read
  (measured, redis-py 8.1; ``Redis.mget`` cost 10 µs more). So a read does not
  appear in redis-py's own command metrics.
* Writes that must read the versions first run one Lua script
  (:meth:`~RedisAdapter.stamp`); bumps and version creation are one pipeline
  (no ``MULTI``).

Its async twin (:meth:`RedisAdapter.aio`) is :mod:`.redis_asyncio`'s, on a
``redis.asyncio`` client built from the same connection settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import AsyncStoreAdapter, Envelope
from .redis_codec import STAMP_LUA, STAMP_SHA, RedisCodec, django_codec, django_redis_codec

__all__ = ["RedisAdapter", "redis_adapter"]


class RedisAdapter:
    """A :class:`~.base.StoreAdapter` for a Redis store, on its own redis-py client.

    *client* returns the primary's ``redis.Redis`` (a zero-argument callable:
    the store may rebuild it); *connection* is how :mod:`.redis_asyncio`
    reaches the same server: ``(url, pool class, pool keyword arguments)``,
    or ``None`` when it cannot (sentinel, custom connection factories): the
    async face then runs this adapter in a worker thread.
    """

    stamps = True
    atomic_create = True
    drops_writes = False
    per_process = True

    def __init__(
        self,
        store: Any,
        client: Callable[[], Any],
        codec: RedisCodec,
        connection: tuple[str, type, dict[str, Any]] | None,
    ) -> None:
        self.store = store
        self.codec = codec
        self.connection = connection
        self._client = client
        self._aio: dict[int, tuple[Any, int, AsyncStoreAdapter]] = {}

    def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        """One ``MGET``; the first *entries* values decoded as envelopes, the rest left as bytes."""
        pool = self._client().connection_pool
        options = pool.connection_kwargs
        packed = self.codec.mget(
            keys, options.get("encoding", "utf-8"), options.get("encoding_errors", "strict")
        )
        raws = self._send(pool, packed)
        decode = self.codec.decode_entry
        for i in range(entries):
            raws[i] = decode(raws[i])
        return raws

    @staticmethod
    def _send(pool: Any, packed: bytes) -> Any:
        """Send one packed command on a connection of *pool*; return its reply.

        What ``Redis.execute_command`` does, minus the packing and the metrics:
        the connection's retry policy (a connection error disconnects, then
        retries), the maintenance reconnect, the release to the pool.
        """
        conn = pool.get_connection()
        try:
            return conn.retry.call_with_retry(
                lambda: _exchange(conn, packed), lambda _error: conn.disconnect()
            )
        finally:
            reconnect = getattr(conn, "should_reconnect", None)
            if reconnect is not None and reconnect():
                conn.disconnect()
                conn.connect()
            pool.release(conn)

    def write(self, key: str, envelope: Envelope, timeout: Any, add: bool = False) -> bool:
        """One ``SET`` (``NX`` with *add*; a ``DEL`` for a timeout of 0)."""
        c = self.codec
        px = c.px(timeout)
        if px == 0:
            self._client().delete(c.inner(key))
            return True
        data = c.entry_bytes(envelope)
        return bool(self._client().set(c.inner(key), data, px=None if px < 0 else px, nx=add))

    def write_unlock(self, key: str, envelope: Envelope, timeout: Any, lock: str) -> None:
        """One pipeline: the entry's ``SET`` (or ``DEL``) and the lock's ``DEL``."""
        c = self.codec
        px = c.px(timeout)
        pipe = self._client().pipeline(transaction=False)
        if px == 0:
            pipe.delete(c.inner(key))
        else:
            pipe.set(c.inner(key), c.entry_bytes(envelope), px=None if px < 0 else px)
        pipe.delete(c.inner(lock))
        pipe.execute()

    def stamp(
        self,
        entry: str,
        version_keys: Sequence[str],
        value: Any,
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
        add: bool,
    ) -> bool:
        """One script call (``EVALSHA``)."""
        c = self.codec
        keys, args, vkeys, expected = c.stamp_call(
            entry, version_keys, value, timeout, version_timeout, fresh, add
        )
        return c.stamped(vkeys, expected, self._eval(keys, args))

    def stamp_many(
        self,
        values: Mapping[str, Any],
        version_keys: Sequence[str],
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
    ) -> None:
        """One script call per ``STAMP_CHUNK`` entries, so a large write never holds the server long."""
        c = self.codec
        vkeys, keys, fixed, payloads = c.stamp_many_calls(
            values, version_keys, timeout, version_timeout, fresh
        )
        for i, chunk_keys in enumerate(keys):
            stamp = self._eval(chunk_keys, [*fixed, *payloads[i]])
            if stamp != fixed[3]:  # learnt: the next chunks need no restamping
                c.learn(vkeys, stamp)
                payloads[i + 1 :] = [c.restamp(p, fixed[3], stamp) for p in payloads[i + 1 :]]
                fixed[3] = stamp

    def set_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> None:
        """One pipeline of ``SET ... PX``, no ``MULTI``."""
        inner, px = self.codec.inner, self.codec.version_px(timeout)
        pipe = self._client().pipeline(transaction=False)
        for key, token in tokens.items():
            pipe.set(inner(key), token, px=px)
        pipe.execute()

    def create_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> dict[str, Any]:
        """One pipeline of ``SET NX`` + ``GET`` per key."""
        inner, px = self.codec.inner, self.codec.version_px(timeout)
        pipe = self._client().pipeline(transaction=False)
        for key, token in tokens.items():
            pipe.set(inner(key), token, px=px, nx=True)
            pipe.get(inner(key))
        replies = pipe.execute()
        return {k: replies[2 * i + 1] for i, k in enumerate(tokens) if replies[2 * i + 1]}

    def token(self, value: int) -> bytes:
        return str(value).encode()

    def delete(self, key: str) -> bool:
        return bool(self._client().delete(self.codec.inner(key)))

    def delete_many(self, keys: Sequence[str]) -> None:
        if keys:
            inner = self.codec.inner
            self._client().delete(*[inner(k) for k in keys])

    def touch(self, key: str, timeout: Any) -> bool:
        """``PEXPIRE`` (``PERSIST`` for ``None``, ``DEL`` for 0), as Django's ``touch``."""
        c = self.codec
        px = c.px(timeout)
        if px < 0:
            return bool(self._client().persist(c.inner(key)))
        if px == 0:
            return bool(self._client().delete(c.inner(key)))
        return bool(self._client().pexpire(c.inner(key), px))

    def set_many(self, envelopes: Mapping[str, Envelope], timeout: Any) -> list[str]:
        """One pipeline of ``SET`` (entries whose stamps the caller read)."""
        c = self.codec
        px = c.px(timeout)
        pipe = self._client().pipeline(transaction=False)
        for key, envelope in envelopes.items():
            if px == 0:
                pipe.delete(c.inner(key))
            else:
                pipe.set(c.inner(key), c.entry_bytes(envelope), px=None if px < 0 else px)
        pipe.execute()
        return []

    def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the stamping script (``EVALSHA``; loaded first if the server lacks it)."""
        client = self._client()
        try:
            return client.execute_command("EVALSHA", STAMP_SHA, len(keys), *keys, *args)
        except Exception as exc:
            from redis.exceptions import NoScriptError  # cold path: first call on a server

            if not isinstance(exc, NoScriptError):
                raise
            client.script_load(STAMP_LUA)
            return client.execute_command("EVALSHA", STAMP_SHA, len(keys), *keys, *args)

    def aio(self) -> AsyncStoreAdapter:
        """Return the async adapter for the running event loop (one per loop and process).

        ``redis.asyncio`` connections belong to the loop that opened them, and
        ``async_to_sync`` runs a new loop per call: a client is kept per loop
        (and per process: a forked child opens its own).
        """
        from .redis_asyncio import for_running_loop

        return for_running_loop(self._aio, self, self.codec, self.connection)

    def close(self) -> None:
        """Forget the async clients (their pools close when collected); the store keeps its own."""
        self._aio.clear()


def _exchange(conn: Any, packed: bytes) -> Any:
    conn.send_packed_command((packed,))  # an iterable of chunks
    return conn.read_response()


def _django_redis_connection(store: Any) -> tuple[str, type, dict[str, Any]] | None:
    """How to reach django-redis *store*'s primary: ``(url, pool class, pool kwargs)``."""
    from django_redis.pool import ConnectionFactory

    client = store.client
    factory = client.connection_factory
    if type(factory) is not ConnectionFactory:
        return None  # sentinel or custom factory: its own way of finding the primary
    params = dict(factory.make_connection_params(str(client._server[0])))
    params.pop("parser_class", None)
    url = params.pop("url")
    return url, factory.pool_cls, {**params, **factory.pool_cls_kwargs}


def _django_connection(store: Any) -> tuple[str, type, dict[str, Any]] | None:
    """How to reach Django ``RedisCache`` *store*'s primary (its first server)."""
    cache_client = store._cache
    options = {k: v for k, v in cache_client._pool_options.items() if k != "parser_class"}
    return str(cache_client._servers[0]), cache_client._pool_class, options


def redis_adapter(store: Any) -> RedisAdapter | None:
    """Return a :class:`RedisAdapter` for *store*, or ``None`` if it is not a Redis store we can drive.

    By what the store is, subclasses included: django-redis's ``RedisCache``
    with its ``DefaultClient`` (or a subclass that is not the sharded, herd
    or sentinel client, which find or encode keys their own way), or Django's
    ``RedisCache``.
    """
    from django.core.cache.backends.redis import RedisCache

    if isinstance(store, RedisCache):
        cache_client = store._cache
        return RedisAdapter(
            store,
            lambda: cache_client.get_client(None, write=True),
            django_codec(store),
            _django_connection(store),
        )
    try:
        from django_redis.cache import RedisCache as DjangoRedisCache
        from django_redis.client import DefaultClient, HerdClient, SentinelClient, ShardClient
    except ImportError:  # django-redis not installed: no store can be one
        return None
    if not isinstance(store, DjangoRedisCache):
        return None
    client = store.client
    if not isinstance(client, DefaultClient) or isinstance(
        client, (ShardClient, HerdClient, SentinelClient)
    ):
        return None
    return RedisAdapter(
        store,
        lambda: client.get_client(write=True),
        django_redis_codec(store),
        _django_redis_connection(store),
    )
