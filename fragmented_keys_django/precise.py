"""Exclusion windows: statements whose rows a precise bump already covers stay out of the safety net.

A ``save()``, ``delete()`` or m2m change of a registered model, and the bulk
methods of ``CacheAwareManager``, bump the changed rows' tags precisely. The
statements they issue must not also make the net bump the whole model (see
``net.py``): while such a path runs, a *window* says "writes of kind K to
table T on database D are covered for tag names N".

A window must never outlive the write it covers: a window left open would
hide a later raw write by the same thread (stale data). So:

* a window opened by a ``pre_*`` signal is tied to the frame of the call that
  sent the signal (``Model.save_base``, ``Collector.delete``, the related
  manager's ``_add_items``...): once that call has returned, normally or by an
  exception anywhere in between (a failing statement, a failing receiver), the
  window is dead, whether or not the matching ``post_*`` signal came;
* a window opened for one ``save()`` covers, per table, one effective write (an
  ``INSERT``, or an ``UPDATE`` that reported rows): a ``post_save`` receiver
  writing the same table afterwards is netted;
* :func:`precise_write` is a context manager: its window closes on exit,
  exception or not.

When unsure, a window covers less, never more: a statement the net bumps
needlessly costs speed, one it misses costs correctness.

Windows are per thread, like Django's database connections: a window opened
in one thread never hides a statement of another.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from django.dispatch import dispatcher

from .sql_writes import bare_table_name

__all__ = ["Window", "covered_names", "precise_write"]

#: Statement kinds a ``save()`` writes.
SAVE_KINDS = frozenset({"INSERT", "UPDATE"})
#: Statement kinds a ``delete()`` of the collected rows writes.
DELETE_KINDS = frozenset({"DELETE"})
#: Statement kinds an m2m ``add``/``remove``/``clear``/``set`` writes to the through table.
M2M_KINDS = frozenset({"INSERT", "DELETE"})
#: Statement kinds a ``CacheAwareQuerySet``/``CacheAwareManager`` bulk method writes.
ANY_KIND = frozenset({"INSERT", "UPDATE", "DELETE"})

_local = threading.local()


class Window:
    """Writes of *kinds* to *tables* on database *using* (``None``: any) are covered for *names*.

    *frame*: the window lives while this frame is executing (``None``: until
    closed). *once*: each table is covered for one effective write only.
    *key*: what opened it (a model class), for :func:`close`.
    """

    __slots__ = ("frame", "key", "kinds", "names", "once", "spent", "tables", "using")

    def __init__(
        self,
        frame: FrameType | None,
        using: str | None,
        tables: frozenset[str],
        names: frozenset[str],
        kinds: frozenset[str],
        once: bool,
        key: Any = None,
    ) -> None:
        self.frame = frame
        self.using = using
        self.tables = tables
        self.names = names
        self.kinds = kinds
        self.once = once
        self.key = key
        self.spent: set[str] = set()

    def covers(self, using: str, table: str, kind: str) -> bool:
        """Return True if a write of *kind* to *table* on *using* is covered now."""
        return (
            (self.using is None or self.using == using)
            and table in self.tables
            and kind in self.kinds
            and table not in self.spent
        )


def _windows() -> list[Window]:
    got = getattr(_local, "windows", None)
    if got is None:
        got = _local.windows = []
    return got


def model_tables(model: Any) -> frozenset[str]:
    """Return the tables a save or delete of *model* writes: its concrete model's and its MTI parents'."""
    concrete = model._meta.concrete_model
    return frozenset(
        bare_table_name(m._meta.db_table) for m in (concrete, *concrete._meta.get_parent_list())
    )


def caller_frame(skip: Iterable[str]) -> FrameType | None:
    """Return the frame of the nearest caller whose code is not in one of the files *skip*.

    A signal receiver asks for the frame that sent the signal (skipping its
    own module and Django's dispatcher).
    """
    skipped = frozenset(skip)
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename in skipped:
        f = f.f_back
    return f


def open_window(window: Window) -> None:
    """Start *window* in this thread (a ``pre_*`` receiver's job); dead windows are dropped first."""
    windows = _live(_windows())
    for w in windows:
        if (
            w.frame is window.frame
            and w.key is window.key
            and w.using == window.using
            and not w.spent
            and w.tables == window.tables
            and w.names == window.names
        ):
            return  # the same window again (one pre_delete per collected row)
    windows.append(window)


def close(frame: FrameType | None, key: Any) -> None:
    """End this thread's windows opened from *frame* by *key* (a ``post_*`` receiver's job)."""
    windows = _windows()
    windows[:] = [w for w in windows if not (w.frame is frame and w.key is key)]


def _live(windows: list[Window]) -> list[Window]:
    """Drop the windows whose frame is no longer executing; return the list (changed in place)."""
    framed = {id(w.frame) for w in windows if w.frame is not None}
    if not framed:
        return windows
    found: set[int] = set()
    f: FrameType | None = sys._getframe(1)
    while f is not None and len(found) < len(framed):
        if id(f) in framed:
            found.add(id(f))
        f = f.f_back
    if len(found) < len(framed):
        windows[:] = [w for w in windows if w.frame is None or id(w.frame) in found]
    return windows


def covered_names(using: str, table: str, kind: str) -> tuple[frozenset[str], Window | None]:
    """Return the tag names a write of *kind* to *table* on *using* is covered for, and the window to spend.

    The window returned is the innermost live one covering the write with a
    per-table budget (``once``); pass it to :func:`spend` once the write is
    known to be effective.
    """
    windows = getattr(_local, "windows", None)
    if not windows:
        return frozenset(), None
    names: frozenset[str] = frozenset()
    budget = None
    direct = _direct_frames({id(w.frame) for w in _live(windows) if w.frame is not None})
    for w in windows:
        if w.covers(using, table, kind) and (w.frame is None or id(w.frame) in direct):
            names = names | w.names
            if w.once:
                budget = w
    return names, budget


_DISPATCHER = dispatcher.__file__


def _direct_frames(wanted: set[int]) -> set[int]:
    """Return those of the *wanted* frames that this statement runs in directly.

    A frame counts when no signal dispatch lies between it and the statement:
    a window covers the statements Django's save, delete or m2m call issues
    itself, not those of a signal receiver (another app's ``post_delete``
    writing the same table) called while that call runs.
    """
    found: set[int] = set()
    f: FrameType | None = sys._getframe(2)
    while f is not None and len(found) < len(wanted):
        if f.f_code.co_filename == _DISPATCHER:
            break  # frames above run this statement through a receiver
        if id(f) in wanted:
            found.add(id(f))
        f = f.f_back
    return found


def spend(window: Window, table: str) -> None:
    """Use up *window*'s cover of *table* (its save wrote the row)."""
    window.spent.add(table)


@contextmanager
def precise_write(model: Any, names: Iterable[str], using: str | None = None) -> Iterator[None]:
    """Keep the statements of this block that write *model*'s tables out of the safety net.

    For code that bumps the written rows' tags precisely itself
    (``CacheAwareQuerySet.update``/``delete``, ``CacheAwareManager.bulk_create``/
    ``bulk_update``): *model* is a model class (its concrete table and its MTI
    parents' tables are covered), *names* the tag names the precise bump
    covers (those of other models sharing a table are still netted), *using*
    the database alias (``None``: any). The window closes when the block exits,
    by an exception too.
    """
    # Framed by the caller, so that a signal receiver run inside the block (the
    # delete of a disconnected registration sends post_delete) is not covered.
    frame = caller_frame((__file__, contextlib.__file__))
    window = Window(frame, using, model_tables(model), frozenset(names), ANY_KIND, False)
    windows = _windows()
    windows.append(window)
    try:
        yield
    finally:
        windows = _windows()
        if window in windows:
            windows.remove(window)
