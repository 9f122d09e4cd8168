"""Bumping tags: after the commit, in the writer's tenant, never lost.

* ``bump_keys`` bumps version keys of one alias: at once in autocommit, or
  queued with ``transaction.on_commit`` inside a transaction (so a rollback,
  or a rolled-back savepoint, bumps nothing; the tenant is the one current
  when the bump was asked for, not the one current at commit).
* Bumps queued at the same savepoint level share one ``on_commit`` hook, so a
  transaction that writes many rows bumps in one round trip per store.
* A bump that fails is logged at ERROR, counted, and retried by a background
  thread until it lands; meanwhile this process bypasses the cache for that
  tenant. With the alias option ``STRICT`` the bump is also made before the
  commit, and a failure raises ``BumpFailed`` so the transaction rolls back.
* ``ModelTagManager`` (the seed's API) connects ``post_save``,
  ``post_delete`` and ``m2m_changed`` of registered models to these bumps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, models, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from . import metrics
from .conf import fragmented_aliases
from .exceptions import BumpFailed, TenantRequired
from .keys import is_global_tag, tag_version_key
from .precise import precise_write
from .signals import model_registry_changed, tags_bumped, tenant_flushed
from .tags import normalize_tags
from .tenancy.context import current_tenant_id, tenant_id_of
from .transactions import note_pending_bump, open_transactions
from .versions import abump, bump

__all__ = [
    "CacheAwareManager",
    "CacheAwareQuerySet",
    "ModelTagManager",
    "PendingBump",
    "bump_tags",
]

logger = logging.getLogger("fragmented_keys_django")


@dataclass
class _Bump:
    alias: str
    tenant: str | None
    keys: list[str]
    tags: tuple = ()
    flush: bool = False


@dataclass(eq=False)
class PendingBump:
    """An ``on_commit`` hook carrying the bumps queued at one savepoint level of a transaction.

    Bumps queued while the same savepoints are open share one hook (Django
    discards a hook exactly when one of the savepoints open at its
    registration rolls back, so they share its fate): a transaction that saves
    many rows bumps in one round trip per store.
    """

    using: str
    items: list[_Bump] = field(default_factory=list)

    def __call__(self) -> None:
        apply_bumps(self.items)


# Per thread (as Django's connections are): the open hook per (connection, savepoint ids).
_hooks = threading.local()


def _backend(alias: str) -> Any:
    from .conf import get_cache

    return get_cache(alias)


def _by_store(items: list[_Bump]) -> list[tuple[Any, Any, list[_Bump]]]:
    """Group *items* by the store that holds their tenant's versions: ``(backend, store, items)``."""
    groups: dict[int, tuple[Any, Any, list[_Bump]]] = {}
    for item in items:
        backend = _backend(item.alias)
        store = backend._store_of(item.tenant)
        groups.setdefault(id(store), (backend, store, []))[2].append(item)
    return list(groups.values())


def apply_bumps(items: list[_Bump], *, raise_errors: bool = False) -> None:
    """Write *items* now: one ``set_many`` per store. Failures are retried later."""
    for backend, store, group in _by_store(items):
        keys = [k for item in group for k in item.keys]
        try:
            bump(store, keys, backend.options.version_timeout, backend.verify_bumps_on(store))
        except (*metrics.store_errors(), BumpFailed) as exc:
            for item in group:
                metrics.record_store_error(
                    item.alias, item.tenant, "bump", exc, level=logging.ERROR
                )
            # Queue the retry (and bypass the tenant here) even when raising:
            # in autocommit the row is already written, so the bump must land.
            _retrier.add(group)
            if raise_errors:
                raise BumpFailed(f"tag bump failed on alias {group[0].alias!r}: {exc}") from exc
            continue
        _announce(group)


async def aapply_bumps(items: list[_Bump]) -> None:
    """Async twin of :func:`apply_bumps` (used by the ``a*`` methods)."""
    for backend, store, group in _by_store(items):
        keys = [k for item in group for k in item.keys]
        try:
            await abump(
                store, keys, backend.options.version_timeout, backend.verify_bumps_on(store)
            )
        except (*metrics.store_errors(), BumpFailed) as exc:
            for item in group:
                metrics.record_store_error(
                    item.alias, item.tenant, "bump", exc, level=logging.ERROR
                )
            _retrier.add(group)
            if backend.options.strict:
                raise BumpFailed(f"tag bump failed on alias {group[0].alias!r}: {exc}") from exc
            continue
        _announce(group)


