"""Tenant offboarding: ``purge_tenant`` / ``fk_purge_tenant`` erase a tenant's keys (issue 12, item 5).

Real stores only: the suite's Redis (django-redis and Django's ``RedisCache``), its
Redis Cluster, Django's database cache on SQLite, memcached and locmem (which
cannot list keys). Every test also checks that no other tenant lost a key.
"""

from __future__ import annotations

import io
import uuid

import pytest
import redis
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fragmented_keys_django import TenantContext, outbox
from fragmented_keys_django.exceptions import ConfigurationError, InvalidTenant
from fragmented_keys_django.keys import namespace_key, tenant_key_prefix
from fragmented_keys_django.purge import (
    apurge_tenant,
    purge_cluster_slot,
    purge_tenant,
    purge_tenants,
    redis_glob_escape,
)

from .conftest import store_settings
from .redis_dbs import redis_url

TAGS = [("Item", "1"), ("List", "")]


def fill(frag, tenant: str, n: int = 30) -> None:
    """Give *tenant* entries, tag versions, its namespace and a stampede-locked fill."""
    with TenantContext.use_tenant(tenant):
        for i in range(n):
            frag.set_with_tags(f"k{i}", f"{tenant}-{i}", [("Item", str(i)), ("List", "")])
        frag.get_or_set_with_tags("computed", lambda: "x", TAGS)


def redis_keys(url: str, key_prefix: str) -> list[bytes]:
    """Every key of the Redis database *url* that starts with *key_prefix* (no glob)."""
    r = redis.Redis.from_url(url)
    try:
        return [k for k in r.scan_iter(count=1000) if k.startswith(key_prefix.encode())]
    finally:
        r.close()


def tenant_redis_keys(url: str, store_prefix: str, alias_prefix: str, tenant: str) -> list[bytes]:
    """*tenant*'s keys on a Redis store (Django's ``KEY_PREFIX:VERSION:`` + the tenant prefix)."""
    return redis_keys(url, f"{store_prefix}:1:{tenant_key_prefix(alias_prefix, tenant)}")


def drop(url: str, key_prefix: str) -> None:
    r = redis.Redis.from_url(url)
    try:
        found = redis_keys(url, key_prefix)
        if found:
            r.delete(*found)
    finally:
        r.close()


# -- Redis ------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "django-redis-builtin", "django-valkey"])
def redis_store(request):
    """A fragmented alias over django-redis, Django's own ``RedisCache``, django-valkey."""
    conf = store_settings(request.param)
    with override_settings(CACHES=conf):
        yield caches["fragmented"], conf["default"]["KEY_PREFIX"]
        caches["fragmented"].close()
    drop(redis_url("store"), conf["default"]["KEY_PREFIX"])


@pytest.mark.redis
def test_purge_deletes_every_key_of_the_tenant_and_no_other(redis_store):
    frag, kp = redis_store
    url = redis_url("store")
    for tenant in ("acme", "acme2", "globex"):
        fill(frag, tenant)
    before = {t: tenant_redis_keys(url, kp, "t", t) for t in ("acme", "acme2", "globex")}
    assert len(before["acme"]) > 30  # entries, tag versions, namespace

    report = purge_tenant("acme", "fragmented", batch=7)

    assert tenant_redis_keys(url, kp, "t", "acme") == []
    assert report.deleted == len(before["acme"])  # the bump rewrote the namespace key
    assert [s.kind for s in report.stores] == ["redis"]  # django-valkey's client too
    for other in ("acme2", "globex"):
        assert sorted(tenant_redis_keys(url, kp, "t", other)) == sorted(before[other])
        with TenantContext.use_tenant(other):
            assert frag.get_with_tags("k1", [("Item", "1"), ("List", "")]) == f"{other}-1"
    with TenantContext.use_tenant("acme"):  # the tenant still works, from scratch
        assert frag.get_with_tags("k1", [("Item", "1"), ("List", "")]) is None


