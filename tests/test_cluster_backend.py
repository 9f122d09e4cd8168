"""FragmentedKeysCacheBackend on a Redis Cluster: the acceptance tests of issue 12, item 1.

The store is our ``RedisClusterCache`` (Django's ``RedisCache`` on redis-py's
``RedisCluster``): no cluster-capable Django backend fits Python 3.11 with async
(django-valkey's ``ClusterValkeyCache`` is sync-only and its ``set_many`` takes no
``timeout``; django-cachex needs Python 3.12; django-redis has no cluster client).
The fragmented backend drives it through ``stores/redis_cluster.py``: one ``MGET``
per read, one script per write, one command per tenant bump, on the node owning the
tenant's slot; ``MOVED``/``ASK``/``TRYAGAIN`` survived. Commands are counted per
primary from the slowlog of the suite's cluster (tests/servers.py).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.test import override_settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from fragmented_keys_django import TenantContext, metrics
from fragmented_keys_django.keys import register_global_tag

from . import servers
from .race_support import reset_retrier, settle_retries

pytestmark = [
    pytest.mark.redis,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),  # a recovering store drains the outbox
]

MISS = object()
TAGS = [("User", "1"), ("Org", "7")]
#: Commands that read or write data (housekeeping such as INFO and CLUSTER SLOTS is not counted).
DATA_COMMANDS = {
    "get", "mget", "set", "mset", "msetnx", "setnx", "setex", "psetex", "getex", "del",
    "unlink", "exists", "expire", "pexpire", "incrby", "decrby", "eval", "evalsha", "touch",
}  # fmt: skip


def cluster_caches(cluster: servers.RedisClusterTopology, **wrapper: Any) -> dict:
    """``default``: our ``RedisClusterCache`` on the suite's cluster; ``fragmented`` over it."""
    return {
        "default": {
            "BACKEND": "fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache",
            "LOCATION": cluster.url,
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
            "KEY_PREFIX": f"fkd-{uuid.uuid4().hex[:8]}",
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            **wrapper,
        },
    }


@pytest.fixture
def frag(redis_cluster):
    metrics.reset()
    with override_settings(CACHES=cluster_caches(redis_cluster)):
        yield caches["fragmented"]
        caches["fragmented"].close()
        caches["default"].client.close()
    reset_retrier()


class Counter:
    """Data commands clients sent to each primary between two snapshots.

    Read from each primary's slowlog, every command logged (threshold 0 µs) with
    the client that sent it: ``INFO commandstats`` would also count the commands
    a script runs inside (the stamping script's ``MGET`` and ``SET``, logged as
    client ``?:0``) and what replicas apply, which are not round trips.
    """

    LUA_CLIENT = "?:0"

    def __init__(self, cluster: servers.RedisClusterTopology) -> None:
        self.cluster = cluster
        self.nodes = cluster.primaries()
        for node in self.nodes:
            client = node.client()
            client.config_set("slowlog-max-len", 100_000)
            client.config_set("slowlog-log-slower-than", 0)
            client.slowlog_reset()

    def delta(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for node in self.nodes:
            client = node.client()
            entries = client.slowlog_get(-1)
            client.config_set("slowlog-log-slower-than", 10_000)  # the default again
            for entry in entries:
                command = entry["command"]
                name = (
                    command.split()[0].decode()
                    if isinstance(command, bytes)
                    else command.split()[0]
                )
                address = entry.get("client_address") or b""
                address = address.decode() if isinstance(address, bytes) else address
                if name.lower() in DATA_COMMANDS and address != self.LUA_CLIENT:
                    calls = out.setdefault(node.port, {})
                    calls[name.lower()] = calls.get(name.lower(), 0) + 1
        return out


def tenant_node(cluster: servers.RedisClusterTopology, frag, tenant: str) -> servers.RedisServer:
    """The primary that owns *tenant*'s slot."""
    with TenantContext.use_tenant(tenant):
        key = frag.tag_version_keys(TAGS)[0]
    return cluster.owner(cluster.keyslot(frag.store.make_key(key)))


def store_errors() -> dict:
    return {k: n for k, n in metrics.snapshot().items() if n}


def test_tagged_api_works_on_a_cluster_and_a_warm_read_is_one_mget_on_one_node(redis_cluster, frag):
    node = tenant_node(redis_cluster, frag, "acme")
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "v1", TAGS)
        counter = Counter(redis_cluster)
        assert frag.get_with_tags("page", TAGS) == "v1"
        assert counter.delta() == {node.port: {"mget": 1}}
        assert frag.invalidate_tags([TAGS[0]]) == 1
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
        assert frag.get_or_set_with_tags("page", "v2", TAGS) == "v2"
        frag.clear()
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
    with TenantContext.use_tenant("globex"):
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
    assert store_errors() == {}


