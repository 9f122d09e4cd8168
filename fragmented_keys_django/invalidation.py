"""Bumping tags: after the commit, in the writer's tenant, never lost.

* ``dispatch`` bumps version keys of fragmented aliases: at once in autocommit, or
  queued with ``transaction.on_commit`` inside a transaction (so a rollback,
  or a rolled-back savepoint, bumps nothing; the tenant is the one current
  when the bump was asked for, not the one current at commit).
* Bumps queued at the same savepoint level share one ``on_commit`` hook, so a
  transaction that writes many rows bumps in one round trip per store.
* A bump that fails is logged at ERROR, counted, and retried by a background
  thread until it lands; meanwhile this process bypasses the cache for that
  tenant. With the alias option ``STRICT`` the bump is also made before the
  commit, and a failure raises ``BumpFailed`` so the transaction rolls back.
* ``ModelTagManager`` (the seed's API, :mod:`.model_tags`) turns writes of
  registered models into these bumps.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone

from . import keys as keys_mod
from . import metrics, outbox, routing
from .conf import fragmented_aliases
from .exceptions import BumpFailed, TenantRequired
from .keys import is_global_tag, namespace_key, tag_version_key
from .routing import Route
from .signals import retry_backlog_changed, sender, tags_bumped, tenant_flushed
from .stores import StoreAdapter
from .tags import normalize_tags
from .tenancy import stores as tenant_stores
from .tenancy.context import current_tenant_id, tenant_id_of
from .transactions import (
    CommitHook,
    caller_thread,
    in_caller_thread,
    note_pending_bump,
    on_commit,
    open_transactions,
)
from .versions import abump, bump

__all__ = [
    "PendingBump",
    "bump_refusals",
    "bump_tags",
    "check_bump",
    "is_suspect",
    "pending_retries",
]

logger = logging.getLogger("fragmented_keys_django")


@dataclass
class _Bump:
    """Version keys of one alias and tenant to bump (or, with *flush*, its namespace key)."""

    alias: str
    tenant: str | None
    keys: list[str]
    tags: tuple = ()
    flush: bool = False
    #: Where the versions live (store alias, PREFIX): set when a bump fails; every
    #: alias reading the same versions is bypassed while it is pending.
    space: tuple = ()
    #: The outbox rows that keep this bump until it lands (see outbox.py).
    outbox: tuple = ()
    #: True until the retry thread has kept it in the outbox (queued from a
    #: request, which must not wait for the database: see keep_flush).
    unsaved: bool = False
    #: Public keys read by every tenant (the safety net's "all tenants" versions)
    #: on an alias with TENANT_STORES: written in the shared store and in every
    #: tenant store, the tenants listed when the bump is written (:func:`_expand`).
    fanout: bool = False
    #: The fan-out bump this one is a part of (:func:`_expand`).
    origin: Any = None


class PendingBump(CommitHook):
    """An ``on_commit`` hook carrying the bumps queued at one savepoint level of a transaction.

    Bumps queued while the same savepoints are open share one hook (Django
    discards a hook exactly when one of the savepoints open at its
    registration rolls back, so they share its fate): a transaction that saves
    many rows bumps in one round trip per store. The hook is queued before
    any other hook that could stop Django's hook loop (see
    :func:`.transactions.on_commit`).
    """

    dirty = True

    def __init__(self, using: str, items: list[_Bump]) -> None:
        super().__init__(None, "bump", alias=items[0].alias, tenant=items[0].tenant)
        self.using = using
        self.items = items
        # (alias, tenant) -> the outbox marker written in this transaction.
        self.markers: dict[tuple[str, str | None], outbox.Ref] = {}
        # Landed markers of earlier transactions deleted in this one (SQLite).
        self.purged: list[int] = []

    def add(self, conn: Any, items: list[_Bump]) -> None:
        """Carry *items* too; mark them in the outbox, in the transaction.

        One marker per (alias, tenant). A tenant's marker names no keys (a
        drain flushes the tenant's namespace); the public namespace's lists
        its keys, rewritten when more arrive, since they may be versions every
        tenant reads (global tags, the safety net's), which no flush reaches.
        """
        if items is not self.items:
            self.items.extend(items)
        new: dict[tuple[str, str | None], bool] = {}
        grown: set[tuple[str, str | None]] = set()
        for i in items:
            pair = (i.alias, i.tenant)
            if pair not in self.markers:
                new[pair] = new.get(pair, False) or i.fanout
            elif i.tenant is None:
                grown.add(pair)
        if new:
            if not self.markers and outbox.deletes_inline(conn.alias):
                self.purged = outbox.purge_here(conn.alias)
            targets = [
                (alias, tenant, None if tenant is not None else self._keys((alias, None)), fanout)
                for (alias, tenant), fanout in new.items()
            ]
            self.markers.update(outbox.mark(conn.alias, targets))
        for pair in grown:
            if pair in self.markers:
                fanout = any(i.fanout for i in self.items if (i.alias, i.tenant) == pair)
                outbox.remark(self.markers[pair], self._keys(pair), fanout)

    def _keys(self, pair: tuple[str, str | None]) -> list[str]:
        """Every version key this hook bumps for *pair*."""
        found = [k for i in self.items if (i.alias, i.tenant) == pair for k in i.keys]
        return list(dict.fromkeys(found))

    def run(self) -> None:
        if self.purged:
            outbox.purged(self.using, self.purged)
        apply_bumps(self.items, using=self.using, markers=self.markers)


# Per thread (as Django's connections are): the open hook per (connection, savepoint ids).
_hooks = threading.local()


def _placements(items: list[_Bump]) -> dict[str, Any]:
    """Check, now, the tenant config version of every alias with TENANT_STORES among *items*.

    Returns ``{alias: version}`` for :func:`_moved_since`. So a tenant's bump
    goes to the store it uses now, even in a process that has not rechecked
    its config lately (another process moved the tenant): the entries to
    invalidate are there.
    """
    found: dict[str, Any] = {}
    for item in items:
        if item.alias in found or (item.tenant is None and not item.fanout):
            continue
        try:
            ts = routing.route(item.alias).tenant_stores
            if ts is not None:
                found[item.alias] = ts.sync()
        except Exception as exc:  # the bump goes to the store known so far; logged
            metrics.record_error(item.alias, item.tenant, "tenant_config_check", exc)
    return found


def _moved_since(versions: dict[str, Any], items: list[_Bump]) -> list[_Bump]:
    """The *items* of aliases whose tenant config version moved since :func:`_placements`."""
    if not versions:
        return []
    moved = set()
    for alias, version in versions.items():
        try:
            if routing.route(alias).tenant_stores.sync() != version:
                moved.add(alias)
        except Exception as exc:  # logged; the arrival bump of the move covers the rest
            metrics.record_error(alias, None, "tenant_config_check", exc)
    return [replace(i, outbox=()) for i in items if i.alias in moved]


def _expand(item: _Bump) -> list[_Bump]:
    """Return the bumps *item* stands for: itself, or for a fan-out one every tenant's store too.

    Raises what listing the tenants raises (the config source fails).
    """
    if not item.fanout:
        return [item]
    listed = routing.route(item.alias).tenant_stores.tenants() or ()
    shared = replace(item, fanout=False, origin=item)
    return [shared, *(replace(shared, tenant=str(t)) for t in listed)]


def _by_store(
    items: list[_Bump],
) -> tuple[list[tuple[Route, StoreAdapter, list[_Bump]]], list[tuple[_Bump, BaseException]]]:
    """Group *items* by the store that holds their tenant's versions: ``(route, adapter, items)``.

    Fan-out items are expanded first (one per tenant store). Also returns the
    items whose store could not be found (a tenant config source that fails),
    with the error: their bump failed like a store's. A fan-out item is
    grouped as a whole: it lands only when every part has.
    """
    groups: dict[int, tuple[Route, StoreAdapter, list[_Bump]]] = {}
    lost: list[tuple[_Bump, BaseException]] = []
    for item in items:
        try:
            parts = []
            for p in _expand(item):
                route = routing.route(p.alias)
                parts.append((p, route, route.adapter(p.tenant)))
        except Exception as exc:  # kept and retried like any failed bump
            lost.append((item, exc))
            continue
        for part, route, adapter in parts:
            groups.setdefault(id(adapter), (route, adapter, []))[2].append(part)
    return list(groups.values()), lost


def apply_bumps(
    items: list[_Bump],
    *,
    raise_errors: bool = False,
    using: str | None = None,
    markers: dict[tuple[str, str | None], outbox.Ref] | None = None,
    moves_left: int = 3,
) -> None:
    """Write *items* now: one ``set_many`` per store. Failures are kept and retried.

    Any error writing a store's bumps (an outage, or anything else) is
    logged at ERROR and counted; the bumps are kept in the outbox of
    database *using* (the transaction's *markers* rewritten with their exact
    keys, or new rows) and queued for the retry thread, and their tenants
    are bypassed here until they land. Markers of bumps that landed are
    deleted by the retry thread within about a second, in one statement for
    all of them (a ``DELETE`` here would cost a commit per transaction), or
    on SQLite in this thread's next transaction there (see
    ``outbox.deletes_inline``). With *raise_errors* ``BumpFailed`` is raised
    after all that.
    """
    markers = markers or {}
    landed: list[outbox.Ref] = []
    error: BaseException | None = None
    moved = _placements(items)
    groups, lost = _by_store(items)
    for item, exc in lost:
        _failed([item], exc, using, markers)
        if raise_errors and error is None:
            error = BumpFailed(f"tag bump failed on alias {item.alias!r}: {exc}")
            error.__cause__ = exc
    for route, adapter, group in groups:
        keys = [k for item in group for k in item.keys]
        try:  # sent even while the store's breaker is open: it may answer again (X4)
            bump(adapter, keys, route.options.version_timeout, route.verify(adapter))
        except Exception as exc:  # an invalidation is never dropped: kept until it lands
            _failed(group, exc, using, markers)
            if raise_errors and error is None:
                error = BumpFailed(f"tag bump failed on alias {group[0].alias!r}: {exc}")
                error.__cause__ = exc
            continue
        landed += [markers[(i.alias, i.tenant)] for i in group if (i.alias, i.tenant) in markers]
        _retrier.answered(group)
        _announce(group)
    if landed:
        parts = [i for _, _, group in groups for i in group] + [i for i, _ in lost]
        kept = {ref for item in parts for ref in item.outbox}  # refs of bumps that failed
        done = [ref for ref in dict.fromkeys(landed) if ref not in kept]
        outbox.forget(r for r in done if outbox.deletes_inline(r[0]))  # in a next transaction
        _retrier.forget([r for r in done if not outbox.deletes_inline(r[0])])
    again = _moved_since(moved, items) if moves_left else []
    if again:  # a tenant moved store while we bumped: its new store must see the bump too
        apply_bumps(again, raise_errors=raise_errors, using=using, moves_left=moves_left - 1)
    if error is not None:
        raise error


async def aapply_bumps(items: list[_Bump]) -> None:
    """Async twin of :func:`apply_bumps` (native async code: no transaction, no markers).

    Each store's bumps are one round trip on its async adapter (no thread on
    Redis). Only a failure hops to a thread: keeping the bump in the outbox
    is a database write (Django's database layer is sync-only).
    """
    groups, lost = _by_store(items)
    for item, exc in lost:
        await sync_to_async(_failed, thread_sensitive=True)([item], exc, None, {})
    for route, adapter, group in groups:
        keys = [k for item in group for k in item.keys]
        try:  # sent even while the store's breaker is open, as in apply_bumps
            await abump(adapter.aio(), keys, route.options.version_timeout, route.verify(adapter))
        except Exception as exc:  # as in apply_bumps
            await sync_to_async(_failed, thread_sensitive=True)(group, exc, None, {})
            if route.options.strict:
                raise BumpFailed(f"tag bump failed on alias {group[0].alias!r}: {exc}") from exc
            continue
        _retrier.answered(group)
        _announce(group)


def _failed(
    group: list[_Bump],
    exc: BaseException,
    using: str | None,
    markers: dict[tuple[str, str | None], outbox.Ref],
) -> None:
    """Log and count a failed bump, keep it in the outbox, and queue it for the retry thread.

    Bumps are sent even while their store's circuit breaker is open (a
    bump skipped while the store answers again would let another process
    serve what a returned commit replaced), so each failure is logged.
    """
    for item in group:
        metrics.record_store_error(item.alias, item.tenant, "bump", exc, level=logging.ERROR)
    by_pair: dict[tuple[str, str | None], list[_Bump]] = {}
    for item in group:
        by_pair.setdefault((item.alias, item.tenant), []).append(item)
    unmarked = []
    for pair, pair_items in by_pair.items():
        ref = markers.get(pair)
        keys = [k for i in pair_items for k in i.keys]
        tags = tuple(t for i in pair_items for t in i.tags)
        fanout = any(i.fanout for i in pair_items)
        if ref is not None and outbox.update(ref, keys, tags, fanout):
            for i in pair_items:
                i.outbox = (ref,)
        else:
            unmarked += pair_items
    refs = outbox.record(using, [(i.alias, i.tenant, i.keys, i.tags, i.fanout) for i in unmarked])
    for item, ref in zip(unmarked, refs, strict=True):
        item.outbox = () if ref is None else (ref,)
    # Queue the retry (and bypass the tenant here) even when the caller raises:
    # in autocommit the row is already written, so the bump must land.
    _retrier.add(group)
    _retrier.recover(group[0].alias, group[0].tenant)


def bump_now(
    entries: list[tuple[str, str | None, list[str] | None, Any, bool]],
    errors: list[str],
    failed_spaces: set[tuple] | None = None,
) -> list[bool]:
    """Bump ``(alias, tenant, keys, tags, fanout)`` entries once, for the outbox drain.

    ``keys=None`` flushes the tenant's namespace. One ``set_many`` per store;
    nothing is queued for retry (the outbox keeps what failed), errors are
    logged, counted and appended to *errors*, and the version spaces whose
    bumps failed added to *failed_spaces* (``_ANY_SPACE`` when a store could
    not be found). Returns, per entry, whether it landed (every store of a
    fan-out entry).
    """
    failed_spaces = set() if failed_spaces is None else failed_spaces
    items = []
    for alias, tenant, keys, tags, fanout in entries:
        flush = keys is None
        if flush:
            keys = [_namespace_key(alias, tenant)]
        tags = tuple(map(tuple, tags or ()))
        items.append(_Bump(alias, tenant, list(keys), tags, flush, fanout=fanout))
    failed: set[int] = set()
    groups, lost = _by_store(items)
    for item, exc in lost:
        metrics.record_store_error(item.alias, item.tenant, "outbox_drain", exc)
        errors.append(f"alias {item.alias!r}: {exc}")
        failed.add(id(item))
        failed_spaces.add(_ANY_SPACE)
    for route, adapter, group in groups:
        try:
            keys = [k for item in group for k in item.keys]
            bump(adapter, keys, route.options.version_timeout, route.verify(adapter))
        except Exception as exc:  # left in the outbox for a later drain
            metrics.record_store_error(group[0].alias, None, "outbox_drain", exc)
            errors.append(f"alias {group[0].alias!r}: {exc}")
            failed.update(id(part.origin or part) for part in group)
            failed_spaces.update(_space(part.alias, part.tenant) for part in group)
            continue
        _announce(group)
    return [id(item) not in failed for item in items]


def drain_outbox(
    older_than: float = 0.0,
    markers_older_than: float | None = None,
    using: Iterable[str] | None = None,
    batch: int = 500,
) -> outbox.DrainReport:
    """Apply and delete outbox rows older than *older_than* seconds; return a :class:`DrainReport`.

    Each row's version keys are bumped (a marker, whose keys are unknown,
    flushes its tenant's namespace) in its alias's store, one ``set_many``
    per store and batch; rows whose bump fails are left for a later drain.
    Markers are taken only once older than *markers_older_than* seconds
    (default: the larger of *older_than* and :data:`MARKER_GRACE`): younger
    ones belong to transactions whose process is writing the bump now. Rows
    naming an alias no longer in ``CACHES`` are deleted with a warning.
    """
    report = outbox.DrainReport()
    aliases = set(fragmented_aliases())
    now = timezone.now()
    grace = (
        max(older_than, outbox.MARKER_GRACE) if markers_older_than is None else markers_older_than
    )
    keyed_before = now - datetime.timedelta(seconds=older_than)
    marked_before = now - datetime.timedelta(seconds=grace)
    for db in list(using) if using is not None else outbox.databases():
        last = 0
        while True:
            rows = outbox.pending(db, keyed_before, marked_before, after=last, limit=batch)
            if not rows:
                break
            last = rows[-1].pk
            waiting = outbox.waiting(db)  # applied already, their DELETE waits (SQLite)
            rows = [row for row in rows if row.pk not in waiting]
            done: list[outbox.Ref | None] = []
            for row in rows:
                if row.alias not in aliases:
                    logger.warning(
                        "dropping outbox row %s: alias %r is not in CACHES", row.pk, row.alias
                    )
                    report.dropped += 1
                    done.append((db, row.pk))
            todo = [row for row in rows if row.alias in aliases]
            landed = bump_now(
                [(r.alias, r.tenant, r.keys, r.tags, r.fanout) for r in todo],
                report.errors,
                report.failed_spaces,
            )
            for row, ok in zip(todo, landed, strict=True):
                if ok:
                    report.applied += 1
                    done.append((db, row.pk))
                else:
                    report.failed += 1
            outbox.forget(done)
    return report


def keep_flush(alias: str, tenant: str | None) -> None:
    """A write to *tenant*'s store was lost (failed, or skipped by the breaker): flush it later.

    A lost ``set`` leaves the old value in the store and a lost ``delete``
    leaves the entry: either would be served once the store is back. So the
    tenant's namespace is bumped once the store answers (one pending flush per
    alias and tenant, however many writes were lost), and meanwhile the
    tenant's entries are not served here. No database or store call is made
    on the caller's path: the retry thread keeps the flush in the outbox.
    """
    key = _namespace_key(alias, tenant)
    _retrier.add_flush(_Bump(alias, tenant, [key], (), True, unsaved=True))


def _announce(group: list[_Bump]) -> None:
    """Send ``tags_bumped`` / ``tenant_flushed`` for landed bumps; a receiver's error is logged."""
    if not (tenant_flushed.receivers or tags_bumped.receivers):
        return
    for item in group:
        try:
            if item.flush:
                tenant_flushed.send(sender(), alias=item.alias, tenant=item.tenant)
            else:
                tags_bumped.send(sender(), alias=item.alias, tenant=item.tenant, tags=item.tags)
        except Exception as exc:  # the bump has landed; a receiver's bug must not undo that
            metrics.record_error(
                item.alias, item.tenant, "bump_signal", exc, what="signal receiver failed"
            )


