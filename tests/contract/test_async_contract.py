"""The async cache API (``a*`` methods) of the wrapper, over the same stores (and the cluster).

Django 5.2's ``BaseCacheTests`` has no async cases (its tests_async.py covers
DummyCache only), so these mirror representative sync contract cases and
assert the same return values.
"""

import pickle

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.test import override_settings

from .django_cache_tests import Unpicklable
from .test_django_cache_contract import (
    DJANGO_REDIS_CACHES,
    DJANGO_REDIS_PKG_CACHES,
    LOCMEM_CACHES,
    STORE_SUFFIX,
    cluster_caches,
    memcached_caches,
)


@pytest.fixture(
    params=[
        pytest.param(LOCMEM_CACHES, id="locmem"),
        pytest.param(DJANGO_REDIS_CACHES, id="django-redis-cache", marks=pytest.mark.redis),
        pytest.param(DJANGO_REDIS_PKG_CACHES, id="django_redis", marks=pytest.mark.redis),
        # A callable: memcached starts when a test uses it, not at collection.
        pytest.param(memcached_caches, id="memcached", marks=pytest.mark.memcached),
        pytest.param(cluster_caches, id="cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ]
)
def cache(request):
    setting = request.param() if callable(request.param) else request.param
    with override_settings(CACHES=setting):
        for alias in setting:
            if alias.endswith(STORE_SUFFIX):
                caches[alias].clear()
        yield caches["default"]
        caches["default"].clear()


def run(scenario, cache):
    async_to_sync(scenario)(cache)


def test_aget_aset_aadd(cache):
    async def scenario(cache):
        await cache.aset("key", "value")
        assert await cache.aget("key") == "value"
        assert await cache.aget("missing") is None
        assert await cache.aget("missing", "bang!") == "bang!"
        await cache.aset("null", None)
        assert await cache.aget("null", "default") is None
        assert await cache.aadd("addkey", "value") is True
        assert await cache.aadd("addkey", "newvalue") is False
        assert await cache.aget("addkey") == "value"

    run(scenario, cache)
    # The sync API sees what the async one wrote.
    assert cache.get("key") == "value"
    assert cache.get("addkey") == "value"


def test_ahas_key_adelete(cache):
    async def scenario(cache):
        await cache.aset("hello", "goodbye")
        assert await cache.ahas_key("hello") is True
        assert await cache.ahas_key("goodbye") is False
        await cache.aset("null", None)
        assert await cache.ahas_key("null") is True
        assert await cache.adelete("hello") is True
        assert await cache.aget("hello") is None
        assert await cache.adelete("hello") is False

    run(scenario, cache)


def test_atouch_and_zero_timeout(cache):
    async def scenario(cache):
        await cache.aset("key", "value", timeout=5)
        assert await cache.atouch("key", timeout=None) is True
        assert await cache.aget("key") == "value"
        assert await cache.atouch("key") is True
        assert await cache.atouch("nonexistent") is False
        assert await cache.atouch("key", timeout=0) is True
        assert await cache.aget("key") is None
        await cache.aset("zero", "eggs", 0)
        assert await cache.aget("zero") is None
        assert await cache.aadd("zero_add", "ham", 0) is True
        assert await cache.aget("zero_add") is None

    run(scenario, cache)


def test_aincr_adecr(cache):
    async def scenario(cache):
        await cache.aset("answer", 41)
        assert await cache.aincr("answer") == 42
        assert await cache.aincr("answer", 10) == 52
        assert await cache.aincr("answer", -10) == 42
        assert await cache.adecr("answer") == 41
        assert await cache.adecr("answer", 10) == 31
        assert await cache.adecr("answer", -11) == 42
        assert await cache.aget("answer") == 42
        with pytest.raises(ValueError):
            await cache.aincr("does_not_exist")
        with pytest.raises(ValueError):
            await cache.adecr("does_not_exist")

    run(scenario, cache)


def test_aget_many_aset_many_adelete_many(cache):
    async def scenario(cache):
        assert await cache.aset_many({"a": "a", "b": "b", "c": "c", "x": None}) == []
        assert await cache.aset_many({}) == []
        assert await cache.aget_many(["a", "c", "e"]) == {"a": "a", "c": "c"}
        assert await cache.aget_many(iter(["b", "x"])) == {"b": "b", "x": None}
        assert await cache.adelete_many(["a", "b"]) is None
        assert await cache.adelete_many([]) is None
        assert await cache.aget_many(["a", "b", "c"]) == {"c": "c"}
        assert await cache.aset_many({"v": 1}, version=2) == []
        assert await cache.aget_many(["v"]) == {}
        assert await cache.aget_many(["v"], version=2) == {"v": 1}

    run(scenario, cache)


def test_aget_or_set(cache):
    async def scenario(cache):
        assert await cache.aget_or_set("projector", 42) == 42
        assert await cache.aget("projector") == 42
        assert await cache.aget_or_set("projector", 0) == 42
        assert await cache.aget_or_set("mykey", lambda: "value") == "value"
        assert await cache.aget_or_set("null", None) is None
        assert await cache.aget("null", "default") is None
        assert await cache.aget_or_set("brian", 1979, version=2) == 1979
        assert await cache.aget("brian", version=1) is None
        with pytest.raises(TypeError):
            await cache.aget_or_set("brian")

    run(scenario, cache)


def test_aincr_version_adecr_version(cache):
    async def scenario(cache):
        await cache.aset("answer", 42, version=2)
        assert await cache.aget("answer") is None
        assert await cache.aincr_version("answer", version=2) == 3
        assert await cache.aget("answer", version=2) is None
        assert await cache.aget("answer", version=3) == 42
        assert await cache.adecr_version("answer", version=3) == 2
        assert await cache.aget("answer", version=2) == 42
        assert await cache.aget("answer", version=3) is None
        with pytest.raises(ValueError):
            await cache.aincr_version("does_not_exist")
        with pytest.raises(ValueError):
            await cache.adecr_version("does_not_exist", version=2)
        await cache.aset("null", None)
        assert await cache.aincr_version("null") == 2

    run(scenario, cache)


def test_aclear(cache):
    async def scenario(cache):
        await cache.aset_many({"key1": "spam", "key2": "eggs"})
        assert await cache.aclear() is None
        assert await cache.aget("key1") is None
        assert await cache.ahas_key("key2") is False
        assert await cache.aadd("key1", "again") is True

    run(scenario, cache)


def test_async_versioned_aliases(cache):
    """The v2 alias (VERSION=2) and default share data, keyed by version."""
    v2 = caches["v2"]

    async def scenario(cache):
        await v2.aset("answer", 42)
        assert await cache.aget("answer") is None
        assert await cache.aget("answer", version=2) == 42
        assert await v2.aget("answer", version=1) is None
        assert await v2.adelete("answer") is True
        assert await cache.ahas_key("answer", version=2) is False

    run(scenario, cache)


def test_aset_aadd_fail_on_pickleerror(cache):
    """As test_set_fail_on_pickleerror / test_add_fail_on_pickleerror."""

    async def scenario(cache):
        with pytest.raises(pickle.PickleError):
            await cache.aset("unpicklable", Unpicklable())
        with pytest.raises(pickle.PickleError):
            await cache.aadd("unpicklable", Unpicklable())

    run(scenario, cache)
