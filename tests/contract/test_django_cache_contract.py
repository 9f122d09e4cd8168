"""Django's own cache-backend contract, run against FragmentedKeysCacheBackend.

``BaseCacheTests`` comes unmodified from Django's test suite (vendored in
``django_cache_tests.py``). Each class below runs it with every alias of
Django's test CACHES (default, prefix, v2, custom_key, custom_key2, cull,
zero_cull) turned into a FragmentedKeysCacheBackend wrapping its own inner
store alias ``<alias>__store`` -- over LocMemCache, Django's RedisCache,
django-redis, Django's PyMemcacheCache and our RedisClusterCache (on the suite's
Redis Cluster); the RedisClusterCache is also run bare, as a Django backend.

Cases that cannot apply to a wrapper are listed in ``NOT_APPLICABLE`` and
skipped with that reason; cases rewritten to reach the inner store are in
``ADAPTED``. Nothing else is skipped: a failure here is a contract breach.

Redis-backed classes use the suite's Redis (tests/redis_dbs.py: its own
throwaway server unless ``FKD_TEST_REDIS_DBS`` names databases of another);
the memcached and cluster classes the suite's own memcached and Redis Cluster
(tests/servers.py), started when the class runs, not when this module is imported.
"""

import copy
import os
import unittest

import pytest
import redis
from django.core.cache import caches
from django.test import TestCase, override_settings

from .. import servers
from ..redis_dbs import redis_url
from . import django_cache_tests as dj

# FKD_CONTRACT_WRAPPER=tests.contract.passthrough_backend.PassthroughCache
# checks the harness itself against a naive pass-through wrapper.
WRAPPER_BACKEND = os.environ.get(
    "FKD_CONTRACT_WRAPPER", "fragmented_keys_django.FragmentedKeysCacheBackend"
)
STORE_SUFFIX = "__store"
# Settings that belong to the wrapper alias; everything else (BACKEND,
# LOCATION, OPTIONS incl. MAX_ENTRIES/CULL_FREQUENCY) goes to the inner store.
WRAPPER_KEYS = ("KEY_PREFIX", "VERSION", "KEY_FUNCTION", "TIMEOUT")
# Django's suite lets default/prefix/v2/custom_key/custom_key2 share one data
# store (test_prefix, test_custom_key_func and the versioning tests rely on it),
# so their inner stores share a store too. The cull stores count entries, so
# each gets a store of its own.
ISOLATED_ALIASES = ("cull", "zero_cull")
STORE_KEY_PREFIX = "fkd-contract"

DJANGO_REDIS_URL = redis_url("contract")
DJANGO_REDIS_PKG_URL = redis_url("contract_pkg")

NOT_APPLICABLE = {
    # name: reason -- only cases that cannot apply to *any* wrapper.
}

ADAPTED = {
    "test_cull_delete_when_store_empty": (
        "sets _max_entries, an attribute of the culling store, on the inner "
        "store alias instead of on the wrapper"
    ),
}


def fragmented_caches_setting(inner_base, *, exclude=None, **params):
    """Django's test CACHES (``caches_setting_for_tests``), each alias wrapped.

    For every alias Django generates, returns ``alias`` (the wrapper, with
    CACHE_NAME, KEY_PREFIX, VERSION, KEY_FUNCTION, TIMEOUT) and
    ``alias__store`` (``inner_base`` plus the alias's OPTIONS).
    """
    generated = copy.deepcopy(
        dj.caches_setting_for_tests(base=inner_base, exclude=exclude, **params)
    )
    setting = {}
    for alias, conf in generated.items():
        wrapper = {"BACKEND": WRAPPER_BACKEND, "CACHE_NAME": alias + STORE_SUFFIX}
        wrapper.update({k: conf.pop(k) for k in WRAPPER_KEYS if k in conf})
        store = conf
        store["KEY_PREFIX"] = STORE_KEY_PREFIX
        if alias in ISOLATED_ALIASES:
            store["KEY_PREFIX"] = f"{STORE_KEY_PREFIX}-{alias}"
            if store["BACKEND"].endswith(".LocMemCache"):
                store["LOCATION"] = f"{store.get('LOCATION', '')}-{alias}"
        setting[alias] = wrapper
        setting[alias + STORE_SUFFIX] = store
    return setting


def not_applicable(cls):
    """Replace each NOT_APPLICABLE case of ``cls`` by a skip giving its reason."""
    for name, reason in NOT_APPLICABLE.items():

        def skipped(self):
            pass

        skipped.__name__ = name
        setattr(cls, name, unittest.skip(f"not applicable to a wrapper: {reason}")(skipped))
    return cls


class WrapperContractTests(dj.BaseCacheTests):
    """BaseCacheTests plus what a wrapper needs; mixed into a TestCase below."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Start from empty inner stores (Django's suite assumes an empty store;
        # the wrapper's own clear() only hides earlier entries).
        for alias in caches.settings:
            if alias.endswith(STORE_SUFFIX):
                caches[alias].clear()

    def test_cull_delete_when_store_empty(self):
        try:
            cull_cache = caches["cull"]
        except dj.InvalidCacheBackendError:
            self.skipTest("Culling isn't implemented.")
        store = caches["cull" + STORE_SUFFIX]
        old_max_entries = store._max_entries
        # Force _cull to delete on first cached record.
        store._max_entries = -1
        try:
            cull_cache.set("force_cull_delete", "value", 1000)
            self.assertIs(cull_cache.has_key("force_cull_delete"), True)
        finally:
            store._max_entries = old_max_entries


# Django's RedisCacheTests excludes the cull aliases: Redis has no MAX_ENTRIES.
REDIS_EXCLUDED = {"cull", "zero_cull"}

# The three stores, as wrapped CACHES settings (also used by test_async_contract).
LOCMEM_CACHES = fragmented_caches_setting(
    {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "fkd-contract-locmem",
    }
)
DJANGO_REDIS_CACHES = fragmented_caches_setting(
    {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": DJANGO_REDIS_URL},
    exclude=REDIS_EXCLUDED,
)
DJANGO_REDIS_PKG_CACHES = fragmented_caches_setting(
    {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": DJANGO_REDIS_PKG_URL},
    exclude=REDIS_EXCLUDED,
)


# Django's memcached tests exclude the cull aliases too: memcached has no MAX_ENTRIES.
MEMCACHED_EXCLUDED = {"cull", "zero_cull"}


def memcached_caches(**params) -> dict:
    """The wrapped CACHES over the suite's memcached (started by this call if needed)."""
    return fragmented_caches_setting(
        {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": servers.memcached().location,
        },
        exclude=MEMCACHED_EXCLUDED,
        **params,
    )