@pytest.mark.redis
def test_several_tenants_in_one_pass(redis_store):
    """purge_tenants walks each store once for all of them: a report per tenant, others kept."""
    frag, kp = redis_store
    url = redis_url("store")
    names = ["a", "a*", "a[b]", "b", "keep", "keep2"]
    for tenant in names:
        fill(frag, tenant, 10)
    before = {t: sorted(tenant_redis_keys(url, kp, "t", t)) for t in names}
    r = redis.Redis.from_url(url)

    def scans() -> int:
        return int(r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))

    start = scans()
    purge_tenant("keep", "fragmented", dry_run=True)
    one_walk = scans() - start
    start = scans()
    reports = purge_tenants(["a", "a*", "a[b]", "b", "a"], "fragmented", batch=1000)
    walks = scans() - start
    r.close()
    assert walks <= one_walk + 1  # one walk of the database for all, not one per tenant
    assert [rep.tenant for rep in reports] == ["a", "a*", "a[b]", "b"]
    for rep in reports:
        assert rep.deleted == len(before[rep.tenant]) and rep.bumped
        assert tenant_redis_keys(url, kp, "t", rep.tenant) == []
    for kept in ("keep", "keep2"):
        assert sorted(tenant_redis_keys(url, kp, "t", kept)) == before[kept]


@pytest.mark.redis
def test_dry_run_counts_and_deletes_nothing(redis_store):
    frag, kp = redis_store
    url = redis_url("store")
    fill(frag, "acme")
    keys = tenant_redis_keys(url, kp, "t", "acme")
    report = purge_tenant("acme", "fragmented", dry_run=True)
    assert report.matched == len(keys) and report.deleted == 0 and not report.bumped
    assert sorted(tenant_redis_keys(url, kp, "t", "acme")) == sorted(keys)
    with TenantContext.use_tenant("acme"):  # not even bumped
        assert frag.get_with_tags("k1", [("Item", "1"), ("List", "")]) == "acme-1"


@pytest.mark.redis
def test_nothing_is_served_while_the_purge_runs(redis_store):
    """The namespace is bumped before the first delete: entries not reached yet are misses."""
    frag, _kp = redis_store
    fill(frag, "acme", 60)
    seen = []

    def progress(step):
        if step.done:
            return
        with TenantContext.use_tenant("acme"):
            seen.extend(
                frag.get_with_tags(f"k{i}", [("Item", str(i)), ("List", "")]) for i in range(60)
            )

    purge_tenant("acme", "fragmented", batch=5, progress=progress)
    assert seen and set(seen) == {None}


@pytest.mark.redis
def test_key_prefix_with_glob_characters_is_matched_literally():
    """A store KEY_PREFIX ``p*`` must not reach the keys of a store whose prefix is ``pX``."""
    base = uuid.uuid4().hex[:8]
    url = redis_url("store")
    glob_conf = store_settings("redis")
    glob_conf["default"]["KEY_PREFIX"] = f"{base}[ab]*?\\"
    plain_conf = store_settings("redis")
    plain_conf["default"]["KEY_PREFIX"] = f"{base}a-x\\"
    try:
        with override_settings(CACHES=plain_conf):
            fill(caches["fragmented"], "acme")
            caches["fragmented"].close()
        plain = redis_keys(url, base + "a-x")
        assert plain
        with override_settings(CACHES=glob_conf):
            fill(caches["fragmented"], "acme")
            report = purge_tenant("acme", "fragmented")
            caches["fragmented"].close()
        assert report.deleted > 0
        assert redis_keys(url, base + "[ab]") == []
        assert sorted(redis_keys(url, base + "a-x")) == sorted(plain)
    finally:
        drop(url, base)


TENANT_CHARS = st.text(alphabet="ab*?[]{}\\:^-!%_ é", min_size=1, max_size=12)


@st.composite
def tenant_pairs(draw):
    """Two distinct tenant ids, often one a prefix of the other, with glob and tag characters."""
    a = draw(TENANT_CHARS)
    how = draw(st.sampled_from(["prefix", "extends", "any"]))
    if how == "prefix" and len(a) > 1:
        b = a[: draw(st.integers(1, len(a) - 1))]
    elif how == "extends":
        b = a + draw(TENANT_CHARS)
    else:
        b = draw(TENANT_CHARS)
    return a, b


@pytest.mark.redis
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=tenant_pairs())
def test_purge_never_touches_another_tenant(pair):
    gone, kept = pair
    if gone == kept:
        return
    conf = store_settings("redis")
    kp = conf["default"]["KEY_PREFIX"]
    url = redis_url("store")
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        try:
            fill(frag, gone, 3)
            fill(frag, kept, 3)
            before = sorted(tenant_redis_keys(url, kp, "t", kept))
            report = purge_tenant(gone, "fragmented", batch=2)
            assert tenant_redis_keys(url, kp, "t", gone) == []
            assert sorted(tenant_redis_keys(url, kp, "t", kept)) == before
            assert report.deleted > 0
            with TenantContext.use_tenant(kept):
                assert frag.get_with_tags("k1", [("Item", "1"), ("List", "")]) == f"{kept}-1"
        finally:
            frag.close()
            drop(url, kp)


