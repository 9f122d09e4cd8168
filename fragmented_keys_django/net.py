"""The safety net: table-level invalidation for writes that send no signal.

Django writes rows in more ways than ``post_save``/``post_delete``/
``m2m_changed`` report: ``QuerySet.update()`` and ``bulk_update()`` on a plain
manager, ``bulk_create()``, ``raw()`` and ``cursor.execute()``, data migrations
(their historical models are not the registered class), ``SET_NULL`` cascades.
The net sees them all through Django's database instrumentation: a function in
every connection's ``execute_wrappers`` (added on ``connection_created``, and
to the connections that exist when the app is ready) reads each statement's
text (:mod:`.sql_writes`). A statement that writes the table of a registered
model bumps that model's tag name's *net version*
(:func:`.keys.net_version_key`), which every entry with a tag of that name
records next to its tag versions: the whole model is invalidated, in the
tenants the write may have touched, as django-cachalot does per table. A read
still costs one ``MGET``.

* **Which tables.** A registered model's table, its MTI parents' tables (its
  rows live there too), its proxies' (the concrete table), and the
  auto-created m2m through tables of its relations (either side). Data
  migrations use the same table names, so the map catches their historical
  models.
* **Which tenants.** A model registered with ``tenant_field`` lives in a
  shared table: the net cannot tell whose rows changed, so it bumps the "all
  tenants" net version, read by every tenant. So does a global model
  (``tenant_scoped=False``). Another model bumps the current tenant's net
  version when a tenant is current (a schema or database per tenant: the
  write is that tenant's), and the "all tenants" one otherwise (migrations,
  commands, shared code). A ``SHARED`` alias has one namespace. On an alias
  with ``TENANT_STORES`` an "all tenants" bump is written to the shared store
  and to every tenant store the config source lists; a source that cannot
  list its tenants is refused (system check ``fragmented_keys_django.E021``,
  and the write itself raises ``ConfigurationError`` before it runs).
* **When.** Like every bump (``invalidation.dispatch``): at once in
  autocommit, after the commit of the statement's connection inside
  ``atomic()`` (a rolled-back transaction or savepoint bumps nothing), and the
  transaction counts as dirty meanwhile (tagged reads in it bypass the cache).
  A transaction's repeated writes to one table bump once per savepoint level.
* **Precise paths stay precise.** ``save()``, ``delete()`` and m2m changes of
  a registered model, and ``CacheAwareManager``'s bulk methods, bump the rows'
  tags themselves; their statements are kept out of the net by exclusion
  windows (:mod:`.precise`).
* **What it cannot see**: writes that do not go through a Django connection
  of this process (other programs, other languages, ``psql``), database
  triggers, database-level cascades, stored procedures called with
  ``SELECT``. Statements that run code (``CALL``, ``DO``, ``EXEC``) and writes
  whose target cannot be read bump every netted name. See
  ``docs/guarantees.md#safety-net``.

``settings.FRAGMENTED_KEYS["SAFETY_NET"] = False`` turns it off: no wrapper is
installed and no net version is read.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.core.signals import setting_changed
from django.db import connections
from django.db.backends.signals import connection_created
from django.db.models.signals import m2m_changed, post_save, pre_delete, pre_save
from django.dispatch import dispatcher

from . import invalidation, keys, precise, routing
from .conf import fragmented_aliases, project_settings
from .exceptions import ConfigurationError
from .model_tags import ModelTagManager
from .signals import model_registry_changed
from .sql_writes import EVERY_TABLE, bare_table_name, may_write, written_tables
from .tenancy.context import current_tenant_id, write_tenant_id
from .transactions import _real_blocks

__all__ = [
    "execute_wrapper",
    "install",
    "invalidate_models",
    "is_enabled",
    "netted_tables",
    "unlistable_aliases",
]

logger = logging.getLogger("fragmented_keys_django")

# Table (bare, lower-cased) -> the netted tag names it holds rows of. Empty
# when the net is off or nothing is registered: the wrapper then reads nothing.
_tables: dict[str, frozenset[str]] = {}
# Every netted name (what a statement we cannot read bumps).
_names: frozenset[str] = frozenset()
# Names whose writes always bump the "all tenants" net version.
_all_tenants: frozenset[str] = frozenset()
_enabled = False

# Files whose frames stand between a signal's sender and our receivers.
_SKIP_FRAMES = (__file__, dispatcher.__file__)


# -- configuration -------------------------------------------------------------


def setting_value() -> bool:
    """Return ``settings.FRAGMENTED_KEYS["SAFETY_NET"]``; raise ``ConfigurationError`` if not a bool."""
    value = project_settings()["SAFETY_NET"]
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"settings.FRAGMENTED_KEYS['SAFETY_NET'] must be True or False, got {value!r}."
        )
    return value


def is_enabled() -> bool:
    """Return True if the safety net is installed in this process."""
    return _enabled


def netted_tables() -> dict[str, frozenset[str]]:
    """Return ``{table: tag names}``: the tables the net watches (empty when it is off)."""
    return dict(_tables)


def install() -> None:
    """Install the net if ``SAFETY_NET`` is on (``AppConfig.ready``); follow setting and registry changes."""
    setting_changed.connect(_on_setting_changed, dispatch_uid="fkd:net:setting")
    model_registry_changed.connect(_on_registry_changed, dispatch_uid="fkd:net:registry")
    _refresh()


def _refresh() -> None:
    global _enabled
    try:
        _enabled = setting_value()
    except ConfigurationError as exc:  # reported by check E020; the net stays on meanwhile
        logger.error(
            "%s The safety net stays on.",
            exc,
            extra={"alias": None, "tenant": None, "operation": "safety_net_setting"},
        )
        _enabled = True
    if _enabled:
        connection_created.connect(_on_connection_created, dispatch_uid="fkd:net:conn")
        for conn in connections.all(initialized_only=True):
            _attach(conn)
        pre_save.connect(_open_save, dispatch_uid="fkd:net:pre_save", weak=False)
        post_save.connect(_close_save, dispatch_uid="fkd:net:post_save", weak=False)
        m2m_changed.connect(_on_m2m, dispatch_uid="fkd:net:m2m", weak=False)
    else:
        connection_created.disconnect(dispatch_uid="fkd:net:conn")
        for conn in connections.all(initialized_only=True):
            if execute_wrapper in conn.execute_wrappers:
                conn.execute_wrappers.remove(execute_wrapper)
        pre_save.disconnect(dispatch_uid="fkd:net:pre_save")
        post_save.disconnect(dispatch_uid="fkd:net:post_save")
        m2m_changed.disconnect(dispatch_uid="fkd:net:m2m")
    _rebuild()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    global _unlistable
    if setting == "CACHES":
        _unlistable = None
    if setting == "FRAGMENTED_KEYS":
        _refresh()


def _on_registry_changed(**kwargs: Any) -> None:
    _rebuild()


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    _attach(connection)


def _attach(conn: Any) -> None:
    # First in the list, not last: Django's connection.execute_wrapper() pops
    # the *last* wrapper on exit, so one appended inside such a block (a lazy
    # connect there) would be popped in its place, and the net silently lost.
    if execute_wrapper not in conn.execute_wrappers:
        conn.execute_wrappers.insert(0, execute_wrapper)


def _rebuild() -> None:
    """Recompute the table map and the netted names from ``ModelTagManager``'s registry."""
    global _tables, _names, _all_tenants
    tables: dict[str, set[str]] = {}
    all_tenants: set[str] = set()
    if _enabled:
        for model, reg in ModelTagManager._registered.items():
            name = reg.tag_name
            if reg.tenant_attname or keys.is_global_tag(name):
                all_tenants.add(name)
            for table in _model_tables(model):
                tables.setdefault(table, set()).add(name)
    _tables = {t: frozenset(n) for t, n in tables.items()}
    _names = frozenset(n for names in tables.values() for n in names)
    _all_tenants = frozenset(all_tenants)
    keys.set_netted_names(_names)
    _connect_deletes()


