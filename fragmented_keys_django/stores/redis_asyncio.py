"""The native async Redis adapter: ``redis.asyncio``, no thread, the same bytes as the sync one.

Built from the sync :class:`~.redis_py.RedisAdapter` of the same store: its
codec (serializer, compressor, key function, learnt stamps) and its primary's
connection settings (URL, credentials, socket timeouts, pool class and
``CONNECTION_POOL_KWARGS``: ``max_connections``, a ``BlockingConnectionPool``
and its ``timeout``). Each call is one round trip, as in the sync adapter,
awaited on the event loop: the cache path of a native async caller (an ASGI
view) uses no thread.

An asyncio connection belongs to the loop that opened it, and
``async_to_sync`` runs a new loop per call: :func:`for_running_loop` keeps one
client per loop and per process, and drops those of closed loops.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from .base import AsyncStoreAdapter, Envelope, StoreAdapter, ThreadedAsyncAdapter
from .redis_codec import STAMP_LUA, STAMP_SHA, RedisCodec

__all__ = ["AsyncRedisAdapter", "for_running_loop"]

_lock = threading.Lock()


class AsyncRedisAdapter:
    """A :class:`~.base.AsyncStoreAdapter` on a ``redis.asyncio`` client bound to one event loop."""

    stamps = True
    atomic_create = True
    drops_writes = False

    def __init__(self, codec: RedisCodec, client: aioredis.Redis) -> None:
        self.store = codec.store
        self.codec = codec
        self._client = client

    def token(self, value: int) -> bytes:
        return str(value).encode()

    async def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        """One ``MGET``, packed once per set of keys; see :meth:`.redis_py.RedisAdapter.read`."""
        pool = self._client.connection_pool
        options = pool.connection_kwargs
        packed = self.codec.mget(
            keys, options.get("encoding", "utf-8"), options.get("encoding_errors", "strict")
        )
        conn = await pool.get_connection()
        try:
            raws = await conn.retry.call_with_retry(
                lambda: _exchange(conn, packed), lambda _error: conn.disconnect()
            )
        finally:
            await pool.release(conn)
        decode = self.codec.decode_entry
        for i in range(entries):
            raws[i] = decode(raws[i])
        return raws

    async def write(self, key: str, envelope: Envelope, timeout: Any, add: bool = False) -> bool:
        c = self.codec
        px = c.px(timeout)
        if px == 0:
            await self._client.delete(c.inner(key))
            return True
        data = c.entry_bytes(envelope)
        return bool(await self._client.set(c.inner(key), data, px=None if px < 0 else px, nx=add))

    async def write_unlock(self, key: str, envelope: Envelope, timeout: Any, lock: str) -> None:
        c = self.codec
        px = c.px(timeout)
        pipe = self._client.pipeline(transaction=False)
        if px == 0:
            pipe.delete(c.inner(key))
        else:
            pipe.set(c.inner(key), c.entry_bytes(envelope), px=None if px < 0 else px)
        pipe.delete(c.inner(lock))
        await pipe.execute()

    async def stamp(
        self,
        entry: str,
        version_keys: Sequence[str],
        value: Any,
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
        add: bool,
    ) -> bool:
        c = self.codec
        keys, args, vkeys, expected = c.stamp_call(
            entry, version_keys, value, timeout, version_timeout, fresh, add
        )
        return c.stamped(vkeys, expected, await self._eval(keys, args))

    async def stamp_many(
        self,
        values: Mapping[str, Any],
        version_keys: Sequence[str],
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
    ) -> None:
        c = self.codec
        vkeys, keys, fixed, payloads = c.stamp_many_calls(
            values, version_keys, timeout, version_timeout, fresh
        )
        for i, chunk_keys in enumerate(keys):
            stamp = await self._eval(chunk_keys, [*fixed, *payloads[i]])
            if stamp != fixed[3]:
                c.learn(vkeys, stamp)
                payloads[i + 1 :] = [c.restamp(p, fixed[3], stamp) for p in payloads[i + 1 :]]
                fixed[3] = stamp

    async def set_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> None:
        inner, px = self.codec.inner, self.codec.version_px(timeout)
        pipe = self._client.pipeline(transaction=False)
        for key, token in tokens.items():
            pipe.set(inner(key), token, px=px)
        await pipe.execute()

    async def create_tokens(
        self, tokens: Mapping[str, int], timeout: float | None
    ) -> dict[str, Any]:
        inner, px = self.codec.inner, self.codec.version_px(timeout)
        pipe = self._client.pipeline(transaction=False)
        for key, token in tokens.items():
            pipe.set(inner(key), token, px=px, nx=True)
            pipe.get(inner(key))
        replies = await pipe.execute()
        return {k: replies[2 * i + 1] for i, k in enumerate(tokens) if replies[2 * i + 1]}

    async def delete(self, key: str) -> bool:
        return bool(await self._client.delete(self.codec.inner(key)))

    async def delete_many(self, keys: Sequence[str]) -> None:
        if keys:
            inner = self.codec.inner
            await self._client.delete(*[inner(k) for k in keys])

    async def touch(self, key: str, timeout: Any) -> bool:
        c = self.codec
        px = c.px(timeout)
        if px < 0:
            return bool(await self._client.persist(c.inner(key)))
        if px == 0:
            return bool(await self._client.delete(c.inner(key)))
        return bool(await self._client.pexpire(c.inner(key), px))

    async def set_many(self, envelopes: Mapping[str, Envelope], timeout: Any) -> list[str]:
        c = self.codec
        px = c.px(timeout)
        pipe = self._client.pipeline(transaction=False)
        for key, envelope in envelopes.items():
            if px == 0:
                pipe.delete(c.inner(key))
            else:
                pipe.set(c.inner(key), c.entry_bytes(envelope), px=None if px < 0 else px)
        await pipe.execute()
        return []

    async def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        client = self._client
        try:
            return await client.execute_command("EVALSHA", STAMP_SHA, len(keys), *keys, *args)
        except NoScriptError:  # first call on a server
            await client.script_load(STAMP_LUA)
            return await client.execute_command("EVALSHA", STAMP_SHA, len(keys), *keys, *args)


async def _exchange(conn: Any, packed: bytes) -> Any:
    await conn.send_packed_command((packed,))  # an iterable of chunks
    return await conn.read_response()


def _async_pool(url: str, pool_class: type, kwargs: dict[str, Any]) -> aioredis.ConnectionPool:
    """A ``redis.asyncio`` pool with the settings of a redis-py pool (class, kwargs) for *url*."""
    cls = (
        aioredis.BlockingConnectionPool
        if issubclass(pool_class, redis.BlockingConnectionPool)
        else aioredis.ConnectionPool
    )
    options = dict(kwargs)
    connection_class = options.pop("connection_class", None)
    if connection_class is not None:
        same = getattr(aioredis.connection, connection_class.__name__, None)
        if same is not None:  # else: from_url picks it from the URL's scheme
            options["connection_class"] = same
    retry = options.pop("retry", None)
    if retry is not None:
        from redis.asyncio.retry import Retry

        options["retry"] = Retry(retry._backoff, retry._retries)
    return cls.from_url(url, **options)


def for_running_loop(
    registry: dict[int, tuple[Any, int, AsyncStoreAdapter]],
    adapter: StoreAdapter,
    codec: RedisCodec,
    connection: tuple[str, type, dict[str, Any]] | None,
) -> AsyncStoreAdapter:
    """Return the async adapter of a Redis store for the running loop, made once per loop and process.

    *registry* is the sync *adapter*'s ``{id(loop): (loop, pid, async adapter)}``;
    *codec* and *connection* (``(url, pool class, pool kwargs)``) are its
    encoding and its primary's settings. Without connection settings (a
    sentinel or custom connection factory) the sync adapter runs in a worker
    thread instead.
    """
    loop = asyncio.get_running_loop()
    hit = registry.get(id(loop))
    pid = os.getpid()
    if hit is not None and hit[0] is loop and hit[1] == pid:
        return hit[2]
    with _lock:
        for key, (other, other_pid, _) in list(registry.items()):
            if other.is_closed() or other_pid != pid:
                del registry[key]  # its connections are closed when collected
        if connection is None:
            made: AsyncStoreAdapter = ThreadedAsyncAdapter(adapter)
        else:
            url, pool_class, kwargs = connection
            client = aioredis.Redis(connection_pool=_async_pool(url, pool_class, kwargs))
            made = AsyncRedisAdapter(codec, client)
        registry[id(loop)] = (loop, pid, made)
    return made
