"""The store requests a :class:`~.redis_codec.RedisCodec` plans, written once for every Redis adapter.

Each request of :class:`~.base.StoreAdapter` on Redis is a *plan* the codec
builds (the commands, packed) and one exchange that runs it: the adapter's
``_do(plan)`` (a pooled connection of one server, or of the node owning the
plan's slot on a cluster) and, for the stamping script, ``_eval(keys, args)``.
:class:`CodecRequests` (sync) and :class:`AsyncCodecRequests` (``redis.asyncio``)
turn the requests into plans; the adapters (``redis_py``, ``redis_asyncio``,
``redis_cluster``) only say how a plan is sent, and override the requests
they send differently (a cluster's reads, bumps and multi-key deletes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import Envelope
from .redis_codec import Plan, RedisCodec

__all__ = ["AsyncCodecRequests", "CodecRequests"]


class CodecRequests:
    """The sync store requests over ``self.codec``, ``self._do(plan)`` and ``self._eval(keys, args)``."""

    codec: RedisCodec

    def _do(self, plan: Plan) -> Any:  # pragma: no cover - every adapter defines it
        raise NotImplementedError

    def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:  # pragma: no cover
        raise NotImplementedError

    def token(self, value: int) -> bytes:
        return str(value).encode()

    def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        """One ``MGET``; the first *entries* values decoded as envelopes, the rest left as bytes."""
        return self._do(self.codec.read(keys, entries))

    def write(self, key: str, envelope: Envelope, timeout: Any, add: bool = False) -> bool:
        """One ``SET`` (``NX`` with *add*; a ``DEL`` for a timeout of 0)."""
        return self._do(self.codec.write(key, envelope, timeout, add))

    def write_unlock(self, key: str, envelope: Envelope, timeout: Any, lock: str) -> None:
        """The entry's ``SET`` (or ``DEL``) and the lock's ``DEL``, pipelined."""
        self._do(self.codec.write_unlock(key, envelope, timeout, lock))

    def stamp(
        self,
        entry: str,
        version_keys: Sequence[str],
        value: Any,
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
        add: bool,
    ) -> bool | None:
        """One script call (``EVALSHA``); see :meth:`.RedisCodec.stamped` for the result."""
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
        """``SET ... PX`` of each token, pipelined, no ``MULTI``."""
        self._do(self.codec.set_tokens(tokens, timeout))

    def create_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> dict[str, Any]:
        """``SET NX`` + ``GET`` per key, pipelined."""
        return self._do(self.codec.create_tokens(tokens, timeout))

    def delete(self, key: str) -> bool:
        return self._do(self.codec.delete(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        if keys:
            self._do(self.codec.delete_many(keys))

    def touch(self, key: str, timeout: Any) -> bool:
        """``PEXPIRE`` (``PERSIST`` for ``None``, ``DEL`` for 0), as Django's ``touch``."""
        return self._do(self.codec.touch(key, timeout))

    def set_many(self, envelopes: Mapping[str, Envelope], timeout: Any) -> list[str]:
        """The entries' ``SET``, pipelined."""
        return self._do(self.codec.set_many(envelopes, timeout)) if envelopes else []


class AsyncCodecRequests:
    """:class:`CodecRequests` for ``redis.asyncio``: ``_do`` and ``_eval`` are awaited."""

    codec: RedisCodec

    async def _do(self, plan: Plan) -> Any:  # pragma: no cover - every adapter defines it
        raise NotImplementedError

    async def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:  # pragma: no cover
        raise NotImplementedError

    def token(self, value: int) -> bytes:
        return str(value).encode()

    async def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        return await self._do(self.codec.read(keys, entries))

    async def write(self, key: str, envelope: Envelope, timeout: Any, add: bool = False) -> bool:
        return await self._do(self.codec.write(key, envelope, timeout, add))

    async def write_unlock(self, key: str, envelope: Envelope, timeout: Any, lock: str) -> None:
        await self._do(self.codec.write_unlock(key, envelope, timeout, lock))

    async def stamp(
        self,
        entry: str,
        version_keys: Sequence[str],
        value: Any,
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
        add: bool,
    ) -> bool | None:
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
        await self._do(self.codec.set_tokens(tokens, timeout))

    async def create_tokens(
        self, tokens: Mapping[str, int], timeout: float | None
    ) -> dict[str, Any]:
        return await self._do(self.codec.create_tokens(tokens, timeout))

    async def delete(self, key: str) -> bool:
        return await self._do(self.codec.delete(key))

    async def delete_many(self, keys: Sequence[str]) -> None:
        if keys:
            await self._do(self.codec.delete_many(keys))

    async def touch(self, key: str, timeout: Any) -> bool:
        return await self._do(self.codec.touch(key, timeout))

    async def set_many(self, envelopes: Mapping[str, Envelope], timeout: Any) -> list[str]:
        return await self._do(self.codec.set_many(envelopes, timeout)) if envelopes else []
