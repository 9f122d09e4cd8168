"""TenantContext: the current tenant per thread, per asyncio task, across asgiref bridges."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import InvalidTenant, TenantContext, TenantRequired
from fragmented_keys_django.tenancy import MAX_TENANT_ID_LENGTH

from .conftest import store_settings

use_tenant = TenantContext.use_tenant


class Tenant:
    def __init__(self, tenant_id):
        self.tenant_id = tenant_id

    def __repr__(self):
        return f"Tenant({self.tenant_id!r})"


def test_outside_any_tenant():
    assert TenantContext.get_tenant() is None
    assert TenantContext.get_tenant_id() is None


def test_context_manager_and_nesting():
    with use_tenant("outer") as entered:
        assert entered == "outer"
        assert TenantContext.get_tenant_id() == "outer"
        with use_tenant("inner"):
            assert TenantContext.get_tenant_id() == "inner"
            with use_tenant(None):
                assert TenantContext.get_tenant() is None
                assert TenantContext.get_tenant_id() is None
            assert TenantContext.get_tenant_id() == "inner"
        assert TenantContext.get_tenant_id() == "outer"
    assert TenantContext.get_tenant_id() is None


def test_exit_on_exception_restores_outer():
    with use_tenant("outer"):
        with pytest.raises(RuntimeError), use_tenant("inner"):
            raise RuntimeError("boom")
        assert TenantContext.get_tenant_id() == "outer"


def test_tenant_objects():
    t = Tenant("acme")
    with use_tenant(t) as entered:
        assert entered is t
        assert TenantContext.get_tenant() is t
        assert TenantContext.get_tenant_id() == "acme"
    with use_tenant("plain"):
        assert TenantContext.get_tenant() == "plain"


def test_object_tenant_and_string_tenant_share_a_namespace():
    with override_settings(CACHES=store_settings("locmem")):
        frag = caches["fragmented"]
        with use_tenant(Tenant("acme")):
            frag.set("k", 1)
        with use_tenant("acme"):
            assert frag.get("k") == 1
        with use_tenant(Tenant("other")):
            assert frag.get("k") is None


def test_decorator_sync():
    @use_tenant("deco")
    def job(x):
        return TenantContext.get_tenant_id(), x

    assert job(1) == ("deco", 1)
    assert TenantContext.get_tenant_id() is None
    with use_tenant("outer"):
        assert job(2) == ("deco", 2)
        assert TenantContext.get_tenant_id() == "outer"


def test_decorator_sync_restores_on_exception():
    @use_tenant("deco")
    def job():
        raise KeyError("x")

    with use_tenant("outer"):
        with pytest.raises(KeyError):
            job()
        assert TenantContext.get_tenant_id() == "outer"


def test_decorator_async():
    @use_tenant("deco")
    async def job(x):
        await asyncio.sleep(0)
        return TenantContext.get_tenant_id(), x

    assert asyncio.iscoroutinefunction(job)

    async def main():
        with use_tenant("outer"):
            got = await job(3)
            return got, TenantContext.get_tenant_id()

    assert asyncio.run(main()) == (("deco", 3), "outer")


def test_async_context_manager():
    async def main():
        async with use_tenant("a"):
            await asyncio.sleep(0)
            inside = TenantContext.get_tenant_id()
        return inside, TenantContext.get_tenant_id()

    assert asyncio.run(main()) == ("a", None)


def test_decorator_is_reusable():
    deco = use_tenant("r")

    @deco
    def one():
        return TenantContext.get_tenant_id()

    @deco
    def two():
        return one()

    assert two() == "r"
    assert one() == "r"


def test_context_manager_not_reentrant():
    ctx = use_tenant("x")
    with ctx:
        with pytest.raises(RuntimeError):
            ctx.__enter__()
        assert TenantContext.get_tenant_id() == "x"
    assert TenantContext.get_tenant_id() is None


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ("", "empty"),
        (42, "42"),
        (4.5, "4.5"),
        (b"bytes-id", "bytes-id"),
        (["list"], "list"),
        (object(), "object"),
        (Tenant(None), "Tenant"),
        (Tenant(7), "7"),
        (Tenant(""), "empty"),
        (Tenant(b"raw"), "raw"),
    ],
)
def test_invalid_tenants(bad, shown):
    with pytest.raises(InvalidTenant) as info:
        use_tenant(bad)
    assert shown in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidTenant):
        TenantContext.push_tenant(bad)
    assert TenantContext.get_tenant_id() is None


def test_tenant_id_length_limit():
    ok = "x" * MAX_TENANT_ID_LENGTH
    with use_tenant(ok):
        assert TenantContext.get_tenant_id() == ok
    too_long = "y" * (MAX_TENANT_ID_LENGTH + 1)
    with pytest.raises(InvalidTenant) as info:
        use_tenant(too_long)
    assert "yyyy" in str(info.value)
    assert str(MAX_TENANT_ID_LENGTH + 1) in str(info.value)


def test_invalid_tenant_does_not_change_current():
    with use_tenant("kept"):
        with pytest.raises(InvalidTenant), use_tenant(""):
            pass  # pragma: no cover
        assert TenantContext.get_tenant_id() == "kept"


def test_push_pop():
    TenantContext.push_tenant("a")
    assert TenantContext.get_tenant_id() == "a"
    TenantContext.push_tenant(Tenant("b"))
    assert TenantContext.get_tenant_id() == "b"
    TenantContext.push_tenant(None)
    assert TenantContext.get_tenant_id() is None
    TenantContext.pop_tenant()
    assert TenantContext.get_tenant_id() == "b"
    TenantContext.pop_tenant()
    assert TenantContext.get_tenant_id() == "a"
    TenantContext.pop_tenant()
    assert TenantContext.get_tenant_id() is None
    TenantContext.pop_tenant()  # nothing pushed: a no-op
    assert TenantContext.get_tenant_id() is None


def test_push_inside_use_tenant():
    with use_tenant("outer"):
        TenantContext.push_tenant("pushed")
        assert TenantContext.get_tenant_id() == "pushed"
        TenantContext.pop_tenant()
        assert TenantContext.get_tenant_id() == "outer"


def test_clear_all():
    TenantContext.push_tenant("a")
    TenantContext.push_tenant("b")
    TenantContext.clear_all()
    assert TenantContext.get_tenant() is None
    TenantContext.pop_tenant()  # the stack was cleared too
    assert TenantContext.get_tenant() is None


def test_each_thread_has_its_own_tenant():
    n = 8
    barrier = threading.Barrier(n)
    seen: dict[int, list] = {}
    errors = []

    def worker(i):
        try:
            assert TenantContext.get_tenant_id() is None  # not inherited from the main thread
            with use_tenant(f"t{i}"):
                barrier.wait(timeout=10)  # every thread is inside its tenant now
                first = TenantContext.get_tenant_id()
                barrier.wait(timeout=10)
                with use_tenant(f"t{i}-inner"):
                    barrier.wait(timeout=10)
                    inner = TenantContext.get_tenant_id()
                barrier.wait(timeout=10)
                seen[i] = [first, inner, TenantContext.get_tenant_id()]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    with use_tenant("main"):
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert TenantContext.get_tenant_id() == "main"
    assert not errors, errors
    assert seen == {i: [f"t{i}", f"t{i}-inner", f"t{i}"] for i in range(n)}


def test_threads_write_to_their_own_namespaces():
    with override_settings(CACHES=store_settings("locmem")):
        frag = caches["fragmented"]
        n = 6
        barrier = threading.Barrier(n)
        results = {}

        def worker(i):
            with use_tenant(f"t{i}"):
                barrier.wait(timeout=10)
                caches["fragmented"].set("shared-name", i)
                barrier.wait(timeout=10)
                results[i] = caches["fragmented"].get("shared-name")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert results == {i: i for i in range(n)}
        assert frag.get("shared-name") is None


def test_each_asyncio_task_has_its_own_tenant():
    async def task(i):
        with use_tenant(f"t{i}"):
            out = []
            for step in range(5):
                await asyncio.sleep(0.001 * ((i + step) % 3))
                out.append(TenantContext.get_tenant_id())
                with use_tenant(f"t{i}-{step}"):
                    await asyncio.sleep(0)
                    out.append(TenantContext.get_tenant_id())
            return out

    async def main():
        with use_tenant("parent"):
            results = await asyncio.gather(*(asyncio.create_task(task(i)) for i in range(10)))
            return results, TenantContext.get_tenant_id()

    results, parent = asyncio.run(main())
    assert parent == "parent"
    for i, out in enumerate(results):
        expected = []
        for step in range(5):
            expected += [f"t{i}", f"t{i}-{step}"]
        assert out == expected


def test_tasks_inherit_tenant_at_creation():
    async def child():
        await asyncio.sleep(0)
        return TenantContext.get_tenant_id()

    async def main():
        with use_tenant("creator"):
            t = asyncio.create_task(child())
        # The task copied the context when it was created.
        return await t, TenantContext.get_tenant_id()

    assert asyncio.run(main()) == ("creator", None)


def test_sync_to_async_carries_the_tenant():
    def sync_part():
        return TenantContext.get_tenant_id(), threading.get_ident()

    async def main():
        with use_tenant("acme"):
            tid, ident = await sync_to_async(sync_part, thread_sensitive=False)()
            return tid, ident != threading.get_ident()

    tid, other_thread = asyncio.run(main())
    assert tid == "acme"
    assert other_thread


def test_async_to_sync_carries_the_tenant():
    async def async_part():
        await asyncio.sleep(0)
        return TenantContext.get_tenant_id()

    with use_tenant("acme"):
        assert async_to_sync(async_part)() == "acme"
    assert async_to_sync(async_part)() is None


def test_round_trip_across_bridges():
    def inner_sync():
        return TenantContext.get_tenant_id()

    async def middle():
        return await sync_to_async(inner_sync)()

    with use_tenant(Tenant("deep")):
        assert async_to_sync(middle)() == "deep"


def test_cache_values_follow_the_tenant_across_bridges():
    with override_settings(CACHES=store_settings("locmem")):
        frag = caches["fragmented"]

        async def read():
            return await frag.aget("k")

        with use_tenant("acme"):
            frag.set("k", "acme-value")
            assert async_to_sync(read)() == "acme-value"
        with use_tenant("other"):
            assert async_to_sync(read)() is None


def test_tenant_required():
    with override_settings(CACHES=store_settings("locmem", OPTIONS={"TENANT_REQUIRED": True})):
        frag = caches["fragmented"]
        calls = [
            lambda: frag.get("k"),
            lambda: frag.set("k", 1),
            lambda: frag.add("k", 1),
            lambda: frag.delete("k"),
            lambda: frag.has_key("k"),
            lambda: frag.get_many(["k"]),
            lambda: frag.set_many({"k": 1}),
            lambda: frag.clear(),
            lambda: frag.get_with_tags("k", [("User", "1")]),
            lambda: frag.set_with_tags("k", 1, [("User", "1")]),
            lambda: frag.get_or_set_with_tags("k", 1, [("User", "1")]),
            lambda: frag.get_many_with_tags(["k"], [("User", "1")]),
            lambda: frag.invalidate_tags([("User", "1")]),
            lambda: frag.invalidate_tenant(),
            lambda: frag.get_tag_version("User", "1"),
            lambda: async_to_sync(frag.aget)("k"),
            lambda: async_to_sync(frag.aset_with_tags)("k", 1, [("User", "1")]),
        ]
        for call in calls:
            with pytest.raises(TenantRequired) as info:
                call()
            assert isinstance(info.value, LookupError)
            assert "fragmented" in str(info.value)
        with use_tenant(None), pytest.raises(TenantRequired):
            frag.get("k")
        with use_tenant("acme"):
            frag.set("k", 1)
            assert frag.get("k") == 1
            frag.set_with_tags("t", 2, [("User", "1")])
            assert frag.get_with_tags("t", [("User", "1")]) == 2
        # An operator naming a tenant explicitly needs no current tenant.
        frag.invalidate_tenant("acme")
        with use_tenant("acme"):
            assert frag.get("k") is None
