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
"""

from __future__ import annotations

import enum
import threading
from typing import Any

from django.db import connections

__all__ = ["WriteMode", "open_transactions", "read_bypassed", "write_mode"]


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
    from .invalidation import PendingBump

    return any(isinstance(hook[1], PendingBump) for hook in conn.run_on_commit)


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


def note_pending_bump(conn: Any) -> None:
    """Remember that *conn* (this thread's connection) has a bump of ours queued."""
    conns = getattr(_dirty, "conns", None)
    if conns is None:
        conns = _dirty.conns = set()
    conns.add(conn)


def read_bypassed() -> bool:
    """Return True if tagged reads must skip the cache (a dirty transaction is open)."""
    conns = getattr(_dirty, "conns", None)
    if not conns:
        return False
    for c in list(conns):
        if c.in_atomic_block and has_pending_bumps(c):
            return True
        conns.discard(c)  # committed, or its bumps were rolled back
    return False
