"""When a cached value may be written, given the database transactions open.

The rules, per thread (Django connections are per thread):

* Outside any transaction (autocommit) values are stored at once.
* A transaction with tag bumps of ours still queued (it wrote a registered
  model) is *dirty*: tagged reads bypass the cache entirely, so a writer sees
  its own writes and never caches them.
* Otherwise, inside a transaction, a value is stored only after the commit
  (``on_commit``), so a rolled-back transaction stores nothing; and only when
  the database gives each statement a fresh snapshot (PostgreSQL READ
  COMMITTED, MySQL READ COMMITTED, SQLite in rollback-journal mode). Under
  snapshot isolation a value could have been read before a commit whose bump
  we already observed, so it is not stored.

Atomic blocks opened by Django's ``TestCase`` do not count as transactions
here: tests see the same behaviour as autocommit code.

Every ``on_commit`` hook of ours goes through :func:`on_commit`: it never
raises into Django's hook loop (an error is logged with alias, tenant and
operation, and counted), and a hook that must run (a tag bump) is placed
before any hook that could stop the loop.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import AsyncToSync, sync_to_async
from django.db import connections
from django.db import transaction as django_transaction

from . import metrics

__all__ = [
    "CommitHook",
    "WriteMode",
    "caller_thread",
    "in_caller_thread",
    "on_commit",
    "open_transactions",
    "read_bypassed",
    "write_mode",
]

logger = logging.getLogger("fragmented_keys_django")


class CommitHook:
    """A callable for ``on_commit`` that never raises and carries a name for Django's logs.

    Django runs commit hooks in order and stops at the first non-robust hook
    that raises; when a robust hook raises, it logs ``func.__qualname__``
    (which a ``functools.partial`` or a callable object lacks, so the logging
    itself raises and the hooks after it are dropped). A ``CommitHook`` runs
    *func*, and an exception from it is logged at ERROR with *alias*,
    *tenant* and *operation* and counted (``metrics.snapshot()``), never
    raised. ``dirty`` marks hooks whose transaction has written data our
    cache depends on (tag bumps): reads inside it bypass the cache.
    """

    dirty = False

    def __init__(
        self,
        func: Callable[[], Any] | None,
        operation: str,
        *,
        alias: str = "-",
        tenant: str | None = None,
    ) -> None:
        self.func = func
        self.operation = operation
        self.alias = alias
        self.tenant = tenant
        self.__qualname__ = self.__name__ = f"fragmented_keys_django:{operation}"

    def run(self) -> None:
        """Do the hook's work (subclasses override; the default calls *func*)."""
        if self.func is not None:
            self.func()

    def __call__(self) -> None:
        try:
            self.run()
        except Exception as exc:  # never into Django's hook loop: logged and counted
            metrics.record_error(
                self.alias, self.tenant, self.operation, exc, what="on_commit hook failed"
            )


def on_commit(hook: CommitHook, using: str, *, first: bool = False) -> None:
    """Run *hook* after the commit of *using*'s open transaction (at once in autocommit).

    Follows ``django.db.transaction.on_commit`` (robust, discarded with a
    rolled-back savepoint). With *first* the hook is placed before the first
    non-robust hook already queued, so no other hook's failure can stop it
    from running (Django stops at a raising non-robust hook).
    """
    conn = connections[using]
    queued = conn.run_on_commit
    if not (first and conn.in_atomic_block and isinstance(queued, list)):
        django_transaction.on_commit(hook, using=using, robust=True)
        return
    at = next(
        (i for i, entry in enumerate(queued) if len(entry) == 3 and not entry[2]), len(queued)
    )
    # The entry Django's own on_commit() appends: (savepoint ids, callable, robust).
    queued.insert(at, (set(conn.savepoint_ids), hook, True))


class WriteMode(enum.Enum):
    NOW = "now"  # store immediately
    DEFER = "defer"  # store on commit of the one open transaction
    SKIP = "skip"  # do not store (serve hits only)
    BYPASS = "bypass"  # dirty transaction: neither read nor store