def _queue_on_commit(conn: Any, items: list[_Bump]) -> None:
    """Add *items* to the bump hook of *conn*'s current savepoint level (made if needed)."""
    open_hooks = getattr(_hooks, "by_conn", None)
    if open_hooks is None:
        open_hooks = _hooks.by_conn = {}
    level = (id(conn), tuple(conn.savepoint_ids))
    hook = open_hooks.get(level)
    if hook is not None and any(h[1] is hook for h in conn.run_on_commit):
        hook.add(conn, items)
        return
    for key in [k for k in open_hooks if k[0] == id(conn)]:
        if not any(h[1] is open_hooks[key] for h in conn.run_on_commit):
            del open_hooks[key]  # committed, or rolled back with its savepoint
    hook = PendingBump(conn.alias, list(items))
    hook.add(conn, hook.items)  # its outbox markers, in this transaction
    open_hooks[level] = hook
    on_commit(hook, conn.alias, first=True)
    note_pending_bump(conn)


def dispatch(items: list[_Bump], strict: bool, using: str | None) -> None:
    """Apply *items* now (one round trip per store), or queue them for the commit.

    *using* limits the transaction considered to that database (the database
    a model row was written to); otherwise every open transaction of this
    thread defers the bump.
    """
    conns = open_transactions()
    if using is not None:
        conns = [c for c in conns if c.alias == using]
    if not conns:
        apply_bumps(items, raise_errors=strict, using=using)
        return
    if strict:
        # Bump before the commit too: if the store is down the write fails
        # and the transaction rolls back, so nothing stale can be served.
        apply_bumps(items, raise_errors=True)
    for conn in conns:
        _queue_on_commit(conn, [replace(item) for item in items] if len(conns) > 1 else items)


