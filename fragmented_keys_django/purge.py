"""Tenant offboarding: delete every key of a tenant from its store(s), incrementally.

``invalidate_tenant`` is one bump: it makes a tenant's entries unreachable but
frees nothing (entries stay until their TTL, versions for ``VERSION_TIMEOUT``).
:func:`purge_tenant` erases them:

1. it bumps the tenant's namespace first, in the store it uses now (so, while
   the purge runs on a live tenant, nothing it has not reached yet is served);
2. then, in each store that may hold the tenant's keys (the store it uses now,
   the alias's shared store it may have lived in before, and the stores named
   by *stores*: those it left), it deletes every key under the tenant's exact
   key prefix, ``batch`` keys at a time:

   * Redis (django-redis with any client but the sharded one, Django's
     ``RedisCache``, django-valkey), on the primary: ``SCAN MATCH`` over the
     stored prefix (the store's ``KEY_PREFIX`` and ``VERSION`` applied by its own
     key function, glob characters escaped), ``UNLINK`` per batch;
   * Redis Cluster (a store whose client is a ``RedisCluster``):
     :func:`purge_cluster_slot`, on the node owning the tenant's hash slot only
     (``CLUSTER GETKEYSINSLOT``, filtered on the exact prefix: tenants can share
     a slot);
   * Django's database cache: ``SELECT`` by ``LIKE`` on the prefix (escaped),
     then ``DELETE`` by key, per batch;
   * memcached, locmem, file: their keys cannot be listed. Nothing is deleted;
     the namespace bump makes every entry unreachable, and entries leave by
     their TTL or eviction (reported as ``listable=False``);

3. it deletes the tenant's outbox rows of the alias that the namespace bump
   covers (failed bumps, and markers of transactions whose process died).

Erasure needs the tenant's traffic stopped first, or a second pass after it
is: a request served during the purge may write keys behind the scan. A
``SCAN`` walks a whole Redis database whatever it matches: :func:`purge_tenants`
walks each store once for many tenants.

Every tenant key is ``fk:{T}:...`` (:mod:`.keys`), ``T`` a digest of the alias's
``PREFIX`` and the tenant id, so the stored prefix is exact: another tenant,
whatever its id (a prefix of this one, glob characters), has another ``T``.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.db import DatabaseCache
from django.db import connections, router
from django.utils import timezone
from django.utils.module_loading import import_string

from . import invalidation, metrics, outbox, routing
from .conf import resolve_alias
from .dbcache import IsolatedDatabaseCache
from .exceptions import ConfigurationError, InvalidTenant
from .keys import tenant_key_prefixes
from .stores.redis_py import RedisAdapter
from .tenancy import retire
from .tenancy.context import tenant_id_of
from .tenancy.stores import live_stores, resolve_tenant_config

__all__ = [
    "PurgeProgress",
    "PurgeReport",
    "StorePurge",
    "apurge_tenant",
    "purge_cluster_slot",
    "purge_tenant",
    "purge_tenants",
    "redis_glob_escape",
    "stored_prefix",
]

logger = logging.getLogger("fragmented_keys_django")


@dataclass
class StorePurge:
    """What a purge did in one store.

    ``store``: the store's name (a ``CACHES`` alias or a tenant store's ``ALIAS``);
    ``tenant``: whose keys; ``kind``: ``"redis"``, ``"redis-cluster"``, ``"database"`` or the store's class
    name when its keys cannot be listed; ``prefix``: the stored key prefix
    searched; ``matched``: keys found under it; ``deleted``: keys deleted
    (``0`` in a dry run); ``listable``: False when the store cannot list keys
    (nothing deleted; the namespace bump makes its entries unreachable).
    """

    store: str
    kind: str
    prefix: str
    tenant: str = ""
    matched: int = 0
    deleted: int = 0
    listable: bool = True


@dataclass
class PurgeReport:
    """The result of :func:`purge_tenant`: per store, and outbox rows deleted (found, dry run)."""

    tenant: str
    alias: str
    dry_run: bool
    bumped: bool = False
    stores: list[StorePurge] = field(default_factory=list)
    outbox_rows: int = 0

    @property
    def deleted(self) -> int:
        """Keys deleted in every store."""
        return sum(s.deleted for s in self.stores)

    @property
    def matched(self) -> int:
        """Keys found in every store (what a dry run would delete)."""
        return sum(s.matched for s in self.stores)


@dataclass(frozen=True)
class PurgeProgress:
    """One step of a purge, given to the *progress* callable after each batch.

    ``store``: the store's name; ``tenants``: the tenants this pass over the
    store is for; ``matched``/``deleted``: their keys found and deleted so far
    in that store; ``done``: True once that store is finished.
    """

    store: str
    tenants: tuple[str, ...]
    matched: int
    deleted: int
    done: bool = False


Progress = Callable[[PurgeProgress], None]

_GLOB = re.compile(r"([\\*?\[\]])")


def redis_glob_escape(text: str) -> str:
    """Return *text* with Redis glob characters (``* ? [ ] \\``) escaped, for ``SCAN MATCH``."""
    return _GLOB.sub(r"\\\1", text)


def _like_escape(text: str) -> str:
    """Escape *text* for SQL ``LIKE ... ESCAPE '!'``."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def stored_prefix(store: Any, key_prefix: str) -> str:
    """Return the prefix the Django cache *store* stores keys starting with *key_prefix* under.

    *key_prefix* goes through the store's own ``make_key`` (its ``KEY_PREFIX``,
    ``VERSION`` and ``KEY_FUNCTION``). Raises ``ConfigurationError`` when the
    store's key function does not keep the key at the end unchanged (a hashing
    ``KEY_FUNCTION``): its keys cannot be found by prefix.
    """
    made = str(store.make_key(key_prefix))
    probe = str(store.make_key(key_prefix + "probe"))
    if probe != made + "probe":
        raise ConfigurationError(
            f"The store {store!r} builds keys with a KEY_FUNCTION that does not end with the "
            f"key unchanged ({key_prefix + 'probe'!r} became {probe!r}), so a tenant's keys "
            f"cannot be found by prefix: purge cannot run on it. Use Django's default key "
            f"function (KEY_PREFIX:VERSION:key) or one that appends the key."
        )
    return made