# Senders whose pre_delete opens a window: exactly those ModelTagManager bumps
# precisely on delete. (A receiver for every sender would make Django's
# Collector give up fast deletes for every model of the project.)
_delete_senders: set[Any] = set()


def _connect_deletes() -> None:
    wanted = (
        {w for kind, w in ModelTagManager._connected if kind == "delete"} if _enabled else set()
    )
    for sender in _delete_senders - wanted:
        pre_delete.disconnect(sender=sender, dispatch_uid=f"fkd:net:pre_delete:{id(sender)}")
    for sender in wanted - _delete_senders:
        pre_delete.connect(
            _open_delete,
            sender=sender,
            dispatch_uid=f"fkd:net:pre_delete:{id(sender)}",
            weak=False,
        )
    _delete_senders.clear()
    _delete_senders.update(wanted)


def _model_tables(model: Any) -> set[str]:
    """Return the tables holding rows of *model*: concrete and MTI parents, and auto m2m through tables."""
    concrete = model._meta.concrete_model
    tables = set(precise.model_tables(concrete))
    for f in concrete._meta.get_fields(include_hidden=True):
        if not f.many_to_many:
            continue
        rel = f.remote_field if f.concrete else f  # forward field, or the reverse ManyToManyRel
        through = getattr(rel, "through", None)
        if through is not None and not isinstance(through, str) and through._meta.auto_created:
            tables.add(bare_table_name(through._meta.db_table))
    return tables