def _announce(group: list[_Bump]) -> None:
    from .backend import FragmentedKeysCacheBackend as sender

    for item in group:
        if item.flush:
            if tenant_flushed.receivers:
                tenant_flushed.send(sender, alias=item.alias, tenant=item.tenant)
        elif tags_bumped.receivers:
            tags_bumped.send(sender, alias=item.alias, tenant=item.tenant, tags=item.tags)


def _queue_on_commit(conn: Any, item: _Bump) -> None:
    open_hooks = getattr(_hooks, "by_conn", None)
    if open_hooks is None:
        open_hooks = _hooks.by_conn = {}
    level = (id(conn), tuple(conn.savepoint_ids))
    hook = open_hooks.get(level)
    if hook is not None and any(h[1] is hook for h in conn.run_on_commit):
        hook.items.append(item)
        return
    for key in [k for k in open_hooks if k[0] == id(conn)]:
        if not any(h[1] is open_hooks[key] for h in conn.run_on_commit):
            del open_hooks[key]  # committed, or rolled back with its savepoint
    hook = open_hooks[level] = PendingBump(conn.alias, [item])
    transaction.on_commit(hook, using=conn.alias, robust=True)
    note_pending_bump(conn)


def bump_keys(
    backend: Any,
    tenant: str | None,
    keys: list[str],
    *,
    tags: Iterable[Any] = (),
    flush: bool = False,
    using: str | None = None,
) -> None:
    """Bump *keys* of *backend*'s store: now, or after the commit of the open transaction(s).

    *using* limits the transaction considered to that database (the database
    a model row was written to); otherwise every open transaction of this
    thread defers the bump.
    """
    spec_tags = tuple((s.name, s.instance) for s in normalize_tags(tags)) if tags else ()
    _dispatch(
        [_Bump(backend.alias, tenant, list(keys), spec_tags, flush)], backend.options.strict, using
    )


def _dispatch(items: list[_Bump], strict: bool, using: str | None) -> None:
    """Apply *items* now (one round trip per store), or queue them for the commit."""
    conns = open_transactions()
    if using is not None:
        conns = [c for c in conns if c.alias == using]
    if not conns:
        apply_bumps(items, raise_errors=strict)
        return
    if strict:
        # Bump before the commit too: if the store is down the write fails
        # and the transaction rolls back, so nothing stale can be served.
        apply_bumps(items, raise_errors=True)
    for conn in conns:
        for item in items:
            _queue_on_commit(conn, item)


async def abump_keys(
    backend: Any,
    tenant: str | None,
    keys: list[str],
    *,
    tags: Iterable[Any] = (),
    flush: bool = False,
) -> None:
    """Async twin of :func:`bump_keys`; async code holds no transaction, so it bumps at once."""
    spec_tags = tuple((s.name, s.instance) for s in normalize_tags(tags)) if tags else ()
    await aapply_bumps([_Bump(backend.alias, tenant, list(keys), spec_tags, flush)])


def _aliases_by_store() -> list[str]:
    """Fragmented aliases with distinct (store, PREFIX): one bump each covers every alias."""
    from django.conf import settings

    seen: dict[tuple[str, str, bool], str] = {}
    for alias in fragmented_aliases():
        conf = settings.CACHES[alias]
        shared = bool((conf.get("OPTIONS") or {}).get("SHARED", False))
        seen.setdefault((conf.get("CACHE_NAME", "default"), conf.get("PREFIX", ""), shared), alias)
    return list(seen.values())


