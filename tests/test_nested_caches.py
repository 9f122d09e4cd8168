"""Nested caches: an entry computed from other tagged entries depends on their tags too.

A cached computation (``@tagged_cache``, ``get_or_set_with_tags``, ``{% tagged_cache %}``,
``@tagged_cache_page``) that reads other tagged entries while it computes records their
versions in its own entry (``fragmented_keys_django/deps.py``): a bump of an inner tag makes
every entry around it miss, however deep. Over every store of the suite (locmem, the
database cache, real Redis, real memcached) and through both APIs; real threads; round
trips counted on the wire (Redis) and as store calls (the database cache).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import caches
from django.http import HttpResponse
from django.template import engines
from django.test import RequestFactory, override_settings

from fragmented_keys_django import TenantContext, deps, tagged_cache
from fragmented_keys_django.views import tagged_cache_page

from .conftest import store_settings
from .redis_dbs import base_url, redis_db
from .wire import RoundTripProxy

BOTH_APIS = True


def _nest(api: str, data: dict, calls: Counter):
    """Three decorated functions, each reading the next: page -> summary -> item.

    Returns the outermost as a plain callable (the async ones through ``async_to_sync``).
    """
    if api == "sync":

        @tagged_cache(tags=["Item:{pk}"], key_name=f"item-{uuid.uuid4().hex}")
        def item(pk):
            calls["item"] += 1
            return data[pk]

        @tagged_cache(tags=["List:{pk}"], key_name=f"summary-{uuid.uuid4().hex}")
        def summary(pk):
            calls["summary"] += 1
            return [item(pk), data["list"]]

        @tagged_cache(tags=["Page"], key_name=f"page-{uuid.uuid4().hex}")
        def page(pk):
            calls["page"] += 1
            return {"summary": summary(pk), "title": data["title"]}

        return page

    @tagged_cache(tags=["Item:{pk}"], key_name=f"item-{uuid.uuid4().hex}")
    async def aitem(pk):
        calls["item"] += 1
        return data[pk]

    @tagged_cache(tags=["List:{pk}"], key_name=f"summary-{uuid.uuid4().hex}")
    async def asummary(pk):
        calls["summary"] += 1
        return [await aitem(pk), data["list"]]

    @tagged_cache(tags=["Page"], key_name=f"page-{uuid.uuid4().hex}")
    async def apage(pk):
        calls["page"] += 1
        return {"summary": await asummary(pk), "title": data["title"]}

    return async_to_sync(apage)


def test_three_levels_are_invalidated_from_the_innermost_tag(frag, api):
    """A bump of the innermost tag recomputes all three levels; an outer bump only its own."""
    data = {1: "item v1", "list": "list v1", "title": "title v1"}
    calls: Counter = Counter()
    page = _nest(api, data, calls)
    with TenantContext.use_tenant("a"):
        assert page(1) == {"summary": ["item v1", "list v1"], "title": "title v1"}
        assert page(1) == {"summary": ["item v1", "list v1"], "title": "title v1"}
        assert calls == {"page": 1, "summary": 1, "item": 1}

        data[1] = "item v2"
        frag.invalidate_tags([("Item", 1)])
        assert page(1) == {"summary": ["item v2", "list v1"], "title": "title v1"}
        assert calls == {"page": 2, "summary": 2, "item": 2}
        assert page(1)["summary"][0] == "item v2"
        assert calls == {"page": 2, "summary": 2, "item": 2}  # warm again

        data["list"] = "list v2"
        frag.invalidate_tags([("List", 1)])
        assert page(1)["summary"] == ["item v2", "list v2"]
        assert calls == {"page": 3, "summary": 3, "item": 2}  # the item stayed warm

        data["title"] = "title v2"
        frag.invalidate_tags([("Page", "")])
        assert page(1)["title"] == "title v2"
        assert calls == {"page": 4, "summary": 3, "item": 2}


def _backend(frag):
    """The backend behind ``frag`` (the async API's too): loaders call it directly."""
    return getattr(frag, "backend", frag)


def test_nested_entries_stay_per_tenant_and_global_inner_tags_reach_every_tenant(frag, api):
    """An inner bump in tenant A leaves B's outer entry warm; a global inner tag reaches both."""
    from fragmented_keys_django.keys import register_global_tag

    register_global_tag("Country")  # reset by conftest's _clean_state
    b = _backend(frag)
    calls: Counter = Counter()

    def loader_of(tenant):
        def loader():
            calls[tenant] += 1
            inner = b.get_or_set_with_tags(f"inner-{tenant}", lambda: tenant, [("Item", 1)])
            country = b.get_or_set_with_tags("country", lambda: "FR", [("Country", "FR")])
            return f"{inner}/{country}"

        async def aloader():
            calls[tenant] += 1
            inner = await b.aget_or_set_with_tags(f"inner-{tenant}", lambda: tenant, [("Item", 1)])
            country = await b.aget_or_set_with_tags("country", lambda: "FR", [("Country", "FR")])
            return f"{inner}/{country}"

        return loader if api == "sync" else aloader

    def outer_of(tenant):
        return frag.get_or_set_with_tags("outer", loader_of(tenant), [("Page", "")])

    for tenant in ("a", "b"):
        with TenantContext.use_tenant(tenant):
            assert outer_of(tenant) == f"{tenant}/FR"
            assert outer_of(tenant) == f"{tenant}/FR"
    assert calls == {"a": 1, "b": 1}

    with TenantContext.use_tenant("a"):
        frag.invalidate_tags([("Item", 1)])
        outer_of("a")
    with TenantContext.use_tenant("b"):
        outer_of("b")
    assert calls == {"a": 2, "b": 1}

    with TenantContext.use_tenant("b"):
        frag.invalidate_tags([("Country", "FR")])  # global: one version for every tenant
    for tenant in ("a", "b"):
        with TenantContext.use_tenant(tenant):
            outer_of(tenant)
    assert calls == {"a": 3, "b": 2}


def test_a_bump_between_the_inner_read_and_the_outer_store_is_never_lost(frag, api):
    """The outer entry keeps the inner versions as read: a bump during its computation wins."""
    b = _backend(frag)
    data = {"name": "old"}

    def outer():
        value = b.get_or_set_with_tags("inner", lambda: data["name"], [("Item", 1)])
        data["name"] = "new"  # a writer commits and bumps the inner tag before the outer is stored
        b.invalidate_tags([("Item", 1)])
        return f"page of {value}"

    async def aouter():
        value = await b.aget_or_set_with_tags("inner", lambda: data["name"], [("Item", 1)])
        data["name"] = "new"
        await b.ainvalidate_tags([("Item", 1)])
        return f"page of {value}"

    def again():
        return "page of " + b.get_or_set_with_tags("inner", lambda: data["name"], [("Item", 1)])

    async def aagain():
        value = await b.aget_or_set_with_tags("inner", lambda: data["name"], [("Item", 1)])
        return "page of " + value

    with TenantContext.use_tenant("a"):
        frag.get_or_set_with_tags("inner", lambda: data["name"], [("Item", 1)])  # warm: a hit
        first = outer if api == "sync" else aouter
        assert frag.get_or_set_with_tags("outer", first, [("Page", "")]) == "page of old"
        # The stored outer entry holds the inner version read before the bump: unreachable.
        assert frag.get_with_tags("outer", [("Page", "")]) is None
        second = again if api == "sync" else aagain
        assert frag.get_or_set_with_tags("outer", second, [("Page", "")]) == "page of new"
        assert frag.get_with_tags("outer", [("Page", "")]) == "page of new"


def test_a_bump_while_the_inner_value_computes_is_never_lost(frag, api):
    """Same race one level down: the inner value is computed (a miss) when the bump comes."""
    b = _backend(frag)
    data = {"name": "old"}

    def inner_loader():
        value = data["name"]
        data["name"] = "new"
        b.invalidate_tags([("Item", 1)])  # after the inner versions were read
        return value

    async def ainner_loader():
        value = data["name"]
        data["name"] = "new"
        await b.ainvalidate_tags([("Item", 1)])
        return value

    def outer():
        return "page of " + b.get_or_set_with_tags("inner", inner_loader, [("Item", 1)])

    async def aouter():
        return "page of " + await b.aget_or_set_with_tags("inner", ainner_loader, [("Item", 1)])

    with TenantContext.use_tenant("a"):
        loader = outer if api == "sync" else aouter
        assert frag.get_or_set_with_tags("outer", loader, [("Page", "")]) == "page of old"
        assert frag.get_with_tags("outer", [("Page", "")]) is None
        assert frag.get_with_tags("inner", [("Item", 1)]) is None


def test_plain_tagged_reads_inside_a_computation_are_recorded(frag, api):
    """``get_with_tags`` and ``get_many_with_tags`` read inside a computation count as well."""
    b = _backend(frag)

    def loader():
        x = b.get_with_tags("x", [("X", 1)])
        many = b.get_many_with_tags({"y": [("Y", 1)]})
        return f"{x}+{many['y']}"

    async def aloader():
        x = await b.aget_with_tags("x", [("X", 1)])
        many = await b.aget_many_with_tags({"y": [("Y", 1)]})
        return f"{x}+{many['y']}"

    with TenantContext.use_tenant("a"):
        frag.set_with_tags("x", "x1", [("X", 1)])
        frag.set_with_tags("y", "y1", [("Y", 1)])
        chosen = loader if api == "sync" else aloader
        assert frag.get_or_set_with_tags("sum", chosen, [("Sum", "")]) == "x1+y1"
        assert frag.get_with_tags("sum", [("Sum", "")]) == "x1+y1"
        assert frag.get_or_set_with_tags("sum", chosen, [("Sum", "")]) == "x1+y1"
        frag.invalidate_tags([("Y", 1)])
        assert frag.get_with_tags("sum", [("Sum", "")]) is None
        assert frag.get_many_with_tags({"sum": [("Sum", "")]}) == {}
        frag.set_with_tags("y", "y2", [("Y", 1)])
        assert frag.get_or_set_with_tags("sum", chosen, [("Sum", "")]) == "x1+y2"
        assert frag.get_many_with_tags({"sum": [("Sum", "")]}) == {"sum": "x1+y2"}
        frag.invalidate_tags([("X", 1)])
        assert frag.get_many_with_tags({"sum": [("Sum", "")]}) == {}


def test_an_inner_read_that_cannot_be_checked_keeps_the_outer_out_of_the_cache(frag, api):
    """An inner tagged read of a tag with no version yet: the outer is computed, not stored."""
    b = _backend(frag)
    computed: Counter = Counter()

    def loader():
        computed["outer"] += 1
        return b.get_with_tags("never-written", [("Fresh", uuid.uuid4().hex)], "none")

    async def aloader():
        computed["outer"] += 1
        return await b.aget_with_tags("never-written", [("Fresh", uuid.uuid4().hex)], "none")

    chosen = loader if api == "sync" else aloader
    with TenantContext.use_tenant("a"):
        assert frag.get_or_set_with_tags("outer", chosen, [("Page", "")]) == "none"
        assert frag.get_or_set_with_tags("outer", chosen, [("Page", "")]) == "none"
    assert computed["outer"] == 2


def test_each_thread_computes_in_its_own_frame():
    """Two threads computing at once: each outer entry depends on its own inner entry only."""
    conf = store_settings("locmem")
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        barrier = threading.Barrier(2)
        errors = []

        def work(name):
            try:
                with TenantContext.use_tenant("a"):

                    def loader():
                        barrier.wait(5)  # both computations are running now
                        inner = frag.get_or_set_with_tags(
                            f"inner-{name}", lambda: name, [("Item", name)]
                        )
                        barrier.wait(5)
                        return inner

                    frag.get_or_set_with_tags(f"outer-{name}", loader, [("Page", "")])
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert errors == []
        with TenantContext.use_tenant("a"):
            frag.invalidate_tags([("Item", "a")])
            assert frag.get_with_tags("outer-a", [("Page", "")]) is None
            assert frag.get_with_tags("outer-b", [("Page", "")]) == "b"


def test_threads_and_tasks_started_inside_a_computation_record_into_it():
    """``async_to_sync``, ``sync_to_async``, ``asyncio.gather`` and ``copy_context().run`` record."""
    conf = store_settings("locmem")
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]

        def inner(name):
            return frag.get_or_set_with_tags(f"inner-{name}", lambda: name, [("Item", name)])

        def in_thread():
            box = []
            context = contextvars.copy_context()  # what docs/concepts.md says to do
            thread = threading.Thread(target=lambda: box.append(context.run(inner, "t")))
            thread.start()
            thread.join(5)
            return box[0]

        async def in_tasks():
            a, b = await asyncio.gather(
                frag.aget_or_set_with_tags("inner-g", lambda: "g", [("Item", "g")]),
                sync_to_async(inner)("s"),
            )
            return a + b

        def through_async_to_sync():
            inner_async = async_to_sync(frag.aget_or_set_with_tags)
            return inner_async("inner-x", lambda: "x", [("Item", "x")])

        with TenantContext.use_tenant("a"):
            assert (
                frag.get_or_set_with_tags("outer-x", through_async_to_sync, [("Page", "")]) == "x"
            )
            frag.invalidate_tags([("Item", "x")])
            assert frag.get_with_tags("outer-x", [("Page", "")]) is None
            assert frag.get_or_set_with_tags("outer-thread", in_thread, [("Page", "")]) == "t"
            outer_tasks = async_to_sync(frag.aget_or_set_with_tags)
            assert outer_tasks("outer-tasks", in_tasks, [("Page", "")]) == "gs"
            for tag, outer in (("t", "outer-thread"), ("g", "outer-tasks"), ("s", "outer-tasks")):
                assert frag.get_with_tags(outer, [("Page", "")]) is not None
                frag.invalidate_tags([("Item", tag)])
                assert frag.get_with_tags(outer, [("Page", "")]) is None, tag
                if outer == "outer-tasks":  # computed again for the next tag
                    assert outer_tasks(outer, in_tasks, [("Page", "")]) == "gs"