@pytest.mark.redis
@pytest.mark.sentinel
@pytest.mark.django_db(transaction=True)
def test_sentinel_store_is_purged_on_the_primary(sentinel):
    """django-redis's SentinelClient (the generic path): the purge reaches the primary."""
    from .test_sentinel_backend import sentinel_caches

    conf = sentinel_caches(sentinel)
    kp = conf["default"]["KEY_PREFIX"]
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        fill(frag, "acme", 5)
        fill(frag, "globex", 5)
        primary = sentinel.primary.client()

        def keys(tenant: str) -> list[bytes]:
            start = f"{kp}:1:{tenant_key_prefix('t', tenant)}".encode()
            return [k for k in primary.scan_iter(count=1000) if k.startswith(start)]

        globex = sorted(keys("globex"))
        assert keys("acme") and globex
        report = purge_tenant("acme", "fragmented")
        assert [(s.kind, s.deleted > 0) for s in report.stores] == [("redis", True)]
        assert keys("acme") == []
        assert sorted(keys("globex")) == globex
        for key in keys("globex"):
            primary.delete(key)
        frag.close()


def hashed_key(key, key_prefix, version):
    import hashlib

    return hashlib.sha1(f"{key_prefix}:{version}:{key}".encode()).hexdigest()


@pytest.mark.redis
def test_a_key_function_that_hides_the_prefix_is_refused_before_any_bump():
    conf = store_settings("redis")
    conf["default"]["KEY_FUNCTION"] = f"{__name__}.hashed_key"
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        fill(frag, "acme", 2)
        with pytest.raises(ConfigurationError, match="KEY_FUNCTION"):
            purge_tenant("acme", "fragmented")
        with TenantContext.use_tenant("acme"):  # refused before the bump
            assert frag.get_with_tags("k1", [("Item", "1"), ("List", "")]) == "acme-1"
        frag.clear()
        frag.close()


def test_glob_escape():
    assert redis_glob_escape("a*b?c[d]e\\f{g}") == "a\\*b\\?c\\[d\\]e\\\\f{g}"


# -- the database cache, memcached, locmem -----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_database_cache_purge_deletes_by_prefix_only():
    conf = store_settings("db")
    conf["default"]["KEY_PREFIX"] = "p_%!"  # LIKE's wildcards and our escape character
    other = {**conf["default"], "KEY_PREFIX": "pX%!"}  # "p_" as a LIKE pattern matches "pX"
    conf["other"] = other
    conf["fragmented2"] = {**conf["fragmented"], "CACHE_NAME": "other"}
    with override_settings(CACHES=conf):
        call_command("createcachetable", verbosity=0)
        caches["default"].clear()
        fill(caches["fragmented"], "acme", 10)
        fill(caches["fragmented"], "globex", 10)
        fill(caches["fragmented2"], "acme", 10)

        def keys(kp: str, tenant: str) -> list[str]:
            from django.db import connection

            with connection.cursor() as cur:
                cur.execute("SELECT cache_key FROM fkd_cache_table")
                rows = [r[0] for r in cur.fetchall()]
            return sorted(
                k for k in rows if k.startswith(f"{kp}:1:{tenant_key_prefix('t', tenant)}")
            )

        globex, other_acme = keys("p_%!", "globex"), keys("pX%!", "acme")
        assert keys("p_%!", "acme") and globex and other_acme
        report = purge_tenant("acme", "fragmented", batch=3)
        assert [(s.kind, s.listable) for s in report.stores] == [("database", True)]
        assert report.deleted > 10
        assert keys("p_%!", "acme") == []
        assert keys("p_%!", "globex") == globex
        assert keys("pX%!", "acme") == other_acme
        caches["default"].clear()


