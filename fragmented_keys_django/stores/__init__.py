"""Store adapters: how the cache protocol reaches each kind of store.

* :mod:`.base`: the :class:`~.base.StoreAdapter` ``Protocol`` (and its async
  twin), one round trip per method;
* :mod:`.django_cache`: any Django cache through its own API (the generic path);
* :mod:`.redis_py`: django-redis and Django's ``RedisCache`` through their
  redis-py client (one ``MGET`` per read, a Lua script per stamped write);
* :mod:`.redis_asyncio`: the same on ``redis.asyncio``, per event loop;
* :mod:`.redis_cluster`: a Redis Cluster store (our ``RedisClusterCache``), on
  redis-py's cluster clients, sync and async.

:func:`adapter_for` chooses once per store, by what the store is (subclasses
included), or by the alias's ``OPTIONS["STORE_ADAPTER"]``.
"""

from __future__ import annotations

from typing import Any

from .base import AsyncStoreAdapter, Envelope, StoreAdapter, ThreadedAsyncAdapter
from .django_cache import DjangoCacheAdapter
from .redis_cluster import cluster_adapter
from .redis_py import redis_adapter

__all__ = [
    "AsyncStoreAdapter",
    "DjangoCacheAdapter",
    "Envelope",
    "StoreAdapter",
    "ThreadedAsyncAdapter",
    "adapter_for",
]


def adapter_for(store: Any, adapter_class: Any = None) -> StoreAdapter:
    """Return the adapter for Django cache *store*.

    *adapter_class* (``OPTIONS["STORE_ADAPTER"]``, already imported) is called
    with the store when given; otherwise the cluster adapter for a Redis
    Cluster store (:func:`.redis_cluster.cluster_adapter`), the redis-py
    adapter for a Redis store it can drive (:func:`.redis_py.redis_adapter`),
    else the generic :class:`~.django_cache.DjangoCacheAdapter`.
    """
    if adapter_class is not None:
        return adapter_class(store)
    return cluster_adapter(store) or redis_adapter(store) or DjangoCacheAdapter(store)
