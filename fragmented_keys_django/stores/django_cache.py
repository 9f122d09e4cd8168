"""The generic adapter: any Django cache, through its own API (locmem, database, file, memcached).

Envelopes are stored as Python tuples ``(tokens, value[, expiry, compute_seconds])``
and versions as ints, with the store's ``get_many``/``set``/``add``/... (its own
serializer). Each method is one store call unless its docstring says
otherwise. The async face runs each method in a worker thread
(:class:`~.base.ThreadedAsyncAdapter`), one hop per call, as Django's own
``a*`` methods do for these stores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.memcached import BaseMemcachedCache
from django.core.cache.backends.redis import RedisCache

from ..exceptions import ValueTooLarge
from .base import Envelope, ThreadedAsyncAdapter

__all__ = ["DjangoCacheAdapter", "writes_land_or_raise"]


def writes_land_or_raise(store: Any) -> bool:
    """Return True if *store*'s writes either land or raise (subclasses included).

    locmem, file, memcached, Django's ``RedisCache`` and django-redis. Not
    Django's database cache (it swallows ``DatabaseError`` on writes) nor any
    other class: their bumps are read back.
    """
    reliable: tuple[type, ...] = (LocMemCache, FileBasedCache, BaseMemcachedCache, RedisCache)
    try:
        from django_redis.cache import RedisCache as DjangoRedisCache
    except ImportError:  # django-redis not installed: no store can be one
        return isinstance(store, reliable)
    return isinstance(store, (*reliable, DjangoRedisCache))


def value_refusal(store: Any) -> Any:
    """Return ``refused(exc) -> bool`` telling a value refused as too large by *store*, or ``None``.

    memcached answers ``SERVER_ERROR object too large for cache`` to a value
    over its item size limit (``-I``, 1 MB by default), which pymemcache
    raises as ``MemcacheServerError``; its connection is fine.
    """
    if not isinstance(store, BaseMemcachedCache):
        return None
    try:
        from pymemcache.exceptions import MemcacheServerError
    except ImportError:  # not pymemcache (pylibmc): its errors stay store errors
        return None

    def refused(exc: BaseException) -> bool:
        return isinstance(exc, MemcacheServerError) and "too large" in str(exc)

    return refused


def _refusal(keys: list[str], failed: list[str] | None = None) -> ValueTooLarge:
    """The ``ValueTooLarge`` of entries *keys* (*failed*: every entry the call did not write)."""
    return ValueTooLarge(
        f"the store refused {len(keys)} value(s) as too large (memcached's item size limit, "
        f"-I, 1 MB by default): {keys[:3]}. Cache smaller values (a page of a list, not the "
        f"whole list), or raise memcached's -I",
        keys,
        failed,
    )


def _stored(envelope: Envelope) -> tuple:
    """*envelope* as kept in a Django cache: its tokens a tuple (the format every version reads).

    Dependencies (the last item of a 3- or 5-item envelope, see :mod:`...deps`)
    are kept as a plain ``(keys, tokens)`` tuple.
    """
    tokens = envelope[0]
    if len(envelope) in (3, 5):
        keys, held = envelope[-1]
        return (tuple(tokens), *envelope[1:-1], (tuple(keys), tuple(held)))
    return envelope if type(tokens) is tuple else (tuple(tokens), *envelope[1:])


class DjangoCacheAdapter:
    """A :class:`~.base.StoreAdapter` over a Django cache's own API."""

    stamps = False
    atomic_create = False
    per_process = False

    def __init__(self, store: Any) -> None:
        self.store = store
        self.drops_writes = not writes_land_or_raise(store)
        self._aio: ThreadedAsyncAdapter | None = None
        self._refused = value_refusal(store)

    def _too_large(self, exc: BaseException, keys: list[str], drop: bool) -> ValueTooLarge | None:
        """``ValueTooLarge`` for *keys* if *exc* is the store refusing a value as too large.

        With *drop* the refused entries are deleted first (memcached deletes
        the old item itself when it refuses a ``set``; done here for any
        store): their old values must not be served. ``None`` for any other
        error.
        """
        if self._refused is None or not self._refused(exc):
            return None
        if drop:
            self.store.delete_many(keys)
        return _refusal(keys)

    def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        """``get_many`` of *keys*, as a list in their order."""
        got = self.store.get_many(keys)
        return [got.get(k) for k in keys]

    def write(self, key: str, envelope: Envelope, timeout: Any, add: bool = False) -> bool:
        """``set`` (or ``add``) of *envelope*; a ``set`` counts as written (Django returns None)."""
        try:
            if add:
                return bool(self.store.add(key, _stored(envelope), timeout=timeout))
            self.store.set(key, _stored(envelope), timeout=timeout)
        except Exception as exc:
            refused = self._too_large(exc, [key], drop=not add)
            if refused is None:
                raise
            raise refused from exc
        return True

    def write_unlock(self, key: str, envelope: Envelope, timeout: Any, lock: str) -> None:
        """``set`` of *envelope*, then ``delete`` of *lock*: two store calls.

        A value refused as too large leaves the lock to the caller (the
        protocol releases it).
        """
        self.write(key, envelope, timeout)
        self.store.delete(lock)

    def stamp(self, *args: Any) -> bool:
        raise NotImplementedError("the generic adapter has no server-side stamping")

    def stamp_many(self, *args: Any) -> None:
        raise NotImplementedError("the generic adapter has no server-side stamping")

    def set_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> None:
        """``set_many`` of the tokens."""
        self.store.set_many(tokens, timeout=timeout)

    def create_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> dict[str, Any]:
        """One ``add`` per key, then one ``get_many`` of the keys whose ``add`` was refused."""
        got: dict[str, Any] = {}
        refused = []
        for key, token in tokens.items():
            if self.store.add(key, token, timeout=timeout):
                got[key] = token
            else:
                refused.append(key)
        if refused:
            # Another caller created it, or (database cache) the write was
            # dropped: take what is there; the protocol retries what is not.
            found = self.store.get_many(refused)
            got.update((k, found[k]) for k in refused if k in found)
        return got

    def token(self, value: int) -> int:
        return value

    def delete(self, key: str) -> bool:
        return bool(self.store.delete(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        self.store.delete_many(list(keys))

    def touch(self, key: str, timeout: Any) -> bool:
        return bool(self.store.touch(key, timeout))

    def set_many(self, envelopes: Mapping[str, Envelope], timeout: Any) -> list[str]:
        """``set_many``; return the keys that failed.

        If the store refuses a value as too large, pymemcache stops reading
        the replies of the batch, so which values landed is unknown: each is
        written again, alone, and ``ValueTooLarge`` is raised for the refused
        ones (deleted) once the others are written (a ``set`` per key, on
        that rare path only).
        """
        stored = {k: _stored(e) for k, e in envelopes.items()}
        try:
            return list(self.store.set_many(stored, timeout=timeout) or ())
        except Exception as exc:
            if self._too_large(exc, list(stored), drop=False) is None:
                raise
        refusals: list[ValueTooLarge] = []
        failed: list[str] = []
        for key, envelope in stored.items():
            try:
                failed += self.store.set_many({key: envelope}, timeout=timeout) or ()
            except Exception as exc:
                refused = self._too_large(exc, [key], drop=True)
                if refused is None:
                    raise
                refused.__cause__ = exc
                refusals.append(refused)
        if not refusals:  # refused in the batch, written alone: nothing was too large
            return failed
        keys = [k for r in refusals for k in r.keys]
        raise _refusal(keys, [*keys, *failed]) from refusals[0].__cause__

    def aio(self) -> ThreadedAsyncAdapter:
        """The async face: one ``sync_to_async`` hop per call (as Django's ``a*`` methods)."""
        if self._aio is None:
            self._aio = ThreadedAsyncAdapter(self)
        return self._aio

    def close(self) -> None:
        """Nothing of its own to release (the store is Django's)."""
