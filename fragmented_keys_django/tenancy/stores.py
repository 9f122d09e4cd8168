"""Tenant-bound stores: a tenant may keep its entries and tag versions in its own cache.

A fragmented alias with ``OPTIONS["TENANT_STORES"]`` resolves, for the current
tenant, the store it wraps:

* a tenant with no cache config uses the alias's shared store (``CACHE_NAME``),
  isolated by its namespace (key-prefix isolation);
* a tenant with a cache config gets its own store (its own Redis database or
  server): the config (``BACKEND``, ``LOCATION``, ``ALIAS``, ``TIMEOUT``,
  ``OPTIONS``; keys case-insensitive) is merged over the shared store's
  config, tenant first, as django-omnitenant does (seed 000). ``ALIAS``
  defaults to the tenant id and names the store in logs and commands.

Stores are built lazily, once per process, under a lock, and shared by every
thread (Django's cache backends are thread-safe: Redis clients pool
connections), so connection pools are reused rather than rebuilt per request.

Where configs come from (``TENANT_STORES``):

* a dict ``{tenant_id: cache_config}``;
* a dotted path to a callable ``(tenant_id) -> cache_config | None`` (it may
  carry a ``tenants()`` attribute listing tenant ids, for operators);
* ``{"MODEL": "app_label.Model", "ID_FIELD": "tenant_id", "CONFIG_FIELD":
  "config", "KEY": "cache_config"}``: django-omnitenant style
  ``tenant.config["cache_config"]``.

Reactive configuration (seed 002): ``notify_tenant_config_changed(tenant_id)``
drops the tenant's store in this process, publishes the tenant id on Redis
pub/sub (``TENANT_CONFIG_URL``) so every process drops it within moments, and
bumps a config version in the shared store that every process re-reads at
most every ``TENANT_CONFIG_RECHECK`` seconds, in case a message was missed.
With a model source, saving or deleting a tenant row notifies automatically.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.utils.module_loading import import_string

from ..dbcache import isolate
from ..exceptions import ConfigurationError

__all__ = ["TenantStores", "notify_tenant_config_changed", "resolve_tenant_config"]

logger = logging.getLogger("fragmented_keys_django")

CONFIG_VERSION_KEY = "fk:tenant-config-version"
DEFAULT_CHANNEL = "fragmented_keys_django:tenant-config"
_MISSING = object()
_FIELDS = (
    "BACKEND",
    "LOCATION",
    "ALIAS",
    "TIMEOUT",
    "OPTIONS",
    "KEY_PREFIX",
    "VERSION",
    "KEY_FUNCTION",
)


def resolve_tenant_config(
    tenant_id: str, cache_config: Mapping[str, Any], template: Mapping[str, Any]
) -> tuple[str, dict]:
    """Merge a tenant's *cache_config* over the shared store's *template*; return ``(alias, config)``.

    Keys are case-insensitive; precedence is tenant > template > Django's
    defaults; ``OPTIONS`` dicts are merged key by key. Raises
    ``ConfigurationError`` for an unknown key or a fragmented backend.
    """
    cfg: dict[str, Any] = {}
    for key, value in cache_config.items():
        upper = str(key).upper()
        if upper not in _FIELDS:
            raise ConfigurationError(
                f"Tenant {tenant_id!r} cache_config has an unknown key {key!r}; known: {', '.join(_FIELDS)}."
            )
        cfg[upper] = value
    alias = cfg.pop("ALIAS", None) or tenant_id
    merged = {k: v for k, v in template.items()}
    options = {**(template.get("OPTIONS") or {}), **(cfg.pop("OPTIONS", None) or {})}
    merged.update(cfg)
    if options:
        merged["OPTIONS"] = options
    from ..conf import BACKEND_PATHS

    if "BACKEND" not in merged or merged["BACKEND"] in BACKEND_PATHS:
        raise ConfigurationError(
            f"Tenant {tenant_id!r} cache_config must resolve to a plain store BACKEND, got {merged.get('BACKEND')!r}."
        )
    return str(alias), merged


class _DictSource:
    def __init__(self, configs: Mapping[str, Any]) -> None:
        self.configs = configs

    def get(self, tenant_id: str) -> Mapping[str, Any] | None:
        return self.configs.get(tenant_id)

    def tenants(self) -> list[str]:
        return list(self.configs)


class _CallableSource:
    def __init__(self, func: Callable[[str], Any]) -> None:
        self.func = func

    def get(self, tenant_id: str) -> Mapping[str, Any] | None:
        return self.func(tenant_id)

    def tenants(self) -> list[str] | None:
        lister = getattr(self.func, "tenants", None)
        return list(lister()) if lister else None


class _ModelSource:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.model_label = spec["MODEL"]
        self.id_field = spec.get("ID_FIELD", "tenant_id")
        self.config_field = spec.get("CONFIG_FIELD", "config")
        self.key = spec.get("KEY", "cache_config")
        self._connected = False

    def _model(self) -> Any:
        from django.apps import apps

        model = apps.get_model(self.model_label)
        if not self._connected:
            connect_model_source(model, self.id_field)
            self._connected = True
        return model

    def get(self, tenant_id: str) -> Mapping[str, Any] | None:
        row = self._model()._default_manager.filter(**{self.id_field: tenant_id}).first()
        if row is None:
            return None
        config = getattr(row, self.config_field) or {}
        return config.get(self.key) or None

    def tenants(self) -> list[str]:
        return [
            str(t) for t in self._model()._default_manager.values_list(self.id_field, flat=True)
        ]


def connect_model_source(model: Any, id_field: str) -> None:
    """Notify every process when a row of the tenant *model* is saved or deleted.

    The notification waits for the commit of the row's database (a
    rolled-back change notifies nobody, and no process re-reads the config
    before it is committed).
    """
    from functools import partial

    from django.db import transaction
    from django.db.models.signals import post_delete, post_save

    def changed(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
        tenant_id = str(getattr(instance, id_field))
        transaction.on_commit(
            partial(notify_tenant_config_changed, tenant_id), using=using, robust=True
        )

    label = model._meta.label
    post_save.connect(changed, sender=model, weak=False, dispatch_uid=f"fkd:tenant-config:{label}")
    post_delete.connect(
        changed, sender=model, weak=False, dispatch_uid=f"fkd:tenant-config-del:{label}"
    )


def connect_model_sources() -> None:
    """Connect the tenant-config signals of every MODEL source in ``CACHES`` (``AppConfig.ready``).

    So that a tenant saved from any process (a shell, the admin, a command)
    notifies the others, even before that process used the cache.
    """
    from django.apps import apps
    from django.conf import settings

    from ..conf import BACKEND_PATHS

    for conf in settings.CACHES.values():
        if conf.get("BACKEND") not in BACKEND_PATHS:
            continue
        spec = (conf.get("OPTIONS") or {}).get("TENANT_STORES")
        if isinstance(spec, Mapping) and "MODEL" in spec:
            try:
                model = apps.get_model(spec["MODEL"])
            except (LookupError, ValueError):
                continue  # reported by the E001 check
            connect_model_source(model, spec.get("ID_FIELD", "tenant_id"))


def make_source(spec: Any, where: str) -> Any:
    """Return a tenant config source for the ``TENANT_STORES`` option *spec*."""
    if isinstance(spec, str):
        from ..conf import import_dotted

        return _CallableSource(import_dotted(spec, where))
    if isinstance(spec, Mapping) and "MODEL" in spec:
        unknown = set(spec) - {"MODEL", "ID_FIELD", "CONFIG_FIELD", "KEY"}
        if unknown:
            raise ConfigurationError(f"{where} has unknown keys {sorted(unknown)}")
        return _ModelSource(spec)
    if isinstance(spec, Mapping):
        return _DictSource(spec)
    if callable(spec):
        return _CallableSource(spec)
    raise ConfigurationError(
        f"{where} must be a dict of tenant configs, a dotted path to a callable, or a MODEL spec; got {spec!r}"
    )


class TenantStores:
    """The per-tenant stores of one fragmented alias, shared by every thread of the process."""

    def __init__(
        self, alias: str, template_name: str, source: Any, recheck: float, channel_url: str | None
    ) -> None:
        self.alias = alias
        self.template_name = template_name
        self.source = source
        self.recheck = recheck
        self.channel_url = channel_url
        self._lock = threading.Lock()
        self._stores: dict[str, tuple[str | None, Any]] = {}
        self._next_check = 0.0
        self._config_version: Any = _MISSING

    def store_for(self, tenant_id: str) -> Any:
        """Return *tenant_id*'s own store, or ``None`` when it uses the shared store."""
        now = time.monotonic()
        if now >= self._next_check:
            self._check_version(now)
        hit = self._stores.get(tenant_id)
        if hit is not None:
            return hit[1]
        with self._lock:
            hit = self._stores.get(tenant_id)
            if hit is None:
                hit = self._stores[tenant_id] = self._build(tenant_id)
        return hit[1]

    def store_alias(self, tenant_id: str) -> str:
        """Return the name of *tenant_id*'s store (its ``ALIAS``, or the shared store alias)."""
        self.store_for(tenant_id)
        return self._stores[tenant_id][0] or self.template_name

    def _build(self, tenant_id: str) -> tuple[str | None, Any]:
        config = self.source.get(tenant_id)
        if not config:
            return (None, None)
        from django.conf import settings

        name, merged = resolve_tenant_config(tenant_id, config, settings.CACHES[self.template_name])
        params = {k: v for k, v in merged.items() if k not in ("BACKEND", "LOCATION")}
        store = isolate(import_string(merged["BACKEND"])(merged.get("LOCATION", ""), params))
        logger.info("built tenant store %s for tenant %s (alias=%s)", name, tenant_id, self.alias)
        return (name, store)

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop (and close) one tenant's store, or every one; they are rebuilt on next use."""
        with self._lock:
            if tenant_id is None:
                dropped = list(self._stores.values())
                self._stores.clear()
            else:
                dropped = [self._stores.pop(tenant_id, (None, None))]
        for _, store in dropped:
            if store is not None:
                _close(store)

    def tenants(self) -> list[str] | None:
        """Return the tenant ids the source knows of, or ``None`` if it cannot list them."""
        return self.source.tenants()

    def _check_version(self, now: float) -> None:
        self._next_check = now + self.recheck
        from ..conf import get_cache

        try:
            version = get_cache(self.template_name).get(CONFIG_VERSION_KEY)
        except Exception as exc:  # the store may be down: keep current stores, log
            logger.warning("tenant config version check failed (alias=%s): %s", self.alias, exc)
            return
        if self._config_version is not _MISSING and version != self._config_version:
            logger.info(
                "tenant config version changed (alias=%s): dropping tenant stores", self.alias
            )
            self.forget()
        self._config_version = version
        if self.channel_url:
            _listener.ensure(self.channel_url)