# -- tenants ---------------------------------------------------------------------


def unlistable_aliases() -> list[str]:
    """Return the fragmented aliases with ``TENANT_STORES`` whose config source cannot list tenants.

    The net cannot reach their tenant stores with an "all tenants" bump.
    """
    from .tenancy.stores import _CallableSource

    out = []
    for alias in fragmented_aliases():
        route = routing.route(alias)
        ts = None if route.options.shared else route.tenant_stores
        if ts is None:
            continue
        source = ts.source
        if isinstance(source, _CallableSource) and getattr(source.func, "tenants", None) is None:
            out.append(alias)
    return out


# unlistable_aliases(), remembered until CACHES changes (asked before every
# "all tenants" write).
_unlistable: list[str] | None = None


def _refuse_unlistable() -> None:
    global _unlistable
    aliases = _unlistable
    if aliases is None:
        aliases = _unlistable = unlistable_aliases()
    if aliases:
        raise ConfigurationError(
            f"The safety net must bump every tenant's store, but the TENANT_STORES source of "
            f"{aliases} cannot list its tenants, so a write outside a tenant (or to a model "
            f"registered with tenant_field) would leave some tenants stale. Give the callable a "
            f"`tenants()` attribute, use a dict or MODEL source, or set "
            f"settings.FRAGMENTED_KEYS['SAFETY_NET'] = False. (Check fragmented_keys_django.E021.)"
        )


# -- the wrapper -------------------------------------------------------------------


def execute_wrapper(execute: Any, sql: Any, params: Any, many: bool, context: dict) -> Any:
    """Run one statement; if it writes a netted table, bump the net versions of its tag names.

    Django's database instrumentation signature (``connection.execute_wrapper``).
    A statement that cannot write (``SELECT``...) costs a type check and a
    one-character test. Raises ``ConfigurationError`` before running a write
    the net could not bump in every tenant (see :func:`unlistable_aliases`),
    ``BumpFailed`` after it in ``STRICT`` mode when the store is down.
    """
    if _tables and (type(sql) is not str or may_write(sql)):
        return _netted(execute, sql, params, many, context)
    return execute(sql, params, many, context)


