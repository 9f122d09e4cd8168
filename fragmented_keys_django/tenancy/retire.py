"""Retiring a dropped tenant store without breaking the calls and tenants still using its connections.

A tenant store is dropped when its tenant's cache config changes. Other threads
may be in the middle of a command on it, and django-redis keeps one connection
pool per URL for the whole process (``ConnectionFactory._pools``), so another
tenant's store, or a plain ``CACHES`` alias, with the same URL shares the pool.
``ConnectionPool.disconnect()`` closes connections in use too: a command
running on one then fails mid-read (redis-py raises ``TypeError: argument must
be an int, or have a fileno() method`` or ``ConnectionError``).

So :func:`retire`:

* never touches a pool that a live store uses (same django-redis URL);
* closes only idle connections (redis-py's ``disconnect(inuse_connections=False)``):
  a connection that a call is using is never closed under it;
* repeats that after :data:`RETIRE_GRACE` seconds (:func:`sweep`), for the
  connections that were busy the first time; a store that is not Redis
  (memcached, ...) is ``close()``\\ d only then.

Whatever a call still holding the old store opens afterwards is closed when
that store is garbage collected (redis-py connections disconnect on ``__del__``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["RETIRE_GRACE", "pending", "reset", "retire", "sweep"]

logger = logging.getLogger("fragmented_keys_django")

#: Seconds between a store's retirement and its second closing pass.
RETIRE_GRACE = 30.0

_lock = threading.Lock()
_retiring: list[tuple[float, Any]] = []  # (deadline, store)


def _redis_kind(store: Any) -> str | None:
    """``"django-redis"``, ``"django"`` (Django's own RedisCache) or ``None``."""
    from django.core.cache.backends.redis import RedisCache

    if isinstance(store, RedisCache):
        return "django"
    try:
        from django_redis.cache import RedisCache as DjangoRedisCache
    except ImportError:  # django-redis not installed: no store can be one
        return None
    return "django-redis" if isinstance(store, DjangoRedisCache) else None


def _urls(store: Any) -> set[str]:
    """The URLs a django-redis store's pools are keyed by (django-redis shares a pool per URL)."""
    if _redis_kind(store) != "django-redis":
        return set()
    return {str(u) for u in getattr(store.client, "_server", None) or ()}


def _pools(store: Any) -> list[tuple[str | None, Any]]:
    """``(url or None, pool)`` of the connection pools *store* has built."""
    kind = _redis_kind(store)
    if kind == "django-redis":
        client = store.client
        servers = getattr(client, "_server", None) or ()
        clients = getattr(client, "_clients", None) or ()
        pairs = zip(servers, clients, strict=False)
        return [(str(u), c.connection_pool) for u, c in pairs if c is not None]
    if kind == "django":
        cache_client = store.__dict__.get("_cache")  # built on first use
        pools = getattr(cache_client, "_pools", None) or {}
        return [(None, pool) for pool in pools.values()]  # per store instance: never shared
    return []


def _close_idle(store: Any, live: Iterable[Any]) -> None:
    """Close the idle connections of *store*'s pools that no store in *live* shares."""
    pools = _pools(store)
    if not pools:
        return
    shared: set[str] = set()
    for other in live:
        if other is not store:
            shared |= _urls(other)
    for url, pool in pools:
        if url is None or url not in shared:
            pool.disconnect(inuse_connections=False)


def retire(store: Any, live: Iterable[Any]) -> None:
    """Retire a dropped *store*: close its idle, unshared connections now, the rest later.

    *live* are the stores still in use in this process (tenant stores and
    plain ``CACHES`` aliases); pools they share are left alone. Errors are
    logged, never raised: retiring must not break the caller.
    """
    try:
        _close_idle(store, live)
    except Exception as exc:  # a dead connection may fail to close: nothing to do about it
        logger.warning(
            "closing a retired tenant store failed: %s", exc, extra={"operation": "store_retire"}
        )
    with _lock:
        _retiring.append((time.monotonic() + RETIRE_GRACE, store))


def sweep(live: Iterable[Any], *, everything: bool = False) -> None:
    """Run the second closing pass of the stores retired :data:`RETIRE_GRACE` seconds ago.

    With *everything*, of every retired store now (``CACHES`` changed).
    """
    if not _retiring:
        return
    now = time.monotonic()
    with _lock:
        due = [s for d, s in _retiring if everything or d <= now]
        _retiring[:] = [(d, s) for d, s in _retiring if not (everything or d <= now)]
    if not due:
        return
    live = list(live)
    for store in due:
        try:
            _close_idle(store, live)
            if _redis_kind(store) is None:
                store.close()
        except Exception as exc:  # as in retire()
            logger.warning(
                "closing a retired tenant store failed: %s",
                exc,
                extra={"operation": "store_retire"},
            )


def pending() -> int:
    """Return how many retired stores wait for their second closing pass."""
    with _lock:
        return len(_retiring)


def reset(live: Iterable[Any]) -> None:
    """Close what can be closed of every retired store now (``CACHES`` changed, tests)."""
    sweep(live, everything=True)