def _close(store: Any) -> None:
    """Close a dropped tenant store and its connections.

    ``close()`` alone is a no-op for django-redis (without CLOSE_CONNECTION),
    whose pools live in a process-wide dict keyed by URL: disconnect the
    pools the store's clients use. A pool shared with another store on the
    same URL just reconnects on its next use.
    """
    try:
        store.close()
        client = getattr(store, "client", None)  # django-redis
        for redis_client in getattr(client, "_clients", None) or ():
            if redis_client is not None:
                redis_client.connection_pool.disconnect()
        cache_client = store.__dict__.get("_cache")  # Django's RedisCache, if built
        for pool in (
            getattr(cache_client, "_pools", {}).values() if cache_client is not None else ()
        ):
            pool.disconnect()
    except Exception as exc:  # closing a dead connection must not break the caller
        logger.warning("closing a tenant store failed: %s", exc)


_registry_lock = threading.Lock()
_registry: dict[str, TenantStores] = {}


def stores_for_alias(alias: str, options: Any) -> TenantStores | None:
    """Return the process-wide :class:`TenantStores` of *alias* (``None`` without TENANT_STORES)."""
    if options.tenant_stores is None:
        return None
    ts = _registry.get(alias)
    if ts is None:
        with _registry_lock:
            ts = _registry.get(alias)
            if ts is None:
                source = make_source(
                    options.tenant_stores, f"CACHES[{alias!r}]['OPTIONS']['TENANT_STORES']"
                )
                ts = _registry[alias] = TenantStores(
                    alias,
                    options.cache_name,
                    source,
                    options.tenant_config_recheck,
                    options.tenant_config_url,
                )
    return ts


