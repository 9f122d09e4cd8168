"""memcached as a store: Django's ``PyMemcacheCache`` on the suite's own memcached.

The behavioural suite runs on memcached through ``conftest.STORES`` (the ``[memcached]``
ids), the bump races through ``tests/test_bump_races.py`` and Django's cache contract
through ``tests/contract``. This module covers what is memcached's own:

* key rules: memcached refuses keys over 250 bytes or with spaces or control characters
  (``PyMemcacheCache`` raises ``InvalidCacheKey``). Every key the backend stores must
  respect them whatever the tenant, tag names and instances, caller key or number of
  tags: checked on the keys memcached actually holds (``lru_crawler metadump``);
* eviction and ``flush_all`` never revive a superseded entry (memcached evicts version
  keys under memory pressure like any other key);
* the round trips of a read, a write and a bump (no script on memcached);
* a value over memcached's 1 MB item limit: a failed write of that value only (logged,
  counted), never a store outage.
"""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fragmented_keys_django import TenantContext, invalidation, metrics

from . import servers
from .race_support import reset_retrier, wrapper_alias
from .test_bump_races import TAGS, TENANT, _assert_superseded, _cache_then_supersede

pytestmark = pytest.mark.memcached

MISS = object()
#: memcached's limit on a key, in bytes (``KEY_MAX_LENGTH``).
KEY_MAX = 250


def memcached_store(location: str, prefix: str, **extra: object) -> dict:
    return {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": location,
        "KEY_PREFIX": prefix,
        **extra,
    }


def bad_keys(server: servers.Memcached, prefix: str) -> list[bytes]:
    """Keys under *prefix* that memcached's text protocol would refuse (or that are not ASCII)."""
    ours = [k for k in server.stored_keys() if k.startswith(prefix.encode())]
    assert ours, f"no key under {prefix!r} in memcached"
    return [
        k
        for k in ours
        if len(k) > KEY_MAX or any(b <= 32 or b >= 127 for b in k)  # space, control, non-ASCII
    ]


# Tenants and tags as hostile as the API accepts: unicode, spaces, control characters,
# separators, and long (keys are digests, so length must not matter).
hostile_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=300
)
tenants = st.one_of(st.none(), hostile_text, st.just("t" * 10_000), st.just("ünïcødé テナント"))
tags = st.lists(
    st.tuples(st.one_of(hostile_text, st.just("N" * 1000)), st.text(max_size=300)),
    max_size=40,
    unique_by=lambda t: t,
)
many_keys = st.integers(0, 3)


@pytest.mark.filterwarnings("ignore::django.core.cache.CacheKeyWarning")  # plain-API keys
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tenant=tenants, tag_list=tags, key=st.text(max_size=300), many=many_keys)
def test_every_key_stored_in_memcached_is_valid(memcached_server, tenant, tag_list, key, many):
    prefix = f"fkd-keys-{uuid.uuid4().hex[:8]}"
    conf = {
        "default": memcached_store(memcached_server.location, prefix),
        "fragmented": wrapper_alias(),
    }
    with override_settings(CACHES=conf), TenantContext.use_tenant(tenant):
        frag = caches["fragmented"]
        try:
            frag.set_with_tags(key, "v1", tag_list)
            assert frag.get_with_tags(key, tag_list, default=MISS) == "v1"
            assert frag.get_or_set_with_tags(f"{key}+", lambda: "computed", tag_list) == "computed"
            for i in range(many):
                frag.set_with_tags(f"{key}#{i}", i, tag_list)
            got = frag.get_many_with_tags([f"{key}#{i}" for i in range(many)], tag_list)
            assert got == {f"{key}#{i}": i for i in range(many)}
            frag.set_many({f"{key}#plain{i}": i for i in range(many)})
            assert frag.get_many([f"{key}#plain{i}" for i in range(many)]) == {
                f"{key}#plain{i}": i for i in range(many)
            }
            if tag_list:
                frag.invalidate_tags(tag_list[:1])
                assert frag.get_with_tags(key, tag_list, default=MISS) is MISS
            frag.set_with_tags(key, "v2", tag_list)
            assert frag.get_with_tags(key, tag_list, default=MISS) == "v2"
            frag.invalidate_tenant()
            assert frag.get_with_tags(key, tag_list, default=MISS) is MISS
        finally:
            frag.close()
    assert bad_keys(memcached_server, prefix) == []


