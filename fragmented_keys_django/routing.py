"""Routing: (fragmented alias, tenant) -> the store adapter holding that tenant's data, and the alias's options.

The one place that knows where data lives, used by the backend, the bumps
(:mod:`.invalidation`), the checks and the commands:

* :func:`route` returns the :class:`Route` of a fragmented alias: its options
  (``settings.CACHES`` parsed once, :func:`.conf.alias_options`), its tenant
  stores (``TENANT_STORES``), and for a tenant the adapter of the store that
  holds its entries and versions;
* state that lives per process is kept here per alias and per store, not per
  backend instance: Django builds a backend per thread and per async context
  (under ASGI, per request), so a Redis adapter (its client, its memo of
  store keys and learnt stamps, its async clients per event loop) is made
  once per store alias and process, and every backend instance finds it
  warm. Adapters of stores Django keeps per thread (the generic path:
  memcached clients are not thread-safe) are made once per store alias and
  thread or async context, and die with it.

Everything here is forgotten when ``CACHES`` changes (:func:`reset`, from the
``setting_changed`` receiver in ``apps.py``).
"""

from __future__ import annotations

import threading
from typing import Any

from asgiref.local import Local

from . import keys as keys_mod
from .conf import BACKEND_PATHS, BackendOptions, alias_options, get_cache
from .dbcache import isolate
from .exceptions import ConfigurationError
from .stores import StoreAdapter, adapter_for
from .tenancy.stores import TenantStores, stores_for_alias

__all__ = ["Route", "reset", "route", "store_adapter"]

_MISSING = object()
_lock = threading.Lock()
_routes: dict[str, Route] = {}
# Per-process adapters (Redis), by (store alias, adapter class).
_by_name: dict[tuple[str, Any], StoreAdapter] = {}
# Adapters of the stores Django keeps per thread and async context (the generic path),
# in the same scope as Django's own: ``adapters`` by (store alias, adapter class).
_by_context = [Local()]


class Route:
    """Where one fragmented alias keeps each tenant's entries and versions (one per alias and process)."""

    def __init__(self, alias: str, options: BackendOptions) -> None:
        self.alias = alias
        self.options = options
        self._tenant_stores: Any = _MISSING
        self._shared: StoreAdapter | None = None  # set when the shared adapter is per process

    @property
    def tenant_stores(self) -> TenantStores | None:
        """The alias's :class:`~.tenancy.stores.TenantStores`, or ``None`` without ``TENANT_STORES``."""
        ts = self._tenant_stores
        if ts is _MISSING:
            ts = self._tenant_stores = stores_for_alias(self.alias, self.options)
        return ts

    def shared_store(self) -> Any:
        """The store named by ``CACHE_NAME`` (this thread's instance; a database cache isolated)."""
        return _shared_store(self.alias, self.options.cache_name)

    def shared_adapter(self) -> StoreAdapter:
        """The adapter of the shared store (per process for Redis, per store object otherwise)."""
        shared = self._shared
        if shared is None:
            shared = store_adapter(self.alias, self.options.cache_name, self.options.store_adapter)
            if self.options.failover_epoch:
                _keep_failover_epoch(self.alias, self.options.cache_name, shared)
            if shared.per_process:
                self._shared = shared
        return shared

    def adapter(self, tenant: str | None) -> StoreAdapter:
        """The adapter of the store holding *tenant*'s entries and versions.

        Raises ``ConfigurationError`` for a bad tenant config (``TENANT_STORES``).
        """
        if tenant is not None and self.options.tenant_stores is not None:
            own = self.tenant_stores.adapter_for(tenant)  # type: ignore[union-attr]
            if own is not None:
                return own
        return self.shared_adapter()

    def version_space(self, tenant: str | None) -> tuple[str, str]:
        """Return where *tenant*'s versions live: ``(store alias, PREFIX)``.

        Aliases with the same version space read the same version keys, so a
        bump through one invalidates the others' entries too.
        """
        store = self.options.cache_name
        ts = self.tenant_stores if tenant is not None else None
        if ts is not None and ts.store_for(tenant) is not None:  # type: ignore[arg-type]
            store = "tenant-store:" + ts.store_alias(tenant)  # type: ignore[arg-type]
        return (store, self.options.prefix)

    def verify(self, adapter: StoreAdapter) -> bool:
        """True if bumps and filled entries on *adapter*'s store are read back (``VERIFY_BUMPS``)."""
        own = self.options.verify_bumps
        return adapter.drops_writes if own is None else own

    def no_global_tags(self, tags: Any) -> None:
        """Raise ``ConfigurationError`` if *tags* hold a global tag and the alias has ``TENANT_STORES``."""
        if self.options.tenant_stores is None or not keys_mod._global_tags:
            return
        names = [t.name for t in tags if keys_mod.is_global_tag(t.name)]
        if names:
            raise ConfigurationError(
                f"Global tags {names} cannot be used on alias {self.alias!r}, which has "
                f"TENANT_STORES: a tenant's own store would not see bumps made in the shared "
                f"store. Use a tenant-scoped tag, or a separate alias without TENANT_STORES for "
                f"shared data."
            )


