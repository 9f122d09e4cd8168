"""Django's database cache on a connection of its own while the caller's transaction is open.

Django's ``DatabaseCache`` runs its SQL on this thread's connection to the
database its router names (``router.db_for_read`` / ``db_for_write`` of the
cache's model). Inside the caller's ``atomic()`` (every request with
``ATOMIC_REQUESTS``) that makes every store operation part of the caller's
transaction:

* a version row created on a miss stays uncommitted: a writer that commits
  and bumps meanwhile blocks on it, then hits the unique violation the cache
  swallows, reads the reader's token back and would count its bump as landed;
* a stampede lock is invisible to other callers (who block on its row instead
  of waiting for the value), and entries and versions written there vanish if
  the caller rolls back;
* under REPEATABLE READ every read sees the transaction's snapshot: a version
  bumped after the snapshot was taken still looks current.

So a store that is a ``DatabaseCache`` is wrapped, once, in
:class:`IsolatedDatabaseCache`. Each of its operations looks at this thread's
connection to the database the cache uses; when that connection is inside a
transaction (an ``atomic`` block, or autocommit turned off), the operation
runs instead on a connection of this thread's own, made from the same
``DATABASES`` entry and kept in autocommit: what it writes is committed at
once, what it reads is current. Outside a transaction the caller's connection
is used as before (it is in autocommit). Inside Django's ``TestCase`` (whose
transaction is never committed) the test's connection is kept: the cache rows
roll back with the test's data, and no test waits on its own locks.

SQLite is left alone. A second connection to a SQLite file would wait for the
caller's transaction (rollback journal: the caller's read lock blocks its
commit, the caller's write lock blocks its writes; WAL: the caller's write
lock blocks its writes), up to the busy timeout, whenever the caller has read
or written in that transaction. Nor is it needed: SQLite has one writer at a
time, and a reader's transaction that created a version row holds that lock
until it ends, so a writer cannot commit (same file) between the creation and
the reader's commit; its bump reads the reader's token and replaces it. A
cache in a separate SQLite file is covered by the bump's read-back
(:func:`fragmented_keys_django.versions.bump` rewrites a version it did not
find before unless it reads back its own token).

Connections: at most one extra connection per thread and per database alias
holding a cache table, opened on first use inside a transaction. Like Django's
own it is closed at request start and end when unusable or older than
``CONN_MAX_AGE`` (so with the default 0 a request that used it opens one more
connection), and closed when its thread ends, and when Django connects
without a database to create or drop one (a test database).
:func:`close_own_connections` closes this thread's at once. Lock waits on it are capped at
:data:`LOCK_WAIT` seconds (PostgreSQL ``lock_timeout``, MySQL
``innodb_lock_wait_timeout``): if the caller's own transaction holds a row it
needs (the store alias used directly inside that transaction and culling, for
example), the operation fails after that wait, like any dropped write of the
database cache, instead of waiting forever for a transaction that waits for it.
(Not with Django's connection pool, ``OPTIONS["pool"]``: the setting would stay on
the pooled connection. The own connections come from that pool then.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.db import DatabaseCache
from django.core.signals import request_finished, request_started
from django.db import connections, router
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created
from django.db.utils import load_backend

__all__ = ["LOCK_WAIT", "IsolatedDatabaseCache", "close_own_connections", "isolate"]

logger = logging.getLogger("fragmented_keys_django")

#: Seconds an operation on an own connection waits for a row lock before failing.
LOCK_WAIT = 1

# The cache operations of Django's BaseCache run on the own connection; each
# gets an async twin ("a" + name) that runs it through sync_to_async, as
# BaseCache's own a* methods do.
_OPERATIONS = (
    "get",
    "get_many",
    "set",
    "set_many",
    "add",
    "touch",
    "delete",
    "delete_many",
    "has_key",
    "get_or_set",
    "incr",
    "decr",
    "incr_version",
    "decr_version",
    "clear",
)


def isolate(store: Any) -> Any:
    """Return *store* wrapped in :class:`IsolatedDatabaseCache` if it needs it, else *store*.

    *store* is a Django cache backend. Only a ``DatabaseCache`` whose router
    sends its table to a database other than SQLite is wrapped; any other
    store is returned as is, so nothing changes on its path. Called once per
    store object (when a fragmented alias resolves its store, or a tenant's
    store is built).
    """
    if not isinstance(store, DatabaseCache):
        return store
    model = store.cache_model_class
    aliases = {router.db_for_read(model), router.db_for_write(model)}
    if all(connections[alias].vendor == "sqlite" for alias in aliases):
        return store
    return IsolatedDatabaseCache(store)


class IsolatedDatabaseCache:
    """A ``DatabaseCache`` whose operations never run inside the caller's transaction.

    Wraps a Django ``DatabaseCache`` (*store*) and offers its cache API
    (``get``, ``get_many``, ``set``, ``set_many``, ``add``, ``touch``,
    ``delete``, ``delete_many``, ``has_key``, ``get_or_set``, ``incr``,
    ``decr``, ``incr_version``, ``decr_version``, ``clear`` and their ``a*``
    twins), with Django's semantics
    (including what it swallows: a failed write returns quietly). Each call
    runs on this thread's own autocommit connection to a database where this
    thread's connection is in a transaction (see the module docstring);
    anything else (``make_key``, ``default_timeout``, ``_max_entries``, ...)
    is the wrapped store's.
    """

    __slots__ = ("__weakref__", "_model", "store")

    def __init__(self, store: DatabaseCache) -> None:
        object.__setattr__(self, "store", store)
        object.__setattr__(self, "_model", store.cache_model_class)

    def __getattr__(self, name: str) -> Any:
        if name in IsolatedDatabaseCache.__slots__:
            raise AttributeError(name)  # not set yet (copy, unpickling): no recursion
        return getattr(self.store, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.store, name, value)  # e.g. _max_entries: a setting of the store

    def __repr__(self) -> str:
        return f"<IsolatedDatabaseCache of {self.store!r}>"

    def close(self, **kwargs: Any) -> None:
        """Close the wrapped store (own connections close at request end, see the module)."""
        self.store.close(**kwargs)

    async def aclose(self, **kwargs: Any) -> None:
        """Async twin of :meth:`close`."""
        await self.store.aclose(**kwargs)

    @contextlib.contextmanager
    def _outside_transactions(self) -> Iterator[None]:
        """Point this thread's connections that are in a transaction at own ones, for the block.

        The aliases are the ones ``DatabaseCache`` itself asks the router for
        on every call; ``connections[alias] = ...`` is Django's own way to
        give a thread another connection (``LiveServerThread`` does it).
        """
        model = self._model
        swapped = []
        for alias in {router.db_for_read(model), router.db_for_write(model)}:
            caller = connections[alias]
            if caller.vendor == "sqlite" or not _in_transaction(caller):
                continue
            connections[alias] = _own_connection(alias)
            swapped.append((alias, caller))
        if not swapped:
            yield
            return
        try:
            yield
        finally:
            for alias, caller in swapped:
                own = connections[alias]
                connections[alias] = caller
                if own.errors_occurred:  # Django's check after an error: ping, reconnect if dead
                    if own.connection is not None and own.is_usable():
                        own.errors_occurred = False
                    else:
                        own.close()


def _in_transaction(conn: Any) -> bool:
    """True if *conn* (a Django connection) is in a transaction of the caller's.

    An ``atomic`` block, or autocommit turned off. Not the blocks of Django's
    ``TestCase`` (nor those nested in them): a test's cache rows stay in the
    test's transaction and roll back with its data, as before.
    """
    if conn.in_atomic_block:
        return not conn.atomic_blocks[0]._from_testcase
    if conn.connection is None:
        return not conn.settings_dict["AUTOCOMMIT"]
    return not conn.autocommit


def _operation(name: str) -> Any:
    def run(self: IsolatedDatabaseCache, *args: Any, **kwargs: Any) -> Any:
        with self._outside_transactions():
            return getattr(self.store, name)(*args, **kwargs)

    async def arun(self: IsolatedDatabaseCache, *args: Any, **kwargs: Any) -> Any:
        return await sync_to_async(getattr(self, name), thread_sensitive=True)(*args, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"``DatabaseCache.{name}``, outside the caller's transaction."
    arun.__name__ = arun.__qualname__ = f"a{name}"
    arun.__doc__ = f"Async twin of :meth:`{name}` (``sync_to_async``, as Django's ``a{name}``)."
    return run, arun


for _name in _OPERATIONS:
    _run, _arun = _operation(_name)
    setattr(IsolatedDatabaseCache, _name, _run)
    setattr(IsolatedDatabaseCache, f"a{_name}", _arun)
del _name, _run, _arun


# -- own connections, one per thread and database alias -------------------------

_own = threading.local()
# Every own connection alive, to recognise them in connection_created.
_all_own: weakref.WeakSet[Any] = weakref.WeakSet()


class _Own:
    """This thread's own connection to one database alias, and the settings it was made from."""

    __slots__ = ("conn", "source")

    def __init__(self, alias: str) -> None:
        source = connections.settings[alias]
        self.source = dict(source)
        # The same DATABASES entry, always in autocommit: what it writes is committed at once.
        self.conn = load_backend(source["ENGINE"]).DatabaseWrapper(
            {**source, "AUTOCOMMIT": True}, alias
        )
        _all_own.add(self.conn)

    def close(self) -> None:
        """Close the connection with Django's ``close`` (back to its pool, if any), from any thread."""
        conn = self.conn
        if conn.connection is None:
            return
        conn.inc_thread_sharing()  # __del__ may run in another thread than the owner
        try:
            conn.close()
        except Exception as exc:  # closing a broken connection: nothing left to do
            logger.debug("closing an own database-cache connection failed: %s", exc)
        finally:
            conn.dec_thread_sharing()

    def __del__(self) -> None:  # the thread ended (its threading.local is gone)
        self.close()


