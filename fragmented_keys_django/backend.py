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

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from . import invalidation, protocol, routing
from .conf import BackendOptions, alias_of
from .drivers import arun, run
from .exceptions import ConfigurationError
from .keys import EntryKeys, tag_version_key
from .policy import MISSING, RAISE, SKIPPED, Broken, CachePolicy, request
from .signals import use_sender
from .stores import StoreAdapter
from .tags import normalize_tags
from .transactions import write_mode

__all__ = ["FragmentedKeysCacheBackend"]


class FragmentedKeysCacheBackend(CachePolicy, BaseCache):
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
            self._route = self.options = Broken(exc)  # type: ignore[assignment]
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

    def store_for(self, tenant: Any = MISSING) -> Any:
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
        return self.get(key, MISSING, version=version) is not MISSING

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        """Async twin of :meth:`has_key`."""
        return await self.aget(key, MISSING, version=version) is not MISSING

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add *delta* to the value of *key*; raise ``ValueError`` if it has none.

        As in Django's ``BaseCache.incr`` this is a read then a write, not
        atomic, and the entry gets the alias's default timeout again. Store
        errors are raised.
        """
        tenant, ek = self._keys(key, (), "", version, True)
        args = (ek, key, delta, self._timeout(DEFAULT_TIMEOUT), lambda: self._suspect(tenant))
        return self._run("incr", tenant, RAISE, protocol.incr_steps, *args)

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Async twin of :meth:`incr`."""
        tenant, ek = self._keys(key, (), "", version, True)
        args = (ek, key, delta, self._timeout(DEFAULT_TIMEOUT), lambda: self._suspect(tenant))
        return await self._arun("incr", tenant, RAISE, protocol.incr_steps, *args)

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Subtract *delta* from the value of *key* (see :meth:`incr`)."""
        return self.incr(key, -delta, version=version)

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Async twin of :meth:`decr`."""
        return await self.aincr(key, -delta, version=version)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return ``{key: value}`` for the keys with live entries, in one round trip."""
        tenant, entries, vkeys = self._many_keys(keys, version)
        if not entries:
            return {}
        return self._run("get_many", tenant, {}, self._get_many, tenant, entries, vkeys)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Async twin of :meth:`get_many`."""
        tenant, entries, vkeys = self._many_keys(keys, version)
        if not entries:
            return {}
        return await self._arun("get_many", tenant, {}, self._get_many, tenant, entries, vkeys)

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every item of *data*; return the keys that failed (Django's contract)."""
        tenant, entries, vkeys = self._many_keys(data, version)
        if not entries:
            return []
        args = (entries, vkeys, data, self._timeout(timeout), self.options.version_timeout)
        return self._run("set_many", tenant, list(data), protocol.set_many_steps, *args)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Async twin of :meth:`set_many`."""
        tenant, entries, vkeys = self._many_keys(data, version)
        if not entries:
            return []
        args = (entries, vkeys, data, self._timeout(timeout), self.options.version_timeout)
        return await self._arun("set_many", tenant, list(data), protocol.set_many_steps, *args)

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Delete the entries of *keys* in the current tenant, in one round trip."""
        tenant, entries, _ = self._many_keys(keys, version)
        if entries:
            self._run("delete_many", tenant, None, request, "delete_many", list(entries))

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Async twin of :meth:`delete_many`."""
        tenant, entries, _ = self._many_keys(keys, version)
        if entries:
            await self._arun("delete_many", tenant, None, request, "delete_many", list(entries))

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
        if mode in SKIPPED:
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
        if mode in SKIPPED:
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
        return self._run("delete_with_tags", tenant, False, request, "delete", ek.entry)

    async def adelete_with_tags(
        self, key: str, tags: Iterable[Any], group_id: str = "", version: int | None = None
    ) -> bool:
        """Async twin of :meth:`delete_with_tags`."""
        _, tenant, ek = self._tagged(key, tags, group_id, version)
        return await self._arun("delete_with_tags", tenant, False, request, "delete", ek.entry)

    def tag_version_keys(self, tags: Iterable[Any], tenant: Any = MISSING) -> list[str]:
        """Return the version keys of the (non-constant) *tags* in *tenant* (default: current)."""
        tid = self._tenant_arg(tenant)
        prefix, slots = self.options.prefix, self.options.slot_copies
        shards = self.options.shards_for(tid)
        return [
            tag_version_key(prefix, tid, s.name, s.instance, slots, shards)
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

    def invalidate_tenant(self, tenant: Any = MISSING) -> None:
        """Invalidate every entry of *tenant* (default: the current one) with one bump.

        Pass a tenant explicitly only from operator code: naming another
        tenant here is the one way to touch its namespace without switching.
        """
        items = [invalidation.flush_bump(self._route, self._tenant_arg(tenant))]
        invalidation.dispatch(items, self.options.strict, None)

    async def ainvalidate_tenant(self, tenant: Any = MISSING) -> None:
        """Async twin of :meth:`invalidate_tenant` (obeys a calling sync thread's transaction)."""
        items = [invalidation.flush_bump(self._route, self._tenant_arg(tenant))]
        await invalidation.adispatch(items, self.options.strict)

    def get_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Return the current version token of a tag in the current tenant (0 if none yet).

        A version is an opaque int that changes on every bump and never
        repeats; compare for equality only. Store errors are raised.
        """
        key = self.tag_version_key(tag_name, instance)
        got = self._run("get_tag_version", self._tenant(), RAISE, request, "read", (key,), 0)
        return 0 if got[0] is None else int(got[0])

    async def aget_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Async twin of :meth:`get_tag_version`."""
        key = self.tag_version_key(tag_name, instance)
        args = ("read", (key,), 0)
        got = await self._arun("get_tag_version", self._tenant(), RAISE, request, *args)
        return 0 if got[0] is None else int(got[0])

    def current_tag_version(self, tag_name: str, instance: str | int = "") -> int:
        """Return the version token of a tag in the current tenant, creating it if missing.

        Unlike :meth:`get_tag_version` this never answers 0: a key built from
        its result (``StandardKey``) cannot fall back to a pre-bump key after
        the version key was evicted. Store errors are raised.
        """
        key = self.tag_version_key(tag_name, instance)
        args = (key, (tag_name, instance))
        return self._run("current_tag_version", self._tenant(), RAISE, self._current_version, *args)


use_sender(FragmentedKeysCacheBackend)
