"""Properties of key building and of tenant isolation (hypothesis).

* ``keys.entry_keys`` / ``tag_version_key`` / ``namespace_key`` are injective,
  including on inputs that collide under naive ``"_".join`` encodings, and
  produce memcached-safe keys that share one hash-tag slot per tenant.
* Nothing written in tenant A is readable, invalidated or overwritten from
  tenant B (locmem, and a smaller run over Redis).
* A stateful model of tag versions predicts every hit and miss.
"""

from __future__ import annotations

import re
import uuid
from contextlib import contextmanager

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import memcache_key_warnings
from django.test import override_settings
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fragmented_keys_django import TenantContext
from fragmented_keys_django.keys import (
    TagSpec,
    entry_keys,
    lock_key,
    namespace_key,
    tag_version_key,
)
from fragmented_keys_django.tags import normalize_tags

from .redis_dbs import redis_url

use_tenant = TenantContext.use_tenant
MISS = object()

# Small alphabets full of separators make naive-encoding collisions likely.
SEP_ALPHABET = "ab_:;{}s1n|*?\x00 "
sep_text = st.text(alphabet=SEP_ALPHABET, max_size=6)
sep_text1 = st.text(alphabet=SEP_ALPHABET, min_size=1, max_size=6)

#: Tenant ids with separators, control characters, unicode and huge lengths.
WEIRD_TENANTS = [
    "a:b",
    "a_b",
    "{a}",
    "*",
    "?",
    "a b",
    "\x00",
    "\n\t\r",
    "\x7f",
    "é",
    "租户",
    "🙂",
    "fk:{x}:n:",
    "x" * 10_000,
]
tenant_ids = st.one_of(
    st.sampled_from(WEIRD_TENANTS),
    st.text(min_size=1, max_size=40),
    sep_text1,
)
optional_tenants = st.one_of(st.none(), tenant_ids)

tag_specs = st.builds(
    TagSpec,
    name=sep_text1,
    instance=sep_text,
    constant=st.one_of(st.none(), st.sampled_from(["1.0", "2.0", "1"])),
)


def _canonical(ts) -> tuple:
    # TagSpec's own ordering cannot compare a constant of None with a string.
    return tuple(
        sorted(set(ts), key=lambda t: (t.name, t.instance, t.constant or "", t.constant is None))
    )


tag_tuples = st.lists(tag_specs, max_size=4).map(_canonical)

entry_inputs = st.tuples(
    sep_text,  # prefix
    st.one_of(st.none(), sep_text1),  # tenant
    sep_text1,  # epoch
    sep_text,  # key
    sep_text,  # group_id
    tag_tuples,
)

SAFE_KEY = re.compile(r"^[\x21-\x7e]+$")


def assert_safe(key: str) -> None:
    assert SAFE_KEY.match(key), key
    assert len(key) <= 250
    assert list(memcache_key_warnings(key)) == []
    # Also once the store alias adds Django's ":version:" prefix.
    assert list(memcache_key_warnings(f"some_prefix:1:{key}")) == []


def slot_of(key: str) -> str:
    m = re.match(r"^fk:(\{[0-9a-f]+\}):", key)
    assert m, key
    return m.group(1)


# -- injectivity ------------------------------------------------------------------