def bump_tags(
    tags: Iterable[Any],
    *,
    tenant: Any = ...,
    aliases: Iterable[str] | None = None,
    using: str | None = None,
) -> int:
    """Bump *tags* in every fragmented alias (or *aliases*), in *tenant* (default: current).

    Inside a transaction on *using* (default: any open one) the bump waits for
    the commit. Returns the number of distinct non-constant tags bumped per alias.
    """
    from .tenancy.context import tenant_id_of

    tid = (
        current_tenant_id() if tenant is ... else (None if tenant is None else tenant_id_of(tenant))
    )
    specs = [s for s in normalize_tags(tags) if not s.constant]
    if not specs:
        return 0
    pairs = [(s.name, s.instance) for s in specs]
    backends = [_backend(a) for a in (aliases if aliases is not None else _aliases_by_store())]
    # Check every alias before bumping any: a refusal must not leave half the bumps queued.
    for backend in backends:
        alias = backend.alias
        if backend.options.tenant_stores is not None:
            backend._no_global_tags(specs)
        if (
            tid is None
            and not backend.options.shared
            and backend.options.tenant_required
            and not all(is_global_tag(n) for n, _ in pairs)
        ):
            raise TenantRequired(
                f"Bumping {pairs[:3]} on alias {alias!r}, which requires a tenant, but none is "
                f"current: the right tenant's entries would stay stale. Save inside "
                f"TenantContext.use_tenant(...), or register the model with "
                f"ModelTagManager.register_model(Model, tenant_field='tenant_id')."
            )
    by_strictness: dict[bool, list[_Bump]] = {}
    for backend in backends:
        # A SHARED (reserved) alias has one namespace for every tenant.
        where = None if backend.options.shared else tid
        keys = [tag_version_key(backend.options.prefix, where, name, inst) for name, inst in pairs]
        item = _Bump(backend.alias, where, keys, tuple(pairs), False)
        by_strictness.setdefault(backend.options.strict, []).append(item)
    # Every alias in one go: one round trip per store, not per alias.
    for strict, items in by_strictness.items():
        _dispatch(items, strict, using)
    return len(specs)


# -- retrying failed bumps ---------------------------------------------------