@pytest.mark.parametrize("kind", ["locmem", pytest.param("memcached", marks=pytest.mark.memcached)])
def test_stores_that_cannot_list_keys_are_bumped_and_reported(kind):
    with override_settings(CACHES=store_settings(kind)):
        frag = caches["fragmented"]
        fill(frag, "acme", 5)
        report = purge_tenant("acme", "fragmented")
        assert report.bumped and report.deleted == 0
        assert [s.listable for s in report.stores] == [False]
        with TenantContext.use_tenant("acme"):  # unreachable: the namespace was bumped
            assert frag.get_with_tags("k1", [("Item", "1"), ("List", "")]) is None
        frag.close()


def test_bad_input_is_refused():
    with override_settings(CACHES=store_settings("locmem")):
        with pytest.raises(InvalidTenant, match="public namespace"):
            purge_tenant(None, "fragmented")  # type: ignore[arg-type]
        with pytest.raises(InvalidTenant):
            purge_tenant("", "fragmented")
        with pytest.raises(ValueError, match="batch"):
            purge_tenant("acme", "fragmented", batch=0)


def test_async_twin():
    from asgiref.sync import async_to_sync

    with override_settings(CACHES=store_settings("locmem")):
        report = async_to_sync(apurge_tenant)("acme", "fragmented")
        assert report.bumped and report.tenant == "acme"


# -- stores a tenant left ----------------------------------------------------------------

MOVES: dict[str, dict] = {}


def move_configs(tenant_id: str):
    return MOVES.get(tenant_id)


move_configs.tenants = lambda: list(MOVES)  # type: ignore[attr-defined]


@pytest.mark.redis
def test_stores_a_tenant_left_are_purged_too():
    """acme lived in the shared store, then in tenant store A, now in tenant store B."""
    from fragmented_keys_django.tenancy.stores import notify_tenant_config_changed

    kp = uuid.uuid4().hex[:8]
    shared_url, a_url, b_url = (
        redis_url("tenants_shared"),
        redis_url("tenant"),
        redis_url("tenant2"),
    )
    conf = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": shared_url,
            "KEY_PREFIX": kp,
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            "OPTIONS": {"TENANT_STORES": f"{__name__}.move_configs"},
        },
    }
    MOVES.clear()
    try:
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]
            fill(frag, "acme", 5)
            fill(frag, "globex", 5)
            MOVES["acme"] = {"LOCATION": a_url}
            notify_tenant_config_changed("acme")
            fill(frag, "acme", 5)
            MOVES["acme"] = {"LOCATION": b_url}
            notify_tenant_config_changed("acme")
            fill(frag, "acme", 5)
            globex = sorted(tenant_redis_keys(shared_url, kp, "t", "globex"))
            for url in (shared_url, a_url, b_url):
                assert tenant_redis_keys(url, kp, "t", "acme")

            report = purge_tenant("acme", "fragmented", stores=[{"LOCATION": a_url}])

            assert [s.store for s in report.stores] == ["acme", "default", "acme"]
            for url in (shared_url, a_url, b_url):
                assert tenant_redis_keys(url, kp, "t", "acme") == []
            assert sorted(tenant_redis_keys(shared_url, kp, "t", "globex")) == globex
            frag.tenant_stores.forget()
    finally:
        MOVES.clear()
        for url in (shared_url, a_url, b_url):
            drop(url, kp)


@pytest.mark.redis
def test_the_documented_erasure_leaves_no_key():
    """docs/operations.md: purge, delete the config (an arrival bump), purge again, dry run 0."""
    from fragmented_keys_django.tenancy.stores import notify_tenant_config_changed

    kp = uuid.uuid4().hex[:8]
    shared_url, own_url = redis_url("tenants_shared"), redis_url("tenant")
    conf = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": shared_url,
            "KEY_PREFIX": kp,
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            "OPTIONS": {"TENANT_STORES": f"{__name__}.move_configs"},
        },
    }
    MOVES.clear()
    try:
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]
            MOVES["acme"] = {"LOCATION": own_url}
            fill(frag, "acme", 5)
            assert purge_tenant("acme", "fragmented").deleted > 0
            del MOVES["acme"]
            notify_tenant_config_changed("acme")
            assert tenant_redis_keys(shared_url, kp, "t", "acme")  # the arrival bump
            second = purge_tenant("acme", "fragmented")
            assert [(s.store, s.deleted) for s in second.stores] == [("default", 1)]
            assert purge_tenant("acme", "fragmented", dry_run=True).matched == 0
            for url in (shared_url, own_url):
                assert tenant_redis_keys(url, kp, "t", "acme") == []
            frag.tenant_stores.forget()
    finally:
        MOVES.clear()
        for url in (shared_url, own_url):
            drop(url, kp)