def test_classic_collisions_are_distinct():
    # Tag ("User_4", "2") vs ("User", "4_2").
    assert tag_version_key("p", "t", "User_4", "2") != tag_version_key("p", "t", "User", "4_2")
    t1 = (TagSpec("User_4", "2"),)
    t2 = (TagSpec("User", "4_2"),)
    assert (
        entry_keys("p", "t", "1", "k", "", t1).entry != entry_keys("p", "t", "1", "k", "", t2).entry
    )
    # Key a_b + group c vs key a + group b_c.
    assert (
        entry_keys("p", "t", "1", "a_b", "c", ()).entry
        != entry_keys("p", "t", "1", "a", "b_c", ()).entry
    )
    # Prefix/tenant boundary, tenant/key boundary.
    assert namespace_key("a", "b:c") != namespace_key("a:b", "c")
    assert namespace_key("a_", "b") != namespace_key("a", "_b")
    assert entry_keys("p", "t:k", "1", "x", "", ()).entry != entry_keys(
        "p", "t", "1", "k:x", "", ()
    )
    # The public namespace is not a tenant named "None" (or anything else).
    for t in ("None", "none", "n", "n;", ""):
        assert namespace_key("p", None) != namespace_key("p", t)
    # Two tags vs one tag whose parts contain the other's.
    two = (TagSpec("a", "b"), TagSpec("c", "d"))
    one = (TagSpec("a", "b;c"),)
    assert (
        entry_keys("p", "t", "1", "k", "", two).entry
        != entry_keys("p", "t", "1", "k", "", one).entry
    )
    # A constant tag is not the standard tag of the same name and instance.
    assert (
        entry_keys("p", "t", "1", "k", "", (TagSpec("a", "b", "1.0"),)).entry
        != entry_keys("p", "t", "1", "k", "", (TagSpec("a", "b"),)).entry
    )


@settings(max_examples=200, deadline=None)
@given(a=entry_inputs, b=entry_inputs)
def test_entry_keys_injective(a, b):
    ka, kb = entry_keys(*a), entry_keys(*b)
    if a == b:
        assert ka == kb
    else:
        assert ka.entry != kb.entry


@st.composite
def resplits(draw):
    """A string and two different places to split it."""
    s = draw(st.text(alphabet="a_:;s1|{}", min_size=1, max_size=8))
    i = draw(st.integers(0, len(s)))
    j = draw(st.integers(0, len(s)).filter(lambda j: j != i))
    return s, i, j


@settings(max_examples=200, deadline=None)
@example(case=("a_b", 1, 2))  # "a" + "_b" vs "a_" + "b" under "_".join
@example(case=("a:b", 1, 2))
@example(case=("a;b", 1, 2))
@example(case=("a|b", 1, 2))
@example(case=("s1:a;", 0, 3))
@given(case=resplits())
def test_resplitting_a_string_never_collides(case):
    s, i, j = case
    # key/group boundary
    e1 = entry_keys("p", "t", "1", s[:i], s[i:], ()).entry
    e2 = entry_keys("p", "t", "1", s[:j], s[j:], ()).entry
    assert e1 != e2
    # tag name/instance boundary (names must be non-empty for real tags, keys need not care)
    assert tag_version_key("p", "t", s[:i], s[i:]) != tag_version_key("p", "t", s[:j], s[j:])
    # prefix/tenant boundary
    assert namespace_key(s[:i], s[i:]) != namespace_key(s[:j], s[j:])
    # tenant/key boundary
    assert (
        entry_keys("p", s[:i], "1", s[i:], "", ()).entry
        != entry_keys("p", s[:j], "1", s[j:], "", ()).entry
    )


@settings(max_examples=200, deadline=None)
@given(
    a=st.tuples(sep_text, optional_tenants, sep_text1, sep_text),
    b=st.tuples(sep_text, optional_tenants, sep_text1, sep_text),
)
def test_tag_version_and_namespace_keys_injective(a, b):
    if a != b:
        assert tag_version_key(*a) != tag_version_key(*b)
    if a[:2] != b[:2]:
        assert namespace_key(*a[:2]) != namespace_key(*b[:2])
    # The three kinds of key never meet.
    assert namespace_key(*a[:2]) != tag_version_key(*b)
    ek = entry_keys(a[0], a[1], "1", a[2], a[3], ())
    assert ek.entry not in (namespace_key(*b[:2]), tag_version_key(*b))