def test_a_tagged_write_is_one_script_on_one_node(redis_cluster, frag):
    forget_scripts(redis_cluster)  # the first write loads them
    node = tenant_node(redis_cluster, frag, "acme")
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "v0", TAGS)  # versions exist
        counter = Counter(redis_cluster)
        frag.set_with_tags("page", "v1", TAGS)
        assert counter.delta() == {node.port: {"evalsha": 1}}


def test_a_bump_of_one_tenant_is_one_command_on_its_node(redis_cluster, frag):
    node = tenant_node(redis_cluster, frag, "acme")
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "v0", TAGS)
        before = frag.store.get_many(frag.tag_version_keys(TAGS))
        counter = Counter(redis_cluster)
        assert frag.invalidate_tags(TAGS) == 2
        delta = counter.delta()
        after = frag.store.get_many(frag.tag_version_keys(TAGS))
    assert store_errors() == {}
    assert all(after.get(k) != v for k, v in before.items()), (before, after)
    assert list(delta) == [node.port]
    assert sum(delta[node.port].values()) == 1, delta


def test_a_read_with_a_global_tag_is_one_mget_on_one_node(redis_cluster, frag):
    register_global_tag("Country")
    tags = [*TAGS, ("Country", "FR")]
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "v1", tags)
        counter = Counter(redis_cluster)
        assert frag.get_with_tags("page", tags) == "v1"
        delta = counter.delta()
    assert [calls for calls in delta.values()] == [{"mget": 1}]


def forget_scripts(cluster: servers.RedisClusterTopology) -> None:
    """``SCRIPT FLUSH`` on every node: as a new cluster (or a replaced node) starts."""
    for node in cluster.live():
        node.client().script_flush()


def test_async_tagged_api_on_a_cluster(redis_cluster, frag):
    forget_scripts(redis_cluster)  # async calls load the scripts themselves

    async def scenario():
        with TenantContext.use_tenant("acme"):
            await frag.aset_with_tags("page", "v1", TAGS)
            assert await frag.aget_with_tags("page", TAGS) == "v1"
            assert await frag.ainvalidate_tags([TAGS[0]]) == 1
            assert await frag.aget_with_tags("page", TAGS, default=MISS) is MISS

    async_to_sync(scenario)()
    assert store_errors() == {}


def _live_traffic(frag, tenant: str, stop: threading.Event, report: dict) -> list[threading.Thread]:
    """Readers and a bumper on *tenant*: a value computed before a returned bump must not be served."""
    lock = threading.Lock()
    state = {"started": 0, "done": -1}

    def bumper():
        with TenantContext.use_tenant(tenant):
            i = 0
            while not stop.is_set():
                with lock:
                    state["started"] = i + 1
                frag.invalidate_tags(TAGS)
                with lock:
                    state["done"] = i
                i += 1

    def reader():
        with TenantContext.use_tenant(tenant):
            while not stop.is_set():
                with lock:
                    done = state["done"]

                def load():
                    with lock:
                        return state["started"]

                value = frag.get_or_set_with_tags("live", load, TAGS)
                report["served"] += 1
                if value <= done:
                    report["stale"].append((done, value))

    return [threading.Thread(target=t, daemon=True) for t in (bumper, reader, reader)]


def _run_with_traffic(frag, tenant: str, fault) -> dict:
    report: dict = {"served": 0, "stale": []}
    stop = threading.Event()
    threads = _live_traffic(frag, tenant, stop, report)
    for t in threads:
        t.start()
    try:
        fault()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return report


def test_resharding_the_tenant_slot_under_live_traffic_serves_nothing_stale(redis_cluster, frag):
    node = tenant_node(redis_cluster, frag, "acme")
    with TenantContext.use_tenant("acme"):
        slot = redis_cluster.keyslot(frag.store.make_key(frag.tag_version_keys(TAGS)[0]))
    target = next(p for p in redis_cluster.primaries() if p.port != node.port)

    def reshard():
        migration = redis_cluster.migrate_slot(slot, target)
        try:
            for _ in range(20):
                migration.move_keys(1)
        finally:
            migration.move_keys().finish()

    report = _run_with_traffic(frag, "acme", reshard)
    assert report["stale"] == []
    assert report["served"] > 0
    assert store_errors() == {}
    with TenantContext.use_tenant("acme"):
        frag.invalidate_tags(TAGS)
        assert frag.get_or_set_with_tags("after", "fresh", TAGS) == "fresh"
        assert frag.get_with_tags("after", TAGS) == "fresh"