def reset_registry() -> None:
    """Drop every tenant store of every alias (on ``CACHES`` change, and in tests)."""
    with _registry_lock:
        for ts in _registry.values():
            ts.forget()
        _registry.clear()


def notify_tenant_config_changed(tenant_id: str | None = None) -> None:
    """Tell every process that *tenant_id*'s cache config changed (``None``: all tenants).

    Drops the tenant's store here at once, bumps the config version in each
    shared store (other processes notice within ``TENANT_CONFIG_RECHECK``
    seconds) and publishes on Redis pub/sub when ``TENANT_CONFIG_URL`` is set
    (other processes drop it as soon as the message arrives).
    """
    from ..conf import fragmented_aliases, get_cache
    from ..versions import fresh_token

    # Every alias with tenant stores, used in this process yet or not (a
    # management command or an admin save must still reach other processes).
    for alias in fragmented_aliases():
        backend = get_cache(alias)
        if backend.options.tenant_stores is not None:
            _ = backend.tenant_stores  # registers it
    urls = set()
    for ts in list(_registry.values()):
        ts.forget(tenant_id)
        try:
            get_cache(ts.template_name).set(CONFIG_VERSION_KEY, fresh_token(), timeout=None)
        except Exception as exc:
            logger.error("could not bump the tenant config version (alias=%s): %s", ts.alias, exc)
        if ts.channel_url:
            urls.add(ts.channel_url)
    for url in urls:
        import redis

        client = redis.Redis.from_url(url)
        try:
            client.publish(DEFAULT_CHANNEL, tenant_id or "*")
        finally:
            client.close()


class _Listener:
    """One daemon thread per Redis URL, dropping tenant stores named on the channel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self.ready: dict[str, threading.Event] = {}

    def ensure(self, url: str) -> None:
        thread = self._threads.get(url)
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            thread = self._threads.get(url)
            if thread is None or not thread.is_alive():
                self.ready[url] = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(url,), name="fkd-config-listener", daemon=True
                )
                self._threads[url] = thread
                thread.start()

    def _run(self, url: str) -> None:
        import redis

        delay = 0.5
        while True:
            try:
                pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(DEFAULT_CHANNEL)
                self.ready[url].set()
                delay = 0.5
                for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = message["data"]
                    tenant = data.decode() if isinstance(data, bytes) else str(data)
                    for ts in list(_registry.values()):
                        if ts.channel_url == url:
                            ts.forget(None if tenant == "*" else tenant)
            except Exception as exc:  # reconnect with backoff; logged every time
                logger.warning("tenant config listener lost %s: %s; reconnecting", url, exc)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


_listener = _Listener()
