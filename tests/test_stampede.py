"""Stampedes: many callers missing one cold key at once (issue 3, item 4).

32 threads released together by a ``Barrier`` miss the same key; the loader
(0.2 s) must run at most twice, on locmem, the database cache and Redis,
through ``get_or_set_with_tags`` and ``@tagged_cache``. When the lock
holder's loader raises, the waiters still return a value (they compute after
``STAMPEDE_WAIT``). Async: 32 tasks of ``aget_or_set_with_tags`` gathered.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.core.cache import caches
from django.db import connections
from django.test import override_settings

from fragmented_keys_django import TenantContext, metrics, tagged_cache
from fragmented_keys_django.invalidation import pending_retries
from tests.conftest import store_settings
from tests.race_support import reset_retrier

pytestmark = pytest.mark.slow

N = 32
LOAD_SECONDS = 0.2
TAGS = [("Ward", "7")]

STORES = [
    pytest.param("locmem", id="locmem"),
    pytest.param("db", id="db", marks=pytest.mark.django_db(transaction=True)),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=STORES)
def kind(request):
    return request.param


def use_store(kind: str, **options):
    conf = store_settings(kind, OPTIONS=options) if options else store_settings(kind)
    return override_settings(CACHES=conf)


@pytest.fixture
def cold(kind):
    """CACHES over *kind*, with an empty database cache table.

    No failed bump or open breaker of an earlier test's store may leave the
    tenant bypassed here (a bypassed read computes without the lock).
    """
    reset_retrier()
    with use_store(kind):
        if kind == "db":
            from django.core.management import call_command

            call_command("createcachetable", verbosity=0)
            caches["default"].clear()
        yield kind
        caches["fragmented"].close()


def stampede(call, n: int = N) -> tuple[list, list[BaseException]]:
    """Run *call* in *n* threads released together; return (results, exceptions)."""
    barrier = threading.Barrier(n)
    results: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run():
        try:
            barrier.wait(30)
            value = call()
            with lock:
                results.append(value)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a stampede thread hung"
    return results, errors


class Loader:
    def __init__(self, fail_first: bool = False) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(LOAD_SECONDS)
        if self.fail_first and n == 1:
            raise RuntimeError("loader failed")
        return {"value": 42}


ROUNDS = 8  # each round a fresh cold key: a bound that holds only most of the time fails here


def test_get_or_set_with_tags_computes_at_most_twice(cold):
    for rnd in range(ROUNDS):
        loader = Loader()

        def call(rnd=rnd, loader=loader):
            with TenantContext.use_tenant("acme"):
                return caches["fragmented"].get_or_set_with_tags(
                    f"cold{rnd}", loader, TAGS, timeout=60
                )

        results, errors = stampede(call)
        assert not errors, errors[:3]
        assert results == [{"value": 42}] * N
        assert loader.calls <= 2, (
            f"round {rnd}: loader ran {loader.calls} times for {N} concurrent misses"
        )
        with TenantContext.use_tenant("acme"):
            assert caches["fragmented"].get_with_tags(f"cold{rnd}", TAGS) == {"value": 42}


_decorated_loader = Loader()


@tagged_cache(timeout=60, tags=["Ward:{ward}"], cache_name="fragmented")
def ward_report(ward: int) -> dict:
    return _decorated_loader()


def test_tagged_cache_computes_at_most_twice(cold):
    for rnd in range(ROUNDS):
        _decorated_loader.calls = 0

        def call(rnd=rnd):
            with TenantContext.use_tenant("acme"):
                return ward_report(rnd)

        results, errors = stampede(call)
        assert not errors, errors[:3]
        assert results == [{"value": 42}] * N
        assert _decorated_loader.calls <= 2, (
            f"round {rnd}: loader ran {_decorated_loader.calls} times"
        )


def test_stampede_after_invalidation_computes_at_most_twice(cold):
    """A hot key whose tag was just bumped is a cold key again: same bound."""
    frag = caches["fragmented"]
    with TenantContext.use_tenant("acme"):
        assert frag.get_or_set_with_tags("hot", lambda: {"value": 0}, TAGS) == {"value": 0}
        frag.invalidate_tags(TAGS)
    loader = Loader()

    def call():
        with TenantContext.use_tenant("acme"):
            return caches["fragmented"].get_or_set_with_tags("hot", loader, TAGS, timeout=60)

    results, errors = stampede(call)
    assert not errors and results == [{"value": 42}] * N
    assert loader.calls <= 2, loader.calls


def test_waiters_compute_when_the_lock_holder_fails(kind):
    """The first loader raises; the others wait ``STAMPEDE_WAIT`` and compute themselves."""
    with use_store(kind, STAMPEDE_WAIT=0.3, STAMPEDE_POLL=0.02):
        if kind == "db":
            from django.core.management import call_command

            call_command("createcachetable", verbosity=0)
            caches["default"].clear()
        loader = Loader(fail_first=True)

        def call():
            with TenantContext.use_tenant("acme"):
                return caches["fragmented"].get_or_set_with_tags("cold", loader, TAGS, timeout=60)

        results, errors = stampede(call)
        caches["fragmented"].close()
    assert len(errors) == 1 and str(errors[0]) == "loader failed", errors[:3]
    assert results == [{"value": 42}] * (N - 1)
    assert loader.calls >= 2


def test_async_stampede_computes_at_most_twice(cold):
    calls = [0]

    async def loader():
        calls[0] += 1
        await asyncio.sleep(LOAD_SECONDS)
        return {"value": 42}

    async def main():
        frag = caches["fragmented"]

        async def one():
            with TenantContext.use_tenant("acme"):
                return await frag.aget_or_set_with_tags("cold-async", loader, TAGS, timeout=60)

        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(N))), 60)

    results = asyncio.run(main())
    assert results == [{"value": 42}] * N
    assert calls[0] <= 2, (
        f"async loader ran {calls[0]} times for {N} concurrent misses; "
        f"store errors {metrics.snapshot()}, pending retries {pending_retries()}"
    )


def test_async_waiters_compute_when_the_lock_holder_fails(kind):
    calls = [0]

    async def loader():
        calls[0] += 1
        n = calls[0]
        await asyncio.sleep(LOAD_SECONDS)
        if n == 1:
            raise RuntimeError("loader failed")
        return {"value": 42}

    async def main():
        frag = caches["fragmented"]

        async def one():
            with TenantContext.use_tenant("acme"):
                return await frag.aget_or_set_with_tags("cold-async", loader, TAGS, timeout=60)

        return await asyncio.wait_for(
            asyncio.gather(*(one() for _ in range(N)), return_exceptions=True), 60
        )

    with use_store(kind, STAMPEDE_WAIT=0.3):
        if kind == "db":
            from django.core.management import call_command

            call_command("createcachetable", verbosity=0)
            caches["default"].clear()
        results = asyncio.run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and str(errors[0]) == "loader failed", errors[:3]
    assert [r for r in results if not isinstance(r, BaseException)] == [{"value": 42}] * (N - 1)