# -- a page, a fragment and a decorated function ----------------------------------------------


def _page_fragment_function(api: str, data: dict, calls: Counter):
    """A view cached by ``@tagged_cache_page`` renders a ``{% tagged_cache %}`` fragment that
    calls a ``@tagged_cache`` function; returns ``get(pk) -> content``."""

    @tagged_cache(tags=["Item:{pk}"], key_name=f"price-{uuid.uuid4().hex}")
    def price(pk):
        calls["function"] += 1
        return data[pk]

    fragment = engines["django"].from_string(
        "{% load fragmented_keys %}"
        '{% tagged_cache 600 "box" pk tags="List:{pk}" %}box {{ price }}{% endtagged_cache %}'
    )

    def render(request, pk):
        calls["fragment"] += 1  # counted by the view: the fragment's loader renders it
        return fragment.render({"pk": pk, "price": lambda: price(pk)}, request)

    if api == "sync":

        @tagged_cache_page(600, tags=["Page:{pk}"], per_user=False)
        def view(request, pk):
            calls["page"] += 1
            return HttpResponse(render(request, pk))

        def get(pk):
            return view(RequestFactory().get(f"/p/{pk}"), pk=pk).content.decode()

    else:

        @tagged_cache_page(600, tags=["Page:{pk}"], per_user=False)
        async def aview(request, pk):
            calls["page"] += 1
            return HttpResponse(await sync_to_async(render)(request, pk))

        def get(pk):
            response = async_to_sync(aview)(RequestFactory().get(f"/p/{pk}"), pk=pk)
            return response.content.decode()

    return get