def _keep_failover_epoch(alias: str, name: str, adapter: StoreAdapter) -> None:
    """``FAILOVER_EPOCH``: make store *name*'s *adapter* keep a failover epoch, or raise.

    Raises ``ConfigurationError`` if the adapter cannot (not a Redis store
    driven by the package's Redis adapter).
    """
    use = getattr(adapter, "use_failover_epoch", None)
    if use is None:
        raise ConfigurationError(
            f"CACHES[{alias!r}]['OPTIONS']['FAILOVER_EPOCH'] needs a Redis store driven by the "
            f"package's Redis adapter (django-redis, Django's RedisCache), but {name!r} is a "
            f"{type(adapter.store).__name__} ({type(adapter).__name__}). Remove the option."
        )
    use()


def route(alias: str, options: BackendOptions | None = None) -> Route:
    """Return the :class:`Route` of fragmented *alias* (made once per process).

    *options* serve an alias that is not in ``CACHES`` (a backend built by
    hand); otherwise they are read from ``CACHES`` (``ConfigurationError`` for
    a bad entry).
    """
    hit = _routes.get(alias)
    if hit is not None:
        return hit
    if options is None:
        options = alias_options(alias)
    with _lock:
        hit = _routes.get(alias)
        if hit is None:
            hit = _routes[alias] = Route(alias, options)
    return hit


def _shared_store(alias: str, name: str) -> Any:
    """Django's store *name* for fragmented *alias* (checked), a database cache isolated."""
    from django.conf import settings

    conf = settings.CACHES.get(name)
    if conf is None:
        raise ConfigurationError(
            f"CACHES[{alias!r}]['CACHE_NAME'] names {name!r}, which is not in "
            f"settings.CACHES. Define the store alias, e.g. CACHES[{name!r}] = "
            f"{{'BACKEND': 'django.core.cache.backends.locmem.LocMemCache'}}."
        )
    if conf.get("BACKEND") in BACKEND_PATHS:
        raise ConfigurationError(
            f"CACHES[{alias!r}]['CACHE_NAME'] must name a plain store alias, got {name!r}, "
            f"which is itself a FragmentedKeysCacheBackend."
        )
    if conf.get("BACKEND") == "django.core.cache.backends.dummy.DummyCache":
        raise ConfigurationError(
            f"CACHES[{alias!r}] wraps {name!r}, Django's DummyCache, which keeps nothing: tag "
            f"versions could not be stored and nothing would ever be cached. Use a real store "
            f"(LocMemCache for one process)."
        )
    return get_cache(name)


def store_adapter(alias: str, name: str, adapter_class: Any = None) -> StoreAdapter:
    """Return the adapter of store alias *name* (wrapped by fragmented *alias*).

    Chosen once per store by what it is (:func:`.stores.adapter_for`), or
    *adapter_class*. A per-process adapter (Redis) is kept per store alias;
    others per store alias and thread or async context, as Django keeps the
    store itself (its instance dies with the context, and so does the adapter).
    """
    key = (name, adapter_class)
    hit = _by_name.get(key)
    if hit is not None:
        return hit
    scope = _by_context[0]
    adapters = getattr(scope, "adapters", None)
    if adapters is None:
        adapters = scope.adapters = {}
    hit = adapters.get(key)
    if hit is not None:
        return hit
    adapter = adapter_for(isolate(_shared_store(alias, name)), adapter_class)
    if adapter.per_process:
        with _lock:
            adapter = _by_name.setdefault(key, adapter)
    else:
        adapters[key] = adapter
    return adapter


def reset() -> None:
    """Forget every route and adapter (``CACHES`` changed); async clients close when collected."""
    with _lock:
        adapters = list(_by_name.values())
        _routes.clear()
        _by_name.clear()
        _by_context[0] = Local()  # every context's generic adapters are forgotten
    for adapter in adapters:
        adapter.close()