# -- the outbox ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_outbox_rows_of_the_tenant_are_deleted():
    import datetime

    from django.utils import timezone

    from fragmented_keys_django.models import OutboxEntry

    with override_settings(CACHES=store_settings("locmem")):
        old = timezone.now() - datetime.timedelta(seconds=60)
        rows = [
            OutboxEntry(alias="fragmented", tenant="acme", keys=["k"], tags=[["User", "42"]]),
            OutboxEntry(alias="fragmented", tenant="acme", keys=None, created=old),  # dead marker
            OutboxEntry(alias="fragmented", tenant="acme", keys=None),  # a live transaction's
            OutboxEntry(alias="fragmented", tenant="globex", keys=["k"]),
            OutboxEntry(alias="other", tenant="acme", keys=["k"]),
        ]
        OutboxEntry.objects.bulk_create(rows)
        outbox.reset()
        dry = purge_tenant("acme", "fragmented", dry_run=True)
        assert dry.outbox_rows == 2 and OutboxEntry.objects.count() == 5  # counted, kept
        report = purge_tenant("acme", "fragmented")
        assert report.outbox_rows == 2
        left = sorted((r.alias, r.tenant, r.keys is None) for r in OutboxEntry.objects.all())
        assert left == [
            ("fragmented", "acme", True),
            ("fragmented", "globex", False),
            ("other", "acme", False),
        ]


# -- the command ---------------------------------------------------------------------------


