"""FragmentedKeysCacheBackend on a Sentinel-managed primary: issue 12, item 2.

The store is django-redis with its ``SentinelClient`` (``SentinelConnectionFactory``).
The package drives it with its Redis adapter (one ``MGET`` per read, one script per
write), always on the primary the sentinels name, so reads and writes follow a failover.

Redis replicates asynchronously: a bump the old primary acknowledged may never reach the
replica that replaces it. The store's failover epoch (``stores/failover.py``) closes that
hole: every entry records a token derived from the primary's replication id, rewritten by
the first connection to a new primary, so a failover invalidates every entry cached
before it. The test forces the loss (replica paused, replication link cut, bump, primary
killed, replica resumed and promoted: tests/servers.py) and failed on the code before.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import ConfigurationError, TenantContext, invalidation, metrics, routing
from fragmented_keys_django.keys import FAILOVER_EPOCH_KEY
from fragmented_keys_django.stores.failover import epoch_token

from . import servers
from .race_support import reset_retrier
from .test_async_native import every_async_method, run_without_threads
from .wire import RoundTripProxy

pytestmark = [
    pytest.mark.redis,
    pytest.mark.sentinel,
    pytest.mark.django_db(transaction=True),  # a recovering store drains the outbox
]

MISS = object()
TAGS = [("User", "1")]


def sentinel_caches(topology: servers.SentinelTopology, **wrapper: object) -> dict:
    """``default``: django-redis through the sentinels (service :data:`servers.SERVICE`)."""
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{servers.SERVICE}/0",
            "KEY_PREFIX": f"fkd-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": topology.sentinel_addrs,
                "SENTINEL_KWARGS": {"socket_timeout": 1},
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            **wrapper,
        },
    }


@pytest.fixture
def frag(sentinel):
    with override_settings(CACHES=sentinel_caches(sentinel)):
        yield caches["fragmented"]
        caches["fragmented"].close()
    reset_retrier()


def eventually(check, timeout: float = 15.0):
    """Call *check* until it returns a truthy value: after a failover the backend's breaker
    may skip the store for ``CIRCUIT_BREAKER`` seconds (reads miss meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _replicated(topology: servers.SentinelTopology) -> None:
    assert topology.primary.client().execute_command("WAIT", 1, 2000) == 1


def _commands(server, name: str) -> int:
    """How many *name* commands *server* has run (``INFO commandstats``)."""
    return server.client().info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0)


def test_the_store_is_driven_on_the_primary_with_one_mget_per_read(sentinel, frag):
    """The Redis adapter drives the Sentinel store: a read is one ``MGET`` on the primary.

    django-redis's own ``SentinelClient`` reads from a replica, whose lag would serve an
    entry whose tag was already bumped on the primary.
    """
    adapter = routing.route("fragmented").shared_adapter()
    assert adapter.stamps and adapter.failover_key == FAILOVER_EPOCH_KEY
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "v", TAGS)
        assert frag.get_with_tags("page", TAGS) == "v"  # connections checked from here on
        primary, replica = sentinel.primary, sentinel.replica
        before = _commands(primary, "mget"), _commands(replica, "mget")
        assert frag.get_with_tags("page", TAGS) == "v"
        assert frag.get_many(["nothing"]) == {}
        assert async_to_sync(frag.aget_with_tags)("page", TAGS) == "v"
    assert (_commands(primary, "mget"), _commands(replica, "mget")) == (
        before[0] + 3,
        before[1],
    )
    # The epoch key holds the primary's token.
    replid = primary.client().info("replication")["master_replid"]
    stored = caches["default"].get(FAILOVER_EPOCH_KEY)
    assert stored == epoch_token(replid.encode())


def test_a_reconnection_to_the_same_primary_keeps_entries_warm(sentinel, frag):
    metrics.reset()
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "warm", TAGS)
        frag.set("plain", "warm too")
        sentinel.primary.client().execute_command("CLIENT", "KILL", "TYPE", "normal")
        assert eventually(lambda: frag.get_with_tags("page", TAGS, default=None) == "warm")
        assert frag.get("plain") == "warm too"
    assert metrics.snapshot().get(("-", "failover_epoch"), 0) == 0


def test_a_lost_epoch_key_is_a_miss_never_a_stale_hit(sentinel, frag):
    """The epoch is a version: deleted (evicted, expired), every entry misses; the next
    connection's check writes the primary's token again (one more cold start, logged)."""
    metrics.reset()
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "v1", TAGS)
        assert caches["default"].delete(FAILOVER_EPOCH_KEY)
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
        frag.set_with_tags("page", "v2", TAGS)  # re-creates the epoch (a fresh token)
        assert frag.get_with_tags("page", TAGS) == "v2"
        sentinel.primary.client().execute_command("CLIENT", "KILL", "TYPE", "normal")
        assert eventually(lambda: frag.set_with_tags("probe", 1, []) or frag.get("probe") == 1)
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
    replid = sentinel.primary.client().info("replication")["master_replid"]
    assert caches["default"].get(FAILOVER_EPOCH_KEY) == epoch_token(replid.encode())
    assert metrics.snapshot()[("-", "failover_epoch")] == 1