def test_page_fragment_and_function_are_invalidated_from_the_innermost_tag(frag, api):
    """A bump of the function's tag reaches the fragment and the page around it."""
    data = {1: "10 EUR"}
    calls: Counter = Counter()
    get = _page_fragment_function(api, data, calls)
    with TenantContext.use_tenant("a"):
        assert get(1) == "box 10 EUR"
        assert get(1) == "box 10 EUR"
        assert calls == {"page": 1, "fragment": 1, "function": 1}
        data[1] = "12 EUR"
        frag.invalidate_tags([("Item", 1)])
        assert get(1) == "box 12 EUR"
        assert calls == {"page": 2, "fragment": 2, "function": 2}
    with TenantContext.use_tenant("b"):  # another tenant: its own page, fragment and value
        assert get(1) == "box 12 EUR"
        assert calls == {"page": 3, "fragment": 3, "function": 3}


# -- round trips --------------------------------------------------------------------------------


def _counted_nest(frag):
    @tagged_cache(tags=["Item:{pk}"], key_name=f"rt-item-{uuid.uuid4().hex}")
    def item(pk):
        return f"item {pk}"

    @tagged_cache(tags=["List:{pk}"], key_name=f"rt-list-{uuid.uuid4().hex}")
    def listing(pk):
        return [item(pk), item(pk + 1)]

    @tagged_cache(tags=["Page:{pk}"], key_name=f"rt-page-{uuid.uuid4().hex}")
    def page(pk):
        return listing(pk)

    @tagged_cache(tags=["Item:{pk}"], key_name=f"rt-aitem-{uuid.uuid4().hex}")
    async def aitem(pk):
        return f"item {pk}"

    @tagged_cache(tags=["List:{pk}"], key_name=f"rt-alist-{uuid.uuid4().hex}")
    async def alisting(pk):
        return [await aitem(pk), await aitem(pk + 1)]

    @tagged_cache(tags=["Page:{pk}"], key_name=f"rt-apage-{uuid.uuid4().hex}")
    async def apage(pk):
        return await alisting(pk)

    return page, apage


