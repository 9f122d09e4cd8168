"""Dependencies that propagate: what a cached computation read, recorded in the entry it stores.

When a computation cached through ``get_or_set_with_tags`` (``@tagged_cache``,
``{% tagged_cache %}``, ``@tagged_cache_page``) reads other tagged entries while
it runs, its entry also depends on theirs ("Russian-doll" caching): a bump of an
inner tag makes the outer entry miss too. The outer entry's key cannot know the
tags found while computing it, so they travel in the entry itself: the version
keys the computation read and the tokens it read them at
(:class:`Dependencies`); a read serves the entry only if each of them still
holds that token.

Each computation has its own :class:`Frame`, the value of a ``ContextVar`` set
by the drivers around the caller's loader (:data:`~.drivers.COMPUTE`): threads
and asyncio tasks keep their own; a task started inside the computation
(``asyncio.gather``) and code run through ``sync_to_async`` / ``async_to_sync``
carry a copy of the context, so they see the same frame and record into it. A
thread started by hand (``threading.Thread``, a ``ThreadPoolExecutor``) starts
with an empty context: run its work with ``contextvars.copy_context().run``
(see docs/concepts.md, "Nested caches"), or its reads are not recorded.

Reads record into the frame current when they run:

* a hit records the entry's own version tokens and the dependencies it holds;
* a computed inner value records the tokens read before it was computed, and
  what its own frame recorded;
* what cannot be known (an inner value computed without reading its versions:
  a pending bump, a store error, a value served by another caller's
  computation, a read of another store, a version not created yet) *breaks*
  the frame: the outer value is returned but not stored.

Per process, :func:`remembered` keeps the dependency keys last seen in each
entry, so the next read of that entry fetches them in the same round trip as
the entry (one ``MGET`` on Redis, one ``get_many`` elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple

__all__ = [
    "Dependencies",
    "Frame",
    "current",
    "forget",
    "remember",
    "remembered",
]


class Dependencies(NamedTuple):
    """What an entry depends on besides its own tags: version *keys* and the *tokens* read."""

    keys: tuple[str, ...]
    tokens: tuple[Any, ...]


class Frame:
    """What one computation read: ``{version key: token}`` in one *store*; broken when unknowable.

    *store* names where the computing entry lives (its version space's store
    alias): only versions of that store can be checked when the entry is read.
    Thread-safe for what it is used for (``dict.setdefault`` and a flag).
    """

    __slots__ = ("broken", "deps", "store")

    def __init__(self, store: str) -> None:
        self.store = store
        self.deps: dict[str, Any] = {}
        self.broken = False

    def record(self, store: str, keys: Sequence[str], tokens: Sequence[Any]) -> None:
        """Record that the computation read *keys* at *tokens* in *store*.

        The first token read of a key is kept: a later read that found another
        one means a bump came meanwhile, and the first makes the entry miss.
        A missing version (``None``) or another store breaks the frame.
        """
        if store != self.store:
            self.broken = True
            return
        deps = self.deps
        for key, token in zip(keys, tokens, strict=True):
            if token is None:
                self.broken = True
                return
            deps.setdefault(key, token)

    def record_entry(
        self, store: str, keys: Sequence[str], tokens: Sequence[Any], env: Any
    ) -> None:
        """Record a hit: the entry's own *keys* at *tokens*, and the dependencies *env* holds."""
        self.record(store, keys, tokens)
        held = env[-1] if type(env) is tuple and len(env) in (3, 5) else None
        if held is not None:
            self.record(store, held[0], held[1])

    def merge(self, inner: Frame) -> None:
        """Take what an inner computation's frame recorded."""
        if inner.broken:
            self.broken = True
        elif inner.deps:
            self.record(inner.store, tuple(inner.deps), tuple(inner.deps.values()))

    def dependencies(self, own: Sequence[str], tokens: Sequence[Any]) -> Dependencies | None:
        """The dependencies to store with an entry whose own version *keys* hold *tokens*.

        Keys read at the entry's own token are left out (the entry checks them
        anyway); ``None`` when nothing is left.
        """
        mine = dict(zip(own, tokens, strict=True))
        kept = {k: t for k, t in self.deps.items() if mine.get(k, _ABSENT) != t}
        if not kept:
            return None
        return Dependencies(tuple(kept), tuple(kept.values()))


_ABSENT = object()

#: The frame of the computation running in this context (``None`` outside any).
_current: ContextVar[Frame | None] = ContextVar("fragmented_keys_computation", default=None)


def current() -> Frame | None:
    """Return the frame of the cached computation running in this context, or ``None``."""
    return _current.get()


# Dependency keys last seen per entry key: fetched with the entry on its next read.
_remembered: dict[str, tuple[str, ...]] = {}
#: How many keys ``_remembered`` may hold in all (about 100 bytes each) before it is
#: forgotten at once: a page entry can depend on hundreds of keys.
_REMEMBERED_KEYS = 100_000
_held = [0]  # keys held now (approximate under threads: only bounds the memory)


def remembered(entry: str) -> tuple[str, ...] | None:
    """Return the dependency keys last seen in *entry* (this process), or ``None``."""
    return _remembered.get(entry) if _remembered else None


def remember(entry: str, keys: tuple[str, ...]) -> None:
    """Remember *keys* as *entry*'s dependency keys (bounded: all forgotten at once when full).

    A bound on the keys, not the entries; an entry remembered again counts again
    (its dependencies changed: rare), which only makes the next clearing earlier.
    """
    if _held[0] + len(keys) > _REMEMBERED_KEYS:
        _remembered.clear()
        _held[0] = 0
    _held[0] += len(keys)
    _remembered[entry] = keys


def forget() -> None:
    """Forget every remembered dependency key (a cold process; used by tests and benchmarks)."""
    _remembered.clear()
    _held[0] = 0