def test_reads_and_writes_follow_the_primary_after_a_failover(sentinel, frag):
    metrics.reset()
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "before", TAGS)
        frag.set("plain", "before")
        assert frag.get_with_tags("page", TAGS) == "before"
    _replicated(sentinel)
    old = sentinel.kill_primary()
    new = sentinel.wait_for_failover(old)
    with TenantContext.use_tenant("acme"):
        # Wait until the backend serves from the new primary (its breaker closed).
        assert eventually(lambda: frag.set_with_tags("probe", 1, []) or frag.get("probe") == 1)
        # The failover epoch: what was cached before the failover is not served after it.
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
        assert frag.get("plain", default=MISS) is MISS
        frag.set_with_tags("page", "after", TAGS)
        assert frag.get_with_tags("page", TAGS) == "after"
        assert frag.invalidate_tags(TAGS) == 1
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
        frag.set_with_tags("page", "again", TAGS)
        assert frag.get_with_tags("page", TAGS) == "again"
    # Everything went to the new primary, and the epoch change was logged and counted.
    assert any(b"fk:" in k for k in new.client().keys("*"))
    assert metrics.snapshot()[("-", "failover_epoch")] >= 1


def test_a_bump_lost_in_a_failover_does_not_serve_the_entry_again(sentinel, frag):
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "stale after the bump", TAGS)
        assert frag.get_with_tags("page", TAGS) == "stale after the bump"
    _replicated(sentinel)  # the entry and its versions are on the replica
    old, replica = sentinel.primary, sentinel.replica
    sentinel.pause(replica)
    try:
        sentinel.cut_replication()
        with TenantContext.use_tenant("acme"):
            assert frag.invalidate_tags(TAGS) == 1  # acknowledged by the primary only
            assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
        sentinel.kill_primary()
    finally:
        sentinel.resume(replica)
    assert sentinel.wait_for_failover(old).port == replica.port
    with TenantContext.use_tenant("acme"):
        # Wait until the backend serves from the new primary again, then read.
        assert eventually(lambda: frag.set_with_tags("probe", 1, []) or frag.get("probe") == 1)
        # The bump landed (as far as this process knows): the miss is the store's doing,
        # not a bypass of a tenant with a bump pending.
        assert invalidation.pending_retries() == 0
        assert not invalidation.is_suspect("fragmented", "acme")
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
    # A process that never saw the bump nor the failover (no adapter, no connection yet).
    routing.reset()
    reset_retrier()
    with TenantContext.use_tenant("acme"):
        assert caches["fragmented"].get_with_tags("page", TAGS, default=MISS) is MISS


# -- the async API: native redis.asyncio through the sentinels, no thread ---------------