def _netted(execute: Any, sql: Any, params: Any, many: bool, context: dict) -> Any:
    writes = written_tables(sql if type(sql) is str else _text(sql, context))
    if not writes:
        return execute(sql, params, many, context)
    using = context["connection"].alias
    names: set[str] = set()
    budgets = []
    if writes is EVERY_TABLE:
        names.update(_names)
    else:
        for kind, table in writes:
            netted = _tables.get(table)
            if netted is None:
                continue
            covered, budget = precise.covered_names(using, table, kind)
            names.update(netted - covered)
            if budget is not None:
                budgets.append((budget, table, kind))
    if not names and not budgets:
        return execute(sql, params, many, context)
    tenant = write_tenant_id(using)  # the written schema's, where the source tells
    if tenant is ...:
        tenant = current_tenant_id()
    targets = {(n, None if tenant is None or n in _all_tenants else tenant) for n in names}
    if any(scope is None for _, scope in targets):
        _refuse_unlistable()
    result = execute(sql, params, many, context)
    for budget, table, kind in budgets:
        if kind == "INSERT" or many or getattr(context["cursor"], "rowcount", -1) != 0:
            precise.spend(budget, table)
    if targets:
        _bump(context["connection"], targets)
    return result


def _text(sql: Any, context: dict) -> str:
    """Return a statement given as bytes or a driver object (psycopg ``sql.Composed``) as text."""
    if isinstance(sql, bytes | bytearray):
        return bytes(sql).decode("utf-8", "replace")
    as_string = getattr(sql, "as_string", None)
    if as_string is not None:
        try:
            return str(as_string(context["connection"].connection))
        except Exception as exc:  # unreadable: netted as a write of every table
            logger.warning(
                "safety net: cannot read statement %r (%s); bumping every netted name",
                sql,
                exc,
                extra={"alias": None, "tenant": None, "operation": "safety_net_read"},
            )
            return "CALL unreadable"
    return str(sql)


# -- bumping -------------------------------------------------------------------------

# Per thread: (connection, savepoint ids) -> (its run_on_commit list, targets queued at that level).
_queued = threading.local()


def _bump(conn: Any, targets: set[tuple[str, str | None]]) -> None:
    """Bump *targets* (``(name, tenant or None for all)``) for a write on *conn*, after its commit."""
    if _real_blocks(conn):
        # Once per savepoint level: the list of on_commit hooks is replaced when
        # the transaction commits or rolls back (or a savepoint rolls back), so
        # a level whose list changed has lost what we queued there.
        levels = getattr(_queued, "levels", None)
        if levels is None:
            levels = _queued.levels = {}
        level = (id(conn), tuple(conn.savepoint_ids))
        rec = levels.get(level)
        if rec is None or rec[0] is not conn.run_on_commit:
            if len(levels) > 64:
                levels.clear()
            rec = levels[level] = (conn.run_on_commit, set())
        targets = targets - rec[1]
        if not targets:
            return
    else:
        rec = None
    _dispatch_targets(targets, conn.alias)
    if rec is not None:
        rec[1].update(targets)  # queued: later writes at this level add nothing


def _dispatch_targets(targets: set[tuple[str, str | None]], using: str | None) -> None:
    """Bump *targets* in every fragmented alias: now, or after the commit on *using*."""
    by_strictness: dict[bool, list[Any]] = {}
    for alias in fragmented_aliases():
        route = routing.route(alias)
        items = by_strictness.setdefault(route.options.strict, [])
        items.extend(_items(route, targets))
    for strict, items in by_strictness.items():
        invalidation.dispatch(items, strict, using)


def _items(route: routing.Route, targets: set[tuple[str, str | None]]) -> list[Any]:
    """Return the bumps of *targets* on *route*'s alias: one per tenant (and tenant store) reached."""
    options = route.options
    by_tenant: dict[str | None, list[str]] = {}
    for name, tenant in sorted(targets, key=lambda t: (t[0], t[1] or "")):
        where = None if options.shared else tenant
        shards = options.shards_for(where)
        key = keys.net_version_key(options.prefix, where, name, options.slot_copies, None, shards)
        by_tenant.setdefault(where, []).append(key)
    # The "all tenants" versions live in each store a tenant reads from: with
    # TENANT_STORES they fan out, the tenants listed when the bump is written
    # (after the commit; a listing that fails is retried like a store outage).
    fans = not options.shared and options.tenant_stores is not None
    return [
        invalidation._Bump(route.alias, t, ks, fanout=fans and t is None)
        for t, ks in by_tenant.items()
    ]


