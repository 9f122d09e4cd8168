"""Store adapters are chosen by what the store is, subclasses included, or by ``STORE_ADAPTER``.

A subclass of django-redis's or Django's ``RedisCache`` (django-prometheus's
instrumented backends, a team's own) gets the Redis path: a tagged read is one
``MGET`` and a write one Lua script (``EVALSHA``), as Redis itself reports
(``MONITOR``). ``OPTIONS["STORE_ADAPTER"]`` overrides the choice, and a bad one
is reported by the system check and raised on use.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.test import override_settings
from django_redis.cache import RedisCache as DjangoRedisCache
from django_redis.pool import ConnectionFactory

from fragmented_keys_django import ConfigurationError, TenantContext

from .redis_dbs import redis_url
from .test_backend import _redis_commands

pytestmark = pytest.mark.redis


class TeamRedisCache(DjangoRedisCache):
    """A team's own django-redis subclass (as django-prometheus's instrumented backends are)."""


class TeamDjangoRedisCache(RedisCache):
    """A subclass of Django's own ``RedisCache``."""


def _conf(backend: str, **options: object) -> dict:
    return {
        "default": {
            "BACKEND": backend,
            "LOCATION": redis_url("count"),
            "KEY_PREFIX": uuid.uuid4().hex[:8],
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "ad",
            "OPTIONS": options,
        },
    }


def _commands(conf: dict) -> tuple[list[str], list[str]]:
    """The Redis commands of a warm ``set_with_tags`` and of a warm ``get_with_tags``."""
    tags = [("User", "1")]
    watcher = redis.Redis.from_url(redis_url("count"), socket_timeout=10)
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        client = redis.Redis.from_url(redis_url("count"))
        try:
            with TenantContext.use_tenant("acme"), watcher.monitor() as monitor:
                frag.set_with_tags("k", "v", tags)  # creates the versions, learns the stamp
                assert frag.get_with_tags("k", tags) == "v"
                written = _redis_commands(
                    monitor, client, lambda: frag.set_with_tags("k", "v2", tags)
                )
                read = _redis_commands(
                    monitor, client, lambda: frag.get_with_tags("k", tags) == "v2" or 1 / 0
                )
        finally:
            client.close()
            watcher.close()
    return written, read


@pytest.mark.parametrize(
    "backend",
    ["tests.test_store_adapters.TeamRedisCache", "tests.test_store_adapters.TeamDjangoRedisCache"],
)
def test_a_subclass_of_a_redis_store_gets_the_redis_path(backend):
    assert _commands(_conf(backend)) == (["EVALSHA"], ["MGET"])


def test_store_adapter_option_overrides_the_choice():
    """The generic adapter forced on django-redis: a write reads the versions, then sets."""
    conf = _conf(
        "django_redis.cache.RedisCache",
        STORE_ADAPTER="fragmented_keys_django.stores.DjangoCacheAdapter",
    )
    written, read = _commands(conf)
    assert written == ["MGET", "SET"]
    assert read == ["MGET"]


def test_a_bad_store_adapter_is_reported_and_raised():
    from fragmented_keys_django.checks import check_caches

    conf = _conf("django_redis.cache.RedisCache", STORE_ADAPTER="no.such.Adapter")
    with override_settings(CACHES=conf):
        (msg,) = [m for m in check_caches() if m.id.startswith("fragmented_keys_django.")]
        assert msg.id == "fragmented_keys_django.E001"
        assert "STORE_ADAPTER" in msg.msg and "no.such.Adapter" in msg.msg
        with pytest.raises(ConfigurationError, match=r"no\.such\.Adapter"):
            caches["fragmented"].get("k")


@pytest.mark.parametrize("kind", ["locmem", "file"])
def test_adapters_of_per_thread_stores_die_with_their_thread(kind):
    """The generic path keeps an adapter per store and thread, as Django keeps the store: none outlives it."""
    import gc
    import shutil
    import threading
    import weakref

    from .conftest import store_settings

    alive = []
    errors = []

    def in_a_thread() -> None:
        try:
            frag = caches["fragmented"]
            with TenantContext.use_tenant("acme"):
                frag.set("k", 1)
                assert frag.get("k") == 1
            alive.append(weakref.ref(frag._adapter(None)))
        except Exception as exc:  # reported by the test's own thread
            errors.append(exc)

    conf = store_settings(kind)
    with override_settings(CACHES=conf):
        for _ in range(5):
            thread = threading.Thread(target=in_a_thread)
            thread.start()
            thread.join()
        gc.collect()
        survivors = [ref() for ref in alive]  # before CACHES changes back (that forgets all)
    if kind == "file":
        shutil.rmtree(conf["default"]["LOCATION"], ignore_errors=True)
    assert errors == []
    assert len(alive) == 5
    assert survivors == [None] * 5


class TeamConnectionFactory(ConnectionFactory):
    """A team's own django-redis connection factory (e.g. one that fetches a token per pool)."""


def test_a_custom_connection_factory_keeps_the_fast_path_and_its_async_side_works():
    """The package cannot rebuild a custom factory's connections on ``redis.asyncio``, so the
    async side of that store runs the sync adapter in a worker thread (as Django's own ``a*``);
    it must still give the sync side's answers and the sync side keeps one command per call."""
    from asgiref.sync import async_to_sync

    from fragmented_keys_django.stores import ThreadedAsyncAdapter, adapter_for

    conf = _conf("django_redis.cache.RedisCache")
    conf["default"]["OPTIONS"] = {
        "CONNECTION_FACTORY": "tests.test_store_adapters.TeamConnectionFactory"
    }
    assert _commands(conf) == (["EVALSHA"], ["MGET"])
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]

        async def both_ways() -> tuple:
            assert isinstance(adapter_for(frag.store).aio(), ThreadedAsyncAdapter)
            await frag.aset_with_tags("a", "from async", [("User", "2")])
            return await frag.aget_with_tags("a", [("User", "2")])

        with TenantContext.use_tenant("acme"):
            assert async_to_sync(both_ways)() == "from async"
            assert frag.get_with_tags("a", [("User", "2")]) == "from async"
            frag.set_with_tags("b", "from sync", [("User", "2")])
            assert async_to_sync(frag.aget_with_tags)("b", [("User", "2")]) == "from sync"
            assert frag.invalidate_tags([("User", "2")]) == 1
            assert async_to_sync(frag.aget_with_tags)("b", [("User", "2")]) is None
        frag.close()