def _common_prefix(texts: list[str]) -> str:
    """The longest text every one of *texts* starts with (character by character)."""
    low, high = min(texts), max(texts)  # the sorted extremes differ first
    i = 0
    while i < len(low) and low[i] == high[i]:
        i += 1
    return low[:i]


class _Pass:
    """One pass over one store for several tenants: their stored prefixes and counts.

    A tenant's stored prefix is the store's ``KEY_PREFIX:VERSION:`` then
    ``fk:{<16 hex>}:`` (or ``fk:{<16 hex>.N.j}:`` for slot j of a tenant spread
    over N hash slots of a cluster, ``TENANT_SLOTS``), so a key's first
    characters name its tenant, if any: one dict lookup per prefix length
    (one length, or two with ``TENANT_SLOTS``).
    """

    def __init__(
        self,
        name: str,
        parts: dict[str, StorePurge],
        dry_run: bool,
        progress: Progress | None,
    ) -> None:
        self.name = name
        self.parts = parts  # stored prefix -> that tenant's StorePurge
        self.by_bytes = {p.encode(): part for p, part in parts.items()}
        self.dry_run = dry_run
        self.progress = progress
        self.tenants = tuple(part.tenant for part in parts.values())
        self.lengths = sorted({len(p) for p in parts})
        self.blengths = sorted({len(p) for p in self.by_bytes})
        self.common = _common_prefix(list(parts))

    def part_of(self, key: bytes | str) -> StorePurge | None:
        """The :class:`StorePurge` of the tenant *key* belongs to, or ``None`` (another tenant)."""
        if isinstance(key, bytes):
            for n in self.blengths:
                part = self.by_bytes.get(key[:n])
                if part is not None:
                    return part
            return None
        for n in self.lengths:
            part = self.parts.get(key[:n])
            if part is not None:
                return part
        return None

    def group(self, keys: Iterable[Any]) -> dict[int, tuple[StorePurge, list[Any]]]:
        """*keys* of our tenants, grouped by tenant (others' keys dropped)."""
        out: dict[int, tuple[StorePurge, list[Any]]] = {}
        for key in keys:
            part = self.part_of(key)
            if part is not None:
                out.setdefault(id(part), (part, []))[1].append(key)
        return out

    def emit(self, done: bool = False) -> None:
        if self.progress is not None:
            parts = self.parts.values()
            self.progress(
                PurgeProgress(
                    self.name,
                    self.tenants,
                    sum(p.matched for p in parts),
                    sum(p.deleted for p in parts),
                    done,
                )
            )