# -- key shape ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.text(max_size=300),
    tenant=optional_tenants,
    epoch=st.text(min_size=1, max_size=300),
    key=st.text(max_size=1000),
    group=st.text(max_size=300),
    tags=st.lists(
        st.builds(
            TagSpec,
            name=st.text(min_size=1, max_size=500),
            instance=st.text(max_size=500),
            constant=st.just(""),
        ),
        max_size=12,
    ).map(lambda ts: tuple(sorted(set(ts)))),
)
def test_keys_are_safe_and_share_the_tenant_slot(prefix, tenant, epoch, key, group, tags):
    ek = entry_keys(prefix, tenant, epoch, key, group, tags)
    all_keys = [ek.entry, lock_key(ek.entry), *ek.version_keys, namespace_key(prefix, tenant)]
    for k in all_keys:
        assert_safe(k)
    assert ek.version_keys[0] == namespace_key(prefix, tenant)
    assert len(ek.version_keys) == 1 + len(tags)
    assert {slot_of(k) for k in all_keys} == {slot_of(namespace_key(prefix, tenant))}


@pytest.mark.parametrize("tenant", WEIRD_TENANTS)
def test_weird_tenant_ids_make_safe_keys(tenant):
    ek = entry_keys("p", tenant, "1", "key with spaces\n", "", (TagSpec("User", "4 2"),))
    for k in (ek.entry, *ek.version_keys):
        assert_safe(k)
    assert slot_of(ek.entry) == slot_of(namespace_key("p", tenant))
    assert slot_of(ek.entry) != slot_of(namespace_key("p", None))


def _locmem_caches(max_entries: int = 1_000_000) -> dict:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"prop-{uuid.uuid4().hex}",
            "OPTIONS": {"MAX_ENTRIES": max_entries},
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
        },
    }


def _redis_caches() -> dict:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url("store"),
            "KEY_PREFIX": f"prop{uuid.uuid4().hex[:10]}",
            "TIMEOUT": 120,
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
        },
    }


@settings(max_examples=60, deadline=None)
@given(
    tenant=tenant_ids,
    key=st.text(alphabet=st.characters(min_codepoint=33, exclude_characters="\x7f"), max_size=300),
)
def test_every_store_key_written_is_safe(tenant, key):
    """Whatever the tenant id and key, what reaches the store is a short safe key."""
    with override_settings(CACHES=_locmem_caches()):
        frag = caches["fragmented"]
        with use_tenant(tenant):
            frag.set(key, 1)
            frag.set_with_tags(key, 2, [("Tag with space", tenant)])
            assert frag.get(key) == 1
            assert frag.get_with_tags(key, [("Tag with space", tenant)]) == 2
        store_keys = list(caches["default"]._cache)
        assert store_keys
        for k in store_keys:
            assert list(memcache_key_warnings(k)) == [], k
            assert len(k) <= 250
        assert len({slot_of(k.split(":", 2)[2]) for k in store_keys}) == 1


# -- tenant isolation ----------------------------------------------------------------

# Keys Django's validate_key accepts without a CacheKeyWarning (no control chars, no DEL).
plain_keys = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters="\x7f"),
    min_size=1,
    max_size=12,
)
simple_tags = st.lists(
    st.tuples(
        st.sampled_from(["User", "Org", "User_1", "a:b"]), st.sampled_from(["", "1", "2", "1_2"])
    ),
    max_size=3,
).map(lambda ts: sorted(set(ts)))
values = st.one_of(
    st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)
)
writes = st.lists(
    st.tuples(
        st.sampled_from(["set", "set_with_tags", "get_or_set_with_tags"]),
        plain_keys,
        simple_tags,
        values,
    ),
    min_size=1,
    max_size=8,
)


def _apply_writes(frag, ops) -> dict:
    """Apply *ops* in the current tenant; return the model ``{(key, tags): value}``."""
    model: dict = {}
    for op, key, tags, value in ops:
        mkey = (key, tuple(tags) if op != "set" else ())
        if op == "set":
            frag.set(key, value)
            model[mkey] = value
        elif op == "set_with_tags":
            assert frag.set_with_tags(key, value, tags) is True
            model[mkey] = value
        else:
            got = frag.get_or_set_with_tags(key, lambda v=value: v, tags)
            expected = model.get(mkey, value)
            assert got == expected
            model[mkey] = expected
    return model