def test_a_failover_of_the_tenant_node_under_live_traffic_serves_nothing_stale(redis_cluster, frag):
    node = tenant_node(redis_cluster, frag, "acme")
    report = _run_with_traffic(frag, "acme", lambda: redis_cluster.failover(node))
    assert report["stale"] == []
    assert store_errors() == {}
    with TenantContext.use_tenant("acme"):
        frag.invalidate_tags(TAGS)
        assert frag.get_or_set_with_tags("after", "fresh", TAGS) == "fresh"
        assert frag.get_with_tags("after", TAGS) == "fresh"


# -- versions every tenant shares: one copy per hash slot ------------------------------------


def tenants_on_every_primary(cluster: servers.RedisClusterTopology, frag, per_node: int = 2):
    """Tenant ids whose slots are spread over every primary, *per_node* each."""
    wanted = {node.port: per_node for node in cluster.primaries()}
    found: list[str] = []
    for i in range(10_000):
        tenant = f"tenant-{i}"
        port = tenant_node(cluster, frag, tenant).port
        if wanted.get(port):
            wanted[port] -= 1
            found.append(tenant)
        if not any(wanted.values()):
            return found
    raise AssertionError(f"no tenants found on every primary: {wanted}")


def test_a_global_bump_invalidates_every_tenant_one_script_per_primary(redis_cluster, frag):
    register_global_tag("Country")
    tags = [*TAGS, ("Country", "FR")]
    tenants = [*tenants_on_every_primary(redis_cluster, frag), None]
    for tenant in tenants:
        with TenantContext.use_tenant(tenant):
            frag.set_with_tags("page", f"v-{tenant}", tags)
            assert frag.get_with_tags("page", tags) == f"v-{tenant}"
    counter = Counter(redis_cluster)
    with TenantContext.use_tenant(tenants[0]):
        assert frag.invalidate_tags([("Country", "FR")]) == 1
    delta = counter.delta()
    # Every slot's copy deleted: one script per primary, nothing else sent.
    assert delta == {node.port: {"eval": 1} for node in redis_cluster.primaries()}
    for tenant in tenants:
        with TenantContext.use_tenant(tenant):
            assert frag.get_with_tags("page", tags, default=MISS) is MISS, tenant
            assert frag.get_or_set_with_tags("page", "fresh", tags) == "fresh"
            assert frag.get_with_tags("page", tags) == "fresh"
    with TenantContext.use_tenant(tenants[1]):  # other instances of the global tag untouched
        frag.set_with_tags("other", "kept", [("Country", "DE")])
        frag.invalidate_tags([("Country", "FR")])
        assert frag.get_with_tags("other", [("Country", "DE")]) == "kept"
    assert store_errors() == {}


def test_a_global_bump_async_reaches_every_tenant(redis_cluster, frag):
    register_global_tag("Country")
    tags = [*TAGS, ("Country", "FR")]
    tenants = tenants_on_every_primary(redis_cluster, frag, per_node=1)

    forget_scripts(redis_cluster)

    async def scenario():
        for tenant in tenants:
            with TenantContext.use_tenant(tenant):
                await frag.aset_with_tags("page", "v1", tags)
                assert await frag.aget_with_tags("page", tags) == "v1"
        with TenantContext.use_tenant(tenants[-1]):
            assert await frag.ainvalidate_tags([("Country", "FR")]) == 1
        for tenant in tenants:
            with TenantContext.use_tenant(tenant):
                assert await frag.aget_with_tags("page", tags, default=MISS) is MISS

    async_to_sync(scenario)()
    assert store_errors() == {}