def test_many_tags_long_names_and_a_unicode_tenant_round_trip(memcached_server):
    """200 tags with 1000-character names, a 10,000-character unicode tenant, a caller key
    of 1,000 characters with spaces: stored, served, invalidated by one bump."""
    prefix = f"fkd-keys-{uuid.uuid4().hex[:8]}"
    conf = {
        "default": memcached_store(memcached_server.location, prefix),
        "fragmented": wrapper_alias(),
    }
    many = [(f"{'Modèle' * 160}{i}", f"instance {i} ✓") for i in range(200)]
    key = "a key with spaces " * 55
    with override_settings(CACHES=conf), TenantContext.use_tenant("テナント" * 2500):
        frag = caches["fragmented"]
        frag.set_with_tags(key, {"big": True}, many)
        assert frag.get_with_tags(key, many) == {"big": True}
        assert frag.invalidate_tags([many[137]]) == 1
        assert frag.get_with_tags(key, many, default=MISS) is MISS
        frag.close()
    assert bad_keys(memcached_server, prefix) == []


def test_round_trips_of_a_read_a_write_and_a_bump(memcached_server):
    """What a tagged read, write and bump cost on memcached (no script: the generic path).

    These numbers are the ones docs/deployments.md gives; each counted call is one
    request to memcached.
    """
    conf = {
        "default": {
            **memcached_store(memcached_server.location, f"fkd-rt-{uuid.uuid4().hex[:8]}"),
            "BACKEND": "tests.counting_backend.CountingPyMemcacheCache",
        },
        # VERIFY_BUMPS is off for PyMemcacheCache by default; the counting subclass is
        # not known by name, so say it.
        "fragmented": wrapper_alias(OPTIONS={"VERIFY_BUMPS": False}),
    }
    tags = [("User", "1"), ("Org", "7")]
    with override_settings(CACHES=conf), TenantContext.use_tenant("acme"):
        frag, store = caches["fragmented"], caches["default"]
        frag.set_with_tags("warm", "v", tags)  # versions exist from here on
        store.reset_calls()
        assert frag.get_with_tags("warm", tags) == "v"
        assert dict(store.calls) == {"get_many": 1}  # entry + 3 versions in one get_multi
        store.reset_calls()
        frag.set_with_tags("warm", "v2", tags)
        assert dict(store.calls) == {"get_many": 1, "set": 1}  # read versions, write entry
        store.reset_calls()
        frag.invalidate_tags(tags)
        assert dict(store.calls) == {"set_many": 1}  # one request, whatever the tag count
        store.reset_calls()
        frag.set_with_tags("cold", "v", [("Fresh", "1")])
        assert dict(store.calls) == {"get_many": 1, "add": 1, "set": 1}  # missing version added
        frag.close()


@pytest.fixture
def own_memcached():
    """A memcached of 8 MB for this test alone (it evicts, or is flushed).

    With one plain LRU (``no_lru_maintainer``): memcached's default segmented LRU
    never evicts keys read twice (the version keys) for junk written once.
    """
    server = servers.Memcached(8, "-o", "no_lru_maintainer").start()
    conf = {
        "default": memcached_store(server.location, "fkd-evict"),
        "fragmented": wrapper_alias(),
    }
    with override_settings(CACHES=conf):
        yield server
        caches["fragmented"].close()
    server.stop()


def test_lru_eviction_never_revives_a_superseded_entry(own_memcached):
    frag, store = caches["fragmented"], caches["default"]
    with TenantContext.use_tenant(TENANT):
        entries = [_cache_then_supersede(frag, f"k{i}") for i in range(20)]
        version_keys = {vk for ek, _ in entries for vk in ek.version_keys}
        stored = {store.make_key(vk).encode(): vk for vk in version_keys}
        # memcached evicts within a slab class: junk shaped like version keys (a key of
        # the same length, a 62-bit token). Presence is checked with metadump, which
        # does not count as a use (a get would).
        for round_ in range(400):
            store.set_many({f"fk:{{{round_:016x}}}:v:{j:040x}": 2**61 + j for j in range(1000)})
            if round_ % 10 == 9 and not stored.keys() <= set(own_memcached.stored_keys()):
                break
        assert int(own_memcached.stats()["evictions"]) > 0
        evicted = version_keys - set(store.get_many(list(version_keys)))
        assert evicted, "filling memcached evicted no version key"
        for i, (ek, env) in enumerate(entries):
            _assert_superseded(frag, ek, env, f"k{i}")