def _assert_reads(frag, model: dict) -> None:
    for (key, tags), value in model.items():
        assert frag.get_with_tags(key, list(tags), default=MISS) == value
        if not tags:
            assert frag.get(key, MISS) == value
            assert frag.get_many([key]) == {key: value}
            assert frag.has_key(key)
    mapping = {}
    for (key, tags), value in model.items():
        mapping.setdefault(key, (tags, value))
    assert frag.get_many_with_tags({k: list(t) for k, (t, _) in mapping.items()}) == {
        k: v for k, (_, v) in mapping.items()
    }


def _assert_invisible(frag, model: dict) -> None:
    for key, tags in model:
        assert frag.get_with_tags(key, list(tags), default=MISS) is MISS
        assert frag.get_many_with_tags([key], list(tags)) == {}
        assert frag.get_many_with_tags({key: list(tags)}) == {}
        if not tags:
            assert frag.get(key, MISS) is MISS
            assert frag.get_many([key]) == {}
            assert frag.has_key(key) is False
            assert frag.touch(key, 100) is False
            with pytest.raises(ValueError):
                frag.incr(key)
            assert frag.delete(key) is False
    # Last, as it stores B's own value on a miss.
    sentinel = ["computed in B"]
    for key, tags in model:
        assert frag.get_or_set_with_tags(key, lambda: sentinel, list(tags)) is sentinel


def _isolation_scenario(frag, a, b, ops) -> None:
    note(f"A={a!r:.60} B={b!r:.60}")
    with use_tenant(a):
        model = _apply_writes(frag, ops)
        _assert_reads(frag, model)
    with use_tenant(b):
        _assert_invisible(frag, model)
        all_tags = sorted({t for _, tags in model for t in tags})
        if all_tags:
            frag.invalidate_tags(all_tags)
        frag.clear()
        frag.invalidate_tenant()
        # B writes to the same key names, with other values.
        for key, tags in model:
            frag.set_with_tags(key, ("B", key), list(tags))
            if not tags:
                frag.set(key, ("B", key))
                frag.add(key, ("B-add", key))
        frag.set_many({key: ("B-many", key) for key, tags in model if not tags})
        for key, tags in model:
            assert frag.get_with_tags(key, list(tags), default=MISS) != MISS
    with use_tenant(a):
        _assert_reads(frag, model)


@pytest.mark.parametrize("kind", ["locmem", pytest.param("redis", marks=pytest.mark.redis)])
def test_tenant_isolation(kind):
    make = _locmem_caches if kind == "locmem" else _redis_caches
    n = 100 if kind == "locmem" else 20

    @settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(a=optional_tenants, b=optional_tenants, ops=writes)
    def run(a, b, ops):
        assume(a != b)
        with override_settings(CACHES=make()):
            frag = caches["fragmented"]
            try:
                _isolation_scenario(frag, a, b, ops)
            finally:
                frag.close()

    run()


# -- stateful model of tag versions -----------------------------------------------------

TENANTS = [None, "t1", "t2", "t:1", "t_1"]
KEYS = ["a", "b", "a_b"]
TAGS = [("User", "1"), ("User", "2"), ("Org", "1"), ("User_1", ""), ("User", "1_")]
tag_sets = st.lists(st.sampled_from(TAGS), max_size=3, unique=True)