@pytest.mark.redis
def test_a_warm_read_of_a_nested_entry_is_one_round_trip_on_redis():
    """Counted on the wire: one ``MGET`` through both APIs; two the first time a process sees it."""
    server = urlsplit(base_url())
    with RoundTripProxy(server.hostname, server.port) as proxy:
        conf = store_settings("redis")
        conf["default"]["LOCATION"] = proxy.url(redis_db("count"))
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]
            page, apage = _counted_nest(frag)
            found = {}
            with TenantContext.use_tenant(f"t-{uuid.uuid4().hex[:6]}"):
                assert page(1) == ["item 1", "item 2"]  # computed: stored with its dependencies
                proxy.reset()
                assert page(1) == ["item 1", "item 2"]
                found["warm, sync"] = proxy.count

                async def warm_async() -> dict:
                    counts = {}
                    assert await apage(1) == ["item 1", "item 2"]
                    await frag.aget("warm-the-loop")
                    proxy.reset()
                    assert await apage(1) == ["item 1", "item 2"]
                    counts["warm, async"] = proxy.count
                    deps.forget()  # as a process that never read it
                    proxy.reset()
                    assert await apage(1) == ["item 1", "item 2"]
                    counts["first read in a process, async"] = proxy.count
                    return counts

                found.update(async_to_sync(warm_async)())
                deps.forget()
                proxy.reset()
                assert page(1) == ["item 1", "item 2"]
                found["first read in a process, sync"] = proxy.count
                proxy.reset()
                assert page(1) == ["item 1", "item 2"]
                found["then, sync"] = proxy.count
                frag.invalidate_tags([("Item", 2)])
                assert frag.get_with_tags("never", [("Item", 2)]) is None
                proxy.reset()
                page(1)  # misses (its dependency moved): recomputed, a new entry stored
                proxy.reset()
                page(1)
                found["warm after a recompute, sync"] = proxy.count
    assert found == {
        "warm, sync": 1,
        "warm, async": 1,
        "first read in a process, async": 2,
        "first read in a process, sync": 2,
        "then, sync": 1,
        "warm after a recompute, sync": 1,
    }


