"""A LocMemCache that counts the calls made to it: the suite's counting store.

Each top-level call to one of ``COUNTED`` is one "round trip" as a networked
store would see it. Calls a counted method makes to another counted method
(``BaseCache.get_many`` loops over ``get``) are not counted again.

Configure it as a store alias::

    CACHES = {"default": {"BACKEND": "tests.counting_backend.CountingLocMemCache",
                          "LOCATION": "some-unique-name"}, ...}

and read ``caches["default"].calls`` (a ``Counter``) or ``.total()``.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.memcached import PyMemcacheCache

COUNTED = ("get", "get_many", "set", "set_many", "add", "delete", "delete_many", "touch")


def _counted(name: str, cls: type = LocMemCache):
    base = getattr(cls, name)

    @functools.wraps(base)
    def method(self, *args, **kwargs):
        depth = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._calls_lock:
                self.calls[name] += 1
        self._depth.n = depth + 1
        try:
            return base(self, *args, **kwargs)
        finally:
            self._depth.n = depth

    return method


class CountingLocMemCache(LocMemCache):
    """LocMemCache counting top-level calls to get/get_many/set/set_many/add/delete/..."""

    def __init__(self, name, params):
        super().__init__(name, params)
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._depth = threading.local()

    def reset_calls(self) -> None:
        with self._calls_lock:
            self.calls.clear()

    def total(self) -> int:
        with self._calls_lock:
            return sum(self.calls.values())


for _name in COUNTED:
    setattr(CountingLocMemCache, _name, _counted(_name))


def counting(cls: type) -> type:
    """A subclass of the cache backend *cls* counting top-level calls as CountingLocMemCache does.

    On a networked store each counted call is one round trip (e.g. Django's
    ``PyMemcacheCache``: ``get_many`` is one ``get_multi``). The package does not
    know the subclass by name: set ``VERIFY_BUMPS`` to what *cls* gets by default.
    """

    def __init__(self, *args, **kwargs):
        cls.__init__(self, *args, **kwargs)
        self.calls = Counter()
        self._calls_lock = threading.Lock()
        self._depth = threading.local()

    counted = type(f"Counting{cls.__name__}", (cls,), {"__init__": __init__})
    counted.__module__ = __name__
    for attr in ("reset_calls", "total"):
        setattr(counted, attr, getattr(CountingLocMemCache, attr))
    for name in COUNTED:
        setattr(counted, name, _counted(name, cls))
    return counted


#: Django's PyMemcacheCache, counted (tests/test_memcached.py).
CountingPyMemcacheCache = counting(PyMemcacheCache)


def _database_cache() -> type:
    from django.core.cache.backends.db import DatabaseCache

    return counting(DatabaseCache)


#: Django's DatabaseCache, counted (tests/test_nested_caches.py).
CountingDatabaseCache = _database_cache()