def _dispatch_in_transaction(items: list[_Bump], strict: bool) -> bool:
    """Queue *items* on this thread's open transaction(s), if any; return True if it did."""
    if not open_transactions():
        return False
    dispatch(items, strict, None)
    return True


async def adispatch(items: list[_Bump], strict: bool) -> None:
    """Async twin of :func:`dispatch`: native async code holds no transaction, so bump now.

    Called through ``async_to_sync`` from a sync thread inside ``atomic()``, the
    bump waits for that thread's commit, as :func:`dispatch` makes it (one hop
    to that thread to find out).
    """
    if caller_thread() and await in_caller_thread(_dispatch_in_transaction, items, strict):
        return
    await aapply_bumps(items)


def flush_bump(route: Route, tenant: str | None) -> _Bump:
    """The bump of *tenant*'s namespace on *route*'s alias: ``clear()``, ``invalidate_tenant()``."""
    return _Bump(route.alias, tenant, [_namespace_key(route.alias, tenant)], (), True)


def _namespace_key(alias: str, tenant: str | None) -> str:
    """*tenant*'s namespace version key on *alias* (on a cluster, the one of its first slot:
    the store adapter writes it in each of the tenant's ``TENANT_SLOTS``)."""
    options = routing.route(alias).options
    return namespace_key(options.prefix, tenant, options.shards_for(tenant))