@pytest.mark.django_db(transaction=True)
def test_a_warm_read_of_a_nested_entry_is_one_get_many_on_the_database_cache():
    """The database cache: one ``get_many`` warm, a second one the first time a process sees it."""
    from django.core.management import call_command

    conf = store_settings("db")
    conf["default"]["BACKEND"] = "tests.counting_backend.CountingDatabaseCache"
    with override_settings(CACHES=conf):
        call_command("createcachetable", verbosity=0)
        store = caches["default"]
        store.clear()
        frag = caches["fragmented"]
        page, _ = _counted_nest(frag)
        with TenantContext.use_tenant("a"):
            assert page(1) == ["item 1", "item 2"]
            store.reset_calls()
            assert page(1) == ["item 1", "item 2"]
            warm = dict(store.calls)
            deps.forget()
            store.reset_calls()
            assert page(1) == ["item 1", "item 2"]
            cold = dict(store.calls)
            frag.invalidate_tags([("Item", 1)])
            store.reset_calls()
            assert page(1) == ["item 1", "item 2"]
            assert store.calls["set"] >= 1  # a miss: recomputed and stored again
        frag.close()
    assert warm == {"get_many": 1}
    assert cold == {"get_many": 2}


def test_an_inner_entry_of_another_store_keeps_the_outer_out_of_the_cache():
    """Its versions could not be checked where the outer entry lives: computed, not stored."""
    conf = store_settings("locmem")
    conf["other"] = {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": uuid.uuid4().hex,
    }
    conf["fragmented_other"] = {**conf["fragmented"], "CACHE_NAME": "other"}
    with override_settings(CACHES=conf):
        frag, other = caches["fragmented"], caches["fragmented_other"]
        computed: Counter = Counter()

        def loader():
            computed["outer"] += 1
            return other.get_or_set_with_tags("inner", lambda: "elsewhere", [("Item", 1)])

        with TenantContext.use_tenant("a"):
            assert frag.get_or_set_with_tags("outer", loader, [("Page", "")]) == "elsewhere"
            assert frag.get_or_set_with_tags("outer", loader, [("Page", "")]) == "elsewhere"
            assert other.get_with_tags("inner", [("Item", 1)]) == "elsewhere"  # stored there
        assert computed["outer"] == 2