# -- Redis ---------------------------------------------------------------------------


def _starts(key: bytes | str, prefix: bytes) -> bool:
    """True if *key* (as a client returns it: bytes, or text when it decodes) starts with *prefix*."""
    return (key if isinstance(key, bytes) else key.encode()).startswith(prefix)


def _purge_redis(client: Any, run: _Pass, batch: int) -> None:
    """``SCAN MATCH`` the escaped prefix, ``UNLINK`` each page's keys (*client*: a ``redis.Redis``).

    One tenant: the pattern is its exact prefix. Several: their common prefix
    (the alias's keys in this store), each key then looked up by its prefix.
    ``UNLINK`` per tenant, pipelined: one round trip per page.
    """
    pattern = redis_glob_escape(run.common) + "*"
    cursor = 0
    while True:
        cursor, found = client.scan(cursor, match=pattern, count=batch)
        groups = run.group(found)  # the pattern is exact for one tenant; this makes sure
        if groups:
            for part, keys in groups.values():
                part.matched += len(keys)
            if not run.dry_run:
                pipe = client.pipeline(transaction=False)
                for _part, keys in groups.values():
                    pipe.unlink(*keys)
                for (part, _keys), n in zip(groups.values(), pipe.execute(), strict=True):
                    part.deleted += n
            run.emit()
        if not cursor:
            break


