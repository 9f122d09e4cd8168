"""``ModelTagManager``: bump a registered model's tags whatever ORM path changed its rows.

The seed package's API (``register_model``, ``invalidate_model_tag``, ...),
made exact on every path Django offers for writing a row:

* **Saves and deletes** of the registered class, of its proxies, of its
  multi-table-inheritance (MTI) parents and children: a save through class
  ``S`` changes rows of ``S``'s concrete model and of its MTI parents, so it
  bumps every registration on those models (a registered parent gets its own
  tags; a registered child shares the parent's primary key, so its instance
  tag is known without a query).
* **Cascades that send no signal**: deleting a row whose registered children
  point at it with ``on_delete=SET_NULL``, ``SET_DEFAULT`` or ``SET(...)``
  bumps those children (found in the parent's ``pre_delete``, before Django
  updates them). ``CASCADE`` sends ``post_delete`` per child and is covered by
  the delete receivers.
* **m2m changes** (``add``, ``remove``, ``clear`` from either side).
* **``CacheAwareManager`` bulk writes**: ``bulk_create`` (including
  ``ignore_conflicts``/``update_conflicts``, where the database may report no
  primary keys), ``bulk_update``, and ``QuerySet.update()``/``delete()``.

By default a change of a row bumps ``(tag_name, str(pk))`` and the model-wide
tag ``(tag_name, "")``. Lifecycle callbacks (``on_create(sender,
instance)``, ``on_update(sender, instance, update_fields)``,
``on_delete(sender, instance)``) return the tags to bump instead; they always
receive real model instances, and ``on_update`` is called for the row as it
was before the write as well as after it, so a row that moves from one scope
(or tenant) to another bumps both. A callback that raises does not cost the
bump: the row's default tags are bumped, then the error propagates.

Bumps wait for the commit of the row's database (see :mod:`.invalidation`)
and go to the row's tenant: the value of its ``tenant_field`` column, or the
tenant current when the row was written.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models import deletion
from django.db.models.signals import (
    class_prepared,
    m2m_changed,
    post_delete,
    post_save,
    pre_delete,
    pre_save,
)
from django.dispatch import dispatcher

from . import precise
from .invalidation import bump_refusals, bump_tags, check_bump
from .keys import register_global_tag
from .signals import model_registry_changed
from .sql_writes import bare_table_name
from .tags import normalize_tags
from .tenancy.context import current_tenant_id, write_tenant_id

__all__ = ["CacheAwareManager", "CacheAwareQuerySet", "ModelTagManager"]

LifecycleCallback = Callable[..., Iterable[Any]]

# on_delete handlers that leave the referring rows alone (CASCADE deletes them
# with signals; the others refuse, or leave it to the database).
_NO_FIELD_UPDATE = (
    deletion.CASCADE,
    deletion.PROTECT,
    deletion.RESTRICT,
    deletion.DO_NOTHING,
)


@dataclass(eq=False)
class _Registration:
    model: type[models.Model]
    tag_name: str
    on_create: LifecycleCallback | None
    on_update: LifecycleCallback | None
    on_delete: LifecycleCallback | None
    tenant_attname: str | None
    connected: bool = False

    @property
    def concrete(self) -> type[models.Model]:
        return self.model._meta.concrete_model

    def reads_row(self) -> bool:
        """True if this registration's bumps depend on the row's values (not only its pk)."""
        return bool(self.on_create or self.on_update or self.on_delete or self.tenant_attname)


@dataclass(frozen=True, eq=False)
class _Target:
    """A registration that a write through some model class reaches.

    ``relation``: ``"same"`` (same concrete model: the class itself, or a
    proxy), ``"parent"`` (the registration's model is an MTI parent of the
    writer: the write changed its row too) or ``"child"`` (an MTI child of
    the writer: a row of it shares the written row's primary key).
    ``pk_attname`` names the attribute of a written row holding the
    registration's primary key, when it is not the row's own ``pk`` (a
    parent reached through a link that is not the primary key).
    """

    reg: _Registration
    relation: str
    pk_attname: str | None = None


def _target(writer: type[models.Model], reg: _Registration) -> _Target | None:
    """Return how a write through *writer* reaches *reg*'s rows, or ``None`` if it does not."""
    wc, rc = writer._meta.concrete_model, reg.concrete
    if wc is rc:
        return _Target(reg, "same")
    if rc in wc._meta.get_parent_list():
        return _Target(reg, "parent", None if _shares_pk(wc, rc) else rc._meta.pk.attname)
    if wc in rc._meta.get_parent_list() and _shares_pk(rc, wc):
        return _Target(reg, "child")
    return None


def _shares_pk(child: type[models.Model], ancestor: type[models.Model]) -> bool:
    """True if *child*'s primary key is a chain of parent links ending at *ancestor*'s."""
    field = child._meta.pk
    while field is not None and field.remote_field is not None and field.remote_field.parent_link:
        model = field.related_model
        if model is ancestor:
            return True
        field = model._meta.pk
    return False


class _Stash:
    """Per-thread values attached to model instances between a pre_ and a post_ signal.

    Keyed by ``id(instance)`` and checked with a weak reference, so an entry
    left by a write that raised between the two signals is never taken for
    another object's, and is dropped when its instance is.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _map(self) -> dict[int, tuple[Any, Any]]:
        found = getattr(self._local, "map", None)
        if found is None:
            found = self._local.map = {}
        return found

    def put(self, obj: Any, value: Any) -> None:
        entries = self._map()
        if len(entries) > 256:  # left by writes that raised: drop the dead ones
            for key in [k for k, (ref, _) in entries.items() if ref() is None]:
                del entries[key]
        entries[id(obj)] = (weakref.ref(obj), value)

    def pop(self, obj: Any) -> Any:
        found = self._map().pop(id(obj), None)
        if found is None or found[0]() is not obj:
            return None
        return found[1]


_old_rows = _Stash()  # pre_save -> post_save: the row as it was, per registration

# Frames a receiver skips to find the call that sent its signal (precise.caller_frame).
_SKIP_FRAMES = (__file__, dispatcher.__file__)
_orphans = _Stash()  # pre_delete -> post_delete: rows a SET_* cascade is about to update


class ModelTagManager:
    """Bumps tags when registered models change (the seed's API, all classmethods).

    See the module docstring for which writes are covered. Register in
    ``AppConfig.ready()``.
    """

    _registered: dict[type[models.Model], _Registration] = {}
    _targets: dict[tuple[type[models.Model], bool], tuple[_Target, ...]] = {}
    # (model, field) pairs of registered rows that a delete of the key's model updates.
    # Rows of registered models that a delete of the key's model rewrites or unlinks.
    _cascades: dict[type[models.Model], tuple[_Cascade, ...]] = {}
    _connected: set[tuple[str, type[models.Model]]] = set()
    # Registrations by concrete model, and by each MTI ancestor of their concrete model.
    _index: tuple[dict[Any, list[_Registration]], dict[Any, list[_Registration]]] = ({}, {})

    # -- registration ---------------------------------------------------------------------

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

        *tenant_field* (ours) names the field holding a row's tenant id
        (shared-database tenancy): the row's bumps go to the tenant whose id
        is that field's column value, as a string (for a foreign key, the
        referenced key: name the field ``"org"`` or its column ``"org_id"``;
        use ``to_field=`` on the foreign key if the tenant id is not the
        referenced model's primary key), whatever tenant is current. An empty
        value means the public namespace. Without it, the tenant current when
        the row is written is used. ``tenant_scoped=False`` (ours) is for
        global data: the model's tag becomes a global tag (one version for
        every tenant). Raises ``TypeError`` for a non-model or an unknown
        field, ``InvalidTag`` for a bad tag name.
        """
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise TypeError(f"register_model() takes a model class, got {model!r}")
        name = tag_name or model.__name__
        normalize_tags([(name, "")])  # validates the name
        attname = None
        if tenant_field is not None:
            try:
                attname = model._meta.get_field(tenant_field).attname
            except Exception as exc:
                raise TypeError(
                    f"register_model({model.__name__}, tenant_field={tenant_field!r}): no such "
                    f"field; name a concrete field or foreign key of {model.__name__}"
                ) from exc
            if attname is None:
                raise TypeError(
                    f"register_model({model.__name__}, tenant_field={tenant_field!r}): a reverse "
                    f"or many-to-many relation has no column; name a field or foreign key"
                )
        if not tenant_scoped:
            if tenant_field is not None:
                raise TypeError(
                    "register_model(): tenant_scoped=False and tenant_field exclude each other"
                )
            register_global_tag(name)
        cls._registered[model] = _Registration(
            model, name, on_create, on_update, on_delete, attname, connected=auto_connect
        )
        cls._refresh()

    @classmethod
    def connect_signals(cls, model: type[models.Model]) -> None:
        """Let saves, deletes and m2m changes of *model* (and related classes) bump its tags."""
        cls._registered[model].connected = True
        cls._refresh()

    @classmethod
    def disconnect_signals(cls, model: type[models.Model]) -> None:
        """Stop bumping on *model*'s signals (it stays registered for the explicit helpers)."""
        reg = cls._registered.get(model)
        if reg is not None:
            reg.connected = False
            cls._refresh()

    @classmethod
    def unregister_model(cls, model: type[models.Model]) -> None:
        """Forget *model* and stop bumping on its changes."""
        if cls._registered.pop(model, None) is not None:
            cls._refresh()

    @classmethod
    def clear_all(cls) -> None:
        """Unregister every model."""
        cls._registered.clear()
        cls._refresh()

    @classmethod
    def is_registered(cls, model: type[models.Model]) -> bool:
        """Return True if *model* is registered."""
        return model in cls._registered

    @classmethod
    def get_registered_models(cls) -> dict[type[models.Model], str]:
        """Return ``{model: tag_name}`` for every registered model."""
        return {m: r.tag_name for m, r in cls._registered.items()}

    @classmethod
    def get_tag_name_for_model(cls, model: type[models.Model]) -> str | None:
        """Return *model*'s tag name, or ``None`` if it is not registered."""
        reg = cls._registered.get(model)
        return reg.tag_name if reg else None

    # -- which registrations a write reaches -------------------------------------------------

    @classmethod
    def targets(cls, writer: type[models.Model], signals: bool = True) -> tuple[_Target, ...]:
        """Return the registrations whose rows a write through *writer* changes.

        With *signals* (the signal receivers), only registrations whose
        signals are connected; otherwise (``CacheAwareManager``'s bulk
        writes, which send no signal) every registration.
        """
        found = cls._targets.get((writer, signals))
        if found is None:
            wc = writer._meta.concrete_model
            by_concrete, by_ancestor = cls._index
            candidates = [
                *by_concrete.get(wc, ()),
                *(r for p in wc._meta.get_parent_list() for r in by_concrete.get(p, ())),
                *by_ancestor.get(wc, ()),
            ]
            found = tuple(
                t
                for reg in dict.fromkeys(candidates)
                if (reg.connected or not signals) and (t := _target(writer, reg)) is not None
            )
            cls._targets[(writer, signals)] = found
        return found

    @classmethod
    def _refresh(cls) -> None:
        """Recompute the receivers after a registration change or a new model class."""
        by_concrete: dict[type[models.Model], list[_Registration]] = {}
        by_ancestor: dict[type[models.Model], list[_Registration]] = {}
        for reg in cls._registered.values():
            by_concrete.setdefault(reg.concrete, []).append(reg)
            for ancestor in reg.concrete._meta.get_parent_list():
                by_ancestor.setdefault(ancestor, []).append(reg)
        cls._index = (by_concrete, by_ancestor)
        cls._targets = {}
        from django.apps import apps

        classes = [m for app in list(apps.all_models.values()) for m in list(app.values())]
        wanted: set[tuple[str, type[models.Model]]] = set()
        cascades: dict[type[models.Model], list[_Cascade]] = {}

        def add(parent: type[models.Model], cascade: _Cascade) -> None:
            found = cascades.setdefault(parent._meta.concrete_model, [])
            if cascade not in found:
                found.append(cascade)

        for writer in classes:
            targets = cls.targets(writer)
            if not targets:
                continue
            wanted.add(("save", writer))
            wanted.add(("delete", writer))
            # Reads the row before an update, and refuses a write whose bump
            # would be refused after it (refuse_unbumpable).
            wanted.add(("pre_save", writer))
            if writer._meta.proxy:
                continue
            concrete = writer._meta.concrete_model
            # Foreign keys on this model's own table that a delete of the
            # referenced row rewrites without a signal.
            for field in writer._meta.local_fields:
                remote = field.remote_field
                if remote is None or remote.on_delete in _NO_FIELD_UPDATE:
                    continue
                if getattr(remote, "parent_link", False):
                    continue
                add(
                    field.related_model,
                    _Cascade(concrete, field.name, precise.model_tables(concrete), "UPDATE"),
                )
            # m2m links a delete of the other side removes (auto-created through
            # tables are emptied without a signal, often by a fast delete).
            for field in concrete._meta.get_fields(include_hidden=True):
                if not field.many_to_many or field.related_model is None:
                    continue
                forward = field.concrete  # a ManyToManyField here, else a ManyToManyRel
                m2m = field if forward else field.field
                through = m2m.remote_field.through
                if isinstance(through, str) or not through._meta.auto_created:
                    continue
                # Rows of *concrete* linked to a deleted row of *other*, found from
                # concrete's side: through its own field, or the reverse query name.
                lookup = m2m.name if forward else m2m.related_query_name()
                if lookup.endswith("+"):
                    continue  # a hidden reverse relation: the forward field covers it
                other = field.related_model
                table = frozenset({bare_table_name(through._meta.db_table)})
                add(other, _Cascade(concrete, lookup, table, "DELETE"))
        for parent in cascades:
            for writer in classes:
                if writer._meta.concrete_model is parent:
                    wanted.add(("cascade", writer))
        cls._cascades = {parent: tuple(found) for parent, found in cascades.items()}
        for kind, writer in cls._connected - wanted:
            _disconnect(kind, writer)
        for kind, writer in wanted - cls._connected:
            _connect(kind, writer)
        cls._connected = wanted
        model_registry_changed.send(cls, model=None)  # the safety net's table map follows
        if cls._registered:
            m2m_changed.connect(_on_m2m, dispatch_uid="fkd:m2m", weak=False)
            class_prepared.connect(
                _on_class_prepared, dispatch_uid="fkd:class_prepared", weak=False
            )
        else:
            m2m_changed.disconnect(dispatch_uid="fkd:m2m")
            class_prepared.disconnect(dispatch_uid="fkd:class_prepared")

    # -- tags and tenants of one row ---------------------------------------------------------

    @classmethod
    def tags_for(
        cls, model: type[models.Model], instance: Any, event: str, update_fields: Any = None
    ) -> list[Any]:
        """Return the tags a change of *instance* bumps (``event``: create, update or delete).

        The registration's callback for *event* decides, or else the default
        ``[(tag_name, str(pk)), (tag_name, "")]``. Returns ``[]`` for an
        unregistered model or an instance without a primary key.
        """
        reg = cls._registered.get(model)
        if reg is None or instance.pk is None:
            return []
        return _tags(reg, instance, event, update_fields, instance.pk)

    @classmethod
    def tenant_of(cls, model: type[models.Model], instance: Any) -> Any:
        """Return the tenant a change of *instance* belongs to (``...``: the current one)."""
        reg = cls._registered.get(model)
        return ... if reg is None else _tenant(reg, instance)

    # -- explicit invalidation (the seed's helpers) -----------------------------------------

    @classmethod
    def _resolve_tag_name(cls, model_or_tag: type[models.Model] | str) -> str | None:
        if isinstance(model_or_tag, str):
            for model, reg in cls._registered.items():
                if model_or_tag in (model.__name__, reg.tag_name):
                    return reg.tag_name
            return None
        return cls.get_tag_name_for_model(model_or_tag)

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

        For changes made outside Django (another program writing the
        database). A model class or a registered name resolves to its tag
        name; another string is used as the tag name itself. Returns the
        number of tags bumped.
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


def _on_class_prepared(sender: type[models.Model], **kwargs: Any) -> None:
    """A model class defined after a registration (a proxy, an MTI child) may need receivers.

    Historical models rendered by migrations live in their own app registry
    and are ignored: their writes are not the registered classes' (the
    table-level safety net covers them).
    """
    from django.apps import apps

    if sender._meta.apps is apps:
        ModelTagManager._refresh()


# -- computing bumps -------------------------------------------------------------------------


def _tenant(reg: _Registration, row: Any) -> Any:
    """The tenant of *row* for *reg*: its tenant column's value, or ``...`` (the current one)."""
    if reg.tenant_attname is None:
        return ...
    value = getattr(row, reg.tenant_attname, None)
    return None if value is None or value == "" else str(value)


def _tags(reg: _Registration, row: Any, event: str, update_fields: Any, pk: Any) -> list[Any]:
    callback = getattr(reg, f"on_{event}")
    if callback is None:
        return [(reg.tag_name, str(pk)), (reg.tag_name, "")]
    result = (
        callback(reg.model, row, update_fields) if event == "update" else callback(reg.model, row)
    )
    return list(result or ())


class _Bumps:
    """Tags to bump, gathered per tenant; errors of callbacks kept to raise after the bump."""

    def __init__(self) -> None:
        self.by_tenant: dict[Any, list[Any]] = {}
        self.error: BaseException | None = None

    def add(self, reg: _Registration, row: Any, event: str, update_fields: Any, pk: Any) -> None:
        """Add the tags a change of *row* (primary key *pk* for *reg*) bumps."""
        if pk is None:
            return
        try:
            tags = _tags(reg, row, event, update_fields, pk)
        except Exception as exc:  # the row is written: bump its default tags, raise later
            tags = [(reg.tag_name, str(pk)), (reg.tag_name, "")]
            if self.error is None:
                self.error = exc
        self.by_tenant.setdefault(_tenant(reg, row), []).extend(tags)

    def add_model_wide(self, reg: _Registration, tenant: Any) -> None:
        self.by_tenant.setdefault(tenant, []).append((reg.tag_name, ""))

    def send(self, using: str | None) -> None:
        """Bump everything gathered (after the commit of *using*), then raise a callback's error."""
        try:
            for tenant, tags in self.by_tenant.items():
                if tags:
                    if tenant is ...:  # the row names no tenant: the write's (its schema)
                        tenant = write_tenant_id(using)
                    bump_tags(tags, tenant=tenant, using=using)
        finally:
            if self.error is not None:
                error, self.error = self.error, None
                raise error


def _pk_for(target: _Target, row: Any) -> Any:
    """The primary key, in the target registration's model, of the written *row*."""
    if target.pk_attname is not None:
        return getattr(row, target.pk_attname, None)
    return row.pk


def _as_registered(target: _Target, row: Any, using: str | None) -> Any:
    """*row* as the target registration can read it (an MTI child is fetched if needed)."""
    if target.relation != "child" or not target.reg.reads_row():
        return row
    return target.reg.concrete._base_manager.using(using).filter(pk=row.pk).first()


def _gather(
    bumps: _Bumps,
    targets: Iterable[_Target],
    rows: list[tuple[Any, Any]],
    event: str,
    update_fields: Any,
    using: str | None,
) -> None:
    """Add to *bumps* what the (new, old) row pairs change in each of *targets*.

    *old* is the row as it was before an update (or ``None``); for a delete
    *new* is the deleted row.
    """
    for target, row, fetch in _reached(targets, rows, event):
        shown = _as_registered(target, row, using) if fetch else row
        if shown is None:
            continue  # no such child row: nothing of it changed
        bumps.add(target.reg, shown, event, update_fields, _pk_for(target, row))


def _reached(
    targets: Iterable[_Target], rows: list[tuple[Any, Any]], event: str
) -> Iterable[tuple[_Target, Any, bool]]:
    """Yield ``(target, row, fetch)`` for every row of the (new, old) pairs a write changes.

    *fetch*: the row must still be read as the target registration's model
    (:func:`_as_registered`: an MTI child's row).
    """
    for target in targets:
        child = target.relation == "child"
        if child and event == "create":
            continue  # a new parent row has no child row yet
        for new, old in rows:
            # *old* may map models to rows read before a save (see _on_pre_save):
            # None -> the written row, a child model -> that child's row.
            olds = old if isinstance(old, dict) else {None: old}
            # (row, whether it must still be read as the registration's model)
            versions = [(new, child), (olds.get(target.reg.concrete if child else None), False)]
            for row, fetch in versions:
                if row is not None:
                    yield target, row, fetch


def _write(
    targets: Iterable[_Target],
    rows: list[tuple[Any, Any]],
    event: str,
    update_fields: Any,
    using: str | None,
) -> None:
    bumps = _Bumps()
    _gather(bumps, targets, rows, event, update_fields, using)
    bumps.send(using)


def _reads_rows(targets: Iterable[_Target]) -> bool:
    return any(t.reg.reads_row() for t in targets)


def _locked(qs: Any) -> Any:
    """*qs* with ``select_for_update()`` inside a transaction, where the database has it.

    The row read before a write is then the one the write replaces: a
    concurrent writer cannot slip a state in between that nobody bumps.
    """
    conn = connections[qs.db]
    if conn.in_atomic_block and conn.features.has_select_for_update:
        return qs.select_for_update()
    return qs


def _old_row(writer: type[models.Model], instance: Any, using: str | None) -> Any:
    """Fetch the stored version of *instance*, before a save replaces it."""
    manager = writer._meta.concrete_model._base_manager
    return _locked(manager.using(using or DEFAULT_DB_ALIAS).filter(pk=instance.pk)).first()


# -- signal receivers -------------------------------------------------------------------------


def _on_pre_save(
    sender: type[models.Model],
    instance: Any,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    targets = ModelTagManager.targets(sender)
    adding = instance._state.adding or instance.pk is None
    olds = None
    if not adding and _reads_rows(targets):
        olds = {None: _old_row(sender, instance, using)}
        for t in targets:  # a registered MTI child reads its own row: as it was too
            if t.relation == "child" and t.reg.reads_row():
                olds[t.reg.concrete] = _old_row(t.reg.concrete, instance, using)
        _old_rows.put(instance, olds)
    event = "create" if adding else "update"
    refuse_unbumpable(targets, [(instance, olds)], event, update_fields, using)


def refuse_unbumpable(
    targets: Iterable[_Target],
    rows: list[tuple[Any, Any]],
    event: str,
    update_fields: Any,
    using: str | None = None,
) -> None:
    """Raise, before a write, what bumping its rows would raise after it.

    A save is committed before ``post_save`` runs (in autocommit), so a bump
    refused there (``TenantRequired``: a tenant-scoped model written outside
    any tenant on a ``TENANT_REQUIRED`` alias; ``ConfigurationError``: a
    global tag on an alias with ``TENANT_STORES``) would leave the row written
    and its tenant's entries stale. Checked here with the same rules
    (:func:`.invalidation.check_bump`), so the write never happens instead.
    *rows* are ``(new, old)`` pairs as for the bump; costs nothing when no
    alias can refuse a bump.
    """
    no_tenant, global_tags = bump_refusals()
    if not (no_tenant or global_tags):
        return
    # The tenant of a row that names none, as _Bumps.send resolves it: the
    # write's (its schema, with django-tenants), else the current one.
    default = write_tenant_id(using)
    if default is ...:
        default = current_tenant_id()
    for target, row, fetch in _reached(targets, rows, event):
        reg = target.reg
        if reg.tenant_attname is None and not global_tags and default is not None:
            continue  # bumps in the write's tenant: nothing to refuse
        shown = _as_registered(target, row, using) if fetch else row  # as the bump reads it
        if shown is None:
            continue
        tenant = _tenant(reg, shown)
        tid = default if tenant is ... else tenant
        if tid is not None and not global_tags:
            continue
        try:
            tags = _tags(reg, shown, event, update_fields, _pk_for(target, row) or "")
        except Exception:  # the bump falls back to the default tags: check those
            tags = [(reg.tag_name, "")]
        check_bump(tags, tid)


def _on_save(
    sender: type[models.Model],
    instance: Any,
    created: bool = False,
    update_fields: Any = None,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    old = None if created else _old_rows.pop(instance)
    _write(
        ModelTagManager.targets(sender),
        [(instance, old)],
        "create" if created else "update",
        update_fields,
        using,
    )


def _on_delete(
    sender: type[models.Model], instance: Any, using: str | None = None, **kwargs: Any
) -> None:
    _write(ModelTagManager.targets(sender), [(instance, None)], "delete", None, using)


def _on_cascade_pre_delete(
    sender: type[models.Model], instance: Any, using: str | None = None, **kwargs: Any
) -> None:
    """Before Django rewrites (SET_NULL, ...) or unlinks (m2m) rows of *instance*, find them."""
    found = []
    for cascade in ModelTagManager._cascades.get(sender._meta.concrete_model, ()):
        child = cascade.model
        targets = ModelTagManager.targets(child)
        qs = child._base_manager.using(using).filter(**{cascade.lookup: instance.pk}).distinct()
        if _reads_rows(targets):
            rows = list(qs)
        else:
            rows = [_PkOnly(pk) for pk in qs.values_list("pk", flat=True)]
        if rows:
            found.append((cascade, rows))
        # Django's statement on these rows (if any) is bumped precisely (post_delete
        # below): keep it out of the safety net while this delete runs.
        precise.open_window(
            precise.Window(
                precise.caller_frame(_SKIP_FRAMES),
                using,
                cascade.tables,
                _names(targets) | _names(ModelTagManager.targets(sender)),
                frozenset({cascade.kind}),
                False,
                child,
            )
        )
    if found:
        _orphans.put(instance, found)


def _on_cascade_post_delete(
    sender: type[models.Model], instance: Any, using: str | None = None, **kwargs: Any
) -> None:
    """After the rows were rewritten or unlinked, bump them as they were and as they are."""
    found = _orphans.pop(instance)
    if not found:
        return
    bumps = _Bumps()
    for cascade, rows in found:
        if isinstance(rows[0], _PkOnly):
            pairs = [(row, None) for row in rows]
        else:
            now = cascade.model._base_manager.using(using).in_bulk([r.pk for r in rows])
            pairs = [(now.get(row.pk), row) for row in rows]
        fields = [cascade.lookup] if cascade.kind == "UPDATE" else None
        _gather(bumps, ModelTagManager.targets(cascade.model), pairs, "update", fields, using)
    bumps.send(using)


@dataclass(frozen=True)
class _Cascade:
    """Rows of *model* that a delete of another row rewrites or unlinks, with no signal.

    Found with ``model.objects.filter(<lookup>=deleted.pk)``; the statement is
    of *kind* (``UPDATE``: an ``on_delete=SET_*`` foreign key; ``DELETE``: the
    m2m links in an auto-created through table) on *tables*.
    """

    model: type[models.Model]
    lookup: str
    tables: frozenset[str]
    kind: str


class _PkOnly:
    """A row known by its primary key alone (for registrations that read nothing else)."""

    __slots__ = ("pk",)

    def __init__(self, pk: Any) -> None:
        self.pk = pk


_RECEIVERS: dict[str, tuple[Any, Any]] = {
    "pre_save": (pre_save, _on_pre_save),
    "save": (post_save, _on_save),
    "delete": (post_delete, _on_delete),
}


def _connect(kind: str, writer: type[models.Model]) -> None:
    uid = f"fkd:{kind}:{writer._meta.label}:{id(writer)}"
    if kind == "cascade":
        pre_delete.connect(_on_cascade_pre_delete, sender=writer, dispatch_uid=uid, weak=False)
        post_delete.connect(
            _on_cascade_post_delete, sender=writer, dispatch_uid=uid + ":post", weak=False
        )
        return
    signal, receiver = _RECEIVERS[kind]
    signal.connect(receiver, sender=writer, dispatch_uid=uid, weak=False)


def _disconnect(kind: str, writer: type[models.Model]) -> None:
    uid = f"fkd:{kind}:{writer._meta.label}:{id(writer)}"
    if kind == "cascade":
        pre_delete.disconnect(sender=writer, dispatch_uid=uid)
        post_delete.disconnect(sender=writer, dispatch_uid=uid + ":post")
        return
    signal, _ = _RECEIVERS[kind]
    signal.disconnect(sender=writer, dispatch_uid=uid)


# -- m2m ---------------------------------------------------------------------------------------

# Rows a relation clear() is about to unlink, between pre_clear and post_clear.
_clearing = _Stash()


def _linked_pks(through: Any, instance: Any, model: type[models.Model]) -> list[Any]:
    """Return the pks of *model* rows linked to *instance* through the m2m table *through*."""
    source = target = None
    for f in through._meta.fields:
        related = getattr(f, "related_model", None)
        if related is None:
            continue
        if source is None and isinstance(instance, related):
            source = f
        elif issubclass(model, related) or issubclass(related, model):
            target = f
    if source is None or target is None:
        return []
    return list(
        through._base_manager.filter(**{source.attname: instance.pk}).values_list(
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
    own = ModelTagManager.targets(type(instance))
    others = ModelTagManager.targets(model)
    if not own and not others:
        return
    if action == "pre_clear":
        if others:
            _clearing.put(instance, _linked_pks(sender, instance, model))
        return
    if action == "post_clear":
        pk_set = _clearing.pop(instance)
    elif action not in ("post_add", "post_remove"):
        return
    bumps = _Bumps()
    _gather(bumps, own, [(instance, None)], "update", None, using)
    if pk_set and others:
        rows: list[Any] = [_PkOnly(pk) for pk in pk_set]
        if _reads_rows(others):
            found = model._base_manager.using(using).in_bulk(list(pk_set))
            rows = [found.get(pk) or _PkOnly(pk) for pk in pk_set]
        _gather(bumps, others, [(row, None) for row in rows], "update", None, using)
    bumps.send(using)


# -- CacheAwareManager: bulk writes ----------------------------------------------------------


def _names(targets: Iterable[_Target]) -> frozenset[str]:
    """The tag names a precise bump of *targets* covers (kept out of the safety net)."""
    return frozenset(t.reg.tag_name for t in targets)


def _rows_of(qs: Any, reads: bool) -> list[Any]:
    """The rows *qs* matches (locked inside a transaction), whole if *reads*, else pks only.

    The lock is taken on the model's own table, with *qs* as a subquery:
    PostgreSQL refuses ``FOR UPDATE`` on a query with ``DISTINCT``, ``GROUP
    BY`` or the nullable side of an outer join, all of which Django's
    ``update()`` accepts.
    """
    matching = qs.model._base_manager.using(qs.db).filter(pk__in=qs.order_by().values("pk"))
    pks = list(_locked(matching.order_by().values_list("pk", flat=True)))
    if not reads:
        return [_PkOnly(pk) for pk in pks]
    found = qs.model._base_manager.using(qs.db).in_bulk(pks)
    return [found[pk] for pk in pks if pk in found]


def _only(qs: Any, rows: list[Any]) -> Iterable[Any]:
    """*qs* restricted to *rows*, in batches the database accepts."""
    pks = [row.pk for row in rows]
    size = connections[qs.db].ops.bulk_batch_size([qs.model._meta.pk], pks) or len(pks)
    for i in range(0, len(pks), max(1, size)):
        yield qs.filter(pk__in=pks[i : i + size])


class CacheAwareQuerySet(models.QuerySet):
    """A QuerySet whose writes that send no signal bump the tags of the rows they change.

    ``update()`` (which sends no signal) reads the matching rows first
    (primary keys, or whole rows when a registration's callbacks or
    ``tenant_field`` need them), updates exactly those rows in the same
    transaction, then bumps each row as it was and as it is. A row that
    starts to match the filter between the read and the update (a concurrent
    insert) is therefore not updated, as under snapshot isolation.
    ``delete()`` sends ``post_delete`` per row; for a registration whose
    signals are disconnected it bumps the deleted rows itself.
    """

    def update(self, **kwargs: Any) -> int:
        """Update the matching rows (Django's ``QuerySet.update``); return how many."""
        targets = ModelTagManager.targets(self.model, signals=False)
        if not targets or self.query.is_sliced:
            return super().update(**kwargs)  # sliced: Django's own error
        reads = _reads_rows(targets)
        with transaction.atomic(using=self.db, savepoint=False):
            before = _rows_of(self, reads)
            with precise.precise_write(self.model, _names(targets), self.db):
                count = sum(
                    super(CacheAwareQuerySet, part).update(**kwargs) for part in _only(self, before)
                )
            if reads:
                now = self.model._base_manager.using(self.db).in_bulk([r.pk for r in before])
                pairs = [(now.get(row.pk), row) for row in before]
            else:
                pairs = [(row, None) for row in before]
            _write(targets, pairs, "update", list(kwargs), self.db)
        return count

    update.alters_data = True  # type: ignore[attr-defined]

    def delete(self) -> tuple[int, dict[str, int]]:
        """Delete the matching rows (Django's ``QuerySet.delete``)."""
        targets = [
            t for t in ModelTagManager.targets(self.model, signals=False) if not t.reg.connected
        ]
        if not targets or self.query.is_sliced:
            return super().delete()  # connected registrations bump on post_delete
        with transaction.atomic(using=self.db, savepoint=False):
            rows = _rows_of(self, _reads_rows(targets))
            deleted, per_model = 0, {}
            with precise.precise_write(self.model, _names(targets), self.db):
                for part in _only(self, rows):
                    n, counts = super(CacheAwareQuerySet, part).delete()
                    deleted += n
                    for label, c in counts.items():
                        per_model[label] = per_model.get(label, 0) + c
            _write(targets, [(row, None) for row in rows], "delete", None, self.db)
        return deleted, per_model

    delete.alters_data = True  # type: ignore[attr-defined]

    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Insert *objs* (Django's ``bulk_create``) and bump what they change.

        Rows the database reports a primary key for bump their tags; rows
        without one (``ignore_conflicts=True``, or backends that return no
        keys) bump the model-wide tag in their tenant, plus the tags their
        ``on_create`` callback returns. With ``update_conflicts=True`` a row
        may have updated an existing one: its ``on_update`` tags are bumped
        too.
        """
        targets = ModelTagManager.targets(self.model, signals=False)
        if not targets:
            return super().bulk_create(objs, *args, **kwargs)
        objs = list(objs)
        refuse_unbumpable(targets, [(obj, None) for obj in objs], "create", None, self.db)
        # Rows whose keys do not come back (conflicts ignored or updated, or a
        # database that returns none) are not all bumped precisely: the safety
        # net covers those statements.
        keys_back = not (
            kwargs.get("ignore_conflicts") or kwargs.get("update_conflicts") or any(args[1:3])
        ) and (connections[self.db].features.can_return_rows_from_bulk_insert)
        with precise.precise_write(self.model, _names(targets) if keys_back else (), self.db):
            created = super().bulk_create(objs, *args, **kwargs)
        upsert = bool(kwargs.get("update_conflicts"))
        update_fields = kwargs.get("update_fields")
        bumps = _Bumps()
        for target in targets:
            if target.relation == "child":
                continue
            reg = target.reg
            for obj in created:
                pk = _pk_for(target, obj)
                if pk is None:
                    bumps.add_model_wide(reg, _tenant(reg, obj))
                    if reg.on_create is not None:
                        bumps.add(reg, obj, "create", None, "")
                    continue
                bumps.add(reg, obj, "create", None, pk)
                if upsert:
                    bumps.add(reg, obj, "update", update_fields, pk)
        bumps.send(self.db)
        return created

    def bulk_update(self, objs: Iterable[Any], fields: Any, *args: Any, **kwargs: Any) -> int:
        """Update *objs* (Django's ``bulk_update``) and bump each row as it was and as it is."""
        objs = list(objs)
        targets = ModelTagManager.targets(self.model, signals=False)
        if not targets:
            return super().bulk_update(objs, fields, *args, **kwargs)
        with transaction.atomic(using=self.db, savepoint=False):
            old: dict[Any, Any] = {}
            if _reads_rows(targets):
                qs = self.model._base_manager.using(self.db)
                old = qs.in_bulk([o.pk for o in objs if o.pk is not None])
            # Django's bulk_update runs QuerySet.update() per batch: on a plain
            # queryset, so that those updates do not read and bump again.
            plain = models.QuerySet(self.model, self.query.chain(), self._db, self._hints)
            with precise.precise_write(self.model, _names(targets), self.db):
                count = plain.bulk_update(objs, fields, *args, **kwargs)
            _write(targets, [(o, old.get(o.pk)) for o in objs], "update", list(fields), self.db)
        return count


class CacheAwareManager(models.Manager.from_queryset(CacheAwareQuerySet)):  # type: ignore[misc]
    """A manager whose ``bulk_create``, ``bulk_update`` and queryset writes bump tags.

    The bumping methods live on :class:`CacheAwareQuerySet`, so
    ``objects.using("other").bulk_create(...)`` bumps too.
    """