def test_a_global_bump_while_a_tenant_slot_migrates_reaches_it(redis_cluster, frag):
    register_global_tag("Country")
    tags = [*TAGS, ("Country", "FR")]
    node = tenant_node(redis_cluster, frag, "acme")
    with TenantContext.use_tenant("acme"):
        slot = redis_cluster.keyslot(frag.store.make_key(frag.tag_version_keys(TAGS)[0]))
        copy = frag.store.make_key(frag.tag_version_keys([("Country", "FR")])[0])
        frag.set_with_tags("page", "v1", tags)
        frag.set_with_tags("more", "v1", tags)
    assert redis_cluster.keyslot(copy) == slot, "the copy lives in the tenant's slot"
    target = next(p for p in redis_cluster.primaries() if p.port != node.port)
    migration = redis_cluster.migrate_slot(slot, target)
    try:
        # The slot's keys split between the two nodes (multi-key reads get TRYAGAIN
        # until it ends), the copy of the global version already on the target.
        node.client().execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "REPLACE", "KEYS", copy
        )
        with TenantContext.use_tenant("globex"):
            frag.invalidate_tags([("Country", "FR")])
        assert store_errors() == {}
    finally:
        migration.move_keys().finish()
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("page", tags, default=MISS) is MISS
        assert frag.get_with_tags("more", tags, default=MISS) is MISS
        assert frag.get_or_set_with_tags("page", "fresh", tags) == "fresh"
        assert frag.get_with_tags("page", tags) == "fresh"
    assert store_errors() == {}


@pytest.fixture
def hospitals_netted():
    from fragmented_keys_django import ModelTagManager
    from tests.testapp.models import Hospital

    ModelTagManager.register_model(Hospital)
    return Hospital


def test_the_safety_net_all_tenants_version_on_a_cluster(redis_cluster, frag, hospitals_netted):
    from fragmented_keys_django import net

    tags = [("Hospital", "1")]
    tenants = tenants_on_every_primary(redis_cluster, frag, per_node=1)
    for tenant in tenants:
        with TenantContext.use_tenant(tenant):
            frag.set_with_tags("page", "v1", tags)
            counter = Counter(redis_cluster)
            assert frag.get_with_tags("page", tags) == "v1"
            node = tenant_node(redis_cluster, frag, tenant)
            assert counter.delta() == {node.port: {"mget": 1}}  # the net's versions included
    assert net.invalidate_models("Hospital", tenant=None) == 1  # every tenant
    for tenant in tenants:
        with TenantContext.use_tenant(tenant):
            assert frag.get_with_tags("page", tags, default=MISS) is MISS, tenant
    assert store_errors() == {}


def test_reading_from_replicas_is_refused_with_the_fix(redis_cluster):
    from fragmented_keys_django.exceptions import ConfigurationError

    conf = cluster_caches(redis_cluster)
    conf["default"]["OPTIONS"]["read_from_replicas"] = True
    with override_settings(CACHES=conf):
        refused = pytest.raises(ConfigurationError, match=r"read_from_replicas.*primaries only")
        with refused, TenantContext.use_tenant("acme"):
            caches["fragmented"].get_with_tags("page", TAGS)
        caches["default"].client.close()


# -- a tenant spread over several hash slots (TENANT_SLOTS) -------------------------------


@pytest.fixture
def spread(request, redis_cluster):
    """The fragmented alias with a tenant over 3 hash slots, one per primary: ``(frag, tenant)``.

    ``request.param`` (indirect): options for the store's ``RedisCluster``.
    """
    metrics.reset()
    tenant = None
    conf = cluster_caches(redis_cluster)
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        primaries = {node.port for node in redis_cluster.primaries()}
        from fragmented_keys_django.keys import namespace_key, tenant_slot_keys

        for i in range(1000):  # a tenant whose three slots are on three primaries
            candidate = f"big-{i}"
            keys = tenant_slot_keys(namespace_key("t", candidate, 3))
            owners = {
                redis_cluster.owner(redis_cluster.keyslot(frag.store.make_key(k))).port
                for k in keys
            }
            if owners == primaries:
                tenant = candidate
                break
        assert tenant is not None
        caches["default"].client.close()
    options = {"TENANT_SLOTS": {tenant: 3}}
    conf = cluster_caches(redis_cluster, OPTIONS=options)
    conf["default"]["OPTIONS"].update(getattr(request, "param", {}))
    with override_settings(CACHES=conf):
        yield caches["fragmented"], tenant
        caches["fragmented"].close()
        caches["default"].client.close()
    reset_retrier()


def entry_node(cluster, frag, key: str, tags) -> int:
    """Port of the primary holding the entry *key* with *tags* (current tenant)."""
    _, _, ek = frag._tagged(key, tags, "", None)
    return cluster.owner(cluster.keyslot(frag.store.make_key(ek.entry))).port


