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
  "config", "KEY": "cache_config", "DATABASE": "default"}``: django-omnitenant
  style ``tenant.config["cache_config"]``, read with a database connection of
  its own (committed rows, whatever schema or transaction the caller is in).

Reactive configuration (seed 002): ``notify_tenant_config_changed(tenant_id)``
re-places the tenant in this process, bumps a config version in the shared
store that every process re-reads at most every ``TENANT_CONFIG_RECHECK``
seconds, and publishes the tenant id on Redis pub/sub (``TENANT_CONFIG_URL``),
waiting for every subscribed process to confirm it dropped the tenant's store
(:mod:`.channel`). With a model source, saving or deleting a tenant row notifies
automatically.

Moving a tenant. Entries a tenant left in a store must not be served when it
comes back: bumps made while it was away landed elsewhere. So whenever a
tenant arrives in a store (the notifying process re-placing it, a process that
sees its placement change, and, for a model source, before the tenant row's
transaction commits), its namespace version is bumped in the store it arrives
in before any read is served from it. A bump that fails is retried by the bump
retry queue, and the tenant is bypassed in this process until it lands. A
dropped store is retired without closing connections other calls or tenants
still use (:mod:`.retire`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .. import metrics
from ..conf import (
    BACKEND_PATHS,
    BackendOptions,
    alias_options,
    fragmented_aliases,
    get_cache,
    import_dotted,
)
from ..dbcache import isolate
from ..exceptions import BumpFailed, ConfigurationError
from ..keys import namespace_key
from ..stores import StoreAdapter, adapter_for
from ..transactions import CommitHook, on_commit
from ..versions import bump, fresh_token
from . import retire
from .channel import DEFAULT_CHANNEL, publish
from .channel import listener as _listener

__all__ = [
    "DEFAULT_CHANNEL",
    "TenantStores",
    "live_stores",
    "notify_tenant_config_changed",
    "placement_of",
    "resolve_tenant_config",
]

logger = logging.getLogger("fragmented_keys_django")

CONFIG_VERSION_KEY = "fk:tenant-config-version"
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
# Settings that do not change where a store's data lives: a config differing
# only in these is the same placement (no move, no arrival bump).
_NOT_PLACEMENT = ("ALIAS", "TIMEOUT")


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


def build_store(
    tenant_id: str, config: Mapping[str, Any], template: Mapping[str, Any]
) -> tuple[str, dict[str, Any], Any]:
    """Build *tenant_id*'s Django cache from its *config* merged over *template*.

    Returns ``(store name, merged config, store)``. Raises
    :class:`~.exceptions.ConfigurationError` naming the tenant when the
    merged ``BACKEND`` cannot be imported (a typo in a tenant row); the
    backend's own errors for a bad ``LOCATION`` or option propagate.
    """
    name, merged = resolve_tenant_config(tenant_id, config, template)
    backend = import_dotted(merged["BACKEND"], f"Tenant {tenant_id!r} cache_config['BACKEND']")
    params = {k: v for k, v in merged.items() if k not in ("BACKEND", "LOCATION")}
    return name, merged, isolate(backend(merged.get("LOCATION", ""), params))


def placement_of(config: Mapping[str, Any]) -> str:
    """Return a digest of where a store built from the merged *config* keeps its data.

    Two configs with the same digest address the same keys (``ALIAS`` and
    ``TIMEOUT`` aside), so a tenant moving between them has not moved.
    """

    def canonical(value: Any) -> str:
        if isinstance(value, Mapping):
            items = sorted((str(k).upper(), canonical(v)) for k, v in value.items())
            return "{" + ",".join(f"{k!r}:{v}" for k, v in items) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(canonical(v) for v in value) + "]"
        return repr(value)

    where = {k: v for k, v in config.items() if str(k).upper() not in _NOT_PLACEMENT}
    return hashlib.sha256(canonical(where).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _sync(func: Callable[..., Any], *args: Any) -> Any:
    """Call *func*; from inside a running event loop, in a worker thread (Django's DB is sync only)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return func(*args)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="fkd-tenant-config") as pool:
        return pool.submit(func, *args).result()


class _ModelSource:
    """Tenant configs from a model's JSON field, read without the caller's schema or transaction.

    The lookup runs on a database connection of its own to the ``DATABASE``
    alias (default ``"default"``), in autocommit, with plain SQL on the model's
    table: it reads committed rows only, never depends on the search_path a
    schema-per-tenant package (django-omnitenant, django-tenants) set on the
    caller's connection, never joins or aborts the caller's transaction, and
    skips routers and custom managers. The connection follows the alias's
    ``CONN_MAX_AGE`` (closed after each lookup with the default 0).
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        from django.db import DEFAULT_DB_ALIAS

        self.model_label = spec["MODEL"]
        self.id_field = spec.get("ID_FIELD", "tenant_id")
        self.config_field = spec.get("CONFIG_FIELD", "config")
        self.key = spec.get("KEY", "cache_config")
        self.database = spec.get("DATABASE", DEFAULT_DB_ALIAS)
        self._connected = False
        self._conn: Any = None
        self._conn_lock = threading.Lock()

    def _model(self) -> Any:
        from django.apps import apps

        model = apps.get_model(self.model_label)
        if not self._connected:
            connect_model_source(model, self.id_field)
            self._connected = True
        return model

    def is_for(self, model: Any) -> bool:
        """Return True if this source reads *model*'s rows."""
        return model._meta.label_lower == self.model_label.lower()

    def config_of(self, instance: Any) -> Mapping[str, Any] | None:
        """Return the cache config a row (a model *instance*) names, or ``None``."""
        config = getattr(instance, self.config_field) or {}
        return config.get(self.key) or None

    def _query(self, sql: str, params: list[Any]) -> list[tuple]:
        """Run *sql* (``{t}`` = table, ``{c}`` = config column, ``{i}`` = id column) on our connection."""
        from django.db import connections

        meta = self._model()._meta
        with self._conn_lock:
            conn = self._conn
            if conn is None:
                conn = self._conn = connections.create_connection(self.database)
                conn.inc_thread_sharing()  # used by any thread, one at a time (the lock)
            conn.close_if_unusable_or_obsolete()
            qn = conn.ops.quote_name
            text = sql.format(
                t=qn(meta.db_table),
                c=qn(meta.get_field(self.config_field).column),
                i=qn(meta.get_field(self.id_field).column),
            )
            try:
                with conn.cursor() as cursor:
                    cursor.execute(text, params)
                    rows = cursor.fetchall()
                    return [tuple(self._decode(conn, r)) for r in rows]
            finally:
                conn.close_if_unusable_or_obsolete()

    def _decode(self, conn: Any, row: tuple) -> list[Any]:
        meta = self._model()._meta
        fields = (meta.get_field(self.config_field), meta.get_field(self.id_field))
        out = []
        for field, value in zip(fields, row, strict=False):
            convert = getattr(field, "from_db_value", None)
            out.append(value if convert is None or value is None else convert(value, None, conn))
        return out

    def get(self, tenant_id: str) -> Mapping[str, Any] | None:
        """Return *tenant_id*'s committed cache config, or ``None`` (no row, no config)."""
        from django.core.exceptions import ValidationError

        field = self._model()._meta.get_field(self.id_field)
        try:
            value = field.to_python(tenant_id)
        except ValidationError:
            return None  # not a possible id of this table: no row
        rows = _sync(self._query, "SELECT {c}, {i} FROM {t} WHERE {i} = %s", [value])
        if not rows:
            return None
        config = rows[0][0] or {}
        return config.get(self.key) or None

    def tenants(self) -> list[str]:
        """Return the tenant ids of every committed row."""
        rows = _sync(self._query, "SELECT {c}, {i} FROM {t}", [])
        return [str(r[1]) for r in rows]

    def close(self) -> None:
        """Close the lookup connection (``CACHES`` changed)."""
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            conn.dec_thread_sharing()


def connect_model_source(model: Any, id_field: str) -> None:
    """Notify every process when a row of the tenant *model* is saved or deleted.

    Before the row's transaction commits, the tenant's namespace is bumped in
    the store the row now names (so a process that reads the committed row
    before the notification runs finds nothing the tenant left there); the
    notification waits for the commit of the row's database (a rolled-back
    change notifies nobody, and no process re-reads the config before it is
    committed).
    """
    from functools import partial

    from django.db import DEFAULT_DB_ALIAS
    from django.db.models.signals import post_delete, post_save

    def changed(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
        tenant_id = str(getattr(instance, id_field))
        _arrive_before_commit(sender, instance, tenant_id, deleted="created" not in kwargs)
        hook = CommitHook(
            partial(notify_tenant_config_changed, tenant_id),
            "tenant_config_notify",
            tenant=tenant_id,
        )
        on_commit(hook, using or DEFAULT_DB_ALIAS)

    label = model._meta.label
    post_save.connect(changed, sender=model, weak=False, dispatch_uid=f"fkd:tenant-config:{label}")
    post_delete.connect(
        changed, sender=model, weak=False, dispatch_uid=f"fkd:tenant-config-del:{label}"
    )


def _arrive_before_commit(model: Any, instance: Any, tenant_id: str, deleted: bool) -> None:
    """Bump *tenant_id*'s namespace in the store its saved (or deleted) row names, now."""
    for ts in _registered():
        if isinstance(ts.source, _ModelSource) and ts.source.is_for(model):
            config = None if deleted else ts.source.config_of(instance)
            ts.arrive(tenant_id, config)


def connect_model_sources() -> None:
    """Connect the tenant-config signals of every MODEL source in ``CACHES`` (``AppConfig.ready``).

    So that a tenant saved from any process (a shell, the admin, a command)
    notifies the others, even before that process used the cache.
    """
    from django.apps import apps
    from django.conf import settings

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
        return _CallableSource(import_dotted(spec, where))
    if isinstance(spec, Mapping) and "MODEL" in spec:
        unknown = set(spec) - {"MODEL", "ID_FIELD", "CONFIG_FIELD", "KEY", "DATABASE"}
        if unknown:
            raise ConfigurationError(f"{where} has unknown keys {sorted(unknown)}")
        database = spec.get("DATABASE")
        if database is not None:
            from django.conf import settings

            if database not in settings.DATABASES:
                raise ConfigurationError(
                    f"{where}['DATABASE'] = {database!r} is not an alias in settings.DATABASES; "
                    f"name the database holding the {spec['MODEL']} table, e.g. 'default'."
                )
        return _ModelSource(spec)
    if isinstance(spec, Mapping):
        return _DictSource(spec)
    if callable(spec):
        return _CallableSource(spec)
    raise ConfigurationError(
        f"{where} must be a dict of tenant configs, a dotted path to a callable, or a MODEL spec; got {spec!r}"
    )


class TenantStores:
    """The per-tenant stores of one fragmented alias, shared by every thread of the process.

    Besides the built stores it remembers, per tenant, the placement (see
    :func:`placement_of`) this process last served it from, across drops: a
    tenant rebuilt into another placement has moved, and its namespace is
    bumped in the new store before any read is served from it.
    """

    def __init__(self, alias: str, options: BackendOptions, source: Any) -> None:
        self.alias = alias
        self.options = options
        self.template_name = options.cache_name
        self.source = source
        self.recheck = options.tenant_config_recheck
        self.channel_url = options.tenant_config_url
        self._lock = threading.Lock()
        # tenant -> (store name, store, its adapter); (None, None, None): the shared store.
        self._stores: dict[str, tuple[str | None, Any, StoreAdapter | None]] = {}
        self._placed: dict[str, str] = {}  # tenant -> placement last served from, here
        self._next_check = 0.0
        self._config_version: Any = _MISSING
        #: ``time.monotonic()`` when the last successful config-version check
        #: started: this process's stores reflect every change notified before it.
        self.checked_at = float("-inf")

    def _entry(self, tenant_id: str) -> tuple[str | None, Any, StoreAdapter | None]:
        now = time.monotonic()
        if now >= self._next_check:
            self._check_version(now)
        hit = self._stores.get(tenant_id)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._stores.get(tenant_id)
            if hit is None:
                hit = self._stores[tenant_id] = self._place(tenant_id, moved=False)
        return hit

    def store_for(self, tenant_id: str) -> Any:
        """Return *tenant_id*'s own store, or ``None`` when it uses the shared store.

        Raises ``ConfigurationError`` for a bad tenant config.
        """
        return self._entry(tenant_id)[1]

    def adapter_for(self, tenant_id: str) -> StoreAdapter | None:
        """Return the adapter of *tenant_id*'s own store (built with it), or ``None`` (shared store)."""
        return self._entry(tenant_id)[2]

    def sync(self) -> Any:
        """Check the config version now, whatever the recheck interval; return it.

        Before a bump: a tenant's bump must go to the store the tenant uses
        now, not the one this process placed it in before another process
        moved it (the entries it must invalidate are there). The caller checks
        again after the bump and bumps again if the version moved meanwhile.
        """
        self._check_version(time.monotonic())
        return self._config_version

    def store_alias(self, tenant_id: str) -> str:
        """Return the name of *tenant_id*'s store (its ``ALIAS``, or the shared store alias)."""
        while True:
            self.store_for(tenant_id)
            hit = self._stores.get(tenant_id)
            if hit is not None:  # None: dropped again meanwhile (a notification)
                return hit[0] or self.template_name

    def _build(self, tenant_id: str) -> tuple[str | None, Any, str]:
        """Return ``(store name or None, store or None for the shared one, placement)``."""
        from django.conf import settings

        template = settings.CACHES[self.template_name]
        config = self.source.get(tenant_id)
        if not config:
            return (None, None, placement_of(template))
        name, merged, store = build_store(tenant_id, config, template)
        logger.info("built tenant store %s for tenant %s (alias=%s)", name, tenant_id, self.alias)
        return (name, store, placement_of(merged))

    def _place(self, tenant_id: str, *, moved: bool) -> tuple[str | None, Any, StoreAdapter | None]:
        """Build *tenant_id*'s store and adapter; bump its namespace there if it moved (lock held).

        *moved* forces the bump (the notifying process); otherwise the tenant
        moved if this process last served it from another placement.
        """
        name, store, placement = self._build(tenant_id)
        adapter = None if store is None else adapter_for(store, self.options.store_adapter)
        if moved or self._placed.get(tenant_id, placement) != placement:
            self._bump_arrival(tenant_id, adapter, name)
        self._placed[tenant_id] = placement
        return (name, store, adapter)

    def _bump_arrival(self, tenant_id: str, adapter: StoreAdapter | None, name: str | None) -> None:
        """Bump *tenant_id*'s namespace in *adapter*'s store (``None``: the shared one); retry on failure.

        *name* is the store's ``ALIAS``. Called with ``self._lock`` held: the
        retry is queued with its version space given, never looked up here.
        """
        options = self.options
        if adapter is None:
            adapter = adapter_for(isolate(get_cache(self.template_name)), options.store_adapter)
        keys = [namespace_key(options.prefix, tenant_id)]
        verify = adapter.drops_writes if options.verify_bumps is None else options.verify_bumps
        try:
            bump(adapter, keys, options.version_timeout, verify)
        except (*metrics.store_errors(), BumpFailed) as exc:
            metrics.record_store_error(
                self.alias, tenant_id, "tenant_move", exc, level=logging.ERROR
            )
            space = (
                f"tenant-store:{name}" if name is not None else self.template_name,
                options.prefix,
            )
            # Bypassed here until it lands.
            _lost_arrivals[0](self.alias, tenant_id, keys, space)

    def arrive(self, tenant_id: str, config: Mapping[str, Any] | None) -> None:
        """Bump *tenant_id*'s namespace in the store *config* names (``None``: the shared store).

        For a tenant row about to commit a new config (a model source): the
        store is built for the bump only, then retired. Never raises: a bad config
        (any exception building it) or a store error is logged and counted.
        """
        from django.conf import settings

        store = name = None
        try:
            if config:
                name, _merged, store = build_store(
                    tenant_id, config, settings.CACHES[self.template_name]
                )
            adapter = None if store is None else adapter_for(store, self.options.store_adapter)
            self._bump_arrival(tenant_id, adapter, name)
        except Exception as exc:  # a bad config raises where the store is used
            # The row is committed (or about to be): raising here would skip the other
            # processes' notification. A mistyped BACKEND (ImportError) or LOCATION
            # (ValueError) is as bad as a ConfigurationError: logged, counted, survived.
            metrics.record_error(
                self.alias, tenant_id, "tenant_move", exc, what="bad tenant cache config"
            )
        finally:
            if store is not None:
                retire.retire(store, _live_stores())

    def relocate(self, tenant_id: str | None = None) -> None:
        """Re-place *tenant_id* (``None``: every tenant) now, bumping it in the store it lands in.

        Called by :func:`notify_tenant_config_changed` before other processes
        are told. Every tenant, for ``None``: those this process placed and
        those the source lists. A tenant whose config cannot be read or built
        is logged and left unplaced (its next use builds it, or raises).
        """
        if tenant_id is not None:
            tenants = [tenant_id]
        else:
            listed = self.tenants()
            tenants = sorted({*self._placed, *(listed or ())})
            if listed is None:
                logger.warning(
                    "notified of a change of every tenant's cache config, but the TENANT_STORES "
                    "source cannot list tenants (alias=%s): tenants this process never used get "
                    "no arrival bump here",
                    self.alias,
                    extra={"alias": self.alias, "operation": "tenant_move"},
                )
        with self._lock:
            dropped = self._drop(tenant_id)
            for tenant in tenants:
                try:
                    self._stores[tenant] = self._place(tenant, moved=True)
                except Exception as exc:  # a bad config, or the config source is down
                    metrics.record_store_error(
                        self.alias, tenant, "tenant_move", exc, level=logging.ERROR
                    )
        self._retire(dropped)

    def _drop(self, tenant_id: str | None) -> list[Any]:
        """Remove one tenant's store, or every one, from the map; return the stores (lock held)."""
        if tenant_id is None:
            dropped = [entry[1] for entry in self._stores.values()]
            self._stores.clear()
        else:
            dropped = [self._stores.pop(tenant_id, (None, None, None))[1]]
        return [s for s in dropped if s is not None]

    def _retire(self, stores: list[Any]) -> None:
        if stores:
            live = _live_stores()
            for store in stores:
                retire.retire(store, live)

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop one tenant's store, or every one; it is rebuilt (and re-placed) on next use.

        The dropped store is retired: connections other calls or tenants use
        stay open (:mod:`.retire`).
        """
        with self._lock:
            dropped = self._drop(tenant_id)
        self._retire(dropped)

    def tenants(self) -> list[str] | None:
        """Return the tenant ids the source knows of, or ``None`` if it cannot list them."""
        return self.source.tenants()

    def _check_version(self, now: float) -> None:
        """Read the config version from the shared store; drop every tenant store if it moved.

        Behind the shared store's circuit breaker: while it is open the check
        is skipped (counted), as a failed read would be, without waiting for
        a socket timeout; a failed read opens it.
        """
        self._next_check = now + self.recheck
        breaker = _breakers[0] if _breakers else None
        if breaker is not None and breaker.is_open(self.alias):
            metrics.count(self.alias, "tenant_config_check (breaker open)")
            return
        try:
            version = get_cache(self.template_name).get(CONFIG_VERSION_KEY)
        except metrics.store_errors() as exc:  # the store may be down: keep current stores
            metrics.record_store_error(self.alias, None, "tenant_config_check", exc)
            if breaker is not None:
                breaker.failed(self.alias)
            return
        if self._config_version is not _MISSING and version != self._config_version:
            logger.info(
                "tenant config version changed (alias=%s): dropping tenant stores", self.alias
            )
            self.forget()
        self._config_version = version
        self.checked_at = now
        if self.channel_url:
            _listener.ensure(self.channel_url, _on_message)
        if retire.pending():
            retire.sweep(_live_stores())


def live_stores() -> list[Any]:
    """Every store this process uses: built tenant stores and the plain ``CACHES`` aliases.

    What a store built for one job (a purge, an arrival bump) is retired
    against (:func:`.retire.retire`): connections these share stay open.
    """
    return _live_stores()


def _live_stores() -> list[Any]:
    """Every store this process uses: built tenant stores and the plain ``CACHES`` aliases."""
    from django.conf import settings

    live = [e[1] for ts in list(_registry.values()) for e in list(ts._stores.values()) if e[1]]
    for alias, conf in list(settings.CACHES.items()):
        if conf.get("BACKEND") in BACKEND_PATHS:
            continue
        try:
            live.append(get_cache(alias))
        except Exception as exc:  # a broken alias uses no pool: nothing to spare
            logger.warning(
                "cache alias %r cannot be built (%s); retiring tenant stores without it",
                alias,
                exc,
                extra={"alias": alias, "operation": "store_retire"},
            )
    return live


_registry_lock = threading.Lock()
_registry: dict[str, TenantStores] = {}


#: Queues a failed arrival bump for retry: ``(alias, tenant, keys, version space)``.
#: ``invalidation`` (which imports this module) installs its ``retry_flush`` at import.
_lost_arrivals: list[Callable[[str, str, list[str], tuple[str, str]], None]] = []


def on_lost_arrival(handler: Callable[[str, str, list[str], tuple[str, str]], None]) -> None:
    """Make *handler* the retry of arrival bumps and config-version writes that fail.

    (``invalidation.retry_flush``: kept in the outbox, retried until they land.)
    """
    _lost_arrivals[:] = [handler]


class SharedStoreBreaker(Protocol):
    """The circuit breaker of an alias's shared store (``invalidation`` provides it)."""

    def is_open(self, alias: str) -> bool:
        """True while the shared store of fragmented *alias* is skipped."""

    def failed(self, alias: str) -> None:
        """A call to the shared store of *alias* failed: open its breaker."""


_breakers: list[SharedStoreBreaker] = []


def on_breaker(breaker: SharedStoreBreaker) -> None:
    """Put the config-version checks behind *breaker* (set once by ``invalidation``)."""
    _breakers[:] = [breaker]


def stores_for_alias(alias: str, options: BackendOptions) -> TenantStores | None:
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
                ts = _registry[alias] = TenantStores(alias, options, source)
    return ts


def _registered() -> Iterable[TenantStores]:
    """Every alias with tenant stores, used in this process yet or not (registered now)."""
    for alias in fragmented_aliases():
        try:
            options = alias_options(alias)
        except ConfigurationError:
            continue  # a misconfigured alias raises where it is used (and check E001)
        stores_for_alias(alias, options)
    return list(_registry.values())


def reset_registry() -> None:
    """Drop every tenant store of every alias (on ``CACHES`` change, and in tests)."""
    with _registry_lock:
        dropped = [s for ts in _registry.values() for s in ts._drop(None)]
        sources = [ts.source for ts in _registry.values()]
        _registry.clear()
    # CACHES is changing: the plain aliases cannot be built now, and the old
    # stores' pools are only closed when idle anyway.
    for store in dropped:
        retire.retire(store, ())
    retire.reset(())
    for source in sources:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def notify_tenant_config_changed(tenant_id: str | None = None) -> None:
    """Tell every process that *tenant_id*'s cache config changed (``None``: all tenants).

    In this process, re-places the tenant at once, bumping its namespace in
    the store it now uses (so nothing it left there before is served again).
    Then bumps the config version in each shared store (other processes
    notice within ``TENANT_CONFIG_RECHECK`` seconds) and, when
    ``TENANT_CONFIG_URL`` is set, publishes on Redis pub/sub and waits (up to
    ``channel.ACK_TIMEOUT`` seconds) until every subscribed process confirmed
    it dropped the tenant's store. A version write that fails is logged,
    counted, kept in the outbox and retried until it lands (other processes
    follow the move once it does); a publish that fails is logged and counted.
    """
    urls: dict[str, None] = {}
    for ts in _registered():
        # The version first, then the arrival bump: a process bumping the tenant
        # checks the version before and after its bump (see TenantStores.sync),
        # so a bump that still went to the old store came before this arrival
        # bump, which invalidates whatever the new store holds from before.
        try:
            get_cache(ts.template_name).set(CONFIG_VERSION_KEY, fresh_token(), timeout=None)
        except Exception as exc:  # never raised: kept and retried until it lands
            metrics.record_error(
                ts.alias,
                tenant_id,
                "tenant_config_version",
                exc,
                what="tenant config notification failed",
            )
            # A process that never sees the version move keeps the tenant on its
            # old store for good: the write is retried (and kept in the outbox)
            # like a failed bump; this process bypasses the shared store meanwhile.
            space = (ts.template_name, ts.options.prefix)
            _lost_arrivals[0](ts.alias, None, [CONFIG_VERSION_KEY], space)
        ts.relocate(tenant_id)
        if ts.channel_url:
            urls[ts.channel_url] = None
    for url in urls:
        try:
            publish(url, tenant_id)
        except Exception as exc:  # other processes still see the config version change
            metrics.record_error(
                "-",
                tenant_id,
                "tenant_config_notify",
                exc,
                what="tenant config notification failed",
            )


def _on_message(url: str, tenant_id: str | None) -> None:
    """Listener handler: drop *tenant_id*'s store (``None``: all) of every alias listening on *url*."""
    for ts in list(_registry.values()):
        if ts.channel_url == url:
            try:
                ts.forget(tenant_id)
            except Exception as exc:  # never lose the listener (nor the ack) over one alias
                logger.error(
                    "dropping tenant %s's store failed (alias=%s): %s",
                    tenant_id,
                    ts.alias,
                    exc,
                    extra={"alias": ts.alias, "tenant": tenant_id, "operation": "tenant_forget"},
                )
