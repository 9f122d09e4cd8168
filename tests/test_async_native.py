"""The async API on Redis is native: no thread, a client per event loop, warm across requests.

* Native async code (an ASGI view, a task on an event loop) runs every ``a*``
  method, ``@tagged_cache`` on an ``async def`` included, without any thread:
  the event loop here refuses ``run_in_executor`` (what ``sync_to_async`` uses).
* ``async_to_sync`` runs a new event loop per call: each call works (asyncio
  connections belong to their loop; a client is kept per loop).
* Under Django's ASGI handler the cache backend is built per request; the
  store's clients and pools are the process's, so a hundred requests open a
  connection or two, not one each (they did with Django's ``RedisCache``).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.http import JsonResponse
from django.test import override_settings
from django.urls import path

from fragmented_keys_django import TenantContext, tagged_cache

from .conftest import store_settings
from .redis_dbs import redis_url

pytestmark = pytest.mark.redis

TAGS = [("User", "1")]


class NoThreadLoop(asyncio.SelectorEventLoop):
    """An event loop on which any use of a worker thread fails the test."""

    def run_in_executor(self, executor, func, *args):
        raise AssertionError(f"a worker thread was used: {func!r}")


def run_without_threads(coro_fn):
    """Run *coro_fn()* on a :class:`NoThreadLoop` in a fresh thread (no async_to_sync caller)."""
    out: dict = {}

    def main() -> None:
        loop = NoThreadLoop()
        try:
            out["value"] = loop.run_until_complete(coro_fn())
        except BaseException as exc:  # reported in the test's thread
            out["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


async def every_async_method() -> bool:
    """Call every ``a*`` method of ``caches["fragmented"]`` and a ``@tagged_cache`` on an
    ``async def``, checking each result (also run on a Sentinel store: test_sentinel_backend)."""
    calls = {"loader": 0}

    @tagged_cache(timeout=60, tags=["User:{uid}"])
    async def profile(uid):
        calls["loader"] += 1
        return {"uid": uid}

    frag = caches["fragmented"]
    async with TenantContext.use_tenant("acme"):
        assert await frag.aset("k", 1) is None
        assert await frag.aget("k") == 1
        assert await frag.aadd("k2", 2) is True
        assert await frag.ahas_key("k2") is True
        assert await frag.aincr("k") == 2
        assert await frag.atouch("k", 60) is True
        assert await frag.aset_many({"a": "A", "b": "B"}) == []
        assert await frag.aget_many(["a", "b"]) == {"a": "A", "b": "B"}
        await frag.adelete_many(["a"])
        assert await frag.adelete("b") is True
        assert await frag.aset_with_tags("t", "T", TAGS) is True
        assert await frag.aget_with_tags("t", TAGS) == "T"
        assert await frag.aget_many_with_tags(["t"], TAGS) == {"t": "T"}

        async def load():
            return "L"

        assert await frag.aget_or_set_with_tags("l", load, TAGS) == "L"  # miss: lock, store
        assert await frag.aget_or_set_with_tags("l", load, TAGS) == "L"  # hit
        assert await profile(7) == {"uid": 7}
        assert await profile(7) == {"uid": 7}
        assert calls["loader"] == 1
        assert await frag.aget_tag_version("User", "1") != 0
        assert await frag.ainvalidate_tags(TAGS) == 1
        assert await frag.aget_with_tags("t", TAGS) is None
        assert await frag.adelete_with_tags("l", TAGS) is True
        await frag.aclear()
        assert await frag.aget("k") is None
    return True


@pytest.mark.parametrize("kind", ["redis", "django-redis-builtin"])
def test_every_async_method_runs_without_a_thread(kind):
    with override_settings(CACHES=store_settings(kind)):
        assert run_without_threads(every_async_method) is True


def test_each_async_to_sync_call_has_its_own_loop_and_works():
    """``async_to_sync`` runs a new loop per call: a client made on one is never used on another."""
    with override_settings(CACHES=store_settings("redis")):
        frag = caches["fragmented"]
        with TenantContext.use_tenant("acme"):
            for i in range(5):
                async_to_sync(frag.aset_with_tags)("k", i, TAGS)
                assert async_to_sync(frag.aget_with_tags)("k", TAGS) == i
                assert async_to_sync(frag.aget_or_set_with_tags)(f"m{i}", lambda i=i: i, TAGS) == i


def test_two_loops_in_two_threads_at_once():
    """Loops running at the same time in two threads each get their own client."""
    with override_settings(CACHES=store_settings("redis")):
        frag = caches["fragmented"]

        async def reads(n: int) -> list:
            async with TenantContext.use_tenant("acme"):
                await frag.aset_with_tags(f"k{n}", n, TAGS)
                return [await frag.aget_with_tags(f"k{n}", TAGS) for _ in range(50)]

        results: dict[int, list] = {}

        def run(n: int) -> None:
            results[n] = asyncio.run(reads(n))

        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {0: [0] * 50, 1: [1] * 50}


# -- under Django's ASGI handler: a backend per request, the clients per process -------


async def cached_view(request):
    frag = caches["fragmented"]
    async with TenantContext.use_tenant("acme"):
        value = await frag.aget_or_set_with_tags("page", lambda: {"n": 1}, TAGS)
    return JsonResponse(value)


urlpatterns = [path("cached/", cached_view)]


async def asgi_get(app, path: str) -> int:
    """GET *path* through ASGI application *app* (Django's handler); return the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[dict] = []
    received = asyncio.Event()

    async def receive() -> dict:
        if received.is_set():
            await asyncio.Event().wait()  # no disconnect: the handler cancels this wait
        received.set()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.mark.parametrize("kind", ["redis", "django-redis-builtin"])
def test_requests_share_the_process_clients_under_asgi(kind):
    """100 requests through Django's ASGI handler (a backend per request) open a connection or two."""
    from django.core.handlers.asgi import ASGIHandler

    server = redis.Redis.from_url(redis_url("store"))
    with override_settings(CACHES=store_settings(kind), ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"]):
        app = ASGIHandler()

        async def requests() -> tuple[list[int], int]:
            before = server.info("stats")["total_connections_received"]
            codes = [await asgi_get(app, "/cached/") for _ in range(100)]
            return codes, server.info("stats")["total_connections_received"] - before

        codes, opened = async_to_sync(requests)()
        assert codes == [200] * 100
        assert opened <= 2
    server.close()


def test_a_backend_per_request_finds_the_store_adapter_warm():
    """Per-context backends (Django builds one per request) share one adapter per store."""
    with override_settings(CACHES=store_settings("redis")):
        seen = []

        def in_a_new_context() -> None:
            backend = caches["fragmented"]
            seen.append((backend, backend.store_for(None)))

        threads = [threading.Thread(target=in_a_new_context) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(s[0]) for s in seen}) == 3  # three backends, as Django builds them
        assert len({id(s[1]) for s in seen}) == 1  # one store behind them


def test_a_cancelled_read_never_hands_its_reply_to_the_next_call():
    """A task cancelled while its reply is on the way: the next call on that loop gets its own."""
    busy = redis.Redis.from_url(redis_url("store"))
    with override_settings(CACHES=store_settings("redis")):
        frag = caches["fragmented"]

        async def scenario():
            async with TenantContext.use_tenant("acme"):
                await frag.aset_with_tags("a", "A", TAGS)
                await frag.aset_with_tags("b", "B", TAGS)
                # The server runs a script for 0.3 s: the read below is sent, its reply waits.
                script = "local t = redis.call('TIME'); local e = t[1] * 1e6 + t[2] + 300000; "
                script += "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] > e; return 1"
                blocker = asyncio.get_running_loop().run_in_executor(
                    None, lambda: busy.eval(script, 0)
                )
                await asyncio.sleep(0.05)
                read = asyncio.ensure_future(frag.aget_with_tags("a", TAGS))
                await asyncio.sleep(0.05)
                read.cancel()
                await blocker
                return [await frag.aget_with_tags("b", TAGS) for _ in range(3)]

        assert async_to_sync(scenario)() == ["B", "B", "B"]
    busy.close()