def test_a_tenant_over_three_slots_reads_in_one_mget_and_bumps_every_slot(redis_cluster, spread):
    frag, tenant = spread
    keys = [f"page-{i}" for i in range(30)]
    with TenantContext.use_tenant(tenant):
        for key in keys:
            frag.set_with_tags(key, f"v1-{key}", TAGS)
        nodes = {entry_node(redis_cluster, frag, key, TAGS) for key in keys}
        assert nodes == {node.port for node in redis_cluster.primaries()}, "entries spread"
        for key in keys[:6]:  # a warm read: one MGET on the entry's node
            counter = Counter(redis_cluster)
            assert frag.get_with_tags(key, TAGS) == f"v1-{key}"
            assert counter.delta() == {entry_node(redis_cluster, frag, key, TAGS): {"mget": 1}}
        got = frag.get_many_with_tags({key: TAGS for key in keys})
        assert got == {key: f"v1-{key}" for key in keys}
        counter = Counter(redis_cluster)
        assert frag.invalidate_tags(TAGS) == 2
        delta = counter.delta()
        # One command per slot, on its node: the three slots' versions all written.
        assert delta == {node.port: {"evalsha": 1} for node in redis_cluster.primaries()}
        for key in keys:
            assert frag.get_with_tags(key, TAGS, default=MISS) is MISS, key
        frag.set_with_tags(keys[0], "v2", TAGS)
        frag.clear()  # the namespace of every slot
        assert frag.get_with_tags(keys[0], TAGS, default=MISS) is MISS
        frag.set_many({"a": 1, "b": 2})  # untagged entries: the tenant's first slot
        assert frag.get_many(["a", "b"]) == {"a": 1, "b": 2}
        assert frag.get("a") == 1
    with TenantContext.use_tenant("other"):  # one slot, as before
        frag.set_with_tags("page", "x", TAGS)
        assert frag.get_with_tags("page", TAGS) == "x"
    assert store_errors() == {}


def test_purging_a_tenant_spread_over_three_slots_erases_every_slot(redis_cluster, spread):
    """``purge_tenant`` of a ``TENANT_SLOTS`` tenant reaches each of its slots, and no other tenant."""
    from fragmented_keys_django.purge import purge_tenant

    frag, tenant = spread
    with TenantContext.use_tenant(tenant):
        for i in range(30):
            frag.set_with_tags(f"page-{i}", "v", TAGS)
        frag.set_many({"a": 1, "b": 2})  # untagged: the tenant's first slot
    with TenantContext.use_tenant("other"):
        frag.set_with_tags("page", "x", TAGS)
    prefix = caches["default"].key_prefix

    def keys_of(who: str) -> list[bytes]:
        from fragmented_keys_django.keys import tenant_key_prefixes

        heads = [
            f"{prefix}:1:{p}".encode()
            for p in tenant_key_prefixes("t", who, frag.options.shards_for(who))
        ]
        every = [k for node in redis_cluster.primaries() for k in node.client().keys(f"{prefix}:*")]
        return [k for k in every if any(k.startswith(h) for h in heads)]

    assert len({redis_cluster.keyslot(k.decode()) for k in keys_of(tenant)}) == 3
    report = purge_tenant(tenant)
    assert keys_of(tenant) == [], "keys left in the tenant's slots"
    assert sum(p.deleted for p in report.stores) >= 30
    assert keys_of("other"), "another tenant's keys were purged"
    with TenantContext.use_tenant("other"):
        assert frag.get_with_tags("page", TAGS) == "x"


#: Fail fast on a paused node: before the cluster notices it (``cluster-node-timeout`` 1 s).
FAIL_FAST = {
    "socket_timeout": 0.3,
    "socket_connect_timeout": 0.3,
    "retry": Retry(NoBackoff(), 0),
}


