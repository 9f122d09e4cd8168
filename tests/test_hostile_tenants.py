"""Hostile tenant ids and tag instances stay isolated (issue 3, item 7; hypothesis).

Tenant ids and tag instances made of separators, wildcards (``*``, ``?``),
control characters, unicode (lone surrogates included) and 10,000 characters.
Code running as tenant B cannot read, write over, bump, delete or flush
tenant A's entries through any public API (``get``, ``get_many``,
``has_key``, ``get_with_tags``, ``get_many_with_tags``,
``get_or_set_with_tags``, ``set``, ``add``, ``touch``, ``delete``,
``delete_many``, ``delete_with_tags``, ``invalidate_tags``, ``clear``,
``invalidate_tenant()``) unless it names A explicitly
(``invalidate_tenant(A)``). Within one tenant, distinct tags never share a
version. Over locmem, and a smaller run over Redis.
"""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches
from django.test import override_settings
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st

from fragmented_keys_django import TenantContext
from tests.conftest import store_settings

HOSTILE = (
    ":|;,{}[]*?\\/%_-.= \t\n\r\x00\x01\x1b\x7f\u00e9\u00df\u4e2d\u200b\u202e\ufeff\U0001f600\ud800"
)
MISS = object()
LONG = 10_000

_short = st.text(alphabet=HOSTILE + "ab", min_size=1, max_size=24)
_long = st.builds(
    lambda s: (s * LONG)[:LONG], st.text(alphabet=HOSTILE + "ab", min_size=1, max_size=3)
)
_tricky = st.sampled_from(
    ["a", "a:b", "a:", ":a", "*", "?", "a*", "a?", "{a}", "a\x00", "a\x00b", "A", "\ud800"]
)
tenant_ids = st.one_of(_tricky, _short, _long)
tenants = st.one_of(st.none(), tenant_ids)  # None: the public namespace
instances = st.one_of(st.just(""), _tricky, _short, _long)
names = st.one_of(st.sampled_from(["User", "User:1", "*", "?", "Ward"]), _short)
tags = st.lists(st.tuples(names, instances), min_size=1, max_size=3)
# Caller keys: separators and wildcards, no spaces or control characters
# (Django warns about those for memcached).
keys = st.text(alphabet=":|;,{}[]*?/%_-.=ab\u00e9\u4e2d", min_size=1, max_size=30)


def _locmem():
    store = {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": uuid.uuid4().hex,
        "OPTIONS": {"MAX_ENTRIES": 10**7},  # no culling: a lost entry would be a false alarm
    }
    return {"default": store, "fragmented": store_settings("locmem")["fragmented"]}


def check_isolated(frag, a, b, tags_a, tags_b, key) -> None:
    """A writes; B does everything it can; A's entries are all intact."""
    assume(a != b)
    k = f"{uuid.uuid4().hex}:{key}"  # entries of earlier examples never interfere
    gos = k + ":gos"
    note(f"a={a!r:.60} b={b!r:.60} tags_a={tags_a!r:.120} tags_b={tags_b!r:.120}")
    with TenantContext.use_tenant(a):
        frag.set(k, ("A", a))
        assert frag.set_with_tags(k, ("A-tagged", a), tags_a)
        assert frag.get_or_set_with_tags(gos, lambda: ("A-gos", a), tags_a) == ("A-gos", a)
        assert frag.get(k) == ("A", a)

    with TenantContext.use_tenant(b):
        assert frag.get(k, MISS) is MISS
        assert frag.get_many([k, gos]) == {}
        assert not frag.has_key(k)
        for t in (tags_a, tags_b):
            assert frag.get_with_tags(k, t, default=MISS) is MISS
            assert frag.get_with_tags(gos, t, default=MISS) is MISS
            assert frag.get_many_with_tags([k, gos], t) == {}
            assert frag.get_many_with_tags({k: t, gos: t}) == {}
        assert frag.get_or_set_with_tags(gos, lambda: ("B-gos", b), tags_a) == ("B-gos", b)
        assert frag.touch(k) is False
        assert frag.delete(k) is False
        frag.delete_many([k, gos])
        for t in (tags_a, tags_b):
            frag.delete_with_tags(k, t)
            frag.delete_with_tags(gos, t)
            frag.invalidate_tags(t)
        frag.clear()
        frag.invalidate_tenant()
        # B writes under the same key and tags: its own entries, not A's.
        frag.set(k, ("B", b))
        assert frag.add(k + ":add", ("B", b))
        frag.set_with_tags(k, ("B-tagged", b), tags_a)
        assert frag.get(k) == ("B", b)
        assert frag.get_with_tags(k, tags_a) == ("B-tagged", b)

    with TenantContext.use_tenant(a):
        assert frag.get(k, MISS) == ("A", a)
        assert frag.has_key(k)
        assert frag.get_many([k, gos]) == {k: ("A", a)}
        assert frag.get_with_tags(k, tags_a, default=MISS) == ("A-tagged", a)
        assert frag.get_many_with_tags([k], tags_a) == {k: ("A-tagged", a)}
        assert frag.get_or_set_with_tags(gos, lambda: "recomputed", tags_a) == ("A-gos", a)
        assert frag.get(k + ":add", MISS) is MISS
        assert frag.add(k + ":add", ("A", a))  # B's add did not take A's key

    # Only naming A explicitly reaches A's namespace from B.
    with TenantContext.use_tenant(b):
        frag.invalidate_tenant(a)
        assert frag.get(k) == ("B", b)
    with TenantContext.use_tenant(a):
        assert frag.get(k, MISS) is MISS
        assert frag.get_with_tags(k, tags_a, default=MISS) is MISS


