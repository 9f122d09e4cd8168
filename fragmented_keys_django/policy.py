"""What every call of the backend applies around its one protocol call.

:class:`CachePolicy` is the base of ``FragmentedKeysCacheBackend`` (the facade,
:mod:`.backend`): the tenant (``TENANT_REQUIRED``, ``SHARED``), the keys
(Django's ``KEY_FUNCTION``/``VERSION``/``KEY_PREFIX``, then :mod:`.keys`), the
caller's transaction (:mod:`.transactions`: store now, at the commit, or not;
a dirty transaction bypasses reads), the bypass while a bump of the tenant's
versions is pending and the store's circuit breaker (:mod:`.invalidation`),
the signals, and store outages, handled in one place (:meth:`CachePolicy._run`).
Its ``_steps`` methods are the operations' steps: the policy, then the
protocol (:mod:`.protocol`), run by the sync or the async driver.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    CacheKeyWarning,
    memcache_key_warnings,
)

from . import deps, invalidation, metrics, protocol
from . import keys as keys_mod
from .conf import BackendOptions, check_beta, check_seconds, get_cache_epoch
from .drivers import IN_TRANSACTION, Steps, arun, run
from .exceptions import (
    ConfigurationError,
    InvalidTimeout,
    StoreUnavailable,
    TenantRequired,
    ValueTooLarge,
)
from .keys import EntryKeys, TagSpec, entry_keys, namespace_key
from .routing import Route
from .signals import (
    cache_bypassed,
    cache_hit,
    cache_missed,
    entry_stored,
    recomputed_early,
    stampede_waited,
)
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

__all__ = ["MISSING", "RAISE", "SKIPPED", "Broken", "CachePolicy", "request"]

MISSING = object()
RAISE = object()  # _run's fallback: let the store error propagate
_NOW = (WriteMode.NOW, None)
SKIPPED = (WriteMode.SKIP, WriteMode.BYPASS)
# Operations whose failure leaves an older value (or a deleted one) in the store.
_LOST_WRITES = frozenset(
    {"set", "set_many", "delete", "delete_many", "set_with_tags", "delete_with_tags"}
    | {"set_on_commit"}
)

# Reads: a call of these skipped by the circuit breaker is a bypassed read.
_READS = frozenset({"get", "get_many", "get_with_tags", "get_many_with_tags"})

# Made keys already checked by Django's validate_key and found portable: the
# check (a length test and a regex) is skipped for them on later calls.
_portable_keys: set[str] = set()


def request(adapter: Any, *request: Any) -> Steps:
    """Steps of one store request (a protocol call that is one round trip)."""
    return (yield request)


class Broken:
    """Stands for the options of a misconfigured alias: any use raises the error."""

    def __init__(self, exc: ConfigurationError) -> None:
        self._exc = exc

    def __getattr__(self, name: str) -> Any:
        raise self._exc


class CachePolicy:
    """The policy half of the backend; ``FragmentedKeysCacheBackend`` adds Django's API.

    Expects, from the backend: ``alias``, ``options`` (:class:`~.conf.BackendOptions`),
    ``_route`` (:class:`~.routing.Route`), ``_shared`` (the shared store's
    adapter, once looked up), ``_explicit_timeout``, ``store`` and
    ``version_space``, and ``BaseCache``'s ``make_key``, ``validate_key`` and
    ``default_timeout``.
    """

    alias: str
    options: BackendOptions
    _route: Route
    _shared: StoreAdapter | None
    _explicit_timeout: bool
    default_timeout: Any
    make_key: Callable[..., str]
    validate_key: Callable[[str], None]
    version_space: Callable[[str | None], tuple[str, str]]
    store: Any

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
        raised when *fallback* is ``RAISE``.
        """
        try:
            adapter = self._live(tenant)
            return run(steps(adapter, *args), adapter)
        except metrics.store_errors() as exc:
            if fallback is RAISE:
                raise
            self._failed(operation, tenant, exc)
            return fallback
        except ValueTooLarge as exc:  # those values only: the store stays in service
            if fallback is RAISE:
                raise
            self._failed(operation, tenant, exc)
            return fallback if exc.result is None else exc.result

    async def _arun(
        self, operation: str, tenant: str | None, fallback: Any, steps: Any, *args: Any
    ) -> Any:
        """Async twin of :meth:`_run`: the same steps, awaited on the store's async adapter."""
        try:
            adapter = self._live(tenant).aio()
            return await arun(steps(adapter, *args), adapter)
        except metrics.store_errors() as exc:
            if fallback is RAISE:
                raise
            self._failed(operation, tenant, exc)
            return fallback
        except ValueTooLarge as exc:  # as in _run
            if fallback is RAISE:
                raise
            self._failed(operation, tenant, exc)
            return fallback if exc.result is None else exc.result

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
        if tenant is MISSING:
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
        options = self.options
        shards = 1 if options.tenant_slots is None else options.shards_for(tenant)
        ek = entry_keys(
            options.prefix,
            tenant,
            self._epoch(),
            made,
            group_id,
            tags,
            options.slot_copies,
            shards,
            self._store_keys(tenant),
        )
        return tenant, ek

    def _store_keys(self, tenant: str | None) -> tuple[str, ...]:
        """Versions every entry of *tenant*'s store records: its failover epoch, if it has one.

        A store whose primary can change (Sentinel) keeps a failover epoch
        (``keys.FAILOVER_EPOCH_KEY``, rewritten by the first connection to a
        new primary): every entry records it, so a failover invalidates them.
        If the store cannot be looked up here, the call's own lookup meets the
        same error and reports it; an entry keyed without the epoch then never
        matches one with it (a miss, never a stale hit).
        """
        try:
            adapter = self._adapter(tenant)
        except (ConfigurationError, *metrics.store_errors()):
            return ()
        key = getattr(adapter, "failover_key", None)
        return () if key is None else (key,)

    def _tagged(
        self, key: Any, tags: Iterable[Any], group_id: str, version: int | None
    ) -> tuple[tuple[TagSpec, ...], str | None, EntryKeys]:
        specs = normalize_tags(tags)
        return (specs, *self._keys(key, specs, group_id, version, False))

    def _many_keys(
        self, keys: Iterable[Any], version: int | None
    ) -> tuple[str | None, dict[str, Any], tuple[str, ...]]:
        """Return ``(tenant, {entry key: key}, version keys)`` of plain entries of *keys*.

        The version keys every one of them records: the tenant namespace and
        the store's (:meth:`_store_keys`).
        """
        tenant = self._tenant()
        options = self.options
        prefix, epoch, slots = options.prefix, self._epoch(), options.slot_copies
        shards = 1 if options.tenant_slots is None else options.shards_for(tenant)
        entries: dict[str, Any] = {}
        for key in keys:
            made = self.make_key(key, version=version)
            if made not in _portable_keys:
                self._validate(made)
            entries[entry_keys(prefix, tenant, epoch, made, "", (), slots, shards).entry] = key
        return tenant, entries, (namespace_key(prefix, tenant, shards), *self._store_keys(tenant))

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
            self._bypass(tenant)
            return True
        if any_dirty_thread() and (yield IN_TRANSACTION, read_bypassed):
            self._bypass(tenant, "transaction")
            return True
        return False

    def _bypass(self, tenant: str | None, reason: str | None = None) -> None:
        """Send ``cache_bypassed``: a read of *tenant* did not use the cache, for *reason*.

        *reason* ``None``: the tenant is suspect (:meth:`_suspect`), because its
        store's breaker is open (``"breaker_open"``) or a bump is pending.
        """
        if cache_bypassed.receivers:
            if reason is None:
                open_ = invalidation._retrier.is_open(self.version_space(tenant))
                reason = "breaker_open" if open_ else "bump_pending"
            cache_bypassed.send(type(self), alias=self.alias, tenant=tenant, reason=reason)

    def _event(self, signal: Any, tenant: str | None, key: Any) -> None:
        """Send *signal* (``stampede_waited``, ``recomputed_early``) for *key* in *tenant*."""
        if signal.receivers:
            signal.send(type(self), alias=self.alias, tenant=tenant, key=key)

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
        if isinstance(exc, ValueTooLarge):
            # The store refused these values and deleted their entries; it is in service.
            metrics.count(self.alias, "value_too_large")
            metrics.record_error(
                self.alias, tenant, operation, exc, level=logging.WARNING, what="value refused"
            )
            return
        if isinstance(exc, StoreUnavailable):
            metrics.count(self.alias, f"{operation} (breaker open)")
            if operation in _READS:
                self._bypass(tenant, "breaker_open")
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
            self._run("set_on_commit", tenant, None, request, *args)

        on_commit(CommitHook(put, "set_on_commit", alias=self.alias, tenant=tenant), using)

    # -- the operations' steps (policy, then the protocol) ---------------------------

    def _get(self, adapter: Any, tenant: str | None, ek: EntryKeys, default: Any) -> Steps:
        if self._suspect(tenant):
            self._bypass(tenant)
            return default
        hit, value, _ = yield from self._read(ek)
        return value if hit else default

    def _touch(self, adapter: Any, tenant: str | None, ek: EntryKeys, timeout: Any) -> Steps:
        if self._suspect(tenant):
            return False  # a bump pending: the entry is not known to be live
        return (yield from protocol.touch_steps(adapter, ek, timeout))

    def _get_many(
        self, adapter: Any, tenant: str | None, entries: dict[str, Any], vkeys: tuple[str, ...]
    ) -> Steps:
        if self._suspect(tenant):
            self._bypass(tenant)
            return {}
        extra: dict[str, None] = {}
        if deps._remembered:  # dependency keys of nested entries, fetched in the same read
            for entry in entries:
                extra.update(dict.fromkeys(deps.remembered(entry) or ()))
        n = len(entries)
        values = yield "read", (*entries, *vkeys, *extra), n
        versions = values[n : n + len(vkeys)]
        out = {}
        fetched: dict[str, Any] | None = None
        for env, (entry, key) in zip(values, entries.items(), strict=False):
            if protocol.held(env) is None:
                hit, value = protocol.decode_env(env, versions)
            else:  # a nested entry (see deps.py): served only if its dependencies hold
                if fetched is None:
                    fetched = dict(zip(extra, values[n + len(vkeys) :], strict=True))
                hit, value = yield from protocol.check_held(env, versions, fetched, entry)
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

    def _space(self, tenant: str | None) -> str:
        """The store of *tenant*'s versions: dependencies are checked within one (see deps.py)."""
        return self.version_space(tenant)[0]

    def _read(self, ek: EntryKeys) -> Steps:
        """Steps: read *ek*'s entry and its versions; with the dependency keys remembered with it.

        Returns ``(hit, value, values)``, *values* the entry and its own
        versions as read (the dependency keys left out). One round trip, and
        one more when the entry holds dependency keys this process had not seen
        with it (see :mod:`.deps`); an entry that was never nested reads its
        keys only.
        """
        extra = deps._remembered.get(ek.entry) if deps._remembered else None
        if extra is None:
            values = yield "read", ek.read_keys, 1
            hit, value = protocol.decode(values)
            if not hit and type(values[0]) is tuple:  # it may hold dependencies
                hit, value = yield from protocol.decode_steps(ek, values)
            return hit, value, values
        values = yield "read", (*ek.read_keys, *extra), 1
        hit, value = yield from protocol.decode_steps(ek, values, extra)
        return hit, value, values[: len(ek.read_keys)]

    def _record(
        self, frame: deps.Frame, tenant: str | None, ek: EntryKeys, values: list, hit: bool
    ) -> None:
        """Record a tagged read made by a cached computation in its *frame* (see deps.py)."""
        space = self._space(tenant)
        if hit:
            frame.record_entry(space, ek.version_keys, values[1:], values[0])
        else:
            frame.record(space, ek.version_keys, values[1:])

    def _get_tagged(
        self, adapter: Any, tenant: str | None, ek: EntryKeys, key: Any, specs: tuple, default: Any
    ) -> Steps:
        if (yield from self._bypassed(tenant)):
            self._unknown()
            return default
        hit, value, values = yield from self._read(ek)
        self._signal(hit, tenant, key, specs)
        frame = deps._current.get()
        if frame is not None:
            self._record(frame, tenant, ek, values, hit)
        return value if hit else default

    @staticmethod
    def _unknown() -> None:
        """A tagged read whose versions are not known: the computation around it is not stored."""
        frame = deps._current.get()
        if frame is not None:
            frame.broken = True

    def _get_many_tagged(
        self, adapter: Any, tenant: str | None, plans: dict[str, EntryKeys]
    ) -> Steps:
        if (yield from self._bypassed(tenant)):
            self._unknown()
            return {}
        wanted = dict.fromkeys(ek.entry for ek in plans.values())
        entries = len(wanted)
        for ek in plans.values():
            wanted.update(dict.fromkeys(ek.version_keys))
            extra = deps.remembered(ek.entry)
            if extra:
                wanted.update(dict.fromkeys(extra))
        values = yield "read", tuple(wanted), entries
        fetched = dict(zip(wanted, values, strict=True))
        held = [protocol.held(fetched[ek.entry]) for ek in plans.values()]
        missing = {k: None for h in held if h is not None for k in h[0] if k not in fetched}
        if missing:  # dependency keys not seen with their entries before: one more read
            fetched.update(zip(missing, (yield "read", tuple(missing), 0), strict=True))
        frame = deps._current.get()
        out = {}
        for key, ek in plans.items():
            env = fetched[ek.entry]
            versions = [fetched[k] for k in ek.version_keys]
            if protocol.held(env) is None:
                hit, value = protocol.decode_env(env, versions)
            else:
                hit, value = yield from protocol.check_held(env, versions, fetched, ek.entry)
            self._signal(hit, tenant, key)
            if frame is not None:
                self._record(frame, tenant, ek, [env, *versions], hit)
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
            self._unknown()
            return (yield from protocol.compute(default))
        try:
            hit, value, values = yield from self._read(ek)
        except metrics.store_errors() as exc:
            self._failed("get_or_set_with_tags", tenant, exc)
            self._unknown()
            return (yield from protocol.compute(default))
        self._signal(hit, tenant, key, specs)
        parent = deps._current.get()
        if parent is not None and hit:
            self._record(parent, tenant, ek, values, hit)
        if hit and not (beta and callable(default) and protocol.recompute_early(values[0], beta)):
            return value
        waited = partial(self._event, stampede_waited, tenant, key)
        mode, using = yield IN_TRANSACTION, write_mode
        # The computation's own frame: the tagged reads it makes are stored with the entry.
        frame = deps.Frame(self._space(tenant)) if callable(default) else None
        value, how, tokens = yield from protocol.fill_steps(
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
            waited=waited,
            frame=frame,
        )
        if parent is not None:
            # The enclosing computation depends on this entry's versions as read
            # before the value was computed, and on what the value depended on.
            if tokens is None:
                parent.broken = True
            else:
                parent.record(self._space(tenant), ek.version_keys, tokens)
                if frame is not None:
                    parent.merge(frame)
        if how in ("stored", "deferred"):
            self._stored(tenant, key, specs, deferred=how == "deferred")
            if hit:  # a live entry recomputed before its expiry (this caller held the lock)
                self._event(recomputed_early, tenant, key)
        return value

    def _current_version(self, adapter: Any, key: str, tag: tuple) -> Steps:
        versions = yield "read", (key,), 0
        vt = self.options.version_timeout
        got = yield from ensure_steps(adapter, [key], {key: versions[0]}, vt)
        if got is None:
            raise metrics.store_errors()[0](f"could not create the version of tag {tag!r}")
        return int(got[key])

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