CLUSTER_BACKEND = "fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache"


def cluster_store() -> dict:
    """Our RedisClusterCache over the suite's Redis Cluster (started by this call if needed)."""
    return {"BACKEND": CLUSTER_BACKEND, "LOCATION": servers.redis_cluster().url}


def cluster_caches(**params) -> dict:
    """The wrapped CACHES over the suite's Redis Cluster."""
    return fragmented_caches_setting(cluster_store(), exclude=REDIS_EXCLUDED, **params)


@not_applicable
@override_settings(CACHES=LOCMEM_CACHES)
class LocMemWrapperContractTests(WrapperContractTests, TestCase):
    pass


@pytest.mark.redis
@not_applicable
@override_settings(CACHES=DJANGO_REDIS_CACHES)
class DjangoRedisWrapperContractTests(WrapperContractTests, TestCase):
    # Django's RedisCacheTests expects redis.ResponseError from incr(None); a
    # wrapper may equally raise TypeError (as LocMemCache does).
    incr_decr_type_error = (TypeError, redis.ResponseError)


@pytest.mark.redis
@not_applicable
@override_settings(CACHES=DJANGO_REDIS_PKG_CACHES)
class DjangoRedisPackageWrapperContractTests(WrapperContractTests, TestCase):
    incr_decr_type_error = (TypeError, redis.ResponseError)


@pytest.mark.memcached
@not_applicable
class MemcachedWrapperContractTests(WrapperContractTests, TestCase):
    """The contract over Django's PyMemcacheCache, plus the cases of Django's
    ``BaseMemcachedTests`` that are about the cache API rather than the client
    (its key-length, client-options and ``close()`` cases concern the memcached
    backend itself: behind the wrapper a store key is always short and safe, and
    the wrapper warns about the caller's key as every non-memcached backend does)."""

    @property
    def incr_decr_type_error(self):
        from pymemcache.exceptions import MemcacheClientError

        return (TypeError, MemcacheClientError)

    @classmethod
    def setUpClass(cls):
        # Settings are made here, not at import: memcached starts only when this class runs.
        cls._overridden_settings = {
            **(cls._overridden_settings or {}),
            "CACHES": memcached_caches(),
        }
        super().setUpClass()

    def test_default_never_expiring_timeout(self):
        # Django's regression test for #22845, through the wrapper (TIMEOUT=None).
        with self.settings(CACHES=memcached_caches(TIMEOUT=None)):
            caches["default"].set("infinite_foo", "bar")
            self.assertEqual(caches["default"].get("infinite_foo"), "bar")

    def test_default_far_future_timeout(self):
        # Django's regression test for #22845: one year is past memcached's 30-day
        # relative limit, so the store must send it as an absolute time.
        with self.settings(CACHES=memcached_caches(TIMEOUT=31536000)):
            caches["default"].set("future_foo", "bar")
            self.assertEqual(caches["default"].get("future_foo"), "bar")

    def test_memcached_deletes_key_on_failed_set(self):
        # Django's: a value over memcached's 1 MB item limit must not leave the old
        # value served (the cache_db session backend relies on it). Through the
        # wrapper the refusal is a failed write of that value (logged, counted), not
        # an error and not an outage: the store keeps serving.
        cache = caches["default"]
        cache.set("small_value", "a")
        self.assertEqual(cache.get("small_value"), "a")
        large_value = "a" * (2**20 + 1)
        cache.set("small_value", large_value)
        self.assertIsNone(cache.get("small_value"))
        cache.set("after", "b")
        self.assertEqual(cache.get("after"), "b")


@pytest.mark.redis
@pytest.mark.cluster
@not_applicable
class ClusterWrapperContractTests(WrapperContractTests, TestCase):
    """The contract through the wrapper over our RedisClusterCache (its cluster adapter)."""

    incr_decr_type_error = (TypeError, redis.ResponseError)

    @classmethod
    def setUpClass(cls):
        # Settings are made here, not at import: the cluster starts only when this class runs.
        cls._overridden_settings = {**(cls._overridden_settings or {}), "CACHES": cluster_caches()}
        super().setUpClass()


@pytest.mark.redis
@pytest.mark.cluster
class ClusterStoreContractTests(dj.BaseCacheTests, TestCase):
    """Django's contract for RedisClusterCache itself, as Django runs it for its RedisCache."""

    incr_decr_type_error = redis.ResponseError

    @classmethod
    def setUpClass(cls):
        setting = dj.caches_setting_for_tests(base=cluster_store(), exclude=REDIS_EXCLUDED)
        for conf in setting.values():
            conf.setdefault("KEY_PREFIX", "")
            conf["KEY_PREFIX"] = f"{STORE_KEY_PREFIX}-bare{conf['KEY_PREFIX']}"
        cls._overridden_settings = {**(cls._overridden_settings or {}), "CACHES": setting}
        super().setUpClass()
