"""The store adapter protocol: what the cache protocol asks of a store, one round trip per call.

An adapter wraps one Django cache (the *store*) and speaks its representation:
how an entry (an *envelope*: the version tokens it was computed under, the
value, and for early recomputation its expiry and compute time) and a version
token are written and read back. The protocol (:mod:`..protocol`,
:mod:`..versions`) never touches a store directly: it asks an adapter, through
a driver (:mod:`..drivers`), by method name, so the same protocol runs on a
:class:`StoreAdapter` (sync) and an :class:`AsyncStoreAdapter` (the same
methods as coroutines).

Tokens are opaque to the protocol: an adapter returns versions in its own
representation (ints from a Django cache, the raw bytes from Redis) and
compares them only with ``==`` against the tokens stored in its envelopes, so a
read never has to convert them. :meth:`StoreAdapter.token` gives a fresh
token (an ``int``) in that representation.

Each method is one round trip on the stores with a native adapter (Redis); on
the generic Django-cache adapter a method is one Django cache call, except
where its docstring says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from asgiref.sync import sync_to_async

__all__ = ["AsyncStoreAdapter", "Envelope", "StoreAdapter", "ThreadedAsyncAdapter"]

#: ``(tokens, value)`` or ``(tokens, value, expiry, compute_seconds)``: an entry as
#: the protocol sees it; ``tokens`` are in the adapter's representation.
Envelope = tuple


@runtime_checkable
class StoreAdapter(Protocol):
    """One store's I/O for the cache protocol (sync). See the module docstring.

    Capability flags, read by the protocol to choose its steps:

    * ``stamps``: :meth:`stamp` and :meth:`stamp_many` exist (a server-side
      script reads the versions, creates the missing ones and writes the
      stamped entry atomically, in one round trip);
    * ``atomic_create``: :meth:`create_tokens` answers for every key in one
      atomic round trip (no retry loop);
    * ``drops_writes``: a write may fail without an error (Django's database
      cache swallows ``DatabaseError``): bumps and entries written after a
      miss are read back (the alias's ``VERIFY_BUMPS`` option overrides it);
    * ``per_process``: one adapter may serve every thread and async context
      of the process (its client is thread-safe), so it is kept per store
      alias, not per backend instance.
    """

    store: Any
    stamps: bool
    atomic_create: bool
    drops_writes: bool
    per_process: bool

    def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        """Return the values of *keys* in order (``None`` if absent).

        The first *entries* keys are entries, returned as envelopes (or
        ``None``, or whatever else was stored there); the others are version
        tokens or locks, returned as tokens.
        """
        ...

    def write(self, key: str, envelope: Envelope, timeout: Any, add: bool = False) -> bool:
        """Write *envelope* under *key* for *timeout* seconds (``add``: only if absent)."""
        ...

    def write_unlock(self, key: str, envelope: Envelope, timeout: Any, lock: str) -> None:
        """Write *envelope* and delete the stampede lock *lock* (one round trip on Redis)."""
        ...

    def stamp(
        self,
        entry: str,
        version_keys: Sequence[str],
        value: Any,
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
        add: bool,
    ) -> bool:
        """Write *value* stamped with the versions current now (``stamps`` only).

        Missing versions are created with the *fresh* tokens. With *add*,
        nothing is written over a live entry and ``False`` is returned.
        """
        ...

    def stamp_many(
        self,
        values: Mapping[str, Any],
        version_keys: Sequence[str],
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
    ) -> None:
        """Write every ``{entry: value}`` stamped with the current *version_keys* (``stamps`` only)."""
        ...

    def set_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> None:
        """Write version *tokens* (a bump), without reading them first."""
        ...

    def create_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> dict[str, Any]:
        """Create the version keys of *tokens* that are absent; return the tokens now stored.

        A key another caller created keeps its token (returned instead). On
        the generic adapter: one ``add`` per key, then one ``get_many`` of the
        refused keys.
        """
        ...

    def token(self, value: int) -> Any:
        """Return the fresh token *value* as :meth:`read` returns tokens (no I/O)."""
        ...

    def delete(self, key: str) -> bool:
        """Delete *key*; return True if it existed."""
        ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete *keys*."""
        ...

    def touch(self, key: str, timeout: Any) -> bool:
        """Set a new expiry on *key*; return True if it existed."""
        ...

    def set_many(self, envelopes: Mapping[str, Envelope], timeout: Any) -> list[str]:
        """Write every ``{key: envelope}``; return the keys that failed."""
        ...

    def aio(self) -> AsyncStoreAdapter:
        """Return this store's async adapter for the running event loop."""
        ...

    def close(self) -> None:
        """Release what the adapter holds (connections of its own); the store is not closed."""
        ...


class AsyncStoreAdapter(Protocol):
    """The methods of :class:`StoreAdapter` as coroutines, with the same flags."""

    store: Any
    stamps: bool
    atomic_create: bool
    drops_writes: bool

    async def read(self, keys: Sequence[str], entries: int) -> list[Any]: ...

    async def write(
        self, key: str, envelope: Envelope, timeout: Any, add: bool = False
    ) -> bool: ...

    async def write_unlock(self, key: str, envelope: Envelope, timeout: Any, lock: str) -> None: ...

    async def stamp(
        self,
        entry: str,
        version_keys: Sequence[str],
        value: Any,
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
        add: bool,
    ) -> bool: ...

    async def stamp_many(
        self,
        values: Mapping[str, Any],
        version_keys: Sequence[str],
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
    ) -> None: ...

    async def set_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> None: ...

    async def create_tokens(
        self, tokens: Mapping[str, int], timeout: float | None
    ) -> dict[str, Any]: ...

    def token(self, value: int) -> Any: ...

    async def delete(self, key: str) -> bool: ...

    async def delete_many(self, keys: Sequence[str]) -> None: ...

    async def touch(self, key: str, timeout: Any) -> bool: ...

    async def set_many(self, envelopes: Mapping[str, Envelope], timeout: Any) -> list[str]: ...


class ThreadedAsyncAdapter:
    """The async face of a sync adapter: each call runs it in a worker thread.

    ``sync_to_async(thread_sensitive=True)``, one hop per round trip: what
    Django's own ``a*`` methods do for stores without native async I/O (every
    store of Django 5.2 but Redis through our own adapter). Used for the
    generic Django-cache adapter and for adapters that have no native async
    twin.
    """

    def __init__(self, adapter: StoreAdapter) -> None:
        self.sync = adapter
        self.store = adapter.store
        self.stamps = adapter.stamps
        self.atomic_create = adapter.atomic_create
        self.drops_writes = adapter.drops_writes
        self.token = adapter.token

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "sync":
            raise AttributeError(name)
        method = sync_to_async(getattr(self.sync, name), thread_sensitive=True)
        setattr(self, name, method)  # built once per method
        return method