def tag_bumps(route: Route, tenant: str | None, pairs: list[tuple[str, str]]) -> list[_Bump]:
    """Return the bumps of tags *pairs* on *route*'s alias in *tenant*.

    A global tag's version lives in the public namespace: its bump is the
    public namespace's (``tenant=None``), whatever tenant asked for it, so
    that a failure bypasses, and a drained outbox marker reaches, every
    tenant. A ``SHARED`` alias has one namespace for every tenant. On a Redis
    Cluster store the global bump names one slot's copy of each version; the
    store adapter deletes the copy in every slot (:func:`.keys.slot_copies`).
    """
    where = None if route.options.shared else tenant
    prefix = route.options.prefix
    scoped = [(n, i) for n, i in pairs if not is_global_tag(n)]
    common = [(n, i) for n, i in pairs if is_global_tag(n)]
    items = []
    if scoped:
        shards = route.options.shards_for(where)
        keys = [tag_version_key(prefix, where, n, i, False, shards) for n, i in scoped]
        items.append(_Bump(route.alias, where, keys, tuple(scoped)))
    if common:
        slots = route.options.slot_copies
        keys = [tag_version_key(prefix, None, n, i, slots) for n, i in common]
        items.append(_Bump(route.alias, None, keys, tuple(common)))
    return items


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

    tid = (
        current_tenant_id() if tenant is ... else (None if tenant is None else tenant_id_of(tenant))
    )
    specs = [s for s in normalize_tags(tags) if not s.constant]
    if not specs:
        return 0
    pairs = [(s.name, s.instance) for s in specs]
    # Every alias: each routes the tenant to its own store (TENANT_STORES) and
    # PREFIX; identical keys on one store are written once (apply_bumps).
    routes = [routing.route(a) for a in (aliases if aliases is not None else fragmented_aliases())]
    # Check every alias before bumping any: a refusal must not leave half the bumps queued.
    _check(routes, specs, tid)
    by_strictness: dict[bool, list[_Bump]] = {}
    for route in routes:
        by_strictness.setdefault(route.options.strict, []).extend(tag_bumps(route, tid, pairs))
    # Every alias in one go: one round trip per store, not per alias.
    for strict, items in by_strictness.items():
        dispatch(items, strict, using)
    return len(specs)


