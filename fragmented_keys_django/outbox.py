"""Durable bumps: the outbox table, written with the data, drained by any process.

Where a bump can be lost, and what covers it:

* **Inside a transaction** a bump waits for the commit (``on_commit``). When
  the first bump of a transaction (savepoint level) is queued, one *marker*
  row per (alias, tenant) is inserted in that transaction, on the database
  the row was written to: it commits or rolls back with the data. After the
  commit the bump is written to the store and the marker deleted (one
  ``DELETE``). If the process dies in between (``kill -9``, OOM), the marker
  stays: whoever drains the outbox flushes that tenant's namespace.
* **A bump that fails** (the store is down) is kept in the outbox with its
  exact version keys (the marker is rewritten, or a row inserted in
  autocommit) and retried by this process's retry thread, which deletes the
  row when it lands. If this process dies first, any other drains it.
* **In autocommit** the data is committed before the bump is even asked for,
  so a process killed between that commit and the bump's round trip loses
  it: the one window left (see ``docs/guarantees.md``).

Rows are drained (bumped, then deleted) by ``invalidation.drain_outbox``: the retry thread of
a process that saw a store error (before it serves that store again),
``manage.py fk_outbox --drain``, or ``fragmented_keys_django.tasks.drain_outbox``
on a Celery beat schedule.

The table is ``fragmented_keys_django_outbox`` (``manage.py migrate``), in
every database that holds registered models; a database without it gets no
durability (system check ``fragmented_keys_django.W020``).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router
from django.utils import timezone

from . import metrics

__all__ = ["DrainReport", "available", "forget", "forget_tenant", "mark", "record", "reset"]

logger = logging.getLogger("fragmented_keys_django")

TABLE = "fragmented_keys_django_outbox"

#: Seconds after which a marker (a bump not yet written, keys unknown) is taken
#: for one whose process died: younger markers belong to transactions whose
#: process is writing the bump right now.
MARKER_GRACE = 5.0

#: A reference to one outbox row: (database alias, primary key).
Ref = tuple[str, int]


def _model() -> Any:
    from django.apps import apps

    return apps.get_model("fragmented_keys_django", "OutboxEntry")


# Database alias -> the outbox table's name to use in SQL, or None when it is not
# there (resolved once per process; :func:`reset` after migrate).
_tables: dict[str, str | None] = {}
_tables_lock = threading.Lock()


def available(using: str) -> bool:
    """Return True if database *using* has the outbox table (``manage.py migrate``)."""
    return _table(using) is not None


def _table(using: str) -> str | None:
    """The outbox table's name in SQL on *using*, quoted, or ``None`` if it is not there.

    On PostgreSQL it is schema-qualified, found whatever the connection's
    ``search_path`` is now (django-tenants and django-omnitenant move it to a
    tenant's schema): the table in ``public`` first, else the one the path
    sees, else any. So every statement of ours reaches the same table, from
    any schema.
    """
    if using in _tables:
        return _tables[using]
    if not _is_enabled():
        return None
    conn = connections[using]
    q = conn.ops.quote_name
    try:
        if conn.vendor == "postgresql":
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT n.nspname FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relname = %s AND c.relkind IN ('r', 'p') "
                    "ORDER BY n.nspname = 'public' DESC, c.oid = to_regclass(%s) DESC LIMIT 1",
                    [TABLE, TABLE],
                )
                found = cur.fetchone()
            name = None if found is None else f"{q(found[0])}.{q(TABLE)}"
        else:
            name = q(TABLE) if TABLE in conn.introspection.table_names() else None
    except Exception as exc:  # the database is down: try again next time
        metrics.record_error("-", None, "outbox_check", exc, level=logging.WARNING, what="outbox")
        return None
    with _tables_lock:
        _tables[using] = name
    return name


def _is_enabled() -> bool:
    from .conf import project_settings

    return bool(project_settings()["OUTBOX"])


def reset(**kwargs: Any) -> None:
    """Forget which databases have the table (after ``migrate``, or ``DATABASES`` changes)."""
    with _tables_lock:
        _tables.clear()


def _db_for_write() -> str:
    return router.db_for_write(_model()) or DEFAULT_DB_ALIAS


def mark(using: str, targets: Iterable[tuple[str, str | None, Any, bool]]) -> dict[Any, Ref]:
    """Insert a marker row per ``(alias, tenant, keys, fanout)`` in *using*'s open transaction.

    *keys* is ``None`` for a tenant's marker (a drain flushes its namespace)
    and the version keys for the public namespace's. One ``INSERT`` for all
    of them, in plain SQL (the ORM's ``bulk_create`` costs about three times
    as much here, on every transaction that bumps). Returns ``{(alias,
    tenant): ref}``, ``{}`` when the database has no outbox table. Errors
    propagate: inside the caller's transaction they are the caller's (the
    write and its marker commit together or not at all).
    """
    targets = list(targets)
    if not targets or not available(using):
        return {}
    rows = [(alias, tenant, keys, (), fanout) for alias, tenant, keys, fanout in targets]
    ids = _insert(using, rows)
    return {(t[0], t[1]): (using, pk) for t, pk in zip(targets, ids, strict=True)}


_COLUMNS = ("created", "alias", "tenant", "keys", "tags", "fanout")


def _insert(using: str, rows: list[tuple[str, str | None, Any, Any, bool]]) -> list[int]:
    """Insert ``(alias, tenant, keys or None, tags, fanout)`` rows in one statement; their ids."""
    conn = connections[using]
    q = conn.ops.quote_name
    json = _model()._meta.get_field("keys")
    now = conn.ops.adapt_datetimefield_value(timezone.now())
    sql = f"INSERT INTO {_table(using)} ({', '.join(q(c) for c in _COLUMNS)}) VALUES "
    one = "(%s, %s, %s, %s, %s, %s)"

    def params(row: tuple[str, str | None, Any, Any, bool]) -> list[Any]:
        alias, tenant, keys, tags, fanout = row
        keys = None if keys is None else json.get_db_prep_value(list(keys), conn)
        return [now, alias, tenant, keys, json.get_db_prep_value(_plain(tags), conn), fanout]

    with conn.cursor() as cur:
        if conn.features.can_return_columns_from_insert:
            values = [p for row in rows for p in params(row)]
            cur.execute(sql + ", ".join([one] * len(rows)) + f" RETURNING {q('id')}", values)
            return [r[0] for r in cur.fetchall()]
        ids = []  # one statement per row, its key from lastrowid
        for row in rows:
            cur.execute(sql + one, params(row))
            ids.append(cur.lastrowid)
        return ids


def _set(ref: Ref, keys: list[str], tags: tuple | None, fanout: bool) -> None:
    """Give row *ref* these *keys* (and *tags*, unless ``None``) and *fanout*."""
    db, pk = ref
    conn = connections[db]
    q = conn.ops.quote_name
    json = _model()._meta.get_field("keys")
    sets = [f"{q('keys')} = %s", f"{q('fanout')} = %s"]
    params = [json.get_db_prep_value(list(keys), conn), fanout]
    if tags is not None:
        sets.append(f"{q('tags')} = %s")
        params.append(json.get_db_prep_value(_plain(tags), conn))
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE {_table(db)} SET {', '.join(sets)} WHERE {q('id')} = %s", [*params, pk]
        )


def remark(ref: Ref, keys: list[str], fanout: bool) -> None:
    """Give marker *ref* (the public namespace's) the keys bumped so far, in the open transaction.

    Errors propagate, as in :func:`mark`.
    """
    _set(ref, keys, None, fanout)


def record(
    using: str | None, entries: Iterable[tuple[str, str | None, list[str], tuple, bool]]
) -> list[Ref | None]:
    """Keep failed bumps in the outbox: one row per ``(alias, tenant, keys, tags, fanout)``.

    Called after the commit (autocommit), when a bump could not be written.
    Returns a ref per entry (``None`` when it could not be kept: no table, or
    the database failed too; logged and counted, the bump stays in memory).
    """
    entries = list(entries)
    db = using or _db_for_write()
    if not entries or not available(db):
        return [None] * len(entries)
    try:
        ids = _insert(db, [(a, t, list(k), tags, fanout) for a, t, k, tags, fanout in entries])
    except Exception as exc:  # the database failed too: the retry thread still has it
        metrics.record_error("-", None, "outbox_record", exc, what="outbox")
        return [None] * len(entries)
    return [(db, pk) for pk in ids]


def update(ref: Ref, keys: list[str], tags: tuple, fanout: bool = False) -> bool:
    """Turn marker *ref* into a row with exact version *keys* (a bump failed); True if done."""
    try:
        _set(ref, keys, tags, fanout)
    except Exception as exc:  # the marker stays: a drain flushes the tenant instead
        metrics.record_error("-", None, "outbox_record", exc, what="outbox")
        return False
    return True


def deletes_inline(using: str) -> bool:
    """True if outbox rows of database *using* are deleted only inside a request's transaction.

    SQLite (rollback journal) has one writer at a time: a ``DELETE`` from a
    background thread's connection can deadlock a request's transaction that
    read before writing (SQLite answers "database is locked" at once rather
    than wait). There rows to delete wait in a list of this process until the
    next transaction of any thread on that database deletes them
    (:func:`purge_here`, in its own commit) or the process exits; elsewhere
    they are deleted at once (the retry thread batches landed markers).
    """
    return connections[using].vendor == "sqlite"


# SQLite: ids of rows to delete in the next transaction of any thread, per database.
_deferred: dict[str, set[int]] = {}
_deferred_lock = threading.Lock()


def purge_here(using: str) -> list[int]:
    """Delete, in *using*'s open transaction, the rows waiting for one (SQLite); return their ids.

    They are gone once that transaction commits (:func:`purged`); on a
    rollback they stay listed for the next one.
    """
    with _deferred_lock:
        ids = sorted(_deferred.get(using, ()))
    if ids and available(using):
        _delete_ids(using, ids)
        return ids
    return []


def _delete_ids(using: str, ids: list[int]) -> None:
    conn = connections[using]
    in_ = ", ".join(["%s"] * len(ids))
    with conn.cursor() as cur:
        cur.execute(
            f"DELETE FROM {_table(using)} WHERE {conn.ops.quote_name('id')} IN ({in_})", ids
        )


def purged(using: str, ids: Iterable[int]) -> None:
    """The transaction that deleted *ids* (:func:`purge_here`) committed: forget them."""
    with _deferred_lock:
        waiting = _deferred.get(using)
        if waiting:
            waiting.difference_update(ids)


def waiting(using: str) -> set[int]:
    with _deferred_lock:
        return set(_deferred.get(using, ()))


def forget_deferred() -> None:
    """Delete the rows waiting for a transaction (SQLite) now: at exit, not left for a drain."""
    with _deferred_lock:
        refs = [(db, pk) for db, ids in _deferred.items() for pk in ids]
        _deferred.clear()
    _delete(refs)


def forget(refs: Iterable[Ref | None]) -> None:
    """Delete outbox rows whose bumps have landed (one ``DELETE`` per database).

    On SQLite the rows wait for the next transaction instead (see
    :func:`deletes_inline`). A failure is logged and counted: the row stays,
    and a later drain bumps again (an extra bump invalidates a little more,
    never less).
    """
    now = []
    for ref in refs:
        if ref is None:
            continue
        if deletes_inline(ref[0]):
            with _deferred_lock:
                _deferred.setdefault(ref[0], set()).add(ref[1])
        else:
            now.append(ref)
    _delete(now)


def _delete(refs: Iterable[Ref]) -> None:
    by_db: dict[str, list[int]] = {}
    for db, pk in refs:
        by_db.setdefault(db, []).append(pk)
    for db, pks in by_db.items():
        try:
            if _table(db) is not None:
                _delete_ids(db, pks)
        except Exception as exc:
            metrics.record_error("-", None, "outbox_forget", exc, what="outbox")


def forget_tenant(
    alias: str,
    tenant: str,
    keyed_before: datetime.datetime,
    marked_before: datetime.datetime,
    dry_run: bool = False,
) -> int:
    """Delete *tenant*'s rows of *alias* in every outbox database; return how many.

    Rows with keys written before *keyed_before*, markers (no keys) written
    before *marked_before*: those a namespace bump made then covers (a purge:
    the tenant is erased). *dry_run*: count them, delete nothing. Errors
    propagate.
    """
    total = 0
    for db in databases():
        conn = connections[db]
        q = conn.ops.quote_name
        adapt = conn.ops.adapt_datetimefield_value
        where = (
            f"{_table(db)} WHERE {q('alias')} = %s AND {q('tenant')} = %s AND ("
            f"({q('keys')} IS NOT NULL AND {q('created')} <= %s) OR "
            f"({q('keys')} IS NULL AND {q('created')} <= %s))"
        )
        params = [alias, tenant, adapt(keyed_before), adapt(marked_before)]
        with conn.cursor() as cur:
            if dry_run:
                cur.execute(f"SELECT COUNT(*) FROM {where}", params)
                total += cur.fetchone()[0]
            else:
                cur.execute(f"DELETE FROM {where}", params)
                total += max(cur.rowcount, 0)
    return total


def _plain(tags: Iterable[Any]) -> list[list[str]]:
    return [[str(name), str(instance)] for name, instance in tags]


@dataclass
class DrainReport:
    """What a drain did: rows applied and deleted, rows left (their bump failed).

    ``failed_spaces``: the version spaces (store alias, PREFIX) whose bumps
    failed, so a store's recovery waits only for its own rows.
    """

    applied: int = 0
    failed: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)
    failed_spaces: set[tuple] = field(default_factory=set)


@dataclass
class Row:
    """One outbox row, as :func:`pending` reads it."""

    pk: int
    created: datetime.datetime
    alias: str
    tenant: str | None
    keys: list[str] | None
    tags: list[list[str]]
    fanout: bool

    def __str__(self) -> str:
        what = "namespace flush" if self.keys is None else f"{len(self.keys)} version key(s)"
        return f"{what} for tenant {self.tenant!r} on alias {self.alias!r}"


def pending(
    using: str,
    keyed_before: datetime.datetime | None = None,
    marked_before: datetime.datetime | None = None,
    after: int = 0,
    limit: int = 500,
) -> list[Row]:
    """Read outbox rows of *using* by id: with keys written before *keyed_before*, markers
    (no keys) before *marked_before* (``None``: any time)."""
    conn = connections[using]
    q = conn.ops.quote_name
    field_ = _model()._meta
    far = timezone.now() + datetime.timedelta(days=36500)
    adapt = conn.ops.adapt_datetimefield_value
    cols = ", ".join(q(c) for c in ("id", *_COLUMNS))
    sql = (
        f"SELECT {cols} FROM {_table(using)} WHERE {q('id')} > %s AND ("
        f"({q('keys')} IS NOT NULL AND {q('created')} <= %s) OR "
        f"({q('keys')} IS NULL AND {q('created')} <= %s)) ORDER BY {q('id')} LIMIT %s"
    )
    params = [after, adapt(keyed_before or far), adapt(marked_before or far), limit]
    with conn.cursor() as cur:
        cur.execute(sql, params)
        fetched = cur.fetchall()
    created, keys, tags = (field_.get_field(n) for n in ("created", "keys", "tags"))
    out = []
    for pk, when, alias, tenant, k, t, fanout in fetched:
        out.append(
            Row(
                pk,
                _from_db(created, when, conn),
                alias,
                tenant,
                _from_db(keys, k, conn),
                _from_db(tags, t, conn) or [],
                bool(fanout),
            )
        )
    return out


def backlog(using: str, older_than: float = 0.0) -> dict[tuple[str, str | None], int]:
    """Return ``{(alias, tenant): rows}`` of *using*'s outbox rows older than *older_than* seconds.

    Rows that old are bumps (or markers) that did not land and be deleted in
    time: the outbox's backlog, across every process (read by the Prometheus
    collector and the operator page). This process's own landed markers that
    wait for its next transaction to delete them (SQLite) are left out;
    another process's cannot be told apart. ``{}`` when *using* has no
    outbox table.
    """
    table = _table(using)
    if table is None:
        return {}
    conn = connections[using]
    q = conn.ops.quote_name
    before = conn.ops.adapt_datetimefield_value(
        timezone.now() - datetime.timedelta(seconds=older_than)
    )
    sql = f"SELECT {q('alias')}, {q('tenant')}, COUNT(*) FROM {table} WHERE {q('created')} <= %s"
    params: list[Any] = [before]
    landed = sorted(waiting(using))
    if landed:
        sql += f" AND {q('id')} NOT IN ({', '.join(['%s'] * len(landed))})"
        params += landed
    sql += f" GROUP BY {q('alias')}, {q('tenant')}"
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return {(alias, tenant): n for alias, tenant, n in cur.fetchall()}


def _from_db(model_field: Any, value: Any, conn: Any) -> Any:
    """A column read by plain SQL, converted as the ORM would (``from_db_value`` and converters)."""
    for converter in conn.ops.get_db_converters(
        model_field.get_col(model_field.model._meta.db_table)
    ):
        value = converter(value, model_field, conn)
    from_db = getattr(model_field, "from_db_value", None)
    return from_db(value, None, conn) if from_db is not None else value


def databases() -> list[str]:
    """Return the database aliases that have the outbox table."""
    return [db for db in connections if available(db)]