class _Retrier:
    """Retries failed bumps in a daemon thread until they land.

    While a tenant has a failed bump pending on an alias, this process does
    not serve that tenant's tagged entries from that alias (``is_suspect``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Bump] = []
        # (alias, tenant) -> failed bumps not landed yet, pending or in flight
        # (taken by a flush that has not finished with them). A tenant stays
        # suspect exactly while this is above zero.
        self._suspect: dict[tuple[str, str | None], int] = {}
        # Bumps a running flush() has taken off the queue and not finished with, by id.
        self._inflight: dict[int, _Bump] = {}
        # Bumped by reset(): items taken before it name a configuration that is gone.
        self._generation = 0
        self._thread: threading.Thread | None = None
        self.interval = 0.2

    #: Pending keys per (alias, tenant) beyond which the tenant's whole
    #: namespace is flushed instead (one key, however many tags failed).
    compact_above = 1000

    def add(self, group: list[_Bump]) -> None:
        with self._lock:
            for item in group:
                self._pending.append(item)
                key = (item.alias, item.tenant)
                self._suspect[key] = self._suspect.get(key, 0) + 1
            self._compact()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fkd-bump-retry", daemon=True
                )
                self._thread.start()

    def _compact(self) -> None:
        """Replace a tenant's many pending tag bumps by one namespace flush (lock held)."""
        sizes: dict[tuple[str, str | None], int] = {}
        for item in [*self._pending, *self._inflight.values()]:
            sizes[(item.alias, item.tenant)] = sizes.get((item.alias, item.tenant), 0) + len(
                item.keys
            )
        for (alias, tenant), size in sizes.items():
            if size <= self.compact_above or tenant is None:
                continue  # a public flush would not reach the "all tenants" versions
            from .keys import namespace_key

            prefix = _backend(alias).options.prefix
            kept = [i for i in self._pending if (i.alias, i.tenant) != (alias, tenant)]
            kept.append(_Bump(alias, tenant, [namespace_key(prefix, tenant)], (), True))
            self._pending = kept
            # The flush, plus the bumps a running flush() still holds for this tenant.
            held = sum((i.alias, i.tenant) == (alias, tenant) for i in self._inflight.values())
            self._suspect[(alias, tenant)] = 1 + held
            logger.error(
                "%d failed tag bumps pending for tenant %s on alias %s: flushing the tenant's "
                "namespace instead once the store is back",
                size,
                tenant,
                alias,
                extra={"alias": alias, "tenant": tenant, "operation": "bump_compact"},
            )

    def reset(self) -> None:
        """Forget every pending bump (``CACHES`` changed: they name aliases that are gone)."""
        with self._lock:
            if self._pending:
                logger.warning(
                    "dropping %d pending tag bumps: settings.CACHES changed", len(self._pending)
                )
            self._pending = []
            self._suspect.clear()
            self._inflight.clear()
            self._generation += 1

    def is_suspect(self, alias: str, tenant: str | None) -> bool:
        # A failed public-namespace bump may hold versions every tenant reads
        # (the safety net's "all tenants" versions, global tags): all suspect.
        s = self._suspect
        return bool(s) and ((alias, tenant) in s or (alias, None) in s)

    def pending(self) -> int:
        """Return how many failed bumps have not landed: queued, or held by a running retry."""
        with self._lock:
            return len(self._pending) + len(self._inflight)

    def flush(self) -> bool:
        """Try every pending bump once now; return True if none is left.

        Items that fail go back to the queue; no error of one item stops the
        others. Items taken before a :meth:`reset` are dropped when they come
        back: their configuration is gone, and counting them against the new
        one would clear a tenant's suspicion while its own bump is pending.
        """
        with self._lock:
            items, self._pending = self._pending, []
            generation = self._generation
            self._inflight.update((id(item), item) for item in items)
        left: list[_Bump] = []
        for item in items:
            if not self._try(item):
                left.append(item)  # still counted in flight until it is queued again
                continue
            try:  # logged before the counts move: pending() == 0 means the log is there
                logger.warning(
                    "delayed tag bump landed (alias=%s, tenant=%s)",
                    item.alias,
                    item.tenant,
                    extra={"alias": item.alias, "tenant": item.tenant, "operation": "bump_retry"},
                )
                _announce([item])
            except Exception:  # a receiver's error: the bump itself has landed
                logger.exception("tags_bumped receiver failed after a delayed bump")
            with self._lock:
                if generation == self._generation:
                    del self._inflight[id(item)]
                    _decrement(self._suspect, (item.alias, item.tenant))
        with self._lock:
            if generation == self._generation:
                for item in left:
                    del self._inflight[id(item)]
                self._pending[:0] = left
            return not self._pending

    @staticmethod
    def _try(item: _Bump) -> bool:
        """Bump *item* once; return True if it landed (a failure is counted and logged)."""
        try:
            backend = _backend(item.alias)
            store = backend._store_of(item.tenant)
            bump(store, item.keys, backend.options.version_timeout, backend.verify_bumps_on(store))
        except Exception as exc:  # retried later; counted and logged each time
            metrics.record_store_error(item.alias, item.tenant, "bump_retry", exc)
            return False
        return True

    def _run(self) -> None:
        delay = self.interval
        while True:
            time.sleep(delay)
            try:
                self.flush()
            except Exception:  # never let the retry thread die silently
                logger.exception("bump retry loop failed; retrying")
            with self._lock:
                # Decide to exit under the lock: an add() racing with this
                # either lands first (and we go on) or finds no thread and
                # starts one.
                if not self._pending:
                    self._thread = None
                    return
            delay = min(delay * 2, 5.0)


def _decrement(counts: dict[tuple[str, str | None], int], key: tuple[str, str | None]) -> None:
    """Lower ``counts[key]`` by one, dropping the key at zero."""
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


_retrier = _Retrier()


def pending_retries() -> int:
    """Return how many failed bumps wait for the store in this process."""
    return _retrier.pending()


def is_suspect(alias: str, tenant: str | None) -> bool:
    """Return True if a failed bump for (*alias*, *tenant*) has not landed yet."""
    return _retrier.is_suspect(alias, tenant)


# -- ModelTagManager ------------------------------------------------------------

LifecycleCallback = Callable[..., Iterable[Any]]