def test_remembered_dependency_keys_are_bounded(monkeypatch):
    """The per-process memo of dependency keys holds at most ``_REMEMBERED_KEYS`` keys."""
    monkeypatch.setattr(deps, "_REMEMBERED_KEYS", 10)
    deps.forget()
    for i in range(20):
        deps.remember(f"entry-{i}", (f"k{i}-a", f"k{i}-b", f"k{i}-c"))
        assert sum(map(len, deps._remembered.values())) <= 10
    assert deps.remembered("entry-19") == ("k19-a", "k19-b", "k19-c")
    deps.forget()
    assert deps.remembered("entry-19") is None


def test_get_touch_incr_and_delete_check_a_nested_entrys_dependencies(frag, api):
    """Plain ``get``, ``touch``, ``incr`` and ``delete`` of an entry computed with no tags of its own."""
    b = _backend(frag)

    def loader():
        return b.get_or_set_with_tags("inner", lambda: 40, [("Item", 1)]) + 1

    async def aloader():
        return await b.aget_or_set_with_tags("inner", lambda: 40, [("Item", 1)]) + 1

    chosen = loader if api == "sync" else aloader
    with TenantContext.use_tenant("a"):
        assert frag.get_or_set_with_tags("n", chosen, []) == 41
        assert frag.get("n") == 41
        assert frag.touch("n", 600) is True
        assert frag.incr("n") == 42
        assert frag.get("n") == 42  # incr kept the dependencies: still checked
        frag.invalidate_tags([("Item", 1)])
        assert frag.get("n") is None
        assert frag.touch("n", 600) is False
        with pytest.raises(ValueError):
            frag.incr("n")
        assert frag.delete("n") is False  # deleted, but it was not live
        assert frag.get_or_set_with_tags("n", chosen, []) == 41
        assert frag.delete("n") is True


def test_get_many_and_add_see_a_nested_entry_as_get_does(frag, api):
    """Django's contract: ``get_many`` returns what ``get`` returns, ``add`` never overwrites it."""
    b = _backend(frag)

    def loader():
        return b.get_or_set_with_tags("inner", lambda: "i", [("Item", 1)]) + "+outer"

    async def aloader():
        return await b.aget_or_set_with_tags("inner", lambda: "i", [("Item", 1)]) + "+outer"

    chosen = loader if api == "sync" else aloader
    with TenantContext.use_tenant("a"):
        assert frag.get_or_set_with_tags("page", chosen, []) == "i+outer"
        deps.forget()  # as in a process that never read it: no remembered dependency keys
        assert frag.get("page") == "i+outer"
        assert frag.get_many(["page", "other"]) == {"page": "i+outer"}
        deps.forget()
        assert frag.get_many(["page"]) == {"page": "i+outer"}
        assert frag.add("page", "overwritten") is False
        deps.forget()
        assert frag.add("page", "overwritten") is False
        assert frag.get("page") == "i+outer"
        frag.invalidate_tags([("Item", 1)])  # its dependency moved: it is not live any more
        assert frag.get_many(["page"]) == {}
        assert frag.add("page", "added") is True
        assert frag.get("page") == "added"
        assert frag.get_many(["page"]) == {"page": "added"}


