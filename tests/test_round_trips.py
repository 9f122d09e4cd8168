"""Every operation takes the same round trips through the sync API and through the async API.

On Redis the round trips are counted on the wire (``tests/wire.py``: a TCP
proxy in front of the suite's real Redis, counting each time a client speaks
after the server answered), whatever the client: redis-py for the sync API,
``redis.asyncio`` for the async one. On the generic path they are the store
calls the counting store sees (``tests/counting_backend.py``). Each operation
runs from the same prepared state through both APIs (the async one through
``async_to_sync``), and the counts must be equal, and equal to what
``docs/performance.md`` promises on Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import TenantContext

from .redis_dbs import base_url, redis_db
from .wire import RoundTripProxy

TAGS = [("User", "1"), ("Org", "7")]
VALUE = {"payload": "x" * 100}

# name -> (prepare(frag, key), (method, arguments(key)), round trips on Redis). The
# operation is frag.<method>(*arguments) through the sync API, and
# await frag.a<method>(*arguments) through the async one.
Op = tuple[Callable, tuple[str, Callable], int]


def _set(f, k):
    f.set(k, VALUE)


def _tagged(f, k):
    f.set_with_tags(k, VALUE, TAGS)


def _versions(f, k):
    f.set_with_tags("other-" + k, VALUE, TAGS)  # the tags' versions exist, the entry does not


def _nothing(f, k):
    pass


def _loader():
    return VALUE


OPERATIONS: dict[str, Op] = {
    "get, hit": (_set, ("get", lambda k: (k,)), 1),
    "get, miss": (_nothing, ("get", lambda k: (k,)), 1),
    "set": (_set, ("set", lambda k: (k, VALUE)), 1),
    "add": (_set, ("add", lambda k: (k + "-new", VALUE)), 1),
    "touch": (_set, ("touch", lambda k: (k, 60)), 2),
    "delete": (_set, ("delete", lambda k: (k,)), 2),
    "incr": (lambda f, k: f.set(k, 1), ("incr", lambda k: (k,)), 2),
    "get_many": (_set, ("get_many", lambda k: ([k, k + "-2"],)), 1),
    "set_many": (_set, ("set_many", lambda k: ({k: 1, k + "-2": 2},)), 1),
    "delete_many": (_set, ("delete_many", lambda k: ([k, k + "-2"],)), 1),
    "set_with_tags": (_tagged, ("set_with_tags", lambda k: (k, VALUE, TAGS)), 1),
    "get_with_tags, hit": (_tagged, ("get_with_tags", lambda k: (k, TAGS)), 1),
    "get_with_tags, miss": (_versions, ("get_with_tags", lambda k: (k, TAGS)), 1),
    "get_many_with_tags": (_tagged, ("get_many_with_tags", lambda k: ([k, k + "-2"], TAGS)), 1),
    "get_or_set_with_tags, hit": (
        _tagged,
        ("get_or_set_with_tags", lambda k: (k, _loader, TAGS)),
        1,
    ),
    # MGET; the stampede lock (SET NX + GET); the entry's SET + the lock's DEL.
    "get_or_set_with_tags, miss": (
        _versions,
        ("get_or_set_with_tags", lambda k: (k, _loader, TAGS)),
        3,
    ),
    # ... and one more to create the missing versions (SET NX + GET per version).
    "get_or_set_with_tags, miss, new versions": (
        _nothing,
        ("get_or_set_with_tags", lambda k: (k, _loader, [("Fresh", k)])),
        4,
    ),
    "get_or_set_with_tags, miss, plain value": (
        _versions,
        ("get_or_set_with_tags", lambda k: (k, VALUE, TAGS)),
        2,
    ),
    "delete_with_tags": (_tagged, ("delete_with_tags", lambda k: (k, TAGS)), 1),
    "invalidate_tags": (_tagged, ("invalidate_tags", lambda k: (TAGS,)), 1),
    "clear": (_set, ("clear", lambda k: ()), 1),
    "get_tag_version": (_tagged, ("get_tag_version", lambda k: ("User", "1")), 1),
}


def _caches(location: str, backend: str, **store: object) -> dict:
    return {
        "default": {"BACKEND": backend, "LOCATION": location, **store},
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "rt",
            "OPTIONS": {"VERIFY_BUMPS": False},
        },
    }


def _run(frag, api: str, name: str, counter: Callable[[], int], reset: Callable[[], None]) -> int:
    """Prepare (sync API), warm, then count one run of operation *name* through *api*.

    The async run warms and operates on one event loop (``async_to_sync`` runs a
    new loop per call, and a new loop opens its connection: not counted).
    """
    prepare, (method, arguments), _ = OPERATIONS[name]
    key = f"{name.replace(' ', '_').replace(',', '')}-{api}-{uuid.uuid4().hex[:8]}"
    with TenantContext.use_tenant(f"t-{uuid.uuid4().hex[:6]}"):
        prepare(frag, key)
        if api == "sync":
            frag.get(key)  # warm: connections open, scripts loaded, stamps learnt
            reset()
            getattr(frag, method)(*arguments(key))
            return counter()

        async def scenario() -> int:
            await frag.aget(key)  # warm, on this loop
            reset()
            await getattr(frag, "a" + method)(*arguments(key))
            return counter()

        return async_to_sync(scenario)()


@pytest.mark.redis
def test_sync_and_async_take_the_same_round_trips_on_redis():
    """Counted on the wire, each operation: the same through both APIs, and as documented."""
    server = urlsplit(base_url())
    with RoundTripProxy(server.hostname, server.port) as proxy:
        conf = _caches(proxy.url(redis_db("count")), "django_redis.cache.RedisCache")
        conf["default"]["KEY_PREFIX"] = uuid.uuid4().hex[:8]
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]
            found = {}
            for name in OPERATIONS:
                found[name] = tuple(
                    _run(frag, api, name, lambda: proxy.count, proxy.reset)
                    for api in ("sync", "async")
                )
            expected = {name: (op[2], op[2]) for name, op in OPERATIONS.items()}
            assert found == expected


def test_sync_and_async_make_the_same_store_calls_on_the_generic_path():
    """On a Django cache through its own API, the same store calls through both APIs."""
    conf = _caches(f"rt-{uuid.uuid4().hex}", "tests.counting_backend.CountingLocMemCache")
    with override_settings(CACHES=conf):
        frag, store = caches["fragmented"], caches["default"]
        found = {}
        for name in OPERATIONS:
            calls = {}
            for api in ("sync", "async"):
                _run(frag, api, name, lambda: 0, store.reset_calls)
                calls[api] = dict(store.calls)
            found[name] = calls
        mismatched = {n: c for n, c in found.items() if c["sync"] != c["async"]}
        assert mismatched == {}
        # The tagged read is still one get_many through either API.
        assert found["get_with_tags, hit"]["async"] == {"get_many": 1}