class ModelTagManager:
    """Bumps tags when registered models are saved, deleted, or their m2m relations change.

    The seed package's API, all classmethods. By default a change to
    ``instance`` of a model registered as ``tag_name`` bumps
    ``(tag_name, str(instance.pk))`` and the model-wide tag ``(tag_name, "")``
    (what ``@tagged_cache(tags=["User"])`` depends on). A lifecycle callback
    (``on_create(sender, instance)``, ``on_update(sender, instance,
    update_fields)``, ``on_delete(sender, instance)``) returns the tags to bump
    instead. Bumps wait for the commit of the instance's database and use the
    tenant current when the row was written.
    """

    _registered: dict[type[models.Model], dict[str, Any]] = {}

    @classmethod
    def register_model(
        cls,
        model: type[models.Model],
        tag_name: str | None = None,
        auto_connect: bool = True,
        on_create: LifecycleCallback | None = None,
        on_update: LifecycleCallback | None = None,
        on_delete: LifecycleCallback | None = None,
        tenant_field: str | None = None,
        tenant_scoped: bool = True,
    ) -> None:
        """Register *model*; its tag name defaults to ``model.__name__``.

        *tenant_field* (ours, not in the seed) names the field holding a row's
        tenant id (shared-database tenancy): bumps then go to that tenant
        whatever tenant is current when the row is saved. Without it, the
        tenant current at save time is used. ``tenant_scoped=False`` (ours)
        is for global data (public-schema tables): the model's tag becomes a
        global tag (``keys.register_global_tag``), one version for every tenant.
        """
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise TypeError(f"register_model() takes a model class, got {model!r}")
        name = tag_name or model.__name__
        normalize_tags([(name, "")])  # validates the name
        if tenant_field is not None:
            try:
                model._meta.get_field(tenant_field)
            except Exception as exc:
                raise TypeError(
                    f"register_model({model.__name__}, tenant_field={tenant_field!r}): no such field"
                ) from exc
        if not tenant_scoped:
            if tenant_field is not None:
                raise TypeError(
                    "register_model(): tenant_scoped=False and tenant_field exclude each other"
                )
            from .keys import register_global_tag

            register_global_tag(name)
        cls._registered[model] = {
            "tag_name": name,
            "on_create": on_create,
            "on_update": on_update,
            "on_delete": on_delete,
            "tenant_field": tenant_field,
            "connected": False,
        }
        if auto_connect:
            cls.connect_signals(model)
        model_registry_changed.send(cls, model=model)

    @classmethod
    def connect_signals(cls, model: type[models.Model]) -> None:
        """Connect ``post_save``/``post_delete`` (and ``m2m_changed``) for *model*."""
        uid = f"fkd:{model._meta.label}"
        post_save.connect(_on_save, sender=model, dispatch_uid=uid + ":save", weak=False)
        post_delete.connect(_on_delete, sender=model, dispatch_uid=uid + ":delete", weak=False)
        m2m_changed.connect(_on_m2m, dispatch_uid="fkd:m2m", weak=False)
        cls._registered[model]["connected"] = True

    @classmethod
    def disconnect_signals(cls, model: type[models.Model]) -> None:
        """Disconnect *model*'s signal receivers (it stays registered)."""
        uid = f"fkd:{model._meta.label}"
        post_save.disconnect(sender=model, dispatch_uid=uid + ":save")
        post_delete.disconnect(sender=model, dispatch_uid=uid + ":delete")
        if model in cls._registered:
            cls._registered[model]["connected"] = False

    @classmethod
    def unregister_model(cls, model: type[models.Model]) -> None:
        """Forget *model* and disconnect its receivers."""
        if model in cls._registered:
            cls.disconnect_signals(model)
            del cls._registered[model]
            model_registry_changed.send(cls, model=model)

    @classmethod
    def clear_all(cls) -> None:
        """Unregister every model."""
        for model in list(cls._registered):
            cls.unregister_model(model)

    @classmethod
    def is_registered(cls, model: type[models.Model]) -> bool:
        """Return True if *model* is registered."""
        return model in cls._registered

    @classmethod
    def get_registered_models(cls) -> dict[type[models.Model], str]:
        """Return ``{model: tag_name}`` for every registered model."""
        return {m: c["tag_name"] for m, c in cls._registered.items()}

    @classmethod
    def get_tag_name_for_model(cls, model: type[models.Model]) -> str | None:
        """Return *model*'s tag name, or ``None`` if it is not registered."""
        conf = cls._registered.get(model)
        return conf["tag_name"] if conf else None

    @classmethod
    def _resolve_tag_name(cls, model_or_tag: type[models.Model] | str) -> str | None:
        if isinstance(model_or_tag, str):
            for model, conf in cls._registered.items():
                if model_or_tag in (model.__name__, conf["tag_name"]):
                    return conf["tag_name"]
            return None
        return cls.get_tag_name_for_model(model_or_tag)

    @classmethod
    def tags_for(
        cls, model: type[models.Model], instance: Any, event: str, update_fields: Any = None
    ) -> list[Any]:
        """Return the tags a change of *instance* bumps (``event``: create, update or delete)."""
        conf = cls._registered.get(model)
        if conf is None or instance.pk is None:
            return []
        callback = conf.get(f"on_{event}")
        if callback is not None:
            result = (
                callback(model, instance, update_fields)
                if event == "update"
                else callback(model, instance)
            )
            return list(result or ())
        return [(conf["tag_name"], str(instance.pk)), (conf["tag_name"], "")]

    @classmethod
    def invalidate_model_tag(cls, model: type[models.Model] | str, pk: Any) -> bool:
        """Bump the tag of one instance (and the model-wide tag); False if *model* is unknown."""
        name = cls._resolve_tag_name(model)
        if name is None:
            return False
        bump_tags([(name, str(pk)), (name, "")])
        return True

    @classmethod
    def invalidate_scope(cls, tag_name: str, scope_id: Any) -> bool:
        """Bump a scoped tag, e.g. ``invalidate_scope("Review", "org:42")``."""
        bump_tags([(tag_name, str(scope_id))])
        return True

    @classmethod
    def invalidate_bulk(
        cls,
        model_or_tag: type[models.Model] | str,
        pks: Iterable[Any] | None = None,
        scopes: Iterable[Any] | None = None,
    ) -> int:
        """Bump instance tags for *pks* and scope tags for *scopes* in one round trip per store.

        For changes that bypass signals (raw SQL, ``QuerySet.update``). A model
        class or a registered name resolves to its tag name; another string is
        used as the tag name itself. Returns the number of tags bumped.
        """
        if isinstance(model_or_tag, str):
            name = cls._resolve_tag_name(model_or_tag) or model_or_tag
        else:
            name = cls._resolve_tag_name(model_or_tag)
            if name is None:
                return 0
        tags = [(name, str(pk)) for pk in pks or ()] + [(name, str(s)) for s in scopes or ()]
        if pks:
            tags.append((name, ""))
        return bump_tags(tags)

    @classmethod
    def tenant_of(cls, model: type[models.Model], instance: Any) -> Any:
        """Return the tenant a change of *instance* belongs to (``...`` = the current one)."""
        conf = cls._registered.get(model)
        field = conf and conf.get("tenant_field")
        if not field:
            return ...
        value = getattr(instance, field, None)
        if value is None:
            return None
        if isinstance(value, models.Model):
            return tenant_id_of(value)  # a foreign key to a tenant object with ``tenant_id``
        return str(value)

    @classmethod
    def _fire(
        cls,
        model: type[models.Model],
        instances: Iterable[Any],
        event: str,
        update_fields: Any = None,
        using: str | None = None,
    ) -> None:
        by_tenant: dict[Any, list[Any]] = {}
        for instance in instances:
            tags = cls.tags_for(model, instance, event, update_fields)
            if tags:
                by_tenant.setdefault(cls.tenant_of(model, instance), []).extend(tags)
        for tenant, tags in by_tenant.items():
            bump_tags(tags, tenant=tenant, using=using)