def purge_cluster_slot(
    client: Any,
    prefix: str,
    *,
    batch: int = 1000,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Delete every key starting with *prefix* on a Redis Cluster; return ``(matched, deleted)``.

    *client* is a ``redis.cluster.RedisCluster``; *prefix* a stored tenant
    prefix (:func:`stored_prefix`: ``KEY_PREFIX:VERSION:fk:{T}:``), whose keys
    all share one hash slot. Only the primary owning that slot is asked:
    ``CLUSTER COUNTKEYSINSLOT``, then ``CLUSTER GETKEYSINSLOT slot batch``
    filtered on the exact prefix (other tenants can share the slot) and
    ``UNLINK`` of the matches, until the slot holds none of ours. When a whole
    batch holds other tenants' keys only (and in a dry run, which deletes
    nothing to page with), that node is walked with ``SCAN MATCH`` instead. If
    the slot moved to another node meanwhile (resharding), the new owner is
    purged too. *progress* is called with ``(matched, deleted)`` after each
    batch. Redis errors propagate.
    """
    if batch < 1:
        raise ValueError(f"batch must be a positive number of keys, got {batch!r}")
    raw = prefix.encode()
    slot = client.keyslot(prefix + "e")
    matched = deleted = 0
    done_nodes: set[str] = set()
    while True:
        node = client.nodes_manager.get_node_from_slot(slot)
        if node.name in done_nodes:
            return matched, deleted
        done_nodes.add(node.name)
        conn = client.get_redis_connection(node)
        empty = not conn.execute_command("CLUSTER COUNTKEYSINSLOT", slot)
        full_pages = dry_run and not empty
        while not (full_pages or empty):
            found = conn.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
            ours = [k for k in found if _starts(k, raw)]
            if ours:
                matched += len(ours)
                deleted += conn.unlink(*ours)
                if progress is not None:
                    progress(matched, deleted)
            if len(found) < batch:
                break  # the slot is exhausted: nothing of ours is left in it
            full_pages = not ours  # a batch of other tenants' keys only: scan instead
        if full_pages:
            m, d = _scan_node(conn, prefix, batch, dry_run, progress, matched, deleted)
            matched, deleted = m, d
        client.nodes_manager.initialize()  # the slot may have moved while we purged


def _scan_node(
    conn: Any,
    prefix: str,
    batch: int,
    dry_run: bool,
    progress: Callable[[int, int], None] | None,
    matched: int,
    deleted: int,
) -> tuple[int, int]:
    """``SCAN MATCH`` one node for *prefix*, ``UNLINK`` the matches (unless *dry_run*)."""
    raw = prefix.encode()
    pattern = redis_glob_escape(prefix) + "*"
    cursor = 0
    while True:
        cursor, found = conn.scan(cursor, match=pattern, count=batch)
        keys = [k for k in found if _starts(k, raw)]
        if keys:
            matched += len(keys)
            if not dry_run:
                deleted += conn.unlink(*keys)
            if progress is not None:
                progress(matched, deleted)
        if not cursor:
            return matched, deleted


# -- the database cache ----------------------------------------------------------------


def _purge_database(store: DatabaseCache, run: _Pass, batch: int) -> None:
    """Page through the cache table by key (``LIKE`` the escaped prefix), ``DELETE`` each page.

    One pass in key order: keys written behind the cursor meanwhile are left
    (a second pass, once traffic stopped, takes them).
    """
    db = router.db_for_write(store.cache_model_class)
    conn = connections[db]
    table = conn.ops.quote_name(store._table)
    col = conn.ops.quote_name("cache_key")
    like = _like_escape(run.common) + "%"
    last = ""
    while True:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT {col} FROM {table} WHERE {col} LIKE %s ESCAPE '!' AND {col} > %s "
                f"ORDER BY {col} LIMIT %s",
                [like, last, batch],
            )
            rows = [r[0] for r in cur.fetchall()]
        if not rows:
            break
        last = rows[-1]
        # Exact prefixes only (LIKE also ignores case on SQLite and MySQL).
        groups = run.group(rows)
        if groups:
            for part, keys in groups.values():
                part.matched += len(keys)
                if not run.dry_run:
                    marks = ", ".join(["%s"] * len(keys))
                    with conn.cursor() as cur:
                        cur.execute(f"DELETE FROM {table} WHERE {col} IN ({marks})", keys)
                        part.deleted += cur.rowcount
            run.emit()
        if len(rows) < batch:
            break


# -- one store -------------------------------------------------------------------------


def _optional(*paths: str) -> tuple[type, ...]:
    """The classes at dotted *paths* whose package is installed (redis-py, valkey-py, ...)."""
    found = []
    for path in paths:
        try:
            found.append(import_string(path))
        except ImportError:  # that client library is not installed: no store can be one
            continue
    return tuple(found)


def _redis_client(store: Any, adapter: Any) -> Any:
    """The redis-py (or valkey-py) client of *store*'s primary, a cluster client, or ``None``.

    By what the store is: our Redis adapter's client; Django's ``RedisCache``
    (subclasses included: a cluster backend built on it answers its cluster
    client); django-redis and django-valkey with any client but the sharded
    one (keys spread over servers by a hash ring). ``None``: not a Redis store.
    """
    if isinstance(adapter, RedisAdapter):
        return adapter.redis_client()
    from django.core.cache.backends.redis import RedisCache

    if isinstance(store, RedisCache):
        return store._cache.get_client(None, write=True)
    for cache_path, shard_path in (
        ("django_redis.cache.RedisCache", "django_redis.client.ShardClient"),
        ("django_valkey.cache.ValkeyCache", "django_valkey.client.sharded.ShardClient"),
    ):
        classes = _optional(cache_path, shard_path)
        if len(classes) == 2 and isinstance(store, classes[0]):
            if isinstance(store.client, classes[1]):
                return None
            return store.client.get_client(write=True)
    return None


def _is_cluster(client: Any) -> bool:
    return isinstance(
        client, _optional("redis.cluster.RedisCluster", "valkey.cluster.ValkeyCluster")
    )


def _kind(store: Any, client: Any) -> str:
    if client is not None:
        return "redis-cluster" if _is_cluster(client) else "redis"
    if isinstance(store, (DatabaseCache, IsolatedDatabaseCache)):
        return "database"
    return type(store).__name__


def _purge_store(store: Any, client: Any, run: _Pass, batch: int) -> None:
    """Purge *run*'s tenants from one store (nothing on a store that cannot list keys)."""
    kind = next(iter(run.parts.values())).kind
    if kind == "redis":
        _purge_redis(client, run, batch)
    elif kind == "redis-cluster":
        for prefix, part in run.parts.items():

            def step(matched: int, deleted: int, part: StorePurge = part) -> None:
                part.matched, part.deleted = matched, deleted
                run.emit()

            part.matched, part.deleted = purge_cluster_slot(
                client, prefix, batch=batch, dry_run=run.dry_run, progress=step
            )
    elif kind == "database":
        inner = store.store if isinstance(store, IsolatedDatabaseCache) else store
        _purge_database(inner, run, batch)
    else:
        for part in run.parts.values():
            part.listable = False
    run.emit(done=True)