def test_flush_all_never_revives_a_superseded_entry(own_memcached):
    frag, store = caches["fragmented"], caches["default"]
    with TenantContext.use_tenant(TENANT):
        ek, env = _cache_then_supersede(frag)
        store.clear()  # flush_all
        assert frag.get_with_tags("k", TAGS, default=MISS) is MISS
        _assert_superseded(frag, ek, env)


BIG = "x" * (2**20 + 1)  # over memcached's 1 MB item limit once pickled


@pytest.fixture
def big_frag(memcached_server):
    conf = {
        "default": memcached_store(memcached_server.location, f"fkd-big-{uuid.uuid4().hex[:8]}"),
        "fragmented": wrapper_alias(),
    }
    metrics.reset()
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        try:
            yield frag
        finally:
            frag.close()
            reset_retrier()  # a breaker the failure opened must not reach the next test


def _refusals_only(operation: str, n: int = 1) -> None:
    """*n* refusals logged and counted for *operation*; no breaker opened, nothing else failed."""
    counts = metrics.snapshot()
    assert counts.get(("fragmented", "value_too_large")) == n
    assert counts.get(("fragmented", operation)) == n
    assert not any("breaker" in op for _, op in counts), counts
    assert not invalidation._retrier._recovering
    assert invalidation.pending_retries() == 0  # no flush of the tenant queued


def test_a_value_too_large_for_memcached_leaves_the_store_in_service(big_frag, caplog):
    """A value over memcached's item limit fails that one write: logged with tenant, alias and
    operation, counted, the old entry gone; the store stays in service (failed on the code
    before: the refusal opened the store's breaker and flushed the tenant)."""
    frag = big_frag
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("kept", "still here", TAGS)
        frag.set_with_tags("big", "small", TAGS)
        with caplog.at_level("WARNING", logger="fragmented_keys_django"):
            assert frag.set_with_tags("big", BIG, TAGS) is False
        # The old value is not served in its place.
        assert frag.get_with_tags("big", TAGS, default=MISS) is MISS
        # The store still serves, and the tenant's other entries survive.
        assert frag.get_with_tags("kept", TAGS, default=MISS) == "still here"
        frag.set("after", 1)
        assert frag.get("after") == 1
    with TenantContext.use_tenant("globex"):
        frag.set("other-tenant", 2)
        assert frag.get("other-tenant") == 2
    _refusals_only("set_with_tags")
    [record] = [r for r in caplog.records if getattr(r, "operation", None) == "set_with_tags"]
    assert (record.alias, record.tenant) == ("fragmented", "acme")
    assert "too large" in record.getMessage()


def test_plain_set_add_and_the_async_api_fail_that_value_only(big_frag):
    frag = big_frag
    with TenantContext.use_tenant("acme"):
        frag.set("k", "old")
        frag.set("k", BIG)
        assert frag.get("k", default=MISS) is MISS
        assert frag.add("new", BIG) is False
        assert async_to_sync(frag.aset_with_tags)("a", BIG, TAGS) is False
        frag.set("fine", 1)
        assert frag.get("fine") == 1
    counts = metrics.snapshot()
    assert counts[("fragmented", "value_too_large")] == 3
    assert not any("breaker" in op for _, op in counts), counts


def test_a_set_many_with_one_value_too_large_writes_the_others(big_frag):
    frag = big_frag
    with TenantContext.use_tenant("acme"):
        frag.set_many({"a": "old a", "big": "old big", "c": "old c"})
        failed = frag.set_many({"a": "new a", "big": BIG, "c": "new c"})
        assert failed == ["big"]  # Django's contract: the keys that failed
        assert frag.get_many(["a", "big", "c"]) == {"a": "new a", "c": "new c"}
    _refusals_only("set_many")


def test_get_or_set_returns_a_value_too_large_to_store(big_frag):
    frag = big_frag
    with TenantContext.use_tenant("acme"):
        assert frag.get_or_set_with_tags("big", lambda: BIG, TAGS) == BIG
        assert frag.get_or_set_with_tags("small", lambda: "s", TAGS) == "s"
        assert frag.get_with_tags("small", TAGS) == "s"
    _refusals_only("get_or_set_with_tags")