def _check(routes: list[Route], specs: list[Any], tid: str | None) -> None:
    """Raise what bumping *specs* in tenant *tid* on *backends* would refuse.

    ``TenantRequired`` for tenant-scoped tags with no tenant on an alias that
    requires one; ``ConfigurationError`` for global tags on an alias with
    ``TENANT_STORES``.
    """
    pairs = [(s.name, s.instance) for s in specs]
    for route in routes:
        route.no_global_tags(specs)
        if (
            tid is None
            and not route.options.shared
            and route.options.tenant_required
            and not all(is_global_tag(n) for n, _ in pairs)
        ):
            raise TenantRequired(
                f"Bumping {pairs[:3]} on alias {route.alias!r}, which requires a tenant, but "
                f"none is current: the right tenant's entries would stay stale. Run it inside "
                f"TenantContext.use_tenant(...); for a model, register it with "
                f"ModelTagManager.register_model(Model, tenant_field='tenant_id') if each row "
                f"names its tenant, or tenant_scoped=False if it is shared by every tenant "
                f"(users, the tenant table)."
            )


def bump_refusals() -> tuple[bool, bool]:
    """Return what :func:`bump_tags` may refuse now: ``(no tenant, global tags)``.

    The first is True when an alias requires a tenant (``TENANT_REQUIRED``,
    not ``SHARED``); the second when an alias has ``TENANT_STORES`` and
    global tags are registered. Both False: :func:`check_bump` cannot raise.
    """
    options = [routing.route(a).options for a in fragmented_aliases()]
    return (
        any(o.tenant_required and not o.shared for o in options),
        bool(keys_mod._global_tags) and any(o.tenant_stores is not None for o in options),
    )


def check_bump(tags: Iterable[Any], tenant: str | None) -> None:
    """Raise now what :func:`bump_tags` would refuse for *tags* in *tenant* (a tenant id).

    Lets a model write be refused before it reaches the database (see
    :mod:`.model_tags`) rather than fail after its commit: ``TenantRequired``
    or ``ConfigurationError``, with the messages :func:`bump_tags` gives.
    """
    specs = [s for s in normalize_tags(tags) if not s.constant]
    if specs:
        _check([routing.route(a) for a in fragmented_aliases()], specs, tenant)


# -- retrying failed bumps ---------------------------------------------------


#: The suspicion key of a whole store: set while this process recovers from an error of it.
_ALL = object()
#: The space of a tenant whose store could not be looked up: suspect on every store.
_ANY_SPACE = ("*",)