def _extra_store(
    route: routing.Route, label: str, spec: str | Mapping[str, Any]
) -> tuple[str, Any, bool]:
    """Return ``(name, store, built)`` for an entry of *stores*: a ``CACHES`` alias or a config."""
    from django.conf import settings

    from .conf import get_cache

    if isinstance(spec, str):
        if spec not in settings.CACHES:
            raise ConfigurationError(
                f"purge_tenant(stores=[{spec!r}]): {spec!r} is not an alias in settings.CACHES; "
                f"name a store alias, or give the tenant's former cache config as a dict."
            )
        return spec, get_cache(spec), False
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"purge_tenant(stores=...) takes CACHES aliases and cache config dicts, got {spec!r}"
        )
    template = settings.CACHES[route.options.cache_name]
    name, merged = resolve_tenant_config(label, spec, template)
    params = {k: v for k, v in merged.items() if k not in ("BACKEND", "LOCATION")}
    store = import_string(merged["BACKEND"])(merged.get("LOCATION", ""), params)
    return name, store, True


def _homes(route: routing.Route, tenant: str) -> list[tuple[str, Any, Any]]:
    """``(name, store, adapter)`` of the store *tenant* uses now and of the alias's shared store."""
    current = route.adapter(tenant)
    shared = route.shared_adapter()
    ts = route.tenant_stores
    own_name = ts.store_alias(tenant) if ts is not None else route.options.cache_name
    out = [(own_name, current.store, current)]
    if current is not shared:  # a tenant store: the shared store may hold what it left
        out.append((route.options.cache_name, shared.store, shared))
    return out


def _location(store: Any) -> Any:
    """Where *store* keeps its data (class, place, key prefix, version), to purge each place once."""
    inner = store.store if isinstance(store, IsolatedDatabaseCache) else store
    if isinstance(inner, DatabaseCache):
        place: Any = (router.db_for_write(inner.cache_model_class), inner._table)
    else:
        place = next(
            (v for a in ("_servers", "_server", "_dir") if (v := getattr(inner, a, None))),
            None,
        ) or id(getattr(inner, "_cache", inner))
    return (type(inner).__name__, repr(place), inner.key_prefix, inner.version)


# -- the outbox ------------------------------------------------------------------------


def _forget_outbox(
    alias: str, tenant: str, before: datetime.datetime, dry_run: bool = False
) -> int:
    """Delete *tenant*'s outbox rows of *alias* that the namespace bump made at *before* covers.

    *dry_run*: count them only.

    Rows with keys (failed bumps) written before it, and markers older than
    ``outbox.MARKER_GRACE`` then (their process died: a drain would flush the
    namespace, which the bump did). Younger markers belong to transactions
    still running, whose process deletes them.
    """
    marked_before = before - datetime.timedelta(seconds=outbox.MARKER_GRACE)
    return outbox.forget_tenant(alias, tenant, before, marked_before, dry_run)


# -- the API ---------------------------------------------------------------------------