def test_the_redis_entry_format_keeps_dependencies_and_early_recompute_data():
    """``\\x00fk3:`` entries round-trip, with and without the early-recompute meta."""
    from fragmented_keys_django.stores.redis_codec import HEADER_DEPS, RedisCodec

    class Store:
        default_timeout = 300

        def make_key(self, key):
            return key

    codec = RedisCodec(Store(), lambda v: repr(v).encode(), lambda b: eval(b), lambda b: b)
    held = (("fk:{a}:v:1", "fk:{b}:v:2"), (b"11", b"22"))
    plain = ([b"1", b"2"], {"x": 1}, held)
    raw = codec.entry_bytes(plain)
    assert raw.startswith(HEADER_DEPS)
    assert codec.decode_entry(raw) == ((b"1", b"2"), {"x": 1}, held)
    meta = ((b"1",), [3], 1234.5, 0.25, held)
    assert codec.decode_entry(codec.entry_bytes(meta)) == ((b"1",), [3], 1234.5, 0.25, held)


def test_a_plain_get_of_a_warm_nested_entry_is_one_round_trip_on_redis():
    """Plain ``get`` fetches the dependency keys it saw with the entry, as the tagged reads do
    (it read the entry, then its dependencies, on every call)."""
    server = urlsplit(base_url())
    with RoundTripProxy(server.hostname, server.port) as proxy:
        conf = store_settings("redis")
        conf["default"]["LOCATION"] = proxy.url(redis_db("count"))
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]

            def loader():
                return frag.get_or_set_with_tags("inner", lambda: "i", [("Item", 1)]) + "+o"

            counts = []
            with TenantContext.use_tenant(f"t-{uuid.uuid4().hex[:6]}"):
                assert frag.get_or_set_with_tags("outer", loader, []) == "i+o"
                deps.forget()  # a process that never read it
                for _ in range(3):
                    proxy.reset()
                    assert frag.get("outer") == "i+o"
                    counts.append(proxy.count)
                frag.invalidate_tags([("Item", 1)])
                assert frag.get("outer") is None
            frag.close()
    assert counts == [2, 1, 1]


@pytest.mark.django_db(transaction=True)
def test_a_nested_computation_inside_a_transaction_follows_its_rules(frag, api):
    """Inside ``atomic()``: an outer value computed in a clean transaction is stored at the commit
    with its dependencies (an inner bump after the commit reaches it), and one computed after the
    transaction bumped an inner tag is not stored at all (its inner read bypassed the cache)."""
    from django.db import transaction

    b = _backend(frag)
    data = {"inner": "i1"}

    def loader():
        return b.get_or_set_with_tags("inner", lambda: data["inner"], [("Item", 1)]) + "+o"

    async def aloader():
        return await b.aget_or_set_with_tags("inner", lambda: data["inner"], [("Item", 1)]) + "+o"

    chosen = loader if api == "sync" else aloader
    with TenantContext.use_tenant("a"):
        with transaction.atomic():
            assert frag.get_or_set_with_tags("outer", chosen, []) == "i1+o"
        assert b.get("outer") == "i1+o"  # stored at the commit
        data["inner"] = "i2"
        b.invalidate_tags([("Item", 1)])
        assert b.get("outer") is None  # its dependency moved
        with transaction.atomic():
            b.invalidate_tags([("Item", 1)])  # a bump waits for the commit: reads bypass
            assert frag.get_or_set_with_tags("outer", chosen, []) == "i2+o"
        assert b.get("outer") is None  # computed from bypassed reads: never stored
        assert frag.get_or_set_with_tags("outer", chosen, []) == "i2+o"
        assert b.get("outer") == "i2+o"