def _own_connection(alias: str) -> Any:
    """Return this thread's own connection to *alias* (made on first use, remade if settings change)."""
    owned = _own.__dict__.setdefault("by_alias", {})
    entry = owned.get(alias)
    if entry is None or entry.source != connections.settings[alias]:
        if entry is not None:
            entry.close()
        entry = owned[alias] = _Own(alias)
    return entry.conn


def close_own_connections() -> None:
    """Close every own connection of this thread (they reopen on next use)."""
    for entry in getattr(_own, "by_alias", {}).values():
        entry.close()


def close_old_own_connections(**kwargs: Any) -> None:
    """Close this thread's own connections that are unusable or past ``CONN_MAX_AGE``.

    Django's rule for its own connections (``close_old_connections``), run at
    the same moments: request start and end.
    """
    for entry in getattr(_own, "by_alias", {}).values():
        entry.conn.close_if_unusable_or_obsolete()


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created``: cap row-lock waits of an own connection at :data:`LOCK_WAIT`.

    And when Django connects to the server without a database (``NO_DB_ALIAS``:
    to create or drop one, e.g. a test database), close this thread's own
    connections, which would keep ``DROP DATABASE`` from running.
    """
    if connection.alias == NO_DB_ALIAS:
        close_own_connections()
        return
    if connection not in _all_own or connection.settings_dict.get("OPTIONS", {}).get("pool"):
        return  # (a session setting would stay on a pooled connection: not set there)
    statement = {
        "postgresql": f"SET lock_timeout = '{LOCK_WAIT}s'",
        "mysql": f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT}",
    }.get(connection.vendor)
    if statement:
        with connection.cursor() as cursor:
            cursor.execute(statement)


request_started.connect(close_old_own_connections, dispatch_uid="fkd:own-connections:start")
request_finished.connect(close_old_own_connections, dispatch_uid="fkd:own-connections:finish")
connection_created.connect(_on_connection_created, dispatch_uid="fkd:own-connections:created")