def purge_tenant(
    tenant: str,
    alias: str | None = None,
    *,
    batch: int = 1000,
    stores: Iterable[str | Mapping[str, Any]] = (),
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PurgeReport:
    """Delete every key of *tenant* on fragmented *alias* (default: the project's one).

    *tenant* (str): the tenant id; ``None`` (the public namespace) is refused.
    *batch* (int): keys per round trip (``SCAN COUNT``, ``UNLINK``, rows per
    ``DELETE``). *stores*: more stores the tenant may have keys in (those it
    left): ``CACHES`` aliases, or its former cache configs (dicts as its
    ``TENANT_STORES`` source gives them); the store it uses now and the
    alias's shared store are always purged. *dry_run*: count, bump and delete
    nothing. *progress*: called with a :class:`PurgeProgress` after each batch
    and at the end of each store.

    The tenant's namespace is bumped first (``BumpFailed`` if that fails:
    nothing is deleted), then each store is purged (see the module
    docstring), then the outbox rows the bump covers are deleted. Returns a
    :class:`PurgeReport`. Raises ``InvalidTenant`` for ``None``, an empty or a
    non-string tenant, ``ValueError`` for a *batch* below 1,
    ``ConfigurationError`` for a bad alias or store, and the store's errors
    (logged and counted).
    """
    return purge_tenants(
        [tenant], alias, batch=batch, stores=stores, dry_run=dry_run, progress=progress
    )[0]


def purge_tenants(
    tenants: Iterable[str],
    alias: str | None = None,
    *,
    batch: int = 1000,
    stores: Iterable[str | Mapping[str, Any]] = (),
    dry_run: bool = False,
    progress: Progress | None = None,
) -> list[PurgeReport]:
    """:func:`purge_tenant` for several tenants at once, one pass per store; a report per tenant.

    A Redis ``SCAN`` walks the whole database whatever it matches, so
    offboarding many tenants one by one walks it once each; here each store is
    walked once for all of them (the alias's keys matched, each key's tenant
    looked up by its prefix). Their namespaces are bumped together first (one
    round trip per store). Arguments, order of work and errors as
    :func:`purge_tenant`; *stores* are searched for every tenant.
    """
    ids: list[str] = []
    for tenant in tenants:
        if tenant is None:
            raise InvalidTenant(
                "purge_tenant() needs a tenant id, got None: the public namespace is shared by "
                "every tenant and cannot be purged (invalidate_tenant(None) flushes it)."
            )
        ids.append(tenant_id_of(tenant))
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive number of keys, got {batch!r}")
    alias = resolve_alias(alias)
    route = routing.route(alias)
    reports = {t: PurgeReport(t, alias, dry_run) for t in ids}
    label = ids[0] if len(ids) == 1 else f"{len(ids)} tenants"
    # Each place once: location -> (name, store, adapter, tenants with keys maybe there).
    plan: dict[Any, tuple[str, Any, Any, list[str]]] = {}
    built: list[Any] = []

    def add(name: str, store: Any, adapter: Any, tenant: str) -> None:
        hit = plan.setdefault(_location(store), (name, store, adapter, []))
        if tenant not in hit[3]:
            hit[3].append(tenant)

    try:
        from .stores import adapter_for

        for tenant in ids:
            for name, store, adapter in _homes(route, tenant):
                add(name, store, adapter, tenant)
        for spec in stores:
            name, store, made = _extra_store(route, label, spec)
            if made:
                built.append(store)
            adapter = adapter_for(store, route.options.store_adapter)
            for tenant in ids:
                add(name, store, adapter, tenant)
        # Every store's prefixes first: a store that cannot be searched raises before the bump.
        runs = []
        for name, store, adapter, here in plan.values():
            client = _redis_client(store, adapter)
            kind = _kind(store, client)
            listable = kind in ("redis", "redis-cluster", "database")
            parts = {}
            for tenant in here:
                shards = route.options.shards_for(tenant)
                for raw in tenant_key_prefixes(route.options.prefix, tenant, shards):
                    prefix = stored_prefix(store, raw) if listable else str(store.make_key(raw))
                    parts[prefix] = StorePurge(name, kind, prefix, tenant)
            runs.append((name, store, client, here, parts))
        started = timezone.now()
        if not dry_run:
            flushes = [invalidation.flush_bump(route, t) for t in ids]
            invalidation.apply_bumps(flushes, raise_errors=True)
            for report in reports.values():
                report.bumped = True
        for name, store, client, here, parts in runs:
            try:
                _purge_store(store, client, _Pass(name, parts, dry_run, progress), batch)
            except Exception as exc:
                one = here[0] if len(here) == 1 else None
                metrics.record_error(alias, one, "purge", exc, what=f"purge of store {name}")
                raise
            for part in parts.values():
                reports[part.tenant].stores.append(part)
            logger.info(
                "purged %s from store %s: %d key(s) deleted (alias=%s)",
                label,
                name,
                sum(p.deleted for p in parts.values()),
                alias,
                extra={"tenant": label, "alias": alias, "operation": "purge"},
            )
        for tenant in ids:
            reports[tenant].outbox_rows = _forget_outbox(alias, tenant, started, dry_run)
    finally:
        if built:
            live = live_stores()
            for store in built:
                retire.retire(store, live)
    return [reports[t] for t in ids]


async def apurge_tenant(
    tenant: str,
    alias: str | None = None,
    *,
    batch: int = 1000,
    stores: Iterable[str | Mapping[str, Any]] = (),
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PurgeReport:
    """Async twin of :func:`purge_tenant`: the same purge in a worker thread.

    The purge talks to the database (the outbox, the database cache, tenant
    configs), which Django only offers sync: it runs in one thread hop
    (``sync_to_async``), so the event loop is never blocked.
    """
    return await sync_to_async(purge_tenant, thread_sensitive=True)(
        tenant, alias, batch=batch, stores=stores, dry_run=dry_run, progress=progress
    )