def _real_blocks(conn: Any) -> bool:
    if not conn.in_atomic_block:
        return False
    return any(not getattr(b, "_from_testcase", False) for b in conn.atomic_blocks)


def open_transactions() -> list[Any]:
    """Return this thread's connections inside a real (non-TestCase) atomic block."""
    return [c for c in connections.all(initialized_only=True) if _real_blocks(c)]


def has_pending_bumps(conn: Any) -> bool:
    """Return True if *conn*'s open transaction has tag bumps of ours queued."""
    return any(getattr(hook[1], "dirty", False) for hook in conn.run_on_commit)


def _statement_snapshots(conn: Any) -> bool:
    vendor = conn.vendor
    if vendor == "postgresql":
        # Django sets conn.isolation_level to the driver's IsolationLevel enum
        # (psycopg 3: READ_COMMITTED == 2; psycopg 2: == 1): compare to it.
        from django.db.backends.postgresql.psycopg_any import IsolationLevel

        level = getattr(conn, "isolation_level", None)
        return level is None or level == IsolationLevel.READ_COMMITTED
    if vendor == "sqlite":
        with conn.cursor() as cur:
            cur.execute("PRAGMA journal_mode")
            mode = cur.fetchone()[0]
        return str(mode).lower() != "wal"
    if vendor == "mysql":
        level = conn.settings_dict.get("OPTIONS", {}).get("isolation_level")
        return str(level).lower() == "read committed"
    return False


def write_mode() -> tuple[WriteMode, str | None]:
    """Return how a tagged value may be stored now, and the DB alias to defer to."""
    open_ = open_transactions()
    if not open_:
        return WriteMode.NOW, None
    if any(has_pending_bumps(c) for c in open_):
        return WriteMode.BYPASS, None
    if len(open_) == 1 and _statement_snapshots(open_[0]):
        return WriteMode.DEFER, open_[0].alias
    return WriteMode.SKIP, None


# Connections of this thread on which we queued bumps. Django's database
# connections are per thread, so this registry is too; it lets the hot read
# path answer "is a dirty transaction open?" without walking every connection.
_dirty = threading.local()


# Idents of threads that may hold a dirty transaction (a superset: a thread
# leaves when its read_bypassed() finds none). Lets async code skip asking its
# calling thread when no thread can have one.
_dirty_threads: set[int] = set()


def note_pending_bump(conn: Any) -> None:
    """Remember that *conn* (this thread's connection) has a bump of ours queued."""
    conns = getattr(_dirty, "conns", None)
    if conns is None:
        conns = _dirty.conns = set()
    conns.add(conn)
    _dirty_threads.add(threading.get_ident())


def read_bypassed() -> bool:
    """Return True if tagged reads must skip the cache (a dirty transaction is open)."""
    conns = getattr(_dirty, "conns", None)
    if not conns:
        return False
    for c in list(conns):
        if c.in_atomic_block and has_pending_bumps(c):
            return True
        conns.discard(c)  # committed, or its bumps were rolled back
    _dirty_threads.discard(threading.get_ident())
    return False


def any_dirty_thread() -> bool:
    """False only if no thread of this process can hold a dirty transaction now."""
    return bool(_dirty_threads)


# -- async code called from a sync thread ------------------------------------------------------


def caller_thread() -> bool:
    """True if this async code runs inside ``async_to_sync`` called from a sync thread.

    That thread may hold an open transaction (Django's connections and
    their ``atomic()`` blocks are per thread), which the async code must obey
    exactly as sync code in that thread would. Native async code (an ASGI
    view, a task on an event loop) can hold no transaction: Django's
    ``atomic()`` is sync-only.
    """
    return getattr(AsyncToSync.executors, "current", None) is not None


async def in_caller_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run *func* in the sync thread that called this async code (``caller_thread()``).

    A ``sync_to_async(thread_sensitive=True)`` hop, made only then: that is
    where the caller's transaction lives.
    """
    return await sync_to_async(func, thread_sensitive=True)(*args, **kwargs)
