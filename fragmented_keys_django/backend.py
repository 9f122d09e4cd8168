"""``FragmentedKeysCacheBackend``: a tenant-scoped, tag-versioned Django cache (the facade).

It wraps another cache alias (the *store*, named by ``CACHE_NAME``) and
implements Django's whole ``BaseCache`` API plus the seed's ``*_with_tags``
methods. Each method builds the keys (:mod:`.keys`), applies the policy (the
tenant, the caller's transaction, a bypass while a bump is pending, signals)
and makes one protocol call (:mod:`.protocol`), run by the sync driver for
``get`` and by the async one for ``aget`` (:mod:`.drivers`), on the adapter of
the store holding the tenant's data (:mod:`.routing`, :mod:`.stores`). Store
outages are handled in one place, :meth:`FragmentedKeysCacheBackend._run`.

The plain Django API (``get``, ``set``, ...) is the tagged API with no tags:
``set("k", v)`` in tenant A is invisible in tenant B, and ``clear()`` bumps the
current tenant's namespace instead of flushing the shared store.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    CacheKeyWarning,
    memcache_key_warnings,
)

from . import invalidation, metrics, protocol, routing
from . import keys as keys_mod
from .conf import BackendOptions, alias_of, check_beta, check_seconds, get_cache_epoch
from .drivers import IN_TRANSACTION, Steps, arun, run
from .exceptions import ConfigurationError, InvalidTimeout, StoreUnavailable, TenantRequired
from .keys import EntryKeys, TagSpec, entry_keys, namespace_key, tag_version_key
from .signals import cache_hit, cache_missed, entry_stored, use_sender
from .stores import StoreAdapter
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
from .versions import ensure_steps

__all__ = ["FragmentedKeysCacheBackend"]

_MISSING = object()
_RAISE = object()  # _run's fallback: let the store error propagate
_NOW = (WriteMode.NOW, None)
_SKIPPED = (WriteMode.SKIP, WriteMode.BYPASS)
# Operations whose failure leaves an older value (or a deleted one) in the store.
_LOST_WRITES = frozenset(
    {"set", "set_many", "delete", "delete_many", "set_with_tags", "delete_with_tags"}
    | {"set_on_commit"}
)

# Made keys already checked by Django's validate_key and found portable: the
# check (a length test and a regex) is skipped for them on later calls.
_portable_keys: set[str] = set()


def _request(adapter: Any, *request: Any) -> Steps:
    """Steps of one store request (a protocol call that is one round trip)."""
    return (yield request)


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
    ``docs/configuration.md``. Every ``a*`` method is the async twin of its
    sync method, with the same round trips; on Redis it awaits a
    ``redis.asyncio`` client and uses no thread.
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        alias = alias_of(params)
        try:
            # Options of an alias in CACHES are parsed once per process (its route).
            own = (
                None
                if alias != "<fragmented>"
                else BackendOptions.from_params(alias, location, params)
            )
            self._route = routing.route(alias, own)
            self.options: BackendOptions = self._route.options
        except ConfigurationError as exc:
            # Django's own cache checks build every alias; let them (and ours,
            # which report fragmented_keys_django.E001) run, and raise the
            # error on first use instead. BaseCache would choke on the bad
            # TIMEOUT itself (int(inf) raises OverflowError): it gets none.
            self._route = self.options = _Broken(exc)  # type: ignore[assignment]
            params = {k: v for k, v in params.items() if k not in ("TIMEOUT", "timeout")}
        super().__init__(params)
        self.alias = alias
        self._explicit_timeout = "TIMEOUT" in params or "timeout" in params
        self._shared: StoreAdapter | None = None

    # -- routing --------------------------------------------------------------

    @property
    def store(self) -> Any:
        """The wrapped Django cache (the store alias named by ``CACHE_NAME``)."""
        return self._adapter(None).store

    def store_for(self, tenant: Any = _MISSING) -> Any:
        """Return the store used for *tenant* (default: the current tenant)."""
        return self._adapter(self._tenant_arg(tenant)).store

    @property
    def tenant_stores(self) -> Any:
        """The alias's :class:`~fragmented_keys_django.tenancy.stores.TenantStores`, or ``None``."""
        return self._route.tenant_stores

    @property
    def verify_bumps(self) -> bool:
        """True if bumps on the shared store are read back (stores that drop failed writes)."""
        return self._route.verify(self._adapter(None))

    def version_space(self, tenant: str | None) -> tuple[str, str]:
        """Return where *tenant*'s versions live: ``(store alias, PREFIX)`` (see :mod:`.routing`)."""
        return self._route.version_space(tenant)

    def _adapter(self, tenant: str | None) -> StoreAdapter:
        """The adapter of the store holding *tenant*'s entries and versions."""
        if tenant is not None and self.options.tenant_stores is not None:
            return self._route.adapter(tenant)
        shared = self._shared
        if shared is None:
            shared = self._shared = self._route.shared_adapter()
        return shared

    def _live(self, tenant: str | None) -> StoreAdapter:
        """:meth:`_adapter`, unless that store's circuit breaker is open (``StoreUnavailable``).

        After a store error, this process sends no call to that store until
        its retry thread has probed it back (see ``invalidation._Retrier``):
        the call fails fast instead of waiting for a socket timeout.
        """
        adapter = self._adapter(tenant)  # first: a tenant arriving in a store is bumped there
        retrier = invalidation._retrier
        if retrier._suspect and retrier.is_open(space := self.version_space(tenant)):
            raise StoreUnavailable(
                f"cache alias {self.alias!r}: store {space[0]!r} failed recently and its circuit "
                f"breaker is open; the call was not sent (it is probed every "
                f"{self.options.circuit_breaker:g}s: OPTIONS['CIRCUIT_BREAKER'])"
            )
        return adapter

    def _run(
        self, operation: str, tenant: str | None, fallback: Any, steps: Any, *args: Any
    ) -> Any:
        """Run protocol *steps* (called with the adapter and *args*) on the tenant's store, sync.

        The one place store outages are handled: an error of the store (or
        its open breaker) is logged, counted and answered with *fallback*, or
        raised when *fallback* is ``_RAISE``.
        """
        try:
            adapter = self._live(tenant)
            return run(steps(adapter, *args), adapter)
        except metrics.store_errors() as exc:
            if fallback is _RAISE:
                raise
            self._failed(operation, tenant, exc)
            return fallback

    async def _arun(
        self, operation: str, tenant: str | None, fallback: Any, steps: Any, *args: Any
    ) -> Any:
        """Async twin of :meth:`_run`: the same steps, awaited on the store's async adapter."""
        try:
            adapter = self._live(tenant).aio()
            return await arun(steps(adapter, *args), adapter)
        except metrics.store_errors() as exc:
            if fallback is _RAISE:
                raise
            self._failed(operation, tenant, exc)
            return fallback

    # -- policy ---------------------------------------------------------------

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

    def _tenant_arg(self, tenant: Any) -> str | None:
        """The tenant id an operator call names (default: the current tenant)."""
        if tenant is _MISSING:
            return self._tenant()
        return None if tenant is None else tenant_id_of(tenant)

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

    def _beta(self, early_recompute: Any) -> float | None:
        """The XFetch beta of a call: *early_recompute* (checked), else the alias's option."""
        if early_recompute is None:
            return self.options.early_recompute
        return check_beta(early_recompute, "early_recompute", error=InvalidTimeout)

    def _timeout_seconds(self, timeout: Any) -> float | None:
        """Seconds an entry written with *timeout* lives (``None``: forever or unknown)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = getattr(self.store, "default_timeout", None)
        return timeout if isinstance(timeout, (int, float)) and timeout > 0 else None

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
            self._route.no_global_tags(tags)
        return tenant, entry_keys(self.options.prefix, tenant, self._epoch(), made, group_id, tags)

    def _tagged(
        self, key: Any, tags: Iterable[Any], group_id: str, version: int | None
    ) -> tuple[tuple[TagSpec, ...], str | None, EntryKeys]:
        specs = normalize_tags(tags)
        return (specs, *self._keys(key, specs, group_id, version, False))

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
            warnings.warn(problem, CacheKeyWarning, stacklevel=4)
        if not problems and type(made) is str:
            if len(_portable_keys) >= 16384:
                _portable_keys.clear()
            _portable_keys.add(made)

    def _suspect(self, tenant: str | None) -> bool:
        """True while a bump or flush of *tenant*'s versions failed and has not landed yet.

        Whatever alias asked for the bump: every alias reading the same
        versions (same store, same PREFIX) is bypassed.
        """
        retrier = invalidation._retrier
        return bool(retrier._suspect) and retrier.is_suspect(self.version_space(tenant), tenant)

    def _bypassed(self, tenant: str | None) -> Steps:
        """Steps: True if tagged reads must not use the cache now (bump pending, dirty transaction).

        The transaction is the calling thread's: an async call made from a
        sync thread asks that thread, only when some thread may hold a dirty
        transaction at all.
        """
        if self._suspect(tenant):
            return True
        return any_dirty_thread() and bool((yield IN_TRANSACTION, read_bypassed))

    async def _amode(self) -> tuple[WriteMode, str | None]:
        """The write mode for async code: the calling sync thread's transaction, if any.

        Native async code holds no transaction (Django's ``atomic()`` is
        sync-only); called through ``async_to_sync`` from a thread, the mode is
        that thread's: one hop there (see :mod:`.transactions`).
        """
        return (await in_caller_thread(write_mode)) if caller_thread() else _NOW

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

    def _reporter(self, operation: str, tenant: str | None) -> Callable[..., None]:
        """A ``failed(exc, operation=None)`` callback for protocol steps that survive a store error."""

        def failed(exc: BaseException, op: str | None = None) -> None:
            self._failed(op or operation, tenant, exc)

        return failed

    def _signal(self, hit: bool, tenant: str | None, key: Any, tags: tuple = ()) -> None:
        sig = cache_hit if hit else cache_missed
        if sig.receivers:
            sig.send(type(self), alias=self.alias, tenant=tenant, key=key, tags=tags)

    def _stored(self, tenant: str | None, key: Any, tags: tuple, deferred: bool = False) -> None:
        if entry_stored.receivers:
            entry_stored.send(
                type(self), alias=self.alias, tenant=tenant, key=key, tags=tags, deferred=deferred
            )

    def _put_on_commit(
        self, key: Any, ek: EntryKeys, envelope: tuple, timeout: Any, tenant: str | None, using: str
    ) -> None:
        """Store *envelope* under *ek* after the commit of *using* (nothing on rollback)."""

        def put() -> None:
            args = ("write", ek.entry, envelope, timeout, False)
            self._run("set_on_commit", tenant, None, _request, *args)

        on_commit(CommitHook(put, "set_on_commit", alias=self.alias, tenant=tenant), using)

    # -- the operations' steps (policy, then the protocol) ---------------------------

    def _get(self, adapter: Any, tenant: str | None, ek: EntryKeys, default: Any) -> Steps:
        if self._suspect(tenant):
            return default
        hit, value = protocol.decode((yield "read", ek.read_keys, 1))
        return value if hit else default

    def _touch(self, adapter: Any, tenant: str | None, ek: EntryKeys, timeout: Any) -> Steps:
        if self._suspect(tenant):
            return False  # a bump pending: the entry is not known to be live
        return (yield from protocol.touch_steps(adapter, ek, timeout))

    def _get_many(
        self, adapter: Any, tenant: str | None, entries: dict[str, Any], ns: str
    ) -> Steps:
        if self._suspect(tenant):
            return {}
        values = yield "read", (*entries, ns), len(entries)
        out = {}
        for env, key in zip(values, entries.values(), strict=False):
            hit, value = protocol.decode_env(env, values[-1:])
            if hit:
                out[key] = value
        return out

    def _set_tagged(
        self,
        adapter: Any,
        tenant: str | None,
        ek: EntryKeys,
        key: Any,
        value: Any,
        specs: tuple,
        timeout: Any,
        using: str | None,
    ) -> Steps:
        vt = self.options.version_timeout
        if using is None:  # outside any transaction: now, stamped with the current versions
            stored = yield from protocol.store_steps(adapter, ek, key, value, timeout, vt)
            if stored:
                self._stored(tenant, key, specs)
            return stored
        tokens = yield from protocol.write_tokens(adapter, ek.version_keys, vt)
        if tokens is None:
            return False
        protocol.name_unpicklable(key, value, None)  # fail now, naming the key, not at commit
        yield IN_TRANSACTION, self._put_on_commit, key, ek, (tokens, value), timeout, tenant, using
        self._stored(tenant, key, specs, deferred=True)
        return True

    def _get_tagged(
        self, adapter: Any, tenant: str | None, ek: EntryKeys, key: Any, specs: tuple, default: Any
    ) -> Steps:
        if (yield from self._bypassed(tenant)):
            return default
        hit, value = protocol.decode((yield "read", ek.read_keys, 1))
        self._signal(hit, tenant, key, specs)
        return value if hit else default

    def _get_many_tagged(
        self, adapter: Any, tenant: str | None, plans: dict[str, EntryKeys]
    ) -> Steps:
        if (yield from self._bypassed(tenant)):
            return {}
        wanted = dict.fromkeys(ek.entry for ek in plans.values())
        entries = len(wanted)
        for ek in plans.values():
            wanted.update(dict.fromkeys(ek.version_keys))
        where = {k: i for i, k in enumerate(wanted)}
        values = yield "read", tuple(wanted), entries
        out = {}
        for key, ek in plans.items():
            versions = [values[where[k]] for k in ek.version_keys]
            hit, value = protocol.decode_env(values[where[ek.entry]], versions)
            self._signal(hit, tenant, key)
            if hit:
                out[key] = value
        return out

    def _get_or_set(
        self,
        adapter: Any,
        tenant: str | None,
        ek: EntryKeys,
        key: Any,
        default: Any,
        specs: tuple,
        timeout: Any,
        beta: float | None,
    ) -> Steps:
        if (yield from self._bypassed(tenant)):
            return (yield from protocol.compute(default))
        try:
            values = yield "read", ek.read_keys, 1
        except metrics.store_errors() as exc:
            self._failed("get_or_set_with_tags", tenant, exc)
            return (yield from protocol.compute(default))
        hit, value = protocol.decode(values)
        self._signal(hit, tenant, key, specs)
        if hit and not (beta and callable(default) and protocol.recompute_early(values[0], beta)):
            return value
        mode, using = yield IN_TRANSACTION, write_mode
        value, how = yield from protocol.fill_steps(
            adapter,
            ek,
            key,
            default,
            values,
            hit,
            mode,
            using,
            timeout=timeout,
            seconds=self._timeout_seconds(timeout),
            beta=beta,
            options=self.options,
            verify=self._route.verify(adapter),
            failed=self._reporter("get_or_set_with_tags", tenant),
            defer=lambda k, e, env, t, u: self._put_on_commit(k, e, env, t, tenant, u),
        )
        if how in ("stored", "deferred"):
            self._stored(tenant, key, specs, deferred=how == "deferred")
        return value

    def _current_version(self, adapter: Any, key: str, tag: tuple) -> Steps:
        versions = yield "read", (key,), 0
        vt = self.options.version_timeout
        got = yield from ensure_steps(adapter, [key], {key: versions[0]}, vt)
        if got is None:
            raise metrics.store_errors()[0](f"could not create the version of tag {tag!r}")
        return int(got[key])

    # -- Django's BaseCache API ----------------------------------------------

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the value of *key* in the current tenant, or *default*.

        One round trip. A stored ``None`` is a value, not a miss. Follows
        Django's ``BaseCache.get``; a store outage is logged and counted and
        reads as a miss.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        return self._run("get", tenant, default, self._get, tenant, ek, default)

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Async twin of :meth:`get`."""
        tenant, ek = self._keys(key, (), "", version, True)
        return await self._arun("get", tenant, default, self._get, tenant, ek, default)

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Store *value* under *key* in the current tenant for *timeout* seconds.

        Follows Django's ``BaseCache.set`` (``None`` = forever, ``0`` = do not
        keep). Raises ``UnpicklableValue`` (a ``pickle.PicklingError``) naming
        the key when the value cannot be pickled.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        args = (ek, key, value, self._timeout(timeout), self.options.version_timeout)
        self._run("set", tenant, None, protocol.store_steps, *args)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Async twin of :meth:`set`."""
        tenant, ek = self._keys(key, (), "", version, True)
        args = (ek, key, value, self._timeout(timeout), self.options.version_timeout)
        await self._arun("set", tenant, None, protocol.store_steps, *args)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Store *value* only if *key* has no live entry; return True if stored.

        Atomic on Redis, even over an invalidated entry; elsewhere atomic as
        the store's ``add`` is, for keys never written or expired, and a key
        whose entry was invalidated is replaced by a delete followed by ``add``.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        args = (ek, key, value, self._timeout(timeout), self.options.version_timeout, True)
        return self._run("add", tenant, False, protocol.store_steps, *args)

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Async twin of :meth:`add`."""
        tenant, ek = self._keys(key, (), "", version, True)
        args = (ek, key, value, self._timeout(timeout), self.options.version_timeout, True)
        return await self._arun("add", tenant, False, protocol.store_steps, *args)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Set a new expiry on a live entry; return False if *key* has none."""
        tenant, ek = self._keys(key, (), "", version, True)
        return self._run("touch", tenant, False, self._touch, tenant, ek, self._timeout(timeout))

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Async twin of :meth:`touch`."""
        tenant, ek = self._keys(key, (), "", version, True)
        timeout = self._timeout(timeout)
        return await self._arun("touch", tenant, False, self._touch, tenant, ek, timeout)

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Delete *key*'s entry; return True only if a live entry was deleted."""
        tenant, ek = self._keys(key, (), "", version, True)
        return self._run("delete", tenant, False, protocol.delete_steps, ek)

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        """Async twin of :meth:`delete`."""
        tenant, ek = self._keys(key, (), "", version, True)
        return await self._arun("delete", tenant, False, protocol.delete_steps, ek)

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Return True if *key* has a live entry in the current tenant."""
        return self.get(key, _MISSING, version=version) is not _MISSING

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        """Async twin of :meth:`has_key`."""
        return await self.aget(key, _MISSING, version=version) is not _MISSING

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add *delta* to the value of *key*; raise ``ValueError`` if it has none.

        As in Django's ``BaseCache.incr`` this is a read then a write, not
        atomic, and the entry gets the alias's default timeout again. Store
        errors are raised.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        args = (ek, key, delta, self._timeout(DEFAULT_TIMEOUT), lambda: self._suspect(tenant))
        return self._run("incr", tenant, _RAISE, protocol.incr_steps, *args)

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Async twin of :meth:`incr`."""
        tenant, ek = self._keys(key, (), "", version, True)
        args = (ek, key, delta, self._timeout(DEFAULT_TIMEOUT), lambda: self._suspect(tenant))
        return await self._arun("incr", tenant, _RAISE, protocol.incr_steps, *args)

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Subtract *delta* from the value of *key* (see :meth:`incr`)."""
        return self.incr(key, -delta, version=version)

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Async twin of :meth:`decr`."""
        return await self.aincr(key, -delta, version=version)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return ``{key: value}`` for the keys with live entries, in one round trip."""
        tenant, entries, ns = self._many_keys(keys, version)
        if not entries:
            return {}
        return self._run("get_many", tenant, {}, self._get_many, tenant, entries, ns)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Async twin of :meth:`get_many`."""
        tenant, entries, ns = self._many_keys(keys, version)
        if not entries:
            return {}
        return await self._arun("get_many", tenant, {}, self._get_many, tenant, entries, ns)

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every item of *data*; return the keys that failed (Django's contract)."""
        tenant, entries, ns = self._many_keys(data, version)
        if not entries:
            return []
        args = (entries, ns, data, self._timeout(timeout), self.options.version_timeout)
        return self._run("set_many", tenant, list(data), protocol.set_many_steps, *args)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Async twin of :meth:`set_many`."""
        tenant, entries, ns = self._many_keys(data, version)
        if not entries:
            return []
        args = (entries, ns, data, self._timeout(timeout), self.options.version_timeout)
        return await self._arun("set_many", tenant, list(data), protocol.set_many_steps, *args)

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Delete the entries of *keys* in the current tenant, in one round trip."""
        tenant, entries, _ = self._many_keys(keys, version)
        if entries:
            self._run("delete_many", tenant, None, _request, "delete_many", list(entries))

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Async twin of :meth:`delete_many`."""
        tenant, entries, _ = self._many_keys(keys, version)
        if entries:
            await self._arun("delete_many", tenant, None, _request, "delete_many", list(entries))

    def clear(self) -> None:
        """Invalidate every entry of the current tenant (one bump); the store is untouched."""
        self.invalidate_tenant()

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self.ainvalidate_tenant()

    def close(self, **kwargs: Any) -> None:
        """Close this thread's store (Django calls this at the end of each request).

        A Redis store's connections are the process's (a pool shared by every
        thread and request, as django-redis's pools are): they stay open.
        """
        if self._shared is not None and not self._shared.per_process:
            self._shared.store.close(**kwargs)

    async def aclose(self, **kwargs: Any) -> None:
        """Async twin of :meth:`close`."""
        if self._shared is not None and not self._shared.per_process:
            await self._shared.store.aclose(**kwargs)

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
        specs, tenant, ek = self._tagged(key, tags, group_id, version)
        timeout = self._timeout(timeout, strict=True)
        mode, using = write_mode()
        if mode in _SKIPPED:
            return False  # see transactions.py: not safe to store from here
        args = (tenant, ek, key, value, specs, timeout, using)
        return self._run("set_with_tags", tenant, False, self._set_tagged, *args)

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
        thread's transaction as :meth:`set_with_tags` does.
        """
        specs, tenant, ek = self._tagged(key, tags, group_id, version)
        timeout = self._timeout(timeout, strict=True)
        mode, using = await self._amode()
        if mode in _SKIPPED:
            return False
        args = (tenant, ek, key, value, specs, timeout, using)
        return await self._arun("set_with_tags", tenant, False, self._set_tagged, *args)

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
        specs, tenant, ek = self._tagged(key, tags, group_id, version)
        args = (tenant, ek, key, specs, default)
        return self._run("get_with_tags", tenant, default, self._get_tagged, *args)

    async def aget_with_tags(
        self,
        key: str,
        tags: Iterable[Any],
        default: Any = None,
        group_id: str = "",
        version: int | None = None,
    ) -> Any:
        """Async twin of :meth:`get_with_tags`."""
        specs, tenant, ek = self._tagged(key, tags, group_id, version)
        args = (tenant, ek, key, specs, default)
        return await self._arun("get_with_tags", tenant, default, self._get_tagged, *args)

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
        return self._run("get_many_with_tags", tenant, {}, self._get_many_tagged, tenant, plans)

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
        args = (tenant, plans)
        return await self._arun("get_many_with_tags", tenant, {}, self._get_many_tagged, *args)

    def _many_tagged(
        self, keys: Any, tags: Any, group_id: str, version: int | None
    ) -> tuple[str | None, dict[str, EntryKeys]]:
        items = keys.items() if isinstance(keys, Mapping) else ((k, tags) for k in keys)
        plans: dict[str, EntryKeys] = {}
        tenant = None
        for key, key_tags in items:
            tenant, plans[key] = self._keys(key, normalize_tags(key_tags), group_id, version, False)
        return tenant, plans

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
        specs, tenant, ek = self._tagged(key, tags, group_id, version)
        timeout = self._timeout(timeout, strict=True)
        beta = self._beta(early_recompute)
        adapter = self._adapter(tenant)  # the bypass covers an open breaker (_suspect)
        args = (tenant, ek, key, default, specs, timeout, beta)
        return run(self._get_or_set(adapter, *args), adapter)

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
        specs, tenant, ek = self._tagged(key, tags, group_id, version)
        timeout = self._timeout(timeout, strict=True)
        beta = self._beta(early_recompute)
        adapter = self._adapter(tenant).aio()
        args = (tenant, ek, key, default, specs, timeout, beta)
        return await arun(self._get_or_set(adapter, *args), adapter)

    def delete_with_tags(
        self, key: str, tags: Iterable[Any], group_id: str = "", version: int | None = None
    ) -> bool:
        """Delete the entry of *key* with *tags*; return True if the store deleted one.

        Rarely needed: :meth:`invalidate_tags` makes dependent entries
        unreachable without deleting them.
        """
        _, tenant, ek = self._tagged(key, tags, group_id, version)
        return self._run("delete_with_tags", tenant, False, _request, "delete", ek.entry)

    async def adelete_with_tags(
        self, key: str, tags: Iterable[Any], group_id: str = "", version: int | None = None
    ) -> bool:
        """Async twin of :meth:`delete_with_tags`."""
        _, tenant, ek = self._tagged(key, tags, group_id, version)
        return await self._arun("delete_with_tags", tenant, False, _request, "delete", ek.entry)

    def tag_version_keys(self, tags: Iterable[Any], tenant: Any = _MISSING) -> list[str]:
        """Return the version keys of the (non-constant) *tags* in *tenant* (default: current)."""
        tid = self._tenant_arg(tenant)
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
            invalidation.dispatch(items, self.options.strict, None)
        return sum(len(i.keys) for i in items)

    async def ainvalidate_tags(self, tags: Iterable[Any]) -> int:
        """Async twin of :meth:`invalidate_tags`.

        Native async code holds no transaction, so the bump is made at once.
        Called through ``async_to_sync`` from a sync thread, it waits for that
        thread's transaction to commit, as the sync method does.
        """
        items = self._tag_bumps(tags)
        if items:
            await invalidation.adispatch(items, self.options.strict)
        return sum(len(i.keys) for i in items)

    def _tag_bumps(self, tags: Iterable[Any]) -> list[Any]:
        """The bumps of *tags* in the current tenant (a global tag's in the public namespace)."""
        specs = [s for s in normalize_tags(tags) if not s.constant]
        self._route.no_global_tags(specs)
        # Global tags have no tenant: bumping only those needs none (TENANT_REQUIRED
        # included), as bump_tags() and registered models' bumps do.
        common = bool(keys_mod._global_tags) and all(keys_mod.is_global_tag(s.name) for s in specs)
        tenant = None if common else self._tenant()
        pairs = list(dict.fromkeys((s.name, s.instance) for s in specs))
        return invalidation.tag_bumps(self._route, tenant, pairs)

    def invalidate_tenant(self, tenant: Any = _MISSING) -> None:
        """Invalidate every entry of *tenant* (default: the current one) with one bump.

        Pass a tenant explicitly only from operator code: naming another
        tenant here is the one way to touch its namespace without switching.
        """
        items = [invalidation.flush_bump(self._route, self._tenant_arg(tenant))]
        invalidation.dispatch(items, self.options.strict, None)

    async def ainvalidate_tenant(self, tenant: Any = _MISSING) -> None:
        """Async twin of :meth:`invalidate_tenant` (obeys a calling sync thread's transaction)."""
        items = [invalidation.flush_bump(self._route, self._tenant_arg(tenant))]
        await invalidation.adispatch(items, self.options.strict)

    def get_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Return the current version token of a tag in the current tenant (0 if none yet).

        A version is an opaque int that changes on every bump and never
        repeats; compare for equality only. Store errors are raised.
        """
        key = self.tag_version_key(tag_name, instance)
        got = self._run("get_tag_version", self._tenant(), _RAISE, _request, "read", (key,), 0)
        return 0 if got[0] is None else int(got[0])

    async def aget_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Async twin of :meth:`get_tag_version`."""
        key = self.tag_version_key(tag_name, instance)
        args = ("read", (key,), 0)
        got = await self._arun("get_tag_version", self._tenant(), _RAISE, _request, *args)
        return 0 if got[0] is None else int(got[0])

    def current_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Return the version token of a tag in the current tenant, creating it if missing.

        Unlike :meth:`get_tag_version` this never answers 0: a key built from
        its result (``StandardKey``) cannot fall back to a pre-bump key after
        the version key was evicted. Store errors are raised.
        """
        key = self.tag_version_key(tag_name, instance)
        args = (key, (tag_name, instance))
        return self._run(
            "current_tag_version", self._tenant(), _RAISE, self._current_version, *args
        )


use_sender(FragmentedKeysCacheBackend)