class _Retrier:
    """Retries failed bumps in a daemon thread until they land, and recovers from outages.

    While a tenant has a failed bump pending on a store (a store alias and
    PREFIX), this process does not serve that tenant's entries from any alias
    reading those versions (``is_suspect``). After any error of a store, no
    tenant's entries are served from it until the store answers again and
    this process has applied the bumps other processes left in the outbox
    (they may have failed while it was down). The thread is restarted in a
    forked child that inherits pending bumps.

    That recovery is also the store's **circuit breaker** (``is_open``): from
    a store's first error until it is back, every call of this process on it
    fails fast instead of waiting for a socket timeout (reads miss, writes
    are skipped and their tenant flushed once the store is back, bumps are
    kept and retried), per store, so a hung tenant store does not trip the
    shared one. Opening is logged once (ERROR) and counted; skipped calls are
    counted. The thread probes the store once the alias's ``CIRCUIT_BREAKER``
    seconds have passed since it opened (or since the last failed probe),
    and retries no bump on it before a probe succeeds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Bump] = []
        # (space, tenant) -> failed bumps not landed yet, pending or in flight
        # (taken by a flush that has not finished with them). A tenant stays
        # suspect exactly while this is above zero. (space, _ALL) -> 1 while
        # the whole store is recovering.
        self._suspect: dict[tuple[tuple, Any], int] = {}
        # Bumps a running flush() has taken off the queue and not finished with, by id.
        self._inflight: dict[int, _Bump] = {}
        # space -> (alias, tenant) to probe it with, while it recovers from an error.
        self._recovering: dict[tuple, tuple[str, str | None]] = {}
        # space -> time.monotonic() when it may be probed (the breaker's open time).
        self._next_probe: dict[tuple, float] = {}
        # Outbox markers whose bumps landed: deleted by the thread, in batches.
        self._landed: list[outbox.Ref] = []
        # Bumped by reset(): items taken before it name a configuration that is gone.
        self._generation = 0
        self._thread: threading.Thread | None = None
        # Set to cut the thread's pause short (reset(): the configuration changed).
        self._wake = threading.Event()
        # (alias, tenant) -> pending bumps last announced (retry_backlog_changed).
        self._published: dict[tuple[str, str | None], int] = {}
        self.interval = 0.2
        #: Longest pause between two retry rounds, in seconds: after the store
        #: answers again, a bump this process kept lands within about this long.
        self.max_interval = 1.0

    #: Pending keys per (alias, tenant) beyond which the tenant's whole
    #: namespace is flushed instead (one key, however many tags failed).
    compact_above = 1000

    def add(self, group: list[_Bump]) -> None:
        for item in group:
            if not item.space:
                item.space = _space(item.alias, item.tenant)
        with self._lock:
            for item in group:
                self._pending.append(item)
                key = (item.space, item.tenant)
                self._suspect[key] = self._suspect.get(key, 0) + 1
            self._compact()
            self._ensure_thread()
        self.publish()

    def publish(self, everything: bool = False) -> None:
        """Send ``retry_backlog_changed`` for each (alias, tenant) whose pending bumps changed.

        With *everything*, for every (alias, tenant) with bumps pending (a
        receiver connected late, e.g. the Prometheus gauge). Sent outside the
        lock; nothing is computed while the signal has no receivers.
        """
        if not retry_backlog_changed.receivers:
            return
        with self._lock:
            now = self._by_tenant()
            before = {} if everything else self._published
            changed = {
                pair: now.get(pair, 0)
                for pair in {*now, *before}
                if everything or now.get(pair, 0) != before.get(pair, 0)
            }
            self._published = now
        for (alias, tenant), pending in changed.items():
            retry_backlog_changed.send(sender(), alias=alias, tenant=tenant, pending=pending)

    def add_flush(self, item: _Bump) -> None:
        """Queue *item*, a namespace flush, unless one for its alias and tenant is pending."""
        with self._lock:
            for other in [*self._pending, *self._inflight.values()]:
                if other.flush and (other.alias, other.tenant) == (item.alias, item.tenant):
                    return
        self.add([item])

    def forget(self, refs: list[outbox.Ref]) -> None:
        """Delete outbox *refs* (markers of bumps that landed) soon, with others, in the thread.

        Within ``max_interval`` seconds, well inside ``outbox.MARKER_GRACE``
        (a drain never takes a marker younger than that for an orphan).
        """
        if refs:
            with self._lock:
                self._landed += refs
                self._ensure_thread()

    def forget_now(self) -> None:
        """Delete the queued landed markers now (the thread's rounds; process exit)."""
        with self._lock:
            refs, self._landed = self._landed, []
        outbox.forget(refs)

    def recover(self, alias: str, tenant: str | None) -> None:
        """A store error on *alias* for *tenant*: open the store's breaker until it is back and drained."""
        space = _space(alias, tenant)
        with self._lock:
            opened = space not in self._recovering
            if opened:
                self._recovering[space] = (alias, tenant)
                self._suspect[(space, _ALL)] = 1
                self._next_probe[space] = time.monotonic() + _breaker_seconds(alias)
            self._ensure_thread()
        if opened:
            metrics.count(alias, "breaker_open")
            logger.error(
                "store %s (alias=%s) failed: circuit breaker open, calls skip it until it answers "
                "a probe (in %ss) and the outbox is drained; failed bumps are kept",
                space[0],
                alias,
                _breaker_seconds(alias),
                extra={"alias": alias, "tenant": tenant, "operation": "breaker_open"},
            )

    def answered(self, group: list[_Bump]) -> None:
        """Bumps of *group* landed: a store among them whose breaker is open is probed at once.

        (Its recovery still drains the outbox before the breaker closes.)
        """
        if not self._recovering:
            return
        spaces = {item.space or _space(item.alias, item.tenant) for item in group}
        with self._lock:
            due = [sp for sp in spaces if sp in self._recovering]
            for space in due:
                self._next_probe[space] = 0.0
        if due:
            self._wake.set()

    def is_open(self, space: tuple) -> bool:
        """Return True while the breaker of *space* (a store and PREFIX) is open."""
        return (space, _ALL) in self._suspect

    def _ensure_thread(self) -> None:
        """Start the retry thread if none runs (lock held); replace one that died."""
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fkd-bump-retry", daemon=True)
            self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child: the parent's thread and lock did not come along; start afresh."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._landed = []  # the parent deletes its own landed markers
        if self._pending or self._inflight or self._recovering:
            self._pending[:0] = list(self._inflight.values())
            self._inflight.clear()
            self._ensure_thread()
        self.publish(everything=True)  # this process's own values (per pid in multiprocess mode)

    def _compact(self) -> None:
        """Replace a tenant's many pending tag bumps by one namespace flush (lock held)."""
        sizes: dict[tuple[str, str | None], int] = {}
        for item in [*self._pending, *self._inflight.values()]:
            sizes[(item.alias, item.tenant)] = sizes.get((item.alias, item.tenant), 0) + len(
                item.keys
            )
        for (alias, tenant), size in sizes.items():
            if size <= self.compact_above or tenant is None:
                # A public flush would not reach what public bumps also carry: the
                # versions every tenant reads (global tags, the safety net's).
                continue
            dropped = [i for i in self._pending if (i.alias, i.tenant) == (alias, tenant)]
            kept = [i for i in self._pending if (i.alias, i.tenant) != (alias, tenant)]
            space = dropped[0].space if dropped else _space(alias, tenant)
            refs = tuple(dict.fromkeys(r for i in dropped for r in i.outbox))
            flush = _Bump(alias, tenant, [_namespace_key(alias, tenant)], (), True, space, refs)
            flush.unsaved = any(i.unsaved for i in dropped)
            kept.append(flush)
            self._pending = kept
            # Derived again: the flush, the other pending bumps, the bumps a
            # running flush() still holds, and the stores recovering.
            self._suspect = {(sp, _ALL): 1 for sp in self._recovering}
            for i in [*self._pending, *self._inflight.values()]:
                key = (i.space, i.tenant)
                self._suspect[key] = self._suspect.get(key, 0) + 1
            logger.error(
                "%d failed tag bumps pending for tenant %s on alias %s: flushing the tenant's "
                "namespace instead once the store is back",
                size,
                tenant,
                alias,
                extra={"alias": alias, "tenant": tenant, "operation": "bump_compact"},
            )

    def reset(self) -> None:
        """Forget every pending bump (``CACHES`` changed: they name aliases that are gone).

        Their outbox rows stay: a drain applies or drops them.
        """
        with self._lock:
            if self._pending:
                logger.warning(
                    "dropping %d pending tag bumps: settings.CACHES changed", len(self._pending)
                )
            self._pending = []
            self._suspect.clear()
            self._inflight.clear()
            self._recovering.clear()
            self._next_probe.clear()
            self._generation += 1
        self._wake.set()
        self.publish()

    def is_suspect(self, space: tuple, tenant: str | None) -> bool:
        # A failed public-namespace bump may hold versions every tenant reads
        # (global tags, the safety net's "all tenants" versions): all suspect.
        s = self._suspect
        return bool(s) and (
            (space, tenant) in s
            or (space, _ALL) in s
            or (space, None) in s
            or (_ANY_SPACE, tenant) in s
        )

    def _by_tenant(self) -> dict[tuple[str, str | None], int]:
        """``{(alias, tenant): failed bumps not landed}`` (lock held)."""
        counts: dict[tuple[str, str | None], int] = {}
        for item in [*self._pending, *self._inflight.values()]:
            counts[(item.alias, item.tenant)] = counts.get((item.alias, item.tenant), 0) + 1
        return counts

    def pending_by_tenant(self) -> dict[tuple[str, str | None], int]:
        """Return ``{(alias, tenant): failed bumps not landed}`` in this process."""
        with self._lock:
            return self._by_tenant()

    def pending(self) -> int:
        """Return how many failed bumps have not landed: queued, or held by a running retry."""
        with self._lock:
            return len(self._pending) + len(self._inflight)

    def recovering(self) -> int:
        """Return how many stores this process does not serve from until they are drained."""
        with self._lock:
            return len(self._recovering)

    def flush(self) -> bool:
        """Probe the stores whose breaker is due, then try every pending bump once.

        Returns True if nothing is left. Bumps on a store whose breaker is
        still open are not tried (each would wait for a socket timeout): the
        probe decides. Items that fail go back to the queue; no error of one
        item stops the others. Items taken before a :meth:`reset` are dropped
        when they come back: their configuration is gone, and counting them
        against the new one would clear a tenant's suspicion while its own
        bump is pending. Outbox rows of bumps that landed are deleted.
        """
        self._recover_stores()
        with self._lock:
            items, self._pending = self._pending, []
            generation = self._generation
            self._inflight.update((id(item), item) for item in items)
        self._save(items)
        left: list[_Bump] = []
        landed: list[outbox.Ref] = []
        for item in items:
            if self.is_open(item.space) or not self._try(item):
                left.append(item)  # still counted in flight until it is queued again
                continue
            landed += item.outbox
            # Logged before the counts move: pending() == 0 means the log is there.
            logger.warning(
                "delayed tag bump landed (alias=%s, tenant=%s)",
                item.alias,
                item.tenant,
                extra={"alias": item.alias, "tenant": item.tenant, "operation": "bump_retry"},
            )
            _announce([item])
            with self._lock:
                if generation == self._generation:
                    del self._inflight[id(item)]
                    _decrement(self._suspect, (item.space, item.tenant))
        with self._lock:
            if generation == self._generation:
                for item in left:
                    del self._inflight[id(item)]
                self._pending[:0] = left
            kept = {r for i in [*self._pending, *self._inflight.values()] for r in i.outbox}
        outbox.forget(r for r in dict.fromkeys(landed) if r not in kept)
        self.publish()
        self.forget_now()
        self._drain_orphans()
        with self._lock:
            return not self._pending and not self._recovering

    @staticmethod
    def _save(items: list[_Bump]) -> None:
        """Keep in the outbox the flushes queued without it (:func:`keep_flush`).

        Not on SQLite, where no background thread writes the outbox (see
        ``outbox.deletes_inline``): there they stay in this process's memory.
        """
        unsaved = [i for i in items if i.unsaved]
        if not unsaved:
            return
        if outbox.deletes_inline(outbox._db_for_write()):
            for item in unsaved:
                item.unsaved = False
            return
        refs = outbox.record(None, [(i.alias, i.tenant, i.keys, i.tags, i.fanout) for i in unsaved])
        for item, ref in zip(unsaved, refs, strict=True):
            item.unsaved = False
            item.outbox = item.outbox if ref is None else (*item.outbox, ref)

    #: Seconds between two drains of orphaned outbox rows by a running retry thread.
    orphans_every = 60.0
    _next_orphans = 0.0

    def _drain_orphans(self) -> None:
        """Now and then, apply outbox rows that their processes left (killed after a commit).

        Rows older than ``outbox.MARKER_GRACE`` only: younger ones belong to
        live processes about to write or retry them. So a ``kill -9`` is
        repaired by the next process whose retry thread runs (any process
        writing in transactions on PostgreSQL, every second or so), besides
        ``fk_outbox --drain`` and the Celery task.
        """
        now = time.monotonic()
        if now < self._next_orphans:
            return
        self._next_orphans = now + self.orphans_every
        try:
            report = drain_outbox(
                older_than=outbox.MARKER_GRACE, markers_older_than=outbox.MARKER_GRACE
            )
        except Exception as exc:  # the database is down: next time
            metrics.record_error("-", None, "outbox_drain", exc, what="outbox")
            return
        if report.applied:
            logger.warning(
                "applied %d bump(s) left in the outbox by other processes",
                report.applied,
                extra={"operation": "outbox_drain"},
            )

    def _recover_stores(self) -> None:
        """For each store whose breaker is due: if it answers, drain the outbox, close the breaker."""
        now = time.monotonic()
        with self._lock:
            recovering = {
                space: found
                for space, found in self._recovering.items()
                if self._next_probe.get(space, 0.0) <= now
            }
            generation = self._generation
        for space, (alias, tenant) in recovering.items():
            try:
                routing.route(alias).adapter(tenant).read([namespace_key("probe", None)], 0)
            except Exception as exc:  # still down: stay open, probe again later
                metrics.record_store_error(alias, tenant, "recover_probe", exc)
                with self._lock:
                    if space in self._next_probe:
                        self._next_probe[space] = time.monotonic() + _breaker_seconds(alias)
                continue
            try:
                # Every row, markers of any age too: a process may have died with its
                # bump hanging on this store moments ago (a marker drained while its
                # writer still bumps costs an extra flush, never a stale read).
                report = drain_outbox(older_than=0.0, markers_older_than=0.0)
            except Exception as exc:  # the database is down too: keep bypassing, try again
                metrics.record_error(alias, tenant, "outbox_drain", exc, what="outbox")
                continue
            if space in report.failed_spaces or _ANY_SPACE in report.failed_spaces:
                continue  # a bump for this store did not land: stay open (another store's may not)
            with self._lock:
                if generation == self._generation and self._recovering.pop(space, None):
                    self._suspect.pop((space, _ALL), None)
                    self._next_probe.pop(space, None)
            logger.warning(
                "store back (alias=%s): %d pending bump(s) applied from the outbox",
                alias,
                report.applied,
                extra={"alias": alias, "tenant": tenant, "operation": "recover"},
            )

    @staticmethod
    def _try(item: _Bump) -> bool:
        """Bump *item* once (every part of a fan-out one); return True if it all landed."""
        try:
            moved = _placements([item])
            for _ in range(3):  # again if the tenant moved store meanwhile
                for part in _expand(item):
                    route = routing.route(part.alias)
                    adapter = route.adapter(part.tenant)
                    bump(adapter, part.keys, route.options.version_timeout, route.verify(adapter))
                if not _moved_since(moved, [item]):
                    break
                moved = _placements([item])
        except Exception as exc:  # retried later; counted and logged each time
            metrics.record_store_error(item.alias, item.tenant, "bump_retry", exc)
            return False
        return True

    def _run(self) -> None:
        """The retry thread: :meth:`_rounds` until nothing is left; if it ever dies, say so.

        Whatever kills it (nothing should: every round's errors are caught),
        the thread gives its place up under the lock, logged at ERROR and
        counted, and wakes a successor for what is still pending.
        """
        try:
            self._rounds()
        except BaseException as exc:
            metrics.record_error("-", None, "bump_retry", exc, what="the retry thread died")
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                    if self._pending or self._recovering or self._landed:
                        self._ensure_thread()
            raise

    def _rounds(self) -> None:
        from django.db import connections

        delay = self.interval
        while True:
            if self._wake.wait(delay):  # reset(): start over with the current interval
                self._wake.clear()
                delay = self.interval
                continue
            try:
                self.flush()
            except Exception as exc:  # never let the retry thread die silently
                metrics.record_error("-", None, "bump_retry", exc, what="bump retry loop failed")
            finally:
                for conn in connections.all(initialized_only=True):
                    try:
                        conn.close_if_unusable_or_obsolete()  # kept between rounds otherwise
                    except Exception as exc:  # its database is down, or closed to this thread
                        metrics.record_error(
                            "-", None, "bump_retry", exc, what=f"database {conn.alias}"
                        )
            with self._lock:
                # Decide to exit under the lock: an add() racing with this
                # either lands first (and we go on) or finds no thread and
                # starts one.
                if not self._pending and not self._recovering and not self._landed:
                    self._thread = None
                    connections.close_all()  # this thread's own connections (the outbox)
                    return
            delay = min(delay * 2, self.max_interval)


def _breaker_seconds(alias: str) -> float:
    """The alias's ``CIRCUIT_BREAKER``: seconds a failed store is skipped before a probe."""
    try:
        return float(routing.route(alias).options.circuit_breaker)
    except Exception:  # a misconfigured or removed alias: the default
        from .conf import _OPTION_DEFAULTS

        return float(_OPTION_DEFAULTS["CIRCUIT_BREAKER"])


def _decrement(counts: dict[Any, int], key: Any) -> None:
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
    """Return True if a failed bump of *tenant*'s versions read by *alias* has not landed yet."""
    return _retrier.is_suspect(_space(alias, tenant), tenant)


def _space(alias: str, tenant: str | None) -> tuple:
    """Return where *alias* keeps *tenant*'s versions: ``(store alias, PREFIX)``.

    :data:`_ANY_SPACE` when that cannot be found out (the tenant config source
    fails): the tenant is then suspect wherever its versions live.
    """
    try:
        return routing.route(alias).version_space(tenant)
    except Exception as exc:  # logged and counted; the caller's bypass covers every store
        metrics.record_error(alias, tenant, "version_space", exc, what="tenant store lookup failed")
        return _ANY_SPACE


def retry_flush(alias: str, tenant: str | None, keys: list[str], space: tuple) -> None:
    """Queue a namespace bump that failed outside :func:`apply_bumps` for retry.

    Used for a tenant's arrival bump when it moves to another store
    (``tenancy/stores.py``), where *space* (the version space it bumps, see
    ``FragmentedKeysCacheBackend.version_space``) is known and must not be
    looked up (the tenant's store is being placed). Until it lands, *tenant*
    is suspect there: this process serves none of its entries. Announced as
    ``tenant_flushed`` when the retry lands, like any delayed flush. Kept in
    the outbox too.
    """
    item = _Bump(alias, tenant, list(keys), (), True, space)
    refs = outbox.record(None, [(alias, tenant, item.keys, (), False)])
    item.outbox = tuple(r for r in refs if r is not None)
    _retrier.add([item])


def note_store_error(alias: str, tenant: str | None) -> None:
    """A store call of *alias* failed: bypass that store until it answers and is drained.

    Bumps other processes could not write while it was down wait in the
    outbox; serving the store again before applying them would serve
    entries those bumps invalidated.
    """
    _retrier.recover(alias, tenant)


class _SharedStoreBreaker:
    """The retrier's breaker, as the tenant config-version checks see it (per alias)."""

    @staticmethod
    def is_open(alias: str) -> bool:
        return bool(_retrier._recovering) and _retrier.is_open(_space(alias, None))

    @staticmethod
    def failed(alias: str) -> None:
        note_store_error(alias, None)


tenant_stores.on_lost_arrival(retry_flush)
tenant_stores.on_breaker(_SharedStoreBreaker())
os.register_at_fork(after_in_child=lambda: _retrier._after_fork())
# Markers of landed bumps still queued at a normal exit: deleted, not left for a drain.
atexit.register(lambda: (_retrier.forget_now(), outbox.forget_deferred()))