def invalidate_models(*models: Any, tenant: Any = ..., using: str | None = None) -> int:
    """Bump the net versions of *models* (classes or registered tag names): a table-level invalidation.

    For writes the net cannot see (another program, a trigger, a replica
    loaded by hand): every entry with a tag of those names misses, in the
    tenants the tenant rules give (*tenant*: default the current one; ``None``
    for every tenant; models registered with ``tenant_field`` or as global
    always reach every tenant). Inside a transaction on *using* (default: any
    open one) the bump waits for the commit. Returns the number of names
    bumped. Raises ``ConfigurationError`` if the net is off (its versions are
    not read: use ``ModelTagManager.invalidate_bulk`` or ``invalidate_tenant``)
    or a name is not registered.
    """
    from .tenancy.context import tenant_id_of

    if not _enabled:
        raise ConfigurationError(
            "invalidate_models() needs the safety net (FRAGMENTED_KEYS['SAFETY_NET'] is False): "
            "use ModelTagManager.invalidate_bulk(...) or the backend's invalidate_tenant()."
        )
    names = set()
    for m in models:
        name = m if isinstance(m, str) else ModelTagManager.get_tag_name_for_model(m)
        if name not in _names:
            raise ConfigurationError(
                f"invalidate_models({m!r}): not a registered model or tag name; registered: "
                f"{sorted(_names)}. Register it with ModelTagManager.register_model()."
            )
        names.add(name)
    tid = (
        current_tenant_id() if tenant is ... else (None if tenant is None else tenant_id_of(tenant))
    )
    targets = {(n, None if tid is None or n in _all_tenants else tid) for n in names}
    if any(scope is None for _, scope in targets):
        _refuse_unlistable()
    _dispatch_targets(targets, using)
    return len(names)


# -- exclusion windows for the precise paths -----------------------------------------


def precise_names(model: Any) -> frozenset[str]:
    """Return the tag names a ``save()``/``delete()`` through *model* bumps precisely.

    The registrations its signal receivers reach (``ModelTagManager.targets``):
    the model's own, its proxies', its MTI parents' and children's.
    """
    return frozenset(t.reg.tag_name for t in ModelTagManager.targets(model))


def _open(sender: Any, using: str | None, kinds: frozenset[str], once: bool) -> None:
    names = precise_names(sender)
    if names and _tables:
        frame = precise.caller_frame(_SKIP_FRAMES)
        tables = precise.model_tables(sender)
        precise.open_window(precise.Window(frame, using, tables, names, kinds, once, sender))


def _open_save(sender: Any, using: str | None = None, **kwargs: Any) -> None:
    _open(sender, using, precise.SAVE_KINDS, True)


def _close_save(sender: Any, **kwargs: Any) -> None:
    if getattr(precise._local, "windows", None):
        precise.close(precise.caller_frame(_SKIP_FRAMES), sender)


def _open_delete(sender: Any, using: str | None = None, **kwargs: Any) -> None:
    # Closed when the deleting call returns (Collector.delete sends every
    # pre_delete first, then deletes model by model, then post_delete).
    _open(sender, using, precise.DELETE_KINDS, False)


def _on_m2m(
    sender: Any, instance: Any, action: str, model: Any, using: str | None = None, **kwargs: Any
) -> None:
    if not _tables:
        return
    if action in ("post_add", "post_remove", "post_clear"):
        if getattr(precise._local, "windows", None):
            precise.close(precise.caller_frame(_SKIP_FRAMES), sender)
        return
    if action not in ("pre_add", "pre_remove", "pre_clear"):
        return
    names = precise_names(type(instance)) | precise_names(model)
    if names:
        frame = precise.caller_frame(_SKIP_FRAMES)
        tables = frozenset((bare_table_name(sender._meta.db_table),))
        precise.open_window(
            precise.Window(frame, using, tables, names, precise.M2M_KINDS, False, sender)
        )
