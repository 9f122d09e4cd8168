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

    def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        """``get_many`` of *keys*, as a list in their order."""
        got = self.store.get_many(keys)
        return [got.get(k) for k in keys]

    def write(self, key: str, envelope: Envelope, timeout: Any, add: bool = False) -> bool:
        """``set`` (or ``add``) of *envelope*; a ``set`` counts as written (Django returns None)."""
        if add:
            return bool(self.store.add(key, _stored(envelope), timeout=timeout))
        self.store.set(key, _stored(envelope), timeout=timeout)
        return True

    def write_unlock(self, key: str, envelope: Envelope, timeout: Any, lock: str) -> None:
        """``set`` of *envelope*, then ``delete`` of *lock*: two store calls."""
        self.store.set(key, _stored(envelope), timeout=timeout)
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
        stored = {k: _stored(e) for k, e in envelopes.items()}
        return list(self.store.set_many(stored, timeout=timeout) or ())

    def aio(self) -> ThreadedAsyncAdapter:
        """The async face: one ``sync_to_async`` hop per call (as Django's ``a*`` methods)."""
        if self._aio is None:
            self._aio = ThreadedAsyncAdapter(self)
        return self._aio

    def close(self) -> None:
        """Nothing of its own to release (the store is Django's)."""