def _on_save(
    sender: type[models.Model],
    instance: Any,
    created: bool = False,
    update_fields: Any = None,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    ModelTagManager._fire(
        sender, [instance], "create" if created else "update", update_fields, using
    )


def _on_delete(
    sender: type[models.Model], instance: Any, using: str | None = None, **kwargs: Any
) -> None:
    ModelTagManager._fire(sender, [instance], "delete", None, using)


# Rows a relation clear() is about to unlink, per thread, between pre_clear and post_clear.
_clearing = threading.local()


def _cleared_pks(sender: Any, instance: Any, model: type[models.Model]) -> list[Any]:
    """Return the pks of *model* rows linked to *instance* through the m2m table *sender*."""
    source = target = None
    for f in sender._meta.fields:
        related = getattr(f, "related_model", None)
        if related is type(instance) and source is None:
            source = f
        elif related is model:
            target = f
    if source is None or target is None:
        return []
    return list(
        sender._default_manager.filter(**{source.attname: instance.pk}).values_list(
            target.attname, flat=True
        )
    )


def _on_m2m(
    sender: Any,
    instance: Any,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: Any,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    registered = ModelTagManager._registered
    if action == "pre_clear":
        if model in registered:
            pending = getattr(_clearing, "pks", None)
            if pending is None:
                pending = _clearing.pks = {}
            pending[(id(sender), id(instance))] = _cleared_pks(sender, instance, model)
        return
    if action == "post_clear":
        pending = getattr(_clearing, "pks", None) or {}
        pk_set = pending.pop((id(sender), id(instance)), None)
    elif action not in ("post_add", "post_remove"):
        return
    tags: list[Any] = []
    if type(instance) in registered:
        tags += ModelTagManager.tags_for(type(instance), instance, "update", None)
    if model in registered and pk_set:
        name = registered[model]["tag_name"]
        tags += [(name, str(pk)) for pk in pk_set] + [(name, "")]
    if tags:
        tenant = (
            ModelTagManager.tenant_of(type(instance), instance)
            if type(instance) in registered
            else ...
        )
        bump_tags(tags, tenant=tenant, using=using)


class _PK:
    """Stands for a row known only by its primary key (and tenant), for lifecycle callbacks."""

    def __init__(self, model: type[models.Model], pk: Any, tenant: Any = None) -> None:
        self.pk = pk
        self._meta = model._meta
        field = (ModelTagManager._registered.get(model) or {}).get("tenant_field")
        if field:
            setattr(self, field, tenant)


def _rows(qs: Any) -> list[_PK]:
    model = qs.model
    field = (ModelTagManager._registered.get(model) or {}).get("tenant_field")
    if not field:
        return [_PK(model, pk) for pk in qs.values_list("pk", flat=True)]
    path = f"{field}__tenant_id" if model._meta.get_field(field).is_relation else field
    return [_PK(model, pk, tenant) for pk, tenant in qs.values_list("pk", path)]


class CacheAwareQuerySet(models.QuerySet):
    """A QuerySet whose ``update()`` and ``delete()`` bump the tags of the rows they touch."""

    def update(self, **kwargs: Any) -> int:
        model = self.model
        if not ModelTagManager.is_registered(model):
            return super().update(**kwargs)
        rows = _rows(self)
        with precise_write(model, _names_of(model), self.db):  # kept out of the safety net
            count = super().update(**kwargs)
        ModelTagManager._fire(model, rows, "update", list(kwargs), self.db)
        return count

    def delete(self) -> tuple[int, dict[str, int]]:
        model = self.model
        conf = ModelTagManager._registered.get(model)
        if conf is None or conf["connected"]:
            return super().delete()  # post_delete fires per row
        rows = _rows(self)
        with precise_write(model, _names_of(model), self.db):
            result = super().delete()
        ModelTagManager._fire(model, rows, "delete", None, self.db)
        return result


def _names_of(model: type[models.Model]) -> tuple[str, ...]:
    """Return the tag names a precise bump of *model*'s rows covers (for ``precise_write``)."""
    name = ModelTagManager.get_tag_name_for_model(model)
    return () if name is None else (name,)


class CacheAwareManager(models.Manager.from_queryset(CacheAwareQuerySet)):  # type: ignore[misc]
    """A manager whose ``bulk_create``/``bulk_update`` (and queryset writes) bump tags."""

    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        # Rows whose pk does not come back (conflicts ignored or updated, or a
        # database that returns no pks) get no precise bump: the net covers them.
        precise = (
            not (kwargs.get("ignore_conflicts") or kwargs.get("update_conflicts") or any(args[1:3]))
            and connections[self.db].features.can_return_rows_from_bulk_insert
        )
        with precise_write(self.model, _names_of(self.model) if precise else (), self.db):
            created = super().bulk_create(objs, *args, **kwargs)
        if ModelTagManager.is_registered(self.model):
            ModelTagManager._fire(
                self.model, [o for o in created if o.pk is not None], "create", None, self.db
            )
        return created

    def bulk_update(self, objs: Iterable[Any], fields: Any, *args: Any, **kwargs: Any) -> int:
        objs = list(objs)
        with precise_write(self.model, _names_of(self.model), self.db):
            count = super().bulk_update(objs, fields, *args, **kwargs)
        if ModelTagManager.is_registered(self.model):
            ModelTagManager._fire(self.model, objs, "update", list(fields), self.db)
        return count