@pytest.mark.redis
def test_command_dry_run_then_purge(redis_store):
    frag, kp = redis_store
    url = redis_url("store")
    fill(frag, "acme")
    fill(frag, "globex")
    n = len(tenant_redis_keys(url, kp, "t", "acme"))
    out = io.StringIO()
    call_command("fk_purge_tenant", "acme", "--dry-run", stdout=out, stderr=io.StringIO())
    assert f"acme: store default (redis): {n} key(s) found" in out.getvalue()
    assert len(tenant_redis_keys(url, kp, "t", "acme")) == n
    out = io.StringIO()
    call_command("fk_purge_tenant", "acme", "--batch", "10", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "store default: " in text  # progress lines
    assert f"purged tenant acme (alias fragmented): {n} key(s) deleted" in text
    assert tenant_redis_keys(url, kp, "t", "acme") == []
    assert tenant_redis_keys(url, kp, "t", "globex")


def test_command_refuses_bad_arguments():
    with override_settings(CACHES=store_settings("locmem")):
        with pytest.raises(CommandError, match="--batch"):
            call_command("fk_purge_tenant", "acme", "--batch", "0", stdout=io.StringIO())
        with pytest.raises(CommandError, match="not JSON"):
            call_command("fk_purge_tenant", "acme", "--store-config", "{", stdout=io.StringIO())
        with pytest.raises(CommandError, match="not an alias"):
            call_command("fk_purge_tenant", "acme", "--store", "nope", stdout=io.StringIO())


# -- Redis Cluster ---------------------------------------------------------------------------


def _tenants_sharing_a_slot(kp: str) -> tuple[str, str]:
    from redis.crc import key_slot

    seen: dict[int, str] = {}
    for i in range(100_000):
        tenant = f"t{i}"
        slot = key_slot(f"{kp}:1:{namespace_key('t', tenant)}".encode())
        if slot in seen:
            return seen[slot], tenant
        seen[slot] = tenant
    raise AssertionError("no two tenants share a slot")  # pragma: no cover


@pytest.mark.redis
@pytest.mark.cluster
@pytest.mark.parametrize("batch", [1000, 7])
def test_cluster_purge_reads_only_the_tenants_slot(redis_cluster, batch):
    kp = uuid.uuid4().hex[:8]
    gone, neighbour = _tenants_sharing_a_slot(kp)
    client = redis_cluster.client()
    try:
        prefixes = {t: f"{kp}:1:{tenant_key_prefix('t', t)}" for t in (gone, neighbour, "far")}
        for prefix in prefixes.values():
            client.mset({f"{prefix}e:{i}": b"v" for i in range(120)})
            client.set(prefix + "n:x", b"1")
        slot = client.keyslot(prefixes[gone] + "e")
        assert client.keyslot(prefixes[neighbour] + "e") == slot
        before = redis_cluster.command_calls()
        matched, deleted = purge_cluster_slot(client, prefixes[gone], batch=batch)
        after = redis_cluster.command_calls()
        assert (matched, deleted) == (121, 121)
        for tenant, prefix in prefixes.items():
            left = [k for k in client.scan_iter(match=redis_glob_escape(prefix) + "*")]
            assert len(left) == (0 if tenant == gone else 121), tenant
        owner = redis_cluster.owner(slot).port
        for port, calls in after.items():
            if port != owner:  # the other nodes were not walked
                assert calls.get("cluster|getkeysinslot", 0) == before.get(port, {}).get(
                    "cluster|getkeysinslot", 0
                )
                assert calls.get("scan", 0) == before.get(port, {}).get("scan", 0)
        dry = purge_cluster_slot(client, prefixes[neighbour], batch=batch, dry_run=True)
        assert dry == (121, 0)
    finally:
        for node in redis_cluster.primaries():
            for key in node.client().scan_iter(match=f"{kp}:*", count=1000):
                client.delete(key)
        client.close()


@pytest.mark.redis
@pytest.mark.cluster
def test_cluster_purge_when_neighbours_crowd_the_slot(redis_cluster):
    """Pages of GETKEYSINSLOT full of a neighbour's keys: the node is scanned instead."""
    kp = uuid.uuid4().hex[:8]
    gone, neighbour = _tenants_sharing_a_slot(kp)
    client = redis_cluster.client()
    try:
        ours = f"{kp}:1:{tenant_key_prefix('t', gone)}"
        theirs = f"{kp}:1:{tenant_key_prefix('t', neighbour)}"
        client.mset({f"{theirs}e:{i}": b"v" for i in range(300)})
        client.mset({f"{ours}e:{i}": b"v" for i in range(3)})
        assert purge_cluster_slot(client, ours, batch=5) == (3, 3)
        assert list(client.scan_iter(match=redis_glob_escape(ours) + "*")) == []
        assert len(list(client.scan_iter(match=redis_glob_escape(theirs) + "*"))) == 300
    finally:
        for node in redis_cluster.primaries():
            for key in node.client().scan_iter(match=f"{kp}:*", count=1000):
                client.delete(key)
        client.close()


class _ClusterClient(RedisCacheClient):
    """Django's Redis client on the suite's cluster (what a cluster backend built on it does)."""

    def get_client(self, key=None, *, write=False):
        return _CLUSTER[0]

    def set_many(self, data, timeout):  # MSET may span slots: one SET per key, pipelined
        pipe = self.get_client().pipeline()
        for key, value in data.items():
            pipe.set(key, self._serializer.dumps(value), ex=timeout)
        pipe.execute()


class ClusterStore(RedisCache):
    """A Django ``RedisCache`` whose client is a ``RedisCluster`` (test stand-in)."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _ClusterClient


_CLUSTER: list = []


@pytest.mark.redis
@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_a_store_on_a_cluster_client_is_purged_slot_by_slot(redis_cluster):
    """purge_tenant finds a cluster client behind a Django RedisCache and purges slot-wise."""
    kp = uuid.uuid4().hex[:8]
    client = redis_cluster.client()
    _CLUSTER[:] = [client]
    conf = {
        "default": {
            "BACKEND": f"{__name__}.ClusterStore",
            "LOCATION": redis_cluster.url,
            "KEY_PREFIX": kp,
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            "OPTIONS": {"STORE_ADAPTER": "fragmented_keys_django.stores.DjangoCacheAdapter"},
        },
    }
    try:
        prefixes = {t: f"{kp}:1:{tenant_key_prefix('t', t)}" for t in ("acme", "globex")}
        for prefix in prefixes.values():
            client.mset({f"{prefix}e:{i}": b"v" for i in range(50)})
        with override_settings(CACHES=conf):
            report = purge_tenant("acme", "fragmented", batch=10)
        assert [(s.kind, s.deleted) for s in report.stores] == [("redis-cluster", 51)]  # + ns
        for tenant, prefix in prefixes.items():
            left = list(client.scan_iter(match=redis_glob_escape(prefix) + "*"))
            assert len(left) == (0 if tenant == "acme" else 50)
    finally:
        for node in redis_cluster.primaries():
            for key in node.client().scan_iter(match=f"{kp}:*", count=1000):
                client.delete(key)
        _CLUSTER.clear()
        client.close()