class TagVersionModel(RuleBasedStateMachine):
    """The backend must agree exactly with a model of versions per (tenant, tag)."""

    def __init__(self):
        super().__init__()
        self._override = override_settings(CACHES=_locmem_caches())
        self._override.enable()
        self.frag = caches["fragmented"]
        self.tenant = None
        self.tag_ver: dict = {}
        self.ns_ver: dict = {}
        self.entries: dict = {}

    def teardown(self):
        self._override.disable()

    @contextmanager
    def _in_tenant(self):
        with use_tenant(self.tenant):
            yield

    def _snapshot(self, tenant, tags):
        return (
            self.ns_ver.get(tenant, 0),
            tuple(self.tag_ver.get((tenant, t), 0) for t in sorted(tags)),
        )

    def _predict(self, key, tags):
        found = self.entries.get((self.tenant, key, frozenset(tags)))
        if found is None:
            return MISS
        value, snap = found
        return value if snap == self._snapshot(self.tenant, tags) else MISS

    def _record(self, key, tags, value):
        self.entries[(self.tenant, key, frozenset(tags))] = (
            value,
            self._snapshot(self.tenant, tags),
        )

    @initialize(tenant=st.sampled_from(TENANTS))
    def start(self, tenant):
        self.tenant = tenant

    @rule(tenant=st.sampled_from(TENANTS))
    def switch_tenant(self, tenant):
        self.tenant = tenant

    @rule(key=st.sampled_from(KEYS), tags=tag_sets, value=st.integers())
    def set_with_tags(self, key, tags, value):
        with self._in_tenant():
            assert self.frag.set_with_tags(key, value, tags) is True
        self._record(key, tags, value)

    @rule(key=st.sampled_from(KEYS), tags=tag_sets)
    def get_with_tags(self, key, tags):
        with self._in_tenant():
            got = self.frag.get_with_tags(key, list(reversed(tags)), default=MISS)
        assert got == self._predict(key, tags)

    @rule(key=st.sampled_from(KEYS), tags=tag_sets, value=st.integers())
    def get_or_set_with_tags(self, key, tags, value):
        expected = self._predict(key, tags)
        calls = []

        def loader():
            calls.append(1)
            return value

        with self._in_tenant():
            got = self.frag.get_or_set_with_tags(key, loader, tags)
        if expected is MISS:
            assert calls == [1]
            assert got == value
            self._record(key, tags, value)
        else:
            assert calls == []
            assert got == expected

    @rule(key=st.sampled_from(KEYS), value=st.integers())
    def plain_set(self, key, value):
        with self._in_tenant():
            self.frag.set(key, value)
        self._record(key, [], value)

    @rule(key=st.sampled_from(KEYS))
    def plain_get(self, key):
        with self._in_tenant():
            assert self.frag.get(key, MISS) == self._predict(key, [])

    @rule(tags=st.lists(st.sampled_from(TAGS), min_size=1, max_size=3))
    def invalidate_tags(self, tags):
        with self._in_tenant():
            assert self.frag.invalidate_tags(tags) == len(set(tags))
        for t in set(tags):
            self.tag_ver[(self.tenant, t)] = self.tag_ver.get((self.tenant, t), 0) + 1

    @rule()
    def clear(self):
        with self._in_tenant():
            self.frag.clear()
        self.ns_ver[self.tenant] = self.ns_ver.get(self.tenant, 0) + 1

    @rule(other=st.sampled_from(TENANTS))
    def invalidate_other_tenant(self, other):
        with self._in_tenant():
            self.frag.invalidate_tenant(other)
        self.ns_ver[other] = self.ns_ver.get(other, 0) + 1

    @precondition(lambda self: bool(self.entries))
    @rule(data=st.data())
    def delete_with_tags(self, data):
        mine = sorted(
            ((k, tuple(sorted(t))) for (ten, k, t) in self.entries if ten == self.tenant),
        )
        if not mine:
            return
        key, tags = data.draw(st.sampled_from(mine))
        with self._in_tenant():
            # True whenever an entry (live or stale) was there to delete.
            assert self.frag.delete_with_tags(key, list(tags)) is True
        del self.entries[(self.tenant, key, frozenset(tags))]

    @invariant()
    def tenant_restored(self):
        assert TenantContext.get_tenant_id() is None


def test_tag_version_state_machine():
    run_state_machine_as_test(
        TagVersionModel,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_normalize_tags_is_canonical():
    a = normalize_tags([("User", "1"), ("Org", 2), ("User", "1")])
    b = normalize_tags([("Org", "2"), ("User", 1)])
    assert a == b
    ka = entry_keys("p", "t", "1", "k", "", a)
    kb = entry_keys("p", "t", "1", "k", "", b)
    assert ka == kb