async def aeventually(check, timeout: float = 15.0):
    """:func:`eventually` for an async *check*, on the running loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def _aprobe(frag) -> bool:
    """An async write and read back: true once the backend serves from the primary again."""
    await frag.aset_with_tags("probe", 1, [])
    return await frag.aget("probe") == 1


def test_every_async_method_runs_without_a_thread(sentinel, frag):
    """Guarantee AS3 on Sentinel: every ``a*`` method runs on ``redis.asyncio`` through the
    sentinels, on an event loop that refuses ``run_in_executor`` (they ran the sync adapter
    in a worker thread before), and each read is one ``MGET`` on the primary."""
    assert run_without_threads(every_async_method) is True

    primary, replica = sentinel.primary, sentinel.replica

    async def reads() -> tuple:
        async with TenantContext.use_tenant("acme"):
            await frag.aset_with_tags("page", "v", TAGS)
            before = _commands(primary, "mget"), _commands(replica, "mget")
            values = [await frag.aget_with_tags("page", TAGS) for _ in range(3)]
            return values, before

    values, before = run_without_threads(reads)
    assert values == ["v", "v", "v"]
    assert (_commands(primary, "mget"), _commands(replica, "mget")) == (
        before[0] + 3,
        before[1],
    )


def test_the_async_client_takes_the_store_s_settings(sentinel):
    """The ``redis.asyncio`` sentinel client is built from the store's own settings: the
    ``LOCATION``'s database and the ``CONNECTION_POOL_KWARGS`` (here one connection); what
    one API writes, the other reads (the same keys, database and bytes)."""
    conf = sentinel_caches(sentinel)
    conf["default"]["LOCATION"] = f"redis://{servers.SERVICE}/5"
    conf["default"]["OPTIONS"]["CONNECTION_POOL_KWARGS"] = {"max_connections": 1}
    with override_settings(CACHES=conf), TenantContext.use_tenant("acme"):
        frag = caches["fragmented"]
        try:

            async def writes() -> tuple:
                async with TenantContext.use_tenant("acme"):
                    await frag.aset_with_tags("page", "async", TAGS)
                    read = await frag.aget_with_tags("page", TAGS)
                    pool = routing.route("fragmented").shared_adapter().aio()._pool
                    return read, pool.max_connections

            assert run_without_threads(writes) == ("async", 1)
            assert frag.get_with_tags("page", TAGS) == "async"
            frag.set_with_tags("page", "sync", TAGS)

            async def read() -> object:
                async with TenantContext.use_tenant("acme"):
                    return await frag.aget_with_tags("page", TAGS)

            assert run_without_threads(read) == "sync"
            prefix = conf["default"]["KEY_PREFIX"].encode()
            port = sentinel.primary.port
            for db, written in ((5, True), (0, False)):
                with redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=2) as server:
                    assert any(k.startswith(prefix) for k in server.keys("*")) is written
        finally:
            frag.close()
            reset_retrier()


def test_an_async_read_after_a_failover_follows_the_new_primary(sentinel, frag):
    """One event loop across the failover: its pooled connections to the old primary break,
    the next ones find the new primary through the sentinels and pass the epoch check."""
    metrics.reset()
    old = sentinel.primary

    async def scenario() -> object:
        async with TenantContext.use_tenant("acme"):
            await frag.aset_with_tags("page", "before", TAGS)
            assert await frag.aget_with_tags("page", TAGS) == "before"
            _replicated(sentinel)
            sentinel.kill_primary()
            new = sentinel.wait_for_failover(old)
            assert await aeventually(lambda: _aprobe(frag))
            # What was cached before the failover is not served after it (the epoch).
            assert await frag.aget_with_tags("page", TAGS, default=MISS) is MISS
            await frag.aset_with_tags("page", "after", TAGS)
            before = _commands(new, "mget")
            assert await frag.aget_with_tags("page", TAGS) == "after"
            assert _commands(new, "mget") == before + 1  # read on the new primary
            assert await frag.ainvalidate_tags(TAGS) == 1
            assert await frag.aget_with_tags("page", TAGS, default=MISS) is MISS
            return new

    new = run_without_threads(scenario)
    assert any(b"fk:" in k for k in new.client().keys("*"))
    assert metrics.snapshot()[("-", "failover_epoch")] >= 1


def test_a_bump_lost_in_a_failover_does_not_serve_the_entry_again_async(sentinel, frag):
    """The lost bump of :func:`test_a_bump_lost_in_a_failover_does_not_serve_the_entry_again`
    through the async API, without a thread: the entry must miss.

    The read after the failover is the first call of a new event loop (a request after the
    failover), so it is the async connection's own epoch check that invalidates the entry:
    no call failed, so the breaker never opened and its recovery probe (sync) never ran.
    """
    metrics.reset()
    old, replica = sentinel.primary, sentinel.replica

    async def bump_then_lose_it() -> None:
        async with TenantContext.use_tenant("acme"):
            await frag.aset_with_tags("page", "stale after the bump", TAGS)
            assert await frag.aget_with_tags("page", TAGS) == "stale after the bump"
            _replicated(sentinel)  # the entry and its versions are on the replica
            sentinel.pause(replica)
            try:
                sentinel.cut_replication()
                assert await frag.ainvalidate_tags(TAGS) == 1  # acknowledged by the primary only
                assert await frag.aget_with_tags("page", TAGS, default=MISS) is MISS
                sentinel.kill_primary()
            finally:
                sentinel.resume(replica)

    async def read() -> object:
        async with TenantContext.use_tenant("acme"):
            return await caches["fragmented"].aget_with_tags("page", TAGS, default=MISS)

    run_without_threads(bump_then_lose_it)
    assert sentinel.wait_for_failover(old).port == replica.port
    first = run_without_threads(read)
    assert first is MISS, f"served {first!r}: the lost bump was undone"
    assert invalidation.pending_retries() == 0
    assert not invalidation.is_suspect("fragmented", "acme")
    seen = metrics.snapshot()
    assert seen.get(("fragmented", "breaker_open"), 0) == 0  # no sync probe stepped in
    assert seen[("-", "failover_epoch")] == 1
    # A process that never saw the bump nor the failover (no adapter, no connection yet).
    routing.reset()
    reset_retrier()
    assert run_without_threads(read) is MISS


@pytest.fixture
def moving_endpoint(sentinel):
    """A plain django-redis store of the primary behind one address that a failover moves
    (a TCP proxy: what a managed Redis's primary endpoint does), with ``FAILOVER_EPOCH``."""
    proxy = RoundTripProxy("127.0.0.1", sentinel.primary.port).__enter__()
    conf = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": proxy.url(db=0),
            "KEY_PREFIX": f"fkd-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            "OPTIONS": {"FAILOVER_EPOCH": True},
        },
    }
    try:
        with override_settings(CACHES=conf):
            yield proxy
            caches["fragmented"].close()
    finally:
        proxy.__exit__(None, None, None)
        reset_retrier()


