"""``FragmentedKeysCacheBackend``: a tenant-scoped, tag-versioned Django cache.

It wraps another cache alias (the *store*, named by ``CACHE_NAME``) and
implements Django's whole ``BaseCache`` API plus the seed's ``*_with_tags``
methods.

How an entry is kept. Every value is stored under a stable *entry key*
(tenant, key, group_id, tags, epoch: see :mod:`.keys`) together with the
versions it was computed under: the current tenant's namespace version and one
version per tag. A read fetches the entry and those versions in one
``get_many`` (one round trip) and serves the value only if every recorded
version equals the current one. A bump writes a fresh, never-repeating version,
so every entry that depended on it stops validating at once, whatever their
number; nothing is scanned or deleted, and the next write reuses the entry key.

The plain Django API (``get``, ``set``, ...) is the tagged API with no tags:
``set("k", v)`` in tenant A is invisible in tenant B, and ``clear()`` bumps the
current tenant's namespace instead of flushing the shared store.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import pickle
import random
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    CacheKeyWarning,
    memcache_key_warnings,
)

from . import invalidation, metrics
from . import keys as keys_mod
from .conf import (
    BACKEND_PATHS,
    BackendOptions,
    alias_of,
    check_beta,
    check_seconds,
    get_cache,
    get_cache_epoch,
    store_is_reliable,
)
from .dbcache import isolate
from .exceptions import (
    ConfigurationError,
    InvalidTimeout,
    StoreUnavailable,
    TenantRequired,
    UnpicklableValue,
)
from .keys import EntryKeys, TagSpec, entry_keys, lock_key, namespace_key, tag_version_key
from .redis_access import redis_access
from .signals import cache_hit, cache_missed, entry_stored, use_sender
from .tags import normalize_tags
from .tenancy.context import current_tenant_id, tenant_id_of
from .transactions import (
    CommitHook,
    WriteMode,
    any_dirty_thread,
    caller_thread,
    in_caller_thread,
    on_commit,
    read_bypassed,
    write_mode,
)
from .versions import _backoff, aensure, ensure, fresh_token

__all__ = ["FragmentedKeysCacheBackend"]

logger = logging.getLogger("fragmented_keys_django")

_MISSING = object()
_NOW = (WriteMode.NOW, None)
# Operations whose failure leaves an older value (or a deleted one) in the store.
_LOST_WRITES = frozenset(
    {
        "set",
        "set_many",
        "delete",
        "delete_many",
        "set_with_tags",
        "delete_with_tags",
        "set_on_commit",
    }
)

# Made keys already checked by Django's validate_key and found portable: the
# check (a length test and a regex) is skipped for them on later calls.
_portable_keys: set[str] = set()


def _decode(ek: EntryKeys, raw: Mapping[str, Any]) -> tuple[bool, Any]:
    """Return ``(hit, value)`` for *ek* given the ``get_many`` result *raw*."""
    env = raw.get(ek.entry)
    if type(env) is not tuple or len(env) not in (2, 4):  # 4: with early-recompute meta
        return False, None
    recorded = env[0]
    vkeys = ek.version_keys
    if type(recorded) is not tuple or len(recorded) != len(vkeys):
        return False, None
    for k, v in zip(vkeys, recorded, strict=True):
        if raw.get(k) != v:
            return False, None
    return True, env[1]


def _recompute_early(env: tuple, beta: float) -> bool:
    """XFetch (probabilistic early expiration): recompute before expiry, the likelier the closer.

    *env* is ``(tokens, value, expiry, compute_seconds)``; the test is
    ``now - compute_seconds * beta * ln(U) >= expiry`` with ``U`` uniform in (0, 1].
    """
    if len(env) != 4 or env[2] <= 0:
        return False
    return time.time() - env[3] * beta * math.log(1.0 - random.random()) >= env[2]


def _read(store: Any, keys: list[str]) -> dict[str, Any]:
    """``get_many`` of entries and version keys: one round trip (raw MGET on Redis)."""
    acc = redis_access(store)
    return acc.mget(keys) if acc is not None else store.get_many(keys)


async def _aread(store: Any, keys: list[str]) -> dict[str, Any]:
    acc = redis_access(store)
    if acc is not None:
        return await sync_to_async(acc.mget, thread_sensitive=True)(keys)
    return await store.aget_many(keys)


def _found_tokens(ek: EntryKeys, raw: Mapping[str, Any]) -> tuple[int, ...] | None:
    try:
        return tuple(raw[k] for k in ek.version_keys)
    except KeyError:
        return None


def _check_pickle(key: Any, value: Any, exc: BaseException | None) -> None:
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as pexc:
        raise UnpicklableValue(
            f"The value for cache key {key!r} cannot be pickled ({type(value).__name__}: {pexc}). "
            f"Cache plain data (dicts, lists, model instances), not open files, locks or lambdas."
        ) from (exc if exc is not None else pexc)


class _NamingUnpicklable:
    """Context manager: a write that fails to pickle raises ``UnpicklableValue`` naming the key.

    Store errors pass through untouched (the callers log them as outages);
    any other error is checked against ``pickle`` for each ``(key, value)``.
    """

    __slots__ = ("items",)

    def __init__(self, *items: tuple[Any, Any]) -> None:
        self.items = items

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, Exception) and not isinstance(exc, metrics.store_errors()):
            for key, value in self.items:
                _check_pickle(key, value, exc)
        return False


class _Broken:
    """Stands for the options of a misconfigured alias: any use raises the error."""

    def __init__(self, exc: ConfigurationError) -> None:
        self._exc = exc

    def __getattr__(self, name: str) -> Any:
        raise self._exc


class FragmentedKeysCacheBackend(BaseCache):
    """A Django cache backend with tenant namespaces and tag-versioned entries.

    Configure it in ``settings.CACHES``::

        CACHES = {
            "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://..."},
            "fragmented": {
                "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
                "CACHE_NAME": "default",   # the store alias it wraps
                "PREFIX": "myapp",         # namespace of versions and entries
            },
        }

    ``TIMEOUT``, ``KEY_PREFIX``, ``VERSION`` and ``KEY_FUNCTION`` on this alias
    behave as Django documents them; without ``TIMEOUT`` the store's default
    timeout applies. Options in ``OPTIONS`` are listed in
    ``docs/configuration.md``.
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        alias = alias_of(params)
        try:
            self.options = BackendOptions.from_params(alias, location, params)
        except ConfigurationError as exc:
            # Django's own cache checks build every alias; let them (and ours,
            # which report fragmented_keys_django.E001) run, and raise the
            # error on first use instead. BaseCache would choke on the bad
            # TIMEOUT itself (int(inf) raises OverflowError): it gets none.
            self.options = _Broken(exc)  # type: ignore[assignment]
            params = {k: v for k, v in params.items() if k not in ("TIMEOUT", "timeout")}
        super().__init__(params)
        self.alias = alias
        self._explicit_timeout = "TIMEOUT" in params or "timeout" in params
        self._store: Any = None
        self._tenant_stores: Any = _MISSING

    # -- plumbing -----------------------------------------------------------

    @property
    def store(self) -> Any:
        """The wrapped Django cache (the store alias named by ``CACHE_NAME``)."""
        store = self._store
        if store is None:
            store = self._store = self._resolve_store()
        return store

    def _resolve_store(self) -> Any:
        from django.conf import settings

        name = self.options.cache_name
        conf = settings.CACHES.get(name)
        if conf is None:
            raise ConfigurationError(
                f"CACHES[{self.alias!r}]['CACHE_NAME'] names {name!r}, which is not in "
                f"settings.CACHES. Define the store alias, e.g. CACHES[{name!r}] = "
                f"{{'BACKEND': 'django.core.cache.backends.locmem.LocMemCache'}}."
            )
        if conf.get("BACKEND") in BACKEND_PATHS:
            raise ConfigurationError(
                f"CACHES[{self.alias!r}]['CACHE_NAME'] must name a plain store alias, got {name!r}, "
                f"which is itself a FragmentedKeysCacheBackend."
            )
        if conf.get("BACKEND") == "django.core.cache.backends.dummy.DummyCache":
            raise ConfigurationError(
                f"CACHES[{self.alias!r}] wraps {name!r}, Django's DummyCache, which keeps nothing: tag "
                f"versions could not be stored and nothing would ever be cached. Use a real store "
                f"(LocMemCache for one process)."
            )
        return isolate(get_cache(name))  # a database cache: outside the caller's transaction

    @property
    def verify_bumps(self) -> bool:
        """True if bumps on the shared store are read back (stores that drop failed writes)."""
        return self.verify_bumps_on(self.store)

    def verify_bumps_on(self, store: Any) -> bool:
        """True if bumps on *store* must be read back (option ``VERIFY_BUMPS``, else by class)."""
        if self.options.verify_bumps is not None:
            return self.options.verify_bumps
        return not store_is_reliable(f"{type(store).__module__}.{type(store).__qualname__}")

    @property
    def tenant_stores(self) -> Any:
        """The alias's :class:`~fragmented_keys_django.tenancy.stores.TenantStores`, or ``None``."""
        ts = self._tenant_stores
        if ts is _MISSING:
            from .tenancy.stores import stores_for_alias

            ts = self._tenant_stores = stores_for_alias(self.alias, self.options)
        return ts

    def _store_of(self, tenant: str | None) -> Any:
        """Return the store holding *tenant*'s entries and tag versions."""
        if tenant is not None and self.options.tenant_stores is not None:
            own = self.tenant_stores.store_for(tenant)
            if own is not None:
                return own
        store = self._store
        return store if store is not None else self.store

    def _live_store(self, tenant: str | None) -> Any:
        """:meth:`_store_of`, unless that store's circuit breaker is open (``StoreUnavailable``).

        After a store error, this process sends no call to that store until
        its retry thread has probed it back (see ``invalidation._Retrier``):
        the call fails fast instead of waiting for a socket timeout.
        """
        store = self._store_of(tenant)
        retrier = invalidation._retrier
        if retrier._suspect and retrier.is_open(space := self.version_space(tenant)):
            raise StoreUnavailable(
                f"cache alias {self.alias!r}: store {space[0]!r} failed recently and its circuit "
                f"breaker is open; the call was not sent (it is probed every "
                f"{self.options.circuit_breaker:g}s: OPTIONS['CIRCUIT_BREAKER'])"
            )
        return store

    def store_for(self, tenant: Any = _MISSING) -> Any:
        """Return the store used for *tenant* (default: the current tenant)."""
        tid = (
            self._tenant()
            if tenant is _MISSING
            else (None if tenant is None else tenant_id_of(tenant))
        )
        return self._store_of(tid)

    def _tenant(self) -> str | None:
        if self.options.shared:
            return None  # a reserved alias: one namespace for every tenant
        tenant = current_tenant_id()
        if tenant is None and self.options.tenant_required:
            raise TenantRequired(
                f"Cache alias {self.alias!r} requires a tenant (OPTIONS TENANT_REQUIRED=True) but "
                f"none is current. Wrap the call in TenantContext.use_tenant(tenant), or set the "
                f"tenant in middleware / the task that runs this code."
            )
        return tenant

    def _epoch(self) -> str:
        own = self.options.epoch
        return get_cache_epoch() if own is None else f"{get_cache_epoch()}/{own}"

    def _timeout(self, timeout: Any, *, strict: bool = False) -> Any:
        if timeout is DEFAULT_TIMEOUT:
            return self.default_timeout if self._explicit_timeout else DEFAULT_TIMEOUT
        if timeout is None:
            return None
        # Finite and within MAX_TIMEOUT, the same on every store (conf.check_seconds).
        return check_seconds(timeout, "timeout", allow_negative=not strict, error=InvalidTimeout)

    def _keys(
        self,
        key: Any,
        tags: tuple[TagSpec, ...],
        group_id: str,
        version: int | None,
        validate: bool,
    ) -> tuple[str | None, EntryKeys]:
        tenant = self._tenant()
        made = self.make_key(key, version=version)
        if validate and made not in _portable_keys:
            self._validate(made)
        if not isinstance(group_id, str):
            raise TypeError(f"group_id must be a string, got {group_id!r}")
        if keys_mod._global_tags and tags and self.options.tenant_stores is not None:
            self._no_global_tags(tags)
        return tenant, entry_keys(self.options.prefix, tenant, self._epoch(), made, group_id, tags)

    def _suspect(self, tenant: str | None) -> bool:
        """True while a bump or flush of *tenant*'s versions failed and has not landed yet.

        Whatever alias asked for the bump: every alias reading the same
        versions (same store, same PREFIX) is bypassed.
        """
        retrier = invalidation._retrier
        return bool(retrier._suspect) and retrier.is_suspect(self.version_space(tenant), tenant)

    def version_space(self, tenant: str | None) -> tuple[str, str]:
        """Return where *tenant*'s versions live: ``(store alias, PREFIX)``.

        Aliases with the same version space read the same version keys, so
        a bump through one invalidates the others' entries too.
        """
        store = self.options.cache_name
        ts = self.tenant_stores if tenant is not None else None
        if ts is not None and ts.store_for(tenant) is not None:
            store = "tenant-store:" + ts.store_alias(tenant)
        return (store, self.options.prefix)

    def _validate(self, made: str) -> None:
        """Django's ``validate_key`` (memcached portability warnings); remember good keys.

        Same warnings as ``BaseCache.validate_key`` (which this follows); a
        subclass that overrides ``validate_key`` is always called instead.
        """
        if type(self).validate_key is not BaseCache.validate_key:
            self.validate_key(made)
            return
        problems = list(memcache_key_warnings(made))
        for problem in problems:
            warnings.warn(problem, CacheKeyWarning, stacklevel=3)
        if not problems and type(made) is str:
            if len(_portable_keys) >= 16384:
                _portable_keys.clear()
            _portable_keys.add(made)

    def _bypass(self, tenant: str | None) -> bool:
        """True if tagged reads must not use the cache now (dirty transaction, bump pending)."""
        return read_bypassed() or self._suspect(tenant)

    async def _abypass(self, tenant: str | None) -> bool:
        """Async twin of :meth:`_bypass`: the transaction is the calling sync thread's, if any."""
        if self._suspect(tenant):
            return True
        # Asking the calling thread costs a thread hop: only when some thread may
        # hold a dirty transaction, and this code runs for a sync thread at all.
        return any_dirty_thread() and caller_thread() and await in_caller_thread(read_bypassed)

    def _no_global_tags(self, tags: Any) -> None:
        names = [t.name for t in tags if keys_mod.is_global_tag(t.name)]
        if names:
            raise ConfigurationError(
                f"Global tags {names} cannot be used on alias {self.alias!r}, which has TENANT_STORES: "
                f"a tenant's own store would not see bumps made in the shared store. Use a "
                f"tenant-scoped tag, or a separate alias without TENANT_STORES for shared data."
            )

    def _failed(self, operation: str, tenant: str | None, exc: BaseException) -> None:
        """Log and count a store error we survive; open the store's breaker until it is back.

        A call the breaker skipped (``StoreUnavailable``) is counted, not
        logged: the breaker logged once when it opened. A lost write (a
        ``set`` or ``delete`` that did not reach the store) would leave the old
        value to be served once the store is back: the tenant is flushed then.
        """
        if isinstance(exc, StoreUnavailable):
            metrics.count(self.alias, f"{operation} (breaker open)")
        else:
            metrics.record_store_error(self.alias, tenant, operation, exc)
            invalidation.note_store_error(self.alias, tenant)
        if operation in _LOST_WRITES:
            invalidation.keep_flush(self.alias, tenant)

    def _signal(self, hit: bool, tenant: str | None, key: Any, tags: tuple = ()) -> None:
        sig = cache_hit if hit else cache_missed
        if sig.receivers:
            sig.send(type(self), alias=self.alias, tenant=tenant, key=key, tags=tags)

    def _stored(self, tenant: str | None, key: Any, tags: tuple, deferred: bool = False) -> None:
        if entry_stored.receivers:
            entry_stored.send(
                type(self), alias=self.alias, tenant=tenant, key=key, tags=tags, deferred=deferred
            )

    def _write_tokens(
        self, store: Any, ek: EntryKeys, raw: Mapping[str, Any] | None
    ) -> tuple[int, ...] | None:
        """Return the current versions of *ek*, creating missing ones; ``None`` if impossible."""
        if raw is None:
            raw = _read(store, list(ek.version_keys))
        found = _found_tokens(ek, raw)
        if found is not None:
            return found
        got = ensure(store, list(ek.version_keys), dict(raw), self.options.version_timeout)
        return None if got is None else tuple(got[k] for k in ek.version_keys)

    async def _awrite_tokens(
        self, store: Any, ek: EntryKeys, raw: Mapping[str, Any] | None
    ) -> tuple[int, ...] | None:
        if raw is None:
            raw = await _aread(store, list(ek.version_keys))
        found = _found_tokens(ek, raw)
        if found is not None:
            return found
        got = await aensure(store, list(ek.version_keys), dict(raw), self.options.version_timeout)
        return None if got is None else tuple(got[k] for k in ek.version_keys)

    def _stamp(
        self, store: Any, key: Any, ek: EntryKeys, value: Any, timeout: Any, add: bool = False
    ) -> bool | None:
        """On Redis: write *value* stamped with the current versions in one round trip.

        Returns ``None`` when the store has no such path (the caller falls back).
        """
        acc = redis_access(store)
        if acc is None:
            return None
        fresh = [fresh_token() for _ in ek.version_keys]
        with _NamingUnpicklable((key, value)):
            return acc.stamp(
                ek.entry, ek.version_keys, value, timeout, self.options.version_timeout, fresh, add
            )

    async def _astamp(
        self, store: Any, key: Any, ek: EntryKeys, value: Any, timeout: Any, add: bool = False
    ) -> bool | None:
        """Async twin of :meth:`_stamp`."""
        if redis_access(store) is None:
            return None
        return await sync_to_async(self._stamp, thread_sensitive=True)(
            store, key, ek, value, timeout, add
        )

    def _put_checked(self, store: Any, key: Any, ek: EntryKeys, env: tuple, timeout: Any) -> None:
        """``_put``, then, on a store that drops failed writes, read back and retry.

        Django's database cache swallows ``DatabaseError`` (SQLite "database
        is locked" under contention): without this a stampede's one computed
        value could be lost and every waiter would compute again.
        """
        self._put(store, key, ek.entry, env, timeout)
        if not self.verify_bumps_on(store) or timeout == 0:
            return
        for attempt in range(1, 8):
            if ek.entry in _read(store, [ek.entry]):
                return  # landed (or another writer's entry is there: fine too)
            time.sleep(_backoff(attempt))
            self._put(store, key, ek.entry, env, timeout)

    async def _aput_checked(
        self, store: Any, key: Any, ek: EntryKeys, env: tuple, timeout: Any
    ) -> None:
        """Async twin of :meth:`_put_checked`."""
        await self._aput(store, key, ek.entry, env, timeout)
        if not self.verify_bumps_on(store) or timeout == 0:
            return
        for attempt in range(1, 8):
            if ek.entry in await _aread(store, [ek.entry]):
                return
            await asyncio.sleep(_backoff(attempt))
            await self._aput(store, key, ek.entry, env, timeout)

    def _put(
        self, store: Any, key: Any, entry: str, env: tuple, timeout: Any, add: bool = False
    ) -> Any:
        with _NamingUnpicklable((key, env[1])):
            acc = redis_access(store)
            if acc is not None:
                return acc.set_entry(entry, env[0], env[1], timeout, add=add, meta=env[2:])
            if add:
                return store.add(entry, env, timeout=timeout)
            return store.set(entry, env, timeout=timeout)

    async def _aput(
        self, store: Any, key: Any, entry: str, env: tuple, timeout: Any, add: bool = False
    ) -> Any:
        with _NamingUnpicklable((key, env[1])):
            acc = redis_access(store)
            if acc is not None:
                return await sync_to_async(acc.set_entry, thread_sensitive=True)(
                    entry, env[0], env[1], timeout, add=add, meta=env[2:]
                )
            if add:
                return await store.aadd(entry, env, timeout=timeout)
            return await store.aset(entry, env, timeout=timeout)

    # -- Django's BaseCache API ----------------------------------------------

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the value of *key* in the current tenant, or *default*.

        One round trip. A stored ``None`` is a value, not a miss. Follows
        Django's ``BaseCache.get``; a store outage is logged and counted and
        reads as a miss.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        try:
            store = self._live_store(tenant)  # first: a tenant arriving in a store is bumped there
            if self._suspect(tenant):
                return default
            raw = _read(store, [ek.entry, *ek.version_keys])
        except metrics.store_errors() as exc:
            self._failed("get", tenant, exc)
            return default
        hit, value = _decode(ek, raw)
        return value if hit else default

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Async twin of :meth:`get`."""
        tenant, ek = self._keys(key, (), "", version, True)
        try:
            store = self._live_store(tenant)
            if self._suspect(tenant):
                return default
            raw = await _aread(store, [ek.entry, *ek.version_keys])
        except metrics.store_errors() as exc:
            self._failed("get", tenant, exc)
            return default
        hit, value = _decode(ek, raw)
        return value if hit else default

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Store *value* under *key* in the current tenant for *timeout* seconds.

        Follows Django's ``BaseCache.set`` (``None`` = forever, ``0`` = do not
        keep). Raises ``UnpicklableValue`` (a ``pickle.PicklingError``) naming
        the key when the value cannot be pickled.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        timeout = self._timeout(timeout)
        try:
            store = self._live_store(tenant)
            if self._stamp(store, key, ek, value, timeout) is not None:
                return
            tokens = self._write_tokens(store, ek, None)
            if tokens is not None:
                self._put(store, key, ek.entry, (tokens, value), timeout)
        except metrics.store_errors() as exc:
            self._failed("set", tenant, exc)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Async twin of :meth:`set`."""
        tenant, ek = self._keys(key, (), "", version, True)
        timeout = self._timeout(timeout)
        try:
            store = self._live_store(tenant)
            if await self._astamp(store, key, ek, value, timeout) is not None:
                return
            tokens = await self._awrite_tokens(store, ek, None)
            if tokens is not None:
                await self._aput(store, key, ek.entry, (tokens, value), timeout)
        except metrics.store_errors() as exc:
            self._failed("set", tenant, exc)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Store *value* only if *key* has no live entry; return True if stored.

        Atomic as the store's ``add`` is, for keys never written or expired; a
        key whose entry was invalidated (``clear()``, a bump) is replaced by a
        delete followed by ``add``.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        timeout = self._timeout(timeout)
        try:
            store = self._live_store(tenant)
            stamped = self._stamp(store, key, ek, value, timeout, add=True)
            if stamped is not None:
                return stamped
            raw = _read(store, [ek.entry, *ek.version_keys])
            if _decode(ek, raw)[0]:
                return False
            tokens = self._write_tokens(store, ek, raw)
            if tokens is None:
                return False
            if ek.entry in raw:
                store.delete(ek.entry)
            return bool(self._put(store, key, ek.entry, (tokens, value), timeout, add=True))
        except metrics.store_errors() as exc:
            self._failed("add", tenant, exc)
            return False

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Async twin of :meth:`add`."""
        tenant, ek = self._keys(key, (), "", version, True)
        timeout = self._timeout(timeout)
        try:
            store = self._live_store(tenant)
            stamped = await self._astamp(store, key, ek, value, timeout, add=True)
            if stamped is not None:
                return stamped
            raw = await _aread(store, [ek.entry, *ek.version_keys])
            if _decode(ek, raw)[0]:
                return False
            tokens = await self._awrite_tokens(store, ek, raw)
            if tokens is None:
                return False
            if ek.entry in raw:
                await store.adelete(ek.entry)
            return bool(await self._aput(store, key, ek.entry, (tokens, value), timeout, add=True))
        except metrics.store_errors() as exc:
            self._failed("add", tenant, exc)
            return False

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Set a new expiry on a live entry; return False if *key* has none."""
        tenant, ek = self._keys(key, (), "", version, True)
        timeout = self._timeout(timeout)
        try:
            store = self._live_store(tenant)
            if self._suspect(tenant):
                return False  # a bump pending: the entry is not known to be live
            raw = _read(store, [ek.entry, *ek.version_keys])
            if not _decode(ek, raw)[0]:
                return False
            return bool(store.touch(ek.entry, timeout))
        except metrics.store_errors() as exc:
            self._failed("touch", tenant, exc)
            return False

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Async twin of :meth:`touch`."""
        tenant, ek = self._keys(key, (), "", version, True)
        timeout = self._timeout(timeout)
        try:
            store = self._live_store(tenant)
            if self._suspect(tenant):
                return False
            raw = await _aread(store, [ek.entry, *ek.version_keys])
            if not _decode(ek, raw)[0]:
                return False
            return bool(await store.atouch(ek.entry, timeout))
        except metrics.store_errors() as exc:
            self._failed("touch", tenant, exc)
            return False

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Delete *key*'s entry; return True only if a live entry was deleted."""
        tenant, ek = self._keys(key, (), "", version, True)
        try:
            store = self._live_store(tenant)
            raw = _read(store, [ek.entry, *ek.version_keys])
            live = _decode(ek, raw)[0]
            if ek.entry in raw:
                deleted = store.delete(ek.entry)
                return bool(live and deleted)
            return False
        except metrics.store_errors() as exc:
            self._failed("delete", tenant, exc)
            return False

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        """Async twin of :meth:`delete`."""
        tenant, ek = self._keys(key, (), "", version, True)
        try:
            store = self._live_store(tenant)
            raw = await _aread(store, [ek.entry, *ek.version_keys])
            live = _decode(ek, raw)[0]
            if ek.entry in raw:
                deleted = await store.adelete(ek.entry)
                return bool(live and deleted)
            return False
        except metrics.store_errors() as exc:
            self._failed("delete", tenant, exc)
            return False

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Return True if *key* has a live entry in the current tenant."""
        return self.get(key, _MISSING, version=version) is not _MISSING

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        """Async twin of :meth:`has_key`."""
        return await self.aget(key, _MISSING, version=version) is not _MISSING

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add *delta* to the value of *key*; raise ``ValueError`` if it has none.

        As in Django's ``BaseCache.incr`` this is a read then a write, not
        atomic, and the entry gets the alias's default timeout again.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        store = self._live_store(tenant)
        raw = _read(store, [ek.entry, *ek.version_keys])
        hit, value = _decode(ek, raw)
        if not hit or self._suspect(tenant):  # suspect: a bump pending, the value untrusted
            raise ValueError(f"Key '{key}' not found")
        new = value + delta
        self._put(
            store, key, ek.entry, (_found_tokens(ek, raw), new), self._timeout(DEFAULT_TIMEOUT)
        )
        return new

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Async twin of :meth:`incr`."""
        tenant, ek = self._keys(key, (), "", version, True)
        store = self._live_store(tenant)
        raw = await _aread(store, [ek.entry, *ek.version_keys])
        hit, value = _decode(ek, raw)
        if not hit or self._suspect(tenant):
            raise ValueError(f"Key '{key}' not found")
        new = value + delta
        await self._aput(
            store, key, ek.entry, (_found_tokens(ek, raw), new), self._timeout(DEFAULT_TIMEOUT)
        )
        return new

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Subtract *delta* from the value of *key* (see :meth:`incr`)."""
        return self.incr(key, -delta, version=version)

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Async twin of :meth:`decr`."""
        return await self.aincr(key, -delta, version=version)

    def _many_keys(
        self, keys: Iterable[Any], version: int | None
    ) -> tuple[str | None, dict[str, Any], str]:
        tenant = self._tenant()
        prefix, epoch = self.options.prefix, self._epoch()
        entries: dict[str, Any] = {}
        for key in keys:
            made = self.make_key(key, version=version)
            if made not in _portable_keys:
                self._validate(made)
            entries[entry_keys(prefix, tenant, epoch, made, "", ()).entry] = key
        return tenant, entries, namespace_key(prefix, tenant)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return ``{key: value}`` for the keys with live entries, in one round trip."""
        tenant, entries, ns = self._many_keys(keys, version)
        if not entries:
            return {}
        try:
            store = self._live_store(tenant)
            if self._suspect(tenant):
                return {}
            raw = _read(store, [*entries, ns])
        except metrics.store_errors() as exc:
            self._failed("get_many", tenant, exc)
            return {}
        return self._decode_many(entries, ns, raw)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Async twin of :meth:`get_many`."""
        tenant, entries, ns = self._many_keys(keys, version)
        if not entries:
            return {}
        try:
            store = self._live_store(tenant)
            if self._suspect(tenant):
                return {}
            raw = await _aread(store, [*entries, ns])
        except metrics.store_errors() as exc:
            self._failed("get_many", tenant, exc)
            return {}
        return self._decode_many(entries, ns, raw)

    @staticmethod
    def _decode_many(entries: dict[str, Any], ns: str, raw: Mapping[str, Any]) -> dict[Any, Any]:
        out = {}
        for entry, key in entries.items():
            hit, value = _decode(EntryKeys(entry, (ns,)), raw)
            if hit:
                out[key] = value
        return out

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every item of *data*; return the keys that failed (Django's contract)."""
        tenant, entries, ns = self._many_keys(data, version)
        timeout = self._timeout(timeout)
        if not entries:
            return []
        try:
            store = self._live_store(tenant)
            acc = redis_access(store)
            if acc is not None:
                self._stamp_many(acc, entries, ns, data, timeout)
                return []
            tokens = self._write_tokens(store, EntryKeys("", (ns,)), None)
            if tokens is None:
                return list(data)
            payload = {e: (tokens, data[k]) for e, k in entries.items()}
            with _NamingUnpicklable(*((k, data[k]) for k in entries.values())):
                failed = store.set_many(payload, timeout=timeout)
        except metrics.store_errors() as exc:
            self._failed("set_many", tenant, exc)
            return list(data)
        return [entries[e] for e in failed or ()]

    def _stamp_many(
        self, acc: Any, entries: dict[str, Any], ns: str, data: Mapping[Any, Any], timeout: Any
    ) -> None:
        """On Redis: stamp every entry with the current namespace version, one script call."""
        with _NamingUnpicklable(*((k, data[k]) for k in entries.values())):
            acc.stamp_many(
                {e: data[k] for e, k in entries.items()},
                (ns,),
                timeout,
                self.options.version_timeout,
                [fresh_token()],
            )

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Async twin of :meth:`set_many`."""
        tenant, entries, ns = self._many_keys(data, version)
        timeout = self._timeout(timeout)
        if not entries:
            return []
        try:
            store = self._live_store(tenant)
            acc = redis_access(store)
            if acc is not None:
                await sync_to_async(self._stamp_many, thread_sensitive=True)(
                    acc, entries, ns, data, timeout
                )
                return []
            tokens = await self._awrite_tokens(store, EntryKeys("", (ns,)), None)
            if tokens is None:
                return list(data)
            payload = {e: (tokens, data[k]) for e, k in entries.items()}
            with _NamingUnpicklable(*((k, data[k]) for k in entries.values())):
                failed = await store.aset_many(payload, timeout=timeout)
        except metrics.store_errors() as exc:
            self._failed("set_many", tenant, exc)
            return list(data)
        return [entries[e] for e in failed or ()]

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Delete the entries of *keys* in the current tenant, in one round trip."""
        tenant, entries, _ = self._many_keys(keys, version)
        if entries:
            try:
                self._live_store(tenant).delete_many(list(entries))
            except metrics.store_errors() as exc:
                self._failed("delete_many", tenant, exc)

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Async twin of :meth:`delete_many`."""
        tenant, entries, _ = self._many_keys(keys, version)
        if entries:
            try:
                await self._live_store(tenant).adelete_many(list(entries))
            except metrics.store_errors() as exc:
                self._failed("delete_many", tenant, exc)

    def clear(self) -> None:
        """Invalidate every entry of the current tenant (one bump); the store is untouched."""
        self.invalidate_tenant()

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self.ainvalidate_tenant()

    def close(self, **kwargs: Any) -> None:
        """Close the store's connection (Django calls this at the end of each request)."""
        if self._store is not None:
            self._store.close(**kwargs)

    async def aclose(self, **kwargs: Any) -> None:
        """Async twin of :meth:`close`."""
        if self._store is not None:
            await self._store.aclose(**kwargs)

    # -- the tag API (seed: fragmented-keys-django) ---------------------------

    def set_with_tags(
        self,
        key: str,
        value: Any,
        tags: Iterable[Any],
        timeout: Any = DEFAULT_TIMEOUT,
        group_id: str = "",
        version: int | None = None,
    ) -> bool:
        """Store *value* under *key* depending on *tags*; return True if stored (or queued).

        The versions are read now; inside a transaction the write waits for
        the commit (and is dropped on rollback). Prefer
        :meth:`get_or_set_with_tags`, which reads the versions *before* the
        value is computed. Raises ``InvalidTag``, ``InvalidTimeout``,
        ``UnpicklableValue``.
        """
        specs = normalize_tags(tags)
        tenant, ek = self._keys(key, specs, group_id, version, False)
        timeout = self._timeout(timeout, strict=True)
        mode, using = write_mode()
        if mode is WriteMode.SKIP or mode is WriteMode.BYPASS:
            return False  # see transactions.py: not safe to store from here
        try:
            store = self._live_store(tenant)
            if mode is WriteMode.NOW:
                stamped = self._stamp(store, key, ek, value, timeout)
                if stamped is None:
                    tokens = self._write_tokens(store, ek, None)
                    if tokens is None:
                        return False
                    stamped = self._put(store, key, ek.entry, (tokens, value), timeout) is not False
                if stamped:
                    self._stored(tenant, key, specs)
                return bool(stamped)
            tokens = self._write_tokens(store, ek, None)
            if tokens is None:
                return False
            _check_pickle(key, value, None)  # fail now, naming the key, not in the commit hook
            self._put_on_commit(key, ek, (tokens, value), timeout, tenant, using)
            self._stored(tenant, key, specs, deferred=True)
            return True
        except metrics.store_errors() as exc:
            self._failed("set_with_tags", tenant, exc)
            return False

    def _put_on_commit(
        self, key: Any, ek: EntryKeys, env: tuple, timeout: Any, tenant: str | None, using: str
    ) -> None:
        """Store *env* under *ek* after the commit of *using* (nothing on rollback)."""

        def put() -> None:
            try:
                self._put(self._live_store(tenant), key, ek.entry, env, timeout)
            except metrics.store_errors() as exc:
                self._failed("set_on_commit", tenant, exc)

        on_commit(CommitHook(put, "set_on_commit", alias=self.alias, tenant=tenant), using)

    async def aset_with_tags(
        self,
        key: str,
        value: Any,
        tags: Iterable[Any],
        timeout: Any = DEFAULT_TIMEOUT,
        group_id: str = "",
        version: int | None = None,
    ) -> bool:
        """Async twin of :meth:`set_with_tags`.

        Called through ``async_to_sync`` from a sync thread, it obeys that
        thread's transaction as :meth:`set_with_tags` does (it runs there).
        """
        if caller_thread():
            return await in_caller_thread(
                self.set_with_tags, key, value, tags, timeout, group_id, version
            )
        specs = normalize_tags(tags)
        tenant, ek = self._keys(key, specs, group_id, version, False)
        timeout = self._timeout(timeout, strict=True)
        try:
            store = self._live_store(tenant)
            stamped = await self._astamp(store, key, ek, value, timeout)
            if stamped is None:
                tokens = await self._awrite_tokens(store, ek, None)
                if tokens is None:
                    return False
                put = await self._aput(store, key, ek.entry, (tokens, value), timeout)
                stamped = put is not False
            if stamped:
                self._stored(tenant, key, specs)
            return bool(stamped)
        except metrics.store_errors() as exc:
            self._failed("set_with_tags", tenant, exc)
            return False

    def get_with_tags(
        self,
        key: str,
        tags: Iterable[Any],
        default: Any = None,
        group_id: str = "",
        version: int | None = None,
    ) -> Any:
        """Return the value stored under *key* with *tags*, or *default*.

        A value is returned only if none of its tags (nor the tenant) was
        bumped since it was stored. One round trip. Inside a transaction that
        has written registered models, returns *default* (the cache is
        bypassed so the writer sees its own writes).
        """
        specs = normalize_tags(tags)
        tenant, ek = self._keys(key, specs, group_id, version, False)
        try:
            store = self._live_store(tenant)
            if self._bypass(tenant):
                return default
            raw = _read(store, [ek.entry, *ek.version_keys])
        except metrics.store_errors() as exc:
            self._failed("get_with_tags", tenant, exc)
            return default
        hit, value = _decode(ek, raw)
        self._signal(hit, tenant, key, specs)
        return value if hit else default

    async def aget_with_tags(
        self,
        key: str,
        tags: Iterable[Any],
        default: Any = None,
        group_id: str = "",
        version: int | None = None,
    ) -> Any:
        """Async twin of :meth:`get_with_tags`."""
        specs = normalize_tags(tags)
        tenant, ek = self._keys(key, specs, group_id, version, False)
        try:
            store = self._live_store(tenant)
            if await self._abypass(tenant):
                return default
            raw = await _aread(store, [ek.entry, *ek.version_keys])
        except metrics.store_errors() as exc:
            self._failed("get_with_tags", tenant, exc)
            return default
        hit, value = _decode(ek, raw)
        self._signal(hit, tenant, key, specs)
        return value if hit else default

    def get_many_with_tags(
        self,
        keys: Mapping[str, Iterable[Any]] | Iterable[str],
        tags: Iterable[Any] | None = None,
        group_id: str = "",
        version: int | None = None,
    ) -> dict[str, Any]:
        """Return ``{key: value}`` for the live entries among *keys*, in one round trip.

        *keys* is either a mapping ``{key: tags}`` or an iterable of keys that
        all share *tags*.
        """
        tenant, plans = self._many_tagged(keys, tags, group_id, version)
        if not plans:
            return {}
        wanted = dict.fromkeys(k for ek in plans.values() for k in (ek.entry, *ek.version_keys))
        try:
            store = self._live_store(tenant)
            if self._bypass(tenant):
                return {}
            raw = _read(store, list(wanted))
        except metrics.store_errors() as exc:
            self._failed("get_many_with_tags", tenant, exc)
            return {}
        return self._decode_tagged(tenant, plans, raw)

    async def aget_many_with_tags(
        self,
        keys: Mapping[str, Iterable[Any]] | Iterable[str],
        tags: Iterable[Any] | None = None,
        group_id: str = "",
        version: int | None = None,
    ) -> dict[str, Any]:
        """Async twin of :meth:`get_many_with_tags`."""
        tenant, plans = self._many_tagged(keys, tags, group_id, version)
        if not plans:
            return {}
        wanted = dict.fromkeys(k for ek in plans.values() for k in (ek.entry, *ek.version_keys))
        try:
            store = self._live_store(tenant)
            if await self._abypass(tenant):
                return {}
            raw = await _aread(store, list(wanted))
        except metrics.store_errors() as exc:
            self._failed("get_many_with_tags", tenant, exc)
            return {}
        return self._decode_tagged(tenant, plans, raw)

    def _many_tagged(
        self, keys: Any, tags: Any, group_id: str, version: int | None
    ) -> tuple[str | None, dict[str, EntryKeys]]:
        items = keys.items() if isinstance(keys, Mapping) else ((k, tags) for k in keys)
        plans: dict[str, EntryKeys] = {}
        tenant = None
        for key, key_tags in items:
            tenant, plans[key] = self._keys(key, normalize_tags(key_tags), group_id, version, False)
        return tenant, plans

    def _decode_tagged(
        self, tenant: str | None, plans: dict[str, EntryKeys], raw: Mapping[str, Any]
    ) -> dict[str, Any]:
        out = {}
        for key, ek in plans.items():
            hit, value = _decode(ek, raw)
            self._signal(hit, tenant, key)
            if hit:
                out[key] = value
        return out

    def get_or_set_with_tags(
        self,
        key: str,
        default: Any,
        tags: Iterable[Any],
        timeout: Any = DEFAULT_TIMEOUT,
        group_id: str = "",
        version: int | None = None,
        early_recompute: float | None = None,
    ) -> Any:
        """Return the live value of *key* with *tags*, computing and storing it on a miss.

        *default* is a value or a callable; a callable is called only on a
        miss, and its result (``None`` included) is stored. The tag versions
        are read before the callable runs, so a value computed from data older
        than a committed bump is never served after that bump. When many
        callers miss at once, one computes while the others wait briefly for
        its value (a stampede lock in the store), then compute anyway.

        Inside a transaction: a value is stored only after the commit; in a
        transaction that has written registered models the cache is bypassed.
        A store outage is logged and counted; the value is computed and
        returned. Raises ``InvalidTag``, ``InvalidTimeout``, ``UnpicklableValue``,
        and whatever the callable raises.

        *early_recompute* (``beta``, default the alias's ``EARLY_RECOMPUTE``
        option, off when ``None``) turns on probabilistic early expiration
        ("XFetch") for hot keys: a caller may recompute a live entry shortly
        before it expires, the likelier the closer to expiry and the slower the
        callable; others keep the live value meanwhile (only the holder of the
        stampede lock recomputes). 1.0 is the usual ``beta``.
        """
        specs = normalize_tags(tags)
        tenant, ek = self._keys(key, specs, group_id, version, False)
        timeout = self._timeout(timeout, strict=True)
        beta = self._beta(early_recompute)
        store = self._store_of(tenant)
        if self._bypass(tenant):
            return default() if callable(default) else default
        try:
            raw = _read(store, [ek.entry, *ek.version_keys])
        except metrics.store_errors() as exc:
            self._failed("get_or_set_with_tags", tenant, exc)
            return default() if callable(default) else default
        hit, value = _decode(ek, raw)
        self._signal(hit, tenant, key, specs)
        if hit:
            if not (beta and callable(default) and _recompute_early(raw[ek.entry], beta)):
                return value
            # Early recomputation: only outside transactions (a value computed
            # inside one is stored at its commit, if ever), and only by whoever
            # takes the lock; the others keep serving the live value.
            if write_mode()[0] is not WriteMode.NOW:
                return value
            try:
                if not self._take_lock(store, lock_key(ek.entry)):
                    return value
            except metrics.store_errors() as exc:
                self._failed("get_or_set_with_tags", tenant, exc)
                return value
            return self._compute_and_store(
                store, key, ek, default, timeout, tenant, _found_tokens(ek, raw), beta, True, specs
            )
        mode, using = write_mode()
        if mode is WriteMode.BYPASS:
            return default() if callable(default) else default
        locked = False
        lkey = lock_key(ek.entry)
        try:
            if callable(default) and self.options.stampede_lock:
                locked = self._take_lock(store, lkey)
                if not locked:
                    waited = self._wait_for(store, ek)
                    if waited is not _MISSING:
                        return waited
            tokens = self._write_tokens(store, ek, raw)
        except metrics.store_errors() as exc:
            self._failed("get_or_set_with_tags", tenant, exc)
            tokens = None
        if mode is WriteMode.NOW and tokens is not None:
            return self._compute_and_store(
                store, key, ek, default, timeout, tenant, tokens, beta, locked, specs
            )
        try:
            value = default() if callable(default) else default  # its errors are the caller's
            if tokens is not None and mode is WriteMode.DEFER:
                # Inside a transaction: store after the commit, nothing on rollback.
                self._put_on_commit(key, ek, (tokens, value), timeout, tenant, using)
                self._stored(tenant, key, specs, deferred=True)
        finally:
            if locked:
                self._unlock(store, lkey, tenant)
        return value

    def _compute_and_store(
        self,
        store: Any,
        key: Any,
        ek: EntryKeys,
        default: Any,
        timeout: Any,
        tenant: str | None,
        tokens: tuple[int, ...],
        beta: float | None,
        locked: bool,
        tags: tuple = (),
    ) -> Any:
        """Compute *default*, store it stamped with *tokens* (read before), release the lock.

        The callable's own exceptions propagate (a ``DatabaseError`` from the
        loader is the caller's, not a store outage); store errors are logged.
        """
        lkey = lock_key(ek.entry)
        try:
            started = time.monotonic()
            value = default() if callable(default) else default
            env: tuple = (tokens, value)
            seconds = self._timeout_seconds(timeout)
            if beta and seconds:
                env = (tokens, value, time.time() + seconds, time.monotonic() - started)
            try:
                acc = redis_access(store) if locked else None
                if acc is not None:
                    with _NamingUnpicklable((key, value)):
                        acc.set_entry_unlock(ek.entry, tokens, value, timeout, lkey, meta=env[2:])
                    locked = False  # released with the write
                else:
                    self._put_checked(store, key, ek, env, timeout)
                self._stored(tenant, key, tags)
            except metrics.store_errors() as exc:
                self._failed("get_or_set_with_tags", tenant, exc)
        finally:
            if locked:
                self._unlock(store, lkey, tenant)
        return value

    def _take_lock(self, store: Any, lkey: str) -> bool:
        """Take the stampede lock *lkey*; return True if this caller holds it.

        The lock is a token created like a missing version (:func:`ensure`):
        this caller holds it iff its own token is the one stored. So an ``add``
        that a store dropped (the database cache under SQLite contention) is
        retried rather than taken for a lock held by someone else.
        """
        token = fresh_token()
        got = ensure(store, [lkey], {}, self.options.stampede_lock_timeout, {lkey: token})
        return got is not None and got[lkey] == token

    async def _atake_lock(self, store: Any, lkey: str) -> bool:
        """Async twin of :meth:`_take_lock`."""
        token = fresh_token()
        got = await aensure(store, [lkey], {}, self.options.stampede_lock_timeout, {lkey: token})
        return got is not None and got[lkey] == token

    def _unlock(self, store: Any, lkey: str, tenant: str | None) -> None:
        """Release a stampede lock; a store error is logged (the lock expires anyway)."""
        try:
            store.delete(lkey)
        except metrics.store_errors() as exc:
            self._failed("stampede_unlock", tenant, exc)

    async def _aunlock(self, store: Any, lkey: str, tenant: str | None) -> None:
        """Async twin of :meth:`_unlock`."""
        try:
            await store.adelete(lkey)
        except metrics.store_errors() as exc:
            self._failed("stampede_unlock", tenant, exc)

    def _beta(self, early_recompute: Any) -> float | None:
        """The XFetch beta of a call: *early_recompute* (checked), else the alias's option."""
        if early_recompute is None:
            return self.options.early_recompute
        return check_beta(early_recompute, "early_recompute", error=InvalidTimeout)

    def _timeout_seconds(self, timeout: Any) -> float | None:
        """Seconds an entry written with *timeout* lives (``None``: forever or unknown)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = getattr(self._store_of(None), "default_timeout", None)
        return timeout if isinstance(timeout, (int, float)) and timeout > 0 else None

    def _wait_for(self, store: Any, ek: EntryKeys) -> Any:
        """Poll for the entry another caller is computing; ``_MISSING`` if it does not come.

        Stops early when the lock is gone and no live entry was stored (the
        holder failed, or could not store): waiting longer would gain nothing.
        """
        opts = self.options
        deadline = time.monotonic() + min(opts.stampede_wait, opts.stampede_lock_timeout)
        lkey = lock_key(ek.entry)
        keys = [ek.entry, *ek.version_keys, lkey]
        while time.monotonic() < deadline:
            time.sleep(opts.stampede_poll)
            raw = _read(store, keys)
            hit, value = _decode(ek, raw)
            if hit:
                return value
            if lkey not in raw:
                # The holder writes the entry, then drops the lock; a store
                # whose get_many is not one snapshot may show the lock gone
                # before the entry: look once more.
                hit, value = _decode(ek, _read(store, keys[:-1]))
                return value if hit else _MISSING
        return _MISSING

    async def _await_for(self, store: Any, ek: EntryKeys) -> Any:
        opts = self.options
        deadline = time.monotonic() + min(opts.stampede_wait, opts.stampede_lock_timeout)
        lkey = lock_key(ek.entry)
        keys = [ek.entry, *ek.version_keys, lkey]
        while time.monotonic() < deadline:
            await asyncio.sleep(opts.stampede_poll)
            raw = await _aread(store, keys)
            hit, value = _decode(ek, raw)
            if hit:
                return value
            if lkey not in raw:
                hit, value = _decode(ek, await _aread(store, keys[:-1]))
                return value if hit else _MISSING
        return _MISSING

    async def aget_or_set_with_tags(
        self,
        key: str,
        default: Any,
        tags: Iterable[Any],
        timeout: Any = DEFAULT_TIMEOUT,
        group_id: str = "",
        version: int | None = None,
        early_recompute: float | None = None,
    ) -> Any:
        """Async twin of :meth:`get_or_set_with_tags`; *default* may be an async callable."""
        specs = normalize_tags(tags)
        tenant, ek = self._keys(key, specs, group_id, version, False)
        timeout = self._timeout(timeout, strict=True)
        beta = self._beta(early_recompute)
        store = self._store_of(tenant)

        async def compute() -> Any:
            if not callable(default):
                return default
            result = default()
            return await result if inspect.isawaitable(result) else result

        # Called through async_to_sync from a sync thread, obey that thread's
        # transaction (see transactions.py); native async code holds none.
        mode, using = (await in_caller_thread(write_mode)) if caller_thread() else _NOW
        if mode is WriteMode.BYPASS or self._suspect(tenant):
            return await compute()
        try:
            raw = await _aread(store, [ek.entry, *ek.version_keys])
        except metrics.store_errors() as exc:
            self._failed("get_or_set_with_tags", tenant, exc)
            return await compute()
        hit, value = _decode(ek, raw)
        self._signal(hit, tenant, key, specs)
        if mode is not WriteMode.NOW:
            if hit:
                return value
            return await self._acompute_in_transaction(
                store, key, ek, raw, compute, timeout, tenant, mode, using
            )
        locked = False
        lkey = lock_key(ek.entry)
        tokens: tuple[int, ...] | None
        if hit:
            if not (beta and callable(default) and _recompute_early(raw[ek.entry], beta)):
                return value
            try:  # early recomputation, by the lock holder only
                if not await self._atake_lock(store, lkey):
                    return value
            except metrics.store_errors() as exc:
                self._failed("get_or_set_with_tags", tenant, exc)
                return value
            locked, tokens = True, _found_tokens(ek, raw)
        else:
            got, tokens = await self._alock_and_tokens(store, ek, raw, default, tenant)
            if tokens is _MISSING:
                return got  # the value another caller computed while we waited
            locked = got
        try:
            started = time.monotonic()
            value = await compute()  # its errors are the caller's
            env: tuple = (tokens, value)
            seconds = self._timeout_seconds(timeout)
            if beta and seconds:
                env = (tokens, value, time.time() + seconds, time.monotonic() - started)
            if tokens is not None:
                try:
                    await self._aput_checked(store, key, ek, env, timeout)
                    self._stored(tenant, key, specs)
                except metrics.store_errors() as exc:
                    self._failed("get_or_set_with_tags", tenant, exc)
        finally:
            if locked:
                await self._aunlock(store, lkey, tenant)
        return value

    async def _acompute_in_transaction(
        self,
        store: Any,
        key: Any,
        ek: EntryKeys,
        raw: Mapping[str, Any],
        compute: Any,
        timeout: Any,
        tenant: str | None,
        mode: WriteMode,
        using: str | None,
    ) -> Any:
        """A miss inside the calling sync thread's transaction: store after its commit, if ever.

        As :meth:`get_or_set_with_tags` does there: the versions are read
        before the value is computed; the value is stored after the commit
        (``DEFER``) or not at all (``SKIP``: snapshot isolation).
        """
        tokens = None
        if mode is WriteMode.DEFER:
            try:
                tokens = await self._awrite_tokens(store, ek, raw)
            except metrics.store_errors() as exc:
                self._failed("get_or_set_with_tags", tenant, exc)
        value = await compute()  # its errors are the caller's
        if tokens is not None and using is not None:
            _check_pickle(key, value, None)
            await in_caller_thread(
                self._put_on_commit, key, ek, (tokens, value), timeout, tenant, using
            )
        return value

    async def _alock_and_tokens(
        self, store: Any, ek: EntryKeys, raw: Mapping[str, Any], default: Any, tenant: str | None
    ) -> tuple[Any, Any]:
        """Take the stampede lock (or wait for the holder's value) and read the versions.

        Returns ``(locked, tokens)``, or ``(value, _MISSING)`` when another
        caller's value arrived while waiting.
        """
        locked = False
        try:
            if callable(default) and self.options.stampede_lock:
                lkey = lock_key(ek.entry)
                locked = await self._atake_lock(store, lkey)
                if not locked:
                    waited = await self._await_for(store, ek)
                    if waited is not _MISSING:
                        return waited, _MISSING
            return locked, await self._awrite_tokens(store, ek, raw)
        except metrics.store_errors() as exc:
            self._failed("get_or_set_with_tags", tenant, exc)
            return locked, None

    def delete_with_tags(
        self, key: str, tags: Iterable[Any], group_id: str = "", version: int | None = None
    ) -> bool:
        """Delete the entry of *key* with *tags*; return True if the store deleted one.

        Rarely needed: :meth:`invalidate_tags` makes dependent entries
        unreachable without deleting them.
        """
        specs = normalize_tags(tags)
        tenant, ek = self._keys(key, specs, group_id, version, False)
        try:
            return bool(self._live_store(tenant).delete(ek.entry))
        except metrics.store_errors() as exc:
            self._failed("delete_with_tags", tenant, exc)
            return False

    async def adelete_with_tags(
        self, key: str, tags: Iterable[Any], group_id: str = "", version: int | None = None
    ) -> bool:
        """Async twin of :meth:`delete_with_tags`."""
        specs = normalize_tags(tags)
        tenant, ek = self._keys(key, specs, group_id, version, False)
        try:
            return bool(await self._live_store(tenant).adelete(ek.entry))
        except metrics.store_errors() as exc:
            self._failed("delete_with_tags", tenant, exc)
            return False

    def tag_version_keys(self, tags: Iterable[Any], tenant: Any = _MISSING) -> list[str]:
        """Return the version keys of the (non-constant) *tags* in *tenant* (default: current)."""
        tid = (
            self._tenant()
            if tenant is _MISSING
            else (None if tenant is None else tenant_id_of(tenant))
        )
        prefix = self.options.prefix
        return [
            tag_version_key(prefix, tid, s.name, s.instance)
            for s in normalize_tags(tags)
            if not s.constant
        ]

    def tag_version_key(self, tag_name: str, instance: str | int = "") -> str:
        """Return the store key of tag (*tag_name*, *instance*)'s version in the current tenant."""
        return self.tag_version_keys([(tag_name, instance)])[0]

    def invalidate_tags(self, tags: Iterable[Any]) -> int:
        """Bump *tags* in the current tenant; return how many tags were bumped.

        One round trip, whatever the number of dependent entries. Inside a
        transaction the bump runs after the commit (none on rollback). A store
        outage is logged at ERROR and the bump retried until it lands (see
        ``docs/operations.md``); with ``STRICT`` it raises ``BumpFailed``.
        """
        items = self._tag_bumps(tags)
        if items:
            invalidation._dispatch(items, self.options.strict, None)
        return sum(len(i.keys) for i in items)

    def _tag_bumps(self, tags: Iterable[Any]) -> list[Any]:
        """The bumps of *tags* in the current tenant (a global tag's in the public namespace)."""
        specs = [s for s in normalize_tags(tags) if not s.constant]
        if specs and keys_mod._global_tags and self.options.tenant_stores is not None:
            self._no_global_tags(specs)
        # Global tags have no tenant: bumping only those needs none (TENANT_REQUIRED
        # included), as bump_tags() and registered models' bumps do.
        common = bool(keys_mod._global_tags) and all(keys_mod.is_global_tag(s.name) for s in specs)
        tenant = None if common else self._tenant()
        return invalidation.tag_bumps(
            self, tenant, list(dict.fromkeys((s.name, s.instance) for s in specs))
        )

    async def ainvalidate_tags(self, tags: Iterable[Any]) -> int:
        """Async twin of :meth:`invalidate_tags`.

        Native async code holds no transaction, so the bump is made at once.
        Called through ``async_to_sync`` from a sync thread, it runs there and
        waits for that thread's transaction to commit, as the sync method does.
        """
        if caller_thread():
            return await in_caller_thread(self.invalidate_tags, tags)
        items = self._tag_bumps(tags)
        if items:
            await invalidation.aapply_bumps(items)
        return sum(len(i.keys) for i in items)

    def invalidate_tenant(self, tenant: Any = _MISSING) -> None:
        """Invalidate every entry of *tenant* (default: the current one) with one bump.

        Pass a tenant explicitly only from operator code: naming another
        tenant here is the one way to touch its namespace without switching.
        """
        tid = (
            self._tenant()
            if tenant is _MISSING
            else (None if tenant is None else tenant_id_of(tenant))
        )
        invalidation.bump_keys(self, tid, [namespace_key(self.options.prefix, tid)], flush=True)

    async def ainvalidate_tenant(self, tenant: Any = _MISSING) -> None:
        """Async twin of :meth:`invalidate_tenant` (obeys a calling sync thread's transaction)."""
        if caller_thread():
            return await in_caller_thread(self.invalidate_tenant, tenant)
        tid = (
            self._tenant()
            if tenant is _MISSING
            else (None if tenant is None else tenant_id_of(tenant))
        )
        await invalidation.abump_keys(
            self, tid, [namespace_key(self.options.prefix, tid)], flush=True
        )

    def get_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Return the current version token of a tag in the current tenant (0 if none yet).

        A version is an opaque int that changes on every bump and never
        repeats; compare for equality only.
        """
        key = self.tag_version_key(tag_name, instance)
        value = self._live_store(self._tenant()).get(key)
        return 0 if value is None else int(value)

    def current_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Return the version token of a tag in the current tenant, creating it if missing.

        Unlike :meth:`get_tag_version` this never answers 0: a key built from
        its result (``StandardKey``) cannot fall back to a pre-bump key after
        the version key was evicted.
        """
        key = self.tag_version_key(tag_name, instance)
        store = self._live_store(self._tenant())
        got = ensure(store, [key], _read(store, [key]), self.options.version_timeout)
        if got is None:
            raise metrics.store_errors()[0](
                f"could not create the version of tag {(tag_name, instance)!r}"
            )
        return int(got[key])

    async def aget_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Async twin of :meth:`get_tag_version`."""
        key = self.tag_version_key(tag_name, instance)
        value = await self._live_store(self._tenant()).aget(key)
        return 0 if value is None else int(value)


use_sender(FragmentedKeysCacheBackend)