def check_tags_distinct(frag, tenant, t1, t2, key) -> None:
    """Within one tenant, bumping one tag never invalidates an entry of a different tag."""
    assume(t1 != t2)
    k = f"{uuid.uuid4().hex}:{key}"
    with TenantContext.use_tenant(tenant):
        assert frag.set_with_tags(k, "v1", [t1])
        assert frag.set_with_tags(k + "2", "v2", [t2])
        frag.invalidate_tags([t2])
        assert frag.get_with_tags(k, [t1], default=MISS) == "v1"
        assert frag.get_with_tags(k + "2", [t2], default=MISS) is MISS
        assert frag.get_with_tags(k, [t2], default=MISS) is MISS  # a different entry
        frag.invalidate_tags([t1])
        assert frag.get_with_tags(k, [t1], default=MISS) is MISS


# -- locmem -------------------------------------------------------------------


@pytest.fixture
def locmem_frag():
    with override_settings(CACHES=_locmem()):
        yield caches["fragmented"]


def examples(n: int) -> settings:
    return settings(
        deadline=None, max_examples=n, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


@examples(300)
@given(a=tenants, b=tenants, tags_a=tags, tags_b=tags, key=keys)
@example(a="a", b="a:b", tags_a=[("b", "c")], tags_b=[("c", "")], key="k")
@example(a="a:b", b="a", tags_a=[("c", "")], tags_b=[("b:c", "")], key="k")
@example(a="*", b="a", tags_a=[("*", "*")], tags_b=[("*", "*")], key="*")
@example(a="a", b=None, tags_a=[("User", "1")], tags_b=[("User", "1")], key="k")
@example(a=None, b="a", tags_a=[("User", "1")], tags_b=[("User", "1")], key="k")
@example(
    a="x" * LONG,
    b="x" * (LONG - 1),
    tags_a=[("T", "y" * LONG)],
    tags_b=[("T", "y" * LONG)],
    key="k",
)
@example(a="a\x00b", b="a", tags_a=[("T", "\x00")], tags_b=[("T", "b\x00")], key="k")
def test_tenants_are_isolated_locmem(locmem_frag, a, b, tags_a, tags_b, key):
    check_isolated(locmem_frag, a, b, tags_a, tags_b, key)


@examples(200)
@given(tenant=tenants, t1=st.tuples(names, instances), t2=st.tuples(names, instances), key=keys)
@example(tenant="a", t1=("User", "4_2"), t2=("User_4", "2"), key="k")
@example(tenant="a", t1=("a:b", "c"), t2=("a", "b:c"), key="k")
@example(tenant="a", t1=("T", "*"), t2=("T", "?"), key="k")
@example(tenant=None, t1=("T", ""), t2=("T", "\x00"), key="k")
def test_distinct_tags_never_share_a_version_locmem(locmem_frag, tenant, t1, t2, key):
    check_tags_distinct(locmem_frag, tenant, t1, t2, key)


# -- Redis (smaller) ------------------------------------------------------------


@pytest.fixture
def redis_frag():
    with override_settings(CACHES=store_settings("redis")):
        yield caches["fragmented"]
        caches["default"].delete_pattern("*")  # this test's KEY_PREFIX only
        caches["fragmented"].close()


@pytest.mark.redis
@examples(40)
@given(a=tenants, b=tenants, tags_a=tags, tags_b=tags, key=keys)
@example(a="a", b="a:b", tags_a=[("b", "c")], tags_b=[("c", "")], key="k")
@example(a="*", b="?", tags_a=[("*", "*")], tags_b=[("*", "*")], key="*")
@example(a="x" * LONG, b=None, tags_a=[("T", "\x00" * LONG)], tags_b=[("T", "")], key="k")
def test_tenants_are_isolated_redis(redis_frag, a, b, tags_a, tags_b, key):
    check_isolated(redis_frag, a, b, tags_a, tags_b, key)


@pytest.mark.redis
@examples(20)
@given(tenant=tenants, t1=st.tuples(names, instances), t2=st.tuples(names, instances), key=keys)
@example(tenant="a", t1=("User", "4_2"), t2=("User_4", "2"), key="k")
def test_distinct_tags_never_share_a_version_redis(redis_frag, tenant, t1, t2, key):
    check_tags_distinct(redis_frag, tenant, t1, t2, key)