def test_failover_epoch_option_on_a_primary_endpoint_that_moves(sentinel, moving_endpoint):
    """``FAILOVER_EPOCH`` on a plain Redis store: the bump lost in a failover is not undone
    when the endpoint moves to the promoted replica, sync and async (native redis.asyncio)."""
    frag = caches["fragmented"]
    aget = async_to_sync(frag.aget_with_tags)
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("page", "stale after the bump", TAGS)
        assert aget("page", TAGS) == "stale after the bump"  # async connection checked too
    _replicated(sentinel)
    old, replica = sentinel.primary, sentinel.replica
    sentinel.pause(replica)
    try:
        sentinel.cut_replication()
        with TenantContext.use_tenant("acme"):
            assert frag.invalidate_tags(TAGS) == 1  # acknowledged by the primary only
        sentinel.kill_primary()
        moving_endpoint.target = ("127.0.0.1", replica.port)  # the endpoint moves
    finally:
        sentinel.resume(replica)
    assert sentinel.wait_for_failover(old).port == replica.port
    with TenantContext.use_tenant("acme"):
        assert eventually(lambda: frag.set_with_tags("probe", 1, []) or frag.get("probe") == 1)
        assert not invalidation.is_suspect("fragmented", "acme")
        assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
        assert aget("page", TAGS, default=MISS) is MISS
        frag.set_with_tags("page", "fresh", TAGS)
        assert aget("page", TAGS) == "fresh"


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_reconnection_inside_redis_py_s_health_check_is_checked_too(tmp_path, api):
    """A restart from persistence loses a bump; the pooled socket is silent (a crashed host),
    so redis-py's health check (``health_check_interval``) reconnects inside the send: that
    new socket must be checked like any other, or the old epoch token matches again."""
    from .race_support import RedisServer

    server = RedisServer(workdir=str(tmp_path)).start()
    proxy = RoundTripProxy("127.0.0.1", server.port, silent_on_close=True).__enter__()
    pool = {"health_check_interval": 1, "retry_on_timeout": True}
    conf = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": proxy.url(db=0),
            "KEY_PREFIX": f"fkd-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
                "CONNECTION_POOL_KWARGS": pool,
            },
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            "OPTIONS": {"FAILOVER_EPOCH": True},
        },
    }
    try:
        with override_settings(CACHES=conf), TenantContext.use_tenant("acme"):
            frag = caches["fragmented"]

            def restart_losing_the_bump() -> None:
                server.proc.kill()
                server.proc.wait()
                server.proc = None
                server.start()  # from the RDB taken before the bump: a new replication id

            async def on_one_loop() -> object:  # one event loop: its pooled connection is reused
                await frag.aset_with_tags("page", "old value", TAGS)
                assert await frag.aget_with_tags("page", TAGS) == "old value"
                server.client().save()
                assert await frag.ainvalidate_tags(TAGS) == 1
                restart_losing_the_bump()
                await asyncio.sleep(1.5)
                return await frag.aget_with_tags("page", TAGS, default=MISS)

            if api == "async":
                first = asyncio.run(on_one_loop())
            else:
                frag.set_with_tags("page", "old value", TAGS)
                assert frag.get_with_tags("page", TAGS) == "old value"
                server.client().save()  # the state a restart will load: entry, version, epoch
                assert frag.invalidate_tags(TAGS) == 1  # acknowledged, then lost:
                restart_losing_the_bump()
                time.sleep(1.5)  # past health_check_interval: the next send checks health first
                first = frag.get_with_tags("page", TAGS, default=MISS)
            assert first is MISS, f"served {first!r}: the lost bump was undone"
            assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
            caches["fragmented"].close()
    finally:
        proxy.__exit__(None, None, None)
        server.stop()
        reset_retrier()


def test_failover_epoch_option_needs_a_redis_store():
    conf = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "OPTIONS": {"FAILOVER_EPOCH": True},
        },
    }
    with override_settings(CACHES=conf), pytest.raises(ConfigurationError, match="FAILOVER_EPOCH"):
        caches["fragmented"].get("k")
    conf["fragmented"]["OPTIONS"] = {"FAILOVER_EPOCH": False}
    with override_settings(CACHES=conf), pytest.raises(ConfigurationError, match="True"):
        caches["fragmented"].get("k")