@pytest.mark.parametrize("spread", [FAIL_FAST], indirect=True)
def test_a_bump_that_misses_one_slot_of_a_spread_tenant_serves_nothing_stale(redis_cluster, spread):
    frag, tenant = spread
    keys = [f"page-{i}" for i in range(30)]
    with TenantContext.use_tenant(tenant):
        for key in keys:
            frag.set_with_tags(key, "before", TAGS)
        paused = redis_cluster.node(entry_node(redis_cluster, frag, keys[0], TAGS))
        on_others = [k for k in keys if entry_node(redis_cluster, frag, k, TAGS) != paused.port]
        paused.pause()  # SIGSTOP: the bump cannot reach this slot's node
        try:
            frag.invalidate_tags(TAGS)  # the failure is survived: kept and retried
            assert store_errors(), "the bump failed on the paused node (no failover yet)"
            for key in on_others:  # the slots it reached: invalidated
                assert frag.get_with_tags(key, TAGS, default=MISS) is MISS, key
            for key in keys:  # nothing written before the bump comes back
                assert frag.get_with_tags(key, TAGS, default="after") != "before", key
        finally:
            redis_cluster.heal()  # SIGCONT (the cluster may have promoted its replica)
        # The bump is retried until it lands on the paused slot too.
        assert settle_retries(30) == 0
        for key in keys:
            assert frag.get_with_tags(key, TAGS, default="after") != "before", key
            assert frag.get_or_set_with_tags(key, "fresh", TAGS) == "fresh"
            assert frag.get_with_tags(key, TAGS) == "fresh"


def test_tenant_slots_need_a_cluster_store():
    from fragmented_keys_django.exceptions import ConfigurationError

    conf = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "OPTIONS": {"TENANT_SLOTS": {"big": 3}},
        },
    }
    with override_settings(CACHES=conf), pytest.raises(ConfigurationError, match="not a cluster"):
        caches["fragmented"].get("x")
    conf["fragmented"]["OPTIONS"]["TENANT_SLOTS"] = {"big": 0}
    with override_settings(CACHES=conf), pytest.raises(ConfigurationError, match="from 1 to 64"):
        caches["fragmented"].get("x")


def test_an_unreachable_cluster_is_a_logged_counted_miss(caplog):
    from .race_support import free_port

    conf = {
        "default": {
            "BACKEND": "fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}",  # nothing listens there
            "OPTIONS": {"socket_timeout": 0.2, "socket_connect_timeout": 0.2},
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
        },
    }
    metrics.reset()
    with override_settings(CACHES=conf), TenantContext.use_tenant("acme"):
        frag = caches["fragmented"]
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
        assert frag.get_or_set_with_tags("page", "computed", TAGS) == "computed"
    assert store_errors(), "counted"
    assert any(
        r.levelname in ("WARNING", "ERROR") and "acme" in r.getMessage() for r in caplog.records
    )
    reset_retrier()


def test_a_tenant_over_three_slots_async(redis_cluster, spread):
    frag, tenant = spread
    keys = [f"page-{i}" for i in range(12)]

    async def scenario():
        with TenantContext.use_tenant(tenant):
            for key in keys:
                await frag.aset_with_tags(key, f"v1-{key}", TAGS)
            got = await frag.aget_many_with_tags({key: TAGS for key in keys})
            assert got == {key: f"v1-{key}" for key in keys}
            assert await frag.ainvalidate_tags(TAGS) == 2
            for key in keys:
                assert await frag.aget_with_tags(key, TAGS, default=MISS) is MISS

    with TenantContext.use_tenant(tenant):
        nodes = {entry_node(redis_cluster, frag, key, TAGS) for key in keys}
    assert len(nodes) > 1, "entries on several primaries"
    async_to_sync(scenario)()
    assert store_errors() == {}


def test_async_reads_follow_a_slot_moved_under_them(redis_cluster, frag):
    node = tenant_node(redis_cluster, frag, "acme")
    with TenantContext.use_tenant("acme"):
        slot = redis_cluster.keyslot(frag.store.make_key(frag.tag_version_keys(TAGS)[0]))
    target = next(p for p in redis_cluster.primaries() if p.port != node.port)

    async def scenario():
        with TenantContext.use_tenant("acme"):
            await frag.aset_with_tags("page", "v1", TAGS)
            assert await frag.aget_with_tags("page", TAGS) == "v1"  # the slot map is warm
            redis_cluster.reshard_slot(slot, target)  # MOVED for the client's map
            assert await frag.aget_with_tags("page", TAGS) == "v1"
            assert await frag.ainvalidate_tags(TAGS) == 2
            assert await frag.aget_with_tags("page", TAGS, default=MISS) is MISS

    async_to_sync(scenario)()
    assert redis_cluster.owner(slot).port == target.port
    assert store_errors() == {}


def test_the_plain_store_clears_every_primary_after_a_failover(redis_cluster, frag):
    store = frag.store
    store.set("a", 1)
    assert store.get("a") == 1  # the client knows the primaries
    redis_cluster.failover(redis_cluster.primaries()[0])
    assert store.clear() is True
    assert store.get("a") is None
