"""Behaviour of FragmentedKeysCacheBackend over every store (locmem, database cache, Redis).

Every test runs once per store through the ``frag`` fixture, and once per API
(sync, and async through ``async_to_sync``), except the round-trip counts,
which use the counting store (``tests/counting_backend.py``) or Redis's own
command statistics.
"""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings
from fragmented_keys import ConstantTag, StandardTag

from fragmented_keys_django import (
    TenantContext,
    constant_tag,
    model_tag,
    set_cache_epoch,
)

from .redis_dbs import redis_db, redis_url

use_tenant = TenantContext.use_tenant
MISS = object()
#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True


class Loader:
    """A value loader that counts its calls."""

    def __init__(self, value):
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.value


class AsyncLoader(Loader):
    async def __call__(self):  # type: ignore[override]
        self.calls += 1
        return self.value


def with_aliases(**aliases: dict) -> override_settings:
    """Return override_settings adding fragmented aliases that wrap the current ``default`` store.

    The store alias keeps its configuration, so its data stays reachable.
    """
    caches_conf = dict(settings.CACHES)
    for name, extra in aliases.items():
        caches_conf[name] = {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            **extra,
        }
    return override_settings(CACHES=caches_conf)


# -- the plain Django API, inside a tenant -------------------------------------


def test_get_set_add_delete_in_tenant(frag):
    with use_tenant("acme"):
        assert frag.get("k") is None
        assert frag.get("k", "dflt") == "dflt"
        assert frag.set("k", {"a": 1}) is None
        assert frag.get("k") == {"a": 1}
        assert frag.add("k", "other") is False
        assert frag.get("k") == {"a": 1}
        assert frag.add("fresh", 3) is True
        assert frag.get("fresh") == 3
        assert frag.has_key("k") is True
        assert frag.has_key("absent") is False
        assert frag.delete("k") is True
        assert frag.delete("k") is False
        assert frag.get("k", MISS) is MISS
        assert frag.has_key("k") is False
        assert frag.delete("never-set") is False


def test_touch(frag):
    with use_tenant("acme"):
        frag.set("k", 1, timeout=100)
        assert frag.touch("k", 200) is True
        assert frag.get("k") == 1
        assert frag.touch("absent", 200) is False
        # touch(timeout=0) expires the entry at once, as in Django.
        assert frag.touch("k", 0) is True
        assert frag.get("k", MISS) is MISS


def test_set_timeout_zero_keeps_nothing(frag):
    with use_tenant("acme"):
        frag.set("k", 1, timeout=0)
        assert frag.get("k", MISS) is MISS


def test_incr_decr(frag):
    with use_tenant("acme"):
        frag.set("n", 5)
        assert frag.incr("n") == 6
        assert frag.incr("n", 10) == 16
        assert frag.decr("n") == 15
        assert frag.decr("n", 5) == 10
        assert frag.get("n") == 10
        with pytest.raises(ValueError):
            frag.incr("absent")
        with pytest.raises(ValueError):
            frag.decr("absent")
        frag.clear()
        with pytest.raises(ValueError):
            frag.incr("n")


def test_many_operations(frag):
    with use_tenant("acme"):
        assert frag.set_many({"a": 1, "b": 2, "c": None}) == []
        assert frag.get_many(["a", "b", "c", "d"]) == {"a": 1, "b": 2, "c": None}
        assert frag.get_many([]) == {}
        assert frag.delete_many(["a", "c"]) is None
        assert frag.get_many(["a", "b", "c"]) == {"b": 2}
        assert frag.get("a", MISS) is MISS


def test_get_or_set(frag):
    with use_tenant("acme"):
        loader = Loader("computed")
        assert frag.get_or_set("k", loader) == "computed"
        assert frag.get_or_set("k", loader) == "computed"
        assert loader.calls == 1
        assert frag.get_or_set("v", "plain") == "plain"
        assert frag.get("v") == "plain"
        frag.set("existing", "kept")
        assert frag.get_or_set("existing", "other") == "kept"


def test_stored_none_is_a_hit(frag):
    with use_tenant("acme"):
        frag.set("n", None)
        assert frag.get("n", MISS) is None
        assert frag.has_key("n") is True
        assert frag.add("n", "x") is False
        assert frag.get_many(["n"]) == {"n": None}
        loader = Loader("x")
        assert frag.get_or_set("n", loader) is None
        assert loader.calls == 0
        assert frag.delete("n") is True


def test_entries_are_per_tenant(frag):
    frag.set("k", "public")
    with use_tenant("A"):
        assert frag.get("k", MISS) is MISS
        frag.set("k", "a")
    with use_tenant("B"):
        assert frag.get("k", MISS) is MISS
        assert frag.add("k", "b") is True
        assert frag.get_many(["k"]) == {"k": "b"}
    with use_tenant("A"):
        assert frag.get("k") == "a"
    assert frag.get("k") == "public"


def test_clear_is_per_tenant_and_does_not_flush_the_store(frag):
    caches["default"].set("raw-store-key", "kept", timeout=None)
    tags = [("User", "1")]
    frag.set("k", "public")
    frag.set_with_tags("t", "public-tagged", tags)
    for tenant in ("A", "B"):
        with use_tenant(tenant):
            frag.set("k", tenant)
            frag.set_with_tags("t", f"{tenant}-tagged", tags)
    with use_tenant("A"):
        assert frag.clear() is None
        assert frag.get("k", MISS) is MISS
        assert frag.get_with_tags("t", tags, default=MISS) is MISS
        assert frag.get_many(["k"]) == {}
        # The namespace works again after a clear.
        frag.set("k", "again")
        assert frag.get("k") == "again"
    with use_tenant("B"):
        assert frag.get("k") == "B"
        assert frag.get_with_tags("t", tags) == "B-tagged"
    assert frag.get("k") == "public"
    assert frag.get_with_tags("t", tags) == "public-tagged"
    assert caches["default"].get("raw-store-key") == "kept"


def test_clear_in_public_namespace_leaves_tenants(frag):
    frag.set("k", "public")
    with use_tenant("A"):
        frag.set("k", "a")
    frag.clear()
    assert frag.get("k", MISS) is MISS
    with use_tenant("A"):
        assert frag.get("k") == "a"


# -- the tag API ----------------------------------------------------------------


def test_set_and_get_with_tags(frag):
    tags = [("User", "42"), ("Org", "7")]
    with use_tenant("acme"):
        assert frag.get_with_tags("p", tags) is None
        assert frag.get_with_tags("p", tags, default=MISS) is MISS
        assert frag.set_with_tags("p", {"x": 1}, tags) is True
        assert frag.get_with_tags("p", tags) == {"x": 1}
        # Another tag set is another entry.
        assert frag.get_with_tags("p", [("User", "42")], default=MISS) is MISS
        assert frag.get_with_tags("p", [], default=MISS) is MISS


def test_tagged_and_plain_entries_are_distinct(frag):
    with use_tenant("acme"):
        frag.set("k", "plain")
        frag.set_with_tags("k", "tagged", [("User", "1")])
        assert frag.get("k") == "plain"
        assert frag.get_with_tags("k", [("User", "1")]) == "tagged"
        # No tags at all addresses the plain entry.
        assert frag.get_with_tags("k", []) == "plain"


def test_invalidate_tags_drops_dependents_only(frag):
    with use_tenant("acme"):
        frag.set_with_tags("a", "A", [("User", "1")])
        frag.set_with_tags("b", "B", [("User", "1"), ("Org", "7")])
        frag.set_with_tags("c", "C", [("User", "2")])
        frag.set("plain", "P")
        assert frag.invalidate_tags([("User", "1")]) == 1
        assert frag.get_with_tags("a", [("User", "1")], default=MISS) is MISS
        assert frag.get_with_tags("b", [("User", "1"), ("Org", "7")], default=MISS) is MISS
        assert frag.get_with_tags("c", [("User", "2")]) == "C"
        assert frag.get("plain") == "P"
        # Re-stored after the bump: served again under the new version.
        frag.set_with_tags("a", "A2", [("User", "1")])
        assert frag.get_with_tags("a", [("User", "1")]) == "A2"


def test_invalidate_tags_returns_number_of_tags_bumped(frag):
    with use_tenant("acme"):
        assert frag.invalidate_tags([("User", "1"), ("Org", "2"), ("Org", "3")]) == 3
        assert frag.invalidate_tags([("User", "1"), ("User", "1")]) == 1
        assert frag.invalidate_tags([]) == 0
        assert frag.invalidate_tags([("Const", "1", "constant"), ("User", "1")]) == 1
        assert frag.invalidate_tags([constant_tag("Const", "1")]) == 0


def test_get_or_set_with_tags_calls_loader_only_on_miss(frag):
    tags = [("User", "42")]
    with use_tenant("acme"):
        loader = Loader({"v": 1})
        assert frag.get_or_set_with_tags("p", loader, tags) == {"v": 1}
        assert frag.get_or_set_with_tags("p", loader, tags) == {"v": 1}
        assert loader.calls == 1
        assert frag.get_with_tags("p", tags) == {"v": 1}
        frag.invalidate_tags(tags)
        assert frag.get_or_set_with_tags("p", loader, tags) == {"v": 1}
        assert loader.calls == 2
        # A plain value (not callable) is stored as is.
        assert frag.get_or_set_with_tags("q", "value", tags) == "value"
        assert frag.get_with_tags("q", tags) == "value"


def test_get_or_set_with_tags_caches_none(frag):
    tags = [("User", "42")]
    with use_tenant("acme"):
        loader = Loader(None)
        assert frag.get_or_set_with_tags("p", loader, tags) is None
        assert frag.get_or_set_with_tags("p", loader, tags) is None
        assert loader.calls == 1
        assert frag.get_with_tags("p", tags, default=MISS) is None


def test_delete_with_tags(frag):
    tags = [("User", "42")]
    with use_tenant("acme"):
        frag.set_with_tags("p", 1, tags)
        frag.set_with_tags("p", 2, [("User", "43")])
        assert frag.delete_with_tags("p", tags) is True
        assert frag.get_with_tags("p", tags, default=MISS) is MISS
        assert frag.get_with_tags("p", [("User", "43")]) == 2
        assert frag.delete_with_tags("p", tags) is False


def test_tag_version_changes_on_each_bump_and_never_repeats(frag):
    with use_tenant("acme"):
        assert frag.get_tag_version("User", "1") == 0
        seen = set()
        for _ in range(25):
            frag.invalidate_tags([("User", "1")])
            v = frag.get_tag_version("User", "1")
            assert isinstance(v, int)
            assert v != 0
            assert v not in seen
            seen.add(v)
        assert frag.get_tag_version("User", "2") == 0


def test_tag_versions_are_per_tenant(frag):
    with use_tenant("A"):
        frag.invalidate_tags([("User", "1")])
        va = frag.get_tag_version("User", "1")
    with use_tenant("B"):
        assert frag.get_tag_version("User", "1") == 0
        frag.invalidate_tags([("User", "1")])
    with use_tenant("A"):
        assert frag.get_tag_version("User", "1") == va


def test_invalidate_tenant(frag):
    tags = [("User", "1")]
    for tenant in ("A", "B"):
        with use_tenant(tenant):
            frag.set("k", tenant)
            frag.set_with_tags("t", tenant, tags)
    with use_tenant("A"):
        assert frag.invalidate_tenant() is None
        assert frag.get("k", MISS) is MISS
        assert frag.get_with_tags("t", tags, default=MISS) is MISS
        # Operator code may name another tenant explicitly.
        frag.invalidate_tenant("B")
    with use_tenant("B"):
        assert frag.get("k", MISS) is MISS
        assert frag.get_with_tags("t", tags, default=MISS) is MISS


def test_invalidate_tenant_explicit_leaves_current(frag):
    with use_tenant("A"):
        frag.set("k", "a")
        frag.invalidate_tenant("B")
        assert frag.get("k") == "a"


def test_get_many_with_tags_shared_tags(frag):
    tags = [("List", "org:1")]
    with use_tenant("acme"):
        frag.set_with_tags("a", 1, tags)
        frag.set_with_tags("b", None, tags)
        assert frag.get_many_with_tags(["a", "b", "c"], tags) == {"a": 1, "b": None}
        assert frag.get_many_with_tags([], tags) == {}
        frag.invalidate_tags(tags)
        assert frag.get_many_with_tags(["a", "b"], tags) == {}


def test_get_many_with_tags_mapping(frag):
    with use_tenant("acme"):
        frag.set_with_tags("a", "A", [("User", "1")])
        frag.set_with_tags("b", "B", [("User", "2")])
        frag.set_with_tags("c", "C", [("User", "1"), ("Org", "9")])
        plan = {"a": [("User", "1")], "b": [("User", "2")], "c": [("Org", "9"), ("User", "1")]}
        assert frag.get_many_with_tags(plan) == {"a": "A", "b": "B", "c": "C"}
        frag.invalidate_tags([("User", "1")])
        assert frag.get_many_with_tags(plan) == {"b": "B"}


# -- tag forms --------------------------------------------------------------------


def test_tag_forms_address_the_same_entry(frag):
    with use_tenant("acme"):
        frag.set_with_tags("p", "v", [("User", "42")])
        for form in (
            [("User", "42")],
            [("User", 42)],
            [["User", "42"]],
            [StandardTag("User", "42")],
            [{"tag": "User", "instance": "42"}],
            [{"tag": "User", "instance": 42, "type": "standard"}],
            [model_tag("User", 42)],
        ):
            assert frag.get_with_tags("p", form, default=MISS) == "v", form
        assert frag.invalidate_tags([model_tag("User", 42)]) == 1
        assert frag.get_with_tags("p", [("User", "42")], default=MISS) is MISS


def test_tag_order_does_not_matter(frag):
    a, b, c = ("User", "1"), ("Org", "2"), ("Team", "3")
    with use_tenant("acme"):
        frag.set_with_tags("p", "v", [a, b, c])
        assert frag.get_with_tags("p", [c, a, b]) == "v"
        assert frag.get_with_tags("p", [b, c, a, a]) == "v"
        frag.invalidate_tags([b])
        assert frag.get_with_tags("p", [a, b, c], default=MISS) is MISS


def test_constant_tags_are_part_of_the_key_and_never_bumped(frag):
    with use_tenant("acme"):
        v1 = ConstantTag("Schema", "report", version=1.0)
        v2 = ConstantTag("Schema", "report", version=2.0)
        frag.set_with_tags("p", "one", [v1, ("User", "1")])
        frag.set_with_tags("p", "two", [v2, ("User", "1")])
        assert frag.get_with_tags("p", [v1, ("User", "1")]) == "one"
        assert frag.get_with_tags("p", [v2, ("User", "1")]) == "two"
        # The same constant tag in its other forms.
        for same in (
            ("Schema", "report", "constant"),
            {"tag": "Schema", "instance": "report", "type": "constant", "version": 1.0},
            constant_tag("Schema", "report"),
        ):
            assert frag.get_with_tags("p", [same, ("User", "1")]) == "one", same
        # A constant tag differs from the standard tag of the same name.
        assert frag.get_with_tags("p", [("Schema", "report"), ("User", "1")], default=MISS) is MISS
        # Bumping the constant tag is a no-op.
        assert frag.invalidate_tags([v1]) == 0
        assert frag.invalidate_tags([("Schema", "report", "constant")]) == 0
        assert frag.get_with_tags("p", [v1, ("User", "1")]) == "one"
        # The standard tag still works.
        frag.invalidate_tags([("User", "1")])
        assert frag.get_with_tags("p", [v1, ("User", "1")], default=MISS) is MISS


def test_standard_and_constant_tag_of_same_name_together(frag):
    """A list may hold ("L", "en") and its constant twin: two different tags."""
    tags = [("Locale", "en"), ("Locale", "en", "constant")]
    with use_tenant("acme"):
        assert frag.set_with_tags("p", "v", tags) is True
        assert frag.get_with_tags("p", list(reversed(tags))) == "v"
        assert frag.invalidate_tags(tags) == 1
        assert frag.get_with_tags("p", tags, default=MISS) is MISS


def test_only_constant_tags_survive_bumps_but_not_clear(frag):
    tags = [("Schema", "x", "constant")]
    with use_tenant("acme"):
        frag.set_with_tags("p", "v", tags)
        frag.invalidate_tags([("Schema", "x")])
        assert frag.get_with_tags("p", tags) == "v"
        frag.clear()
        assert frag.get_with_tags("p", tags, default=MISS) is MISS


def test_group_id_separates_entries(frag):
    tags = [("User", "1")]
    with use_tenant("acme"):
        frag.set_with_tags("p", "g1", tags, group_id="g1")
        frag.set_with_tags("p", "g2", tags, group_id="g2")
        assert frag.get_with_tags("p", tags, group_id="g1") == "g1"
        assert frag.get_with_tags("p", tags, group_id="g2") == "g2"
        assert frag.get_with_tags("p", tags, default=MISS) is MISS
        assert frag.get_many_with_tags(["p"], tags, group_id="g2") == {"p": "g2"}
        assert frag.delete_with_tags("p", tags, group_id="g1") is True
        assert frag.get_with_tags("p", tags, group_id="g2") == "g2"
        # Injective: key a_b + group c differs from key a + group b_c.
        frag.set_with_tags("a_b", 1, tags, group_id="c")
        assert frag.get_with_tags("a", tags, group_id="b_c", default=MISS) is MISS


# -- epoch, VERSION, KEY_PREFIX --------------------------------------------------------


def test_set_cache_epoch_changes_keys(frag):
    with use_tenant("acme"):
        frag.set("k", "epoch1")
        frag.set_with_tags("t", "epoch1", [("User", "1")])
        set_cache_epoch(2)
        assert frag.get("k", MISS) is MISS
        assert frag.get_with_tags("t", [("User", "1")], default=MISS) is MISS
        frag.set("k", "epoch2")
        set_cache_epoch(1)
        assert frag.get("k") == "epoch1"
        assert frag.get_with_tags("t", [("User", "1")]) == "epoch1"


def test_epoch_option_changes_keys(frag, store):
    with with_aliases(e2={"EPOCH": "2"}, e2b={"EPOCH": 2.0, "KEY_PREFIX": ""}):
        f, e2 = caches["fragmented"], caches["e2"]
        with use_tenant("acme"):
            f.set("k", "no-epoch")
            e2.set("k", "epoch-2")
            f.set_with_tags("t", "no-epoch", [("User", "1")])
            assert f.get("k") == "no-epoch"
            assert e2.get("k") == "epoch-2"
            assert e2.get_with_tags("t", [("User", "1")], default=MISS) is MISS


def test_version_and_key_prefix_on_the_alias_separate_entries(frag, store):
    with with_aliases(v2={"VERSION": 2}, kp={"KEY_PREFIX": "other"}):
        f, v2, kp = caches["fragmented"], caches["v2"], caches["kp"]
        with use_tenant("acme"):
            f.set("k", "v1")
            f.set_with_tags("t", "v1", [("User", "1")])
            assert v2.get("k", MISS) is MISS
            assert kp.get("k", MISS) is MISS
            assert v2.get_with_tags("t", [("User", "1")], default=MISS) is MISS
            v2.set("k", "v2")
            kp.set("k", "kp")
            assert f.get("k") == "v1"
            assert v2.get("k") == "v2"
            assert kp.get("k") == "kp"
            # version= on the call addresses the same entries as VERSION on the alias.
            assert f.get("k", version=2) == "v2"
            f.set("k", "v2-again", version=2)
            assert v2.get("k") == "v2-again"
            assert f.get("k") == "v1"


def test_prefix_separates_entries(frag, store):
    with with_aliases(p2={"PREFIX": "other"}):
        f, p2 = caches["fragmented"], caches["p2"]
        with use_tenant("acme"):
            f.set_with_tags("t", "t", [("User", "1")])
            assert p2.get_with_tags("t", [("User", "1")], default=MISS) is MISS
            p2.set_with_tags("t", "other", [("User", "1")])
            f.invalidate_tags([("User", "1")])
            assert p2.get_with_tags("t", [("User", "1")]) == "other"


# -- async twins ------------------------------------------------------------------------


def test_async_plain_api(frag):
    async def scenario():
        with use_tenant("acme"):
            assert await frag.aget("k") is None
            await frag.aset("k", 1)
            assert await frag.aget("k") == 1
            assert await frag.aadd("k", 2) is False
            assert await frag.aadd("k2", None) is True
            assert await frag.aget("k2", MISS) is None
            assert await frag.ahas_key("k2") is True
            assert await frag.aincr("k", 4) == 5
            assert await frag.adecr("k") == 4
            assert await frag.atouch("k", 100) is True
            assert await frag.aset_many({"a": "A", "b": "B"}) == []
            assert await frag.aget_many(["a", "b", "zz"]) == {"a": "A", "b": "B"}
            await frag.adelete_many(["a"])
            assert await frag.aget_many(["a", "b"]) == {"b": "B"}
            assert await frag.adelete("k") is True
            assert await frag.adelete("k") is False
            loader = Loader("x")
            assert await frag.aget_or_set("g", loader) == "x"
            assert await frag.aget_or_set("g", loader) == "x"
            assert loader.calls == 1
            await frag.aclear()
            assert await frag.aget("b", MISS) is MISS
        with use_tenant("other"):
            assert await frag.aget("k2", MISS) is MISS

    async_to_sync(scenario)()


def test_async_tag_api(frag):
    tags = [("User", "42")]

    async def scenario():
        with use_tenant("acme"):
            assert await frag.aset_with_tags("p", "v", tags) is True
            assert await frag.aget_with_tags("p", tags) == "v"
            assert await frag.aget_many_with_tags(["p", "q"], tags) == {"p": "v"}
            loader = AsyncLoader({"computed": True})
            assert await frag.aget_or_set_with_tags("q", loader, tags) == {"computed": True}
            assert await frag.aget_or_set_with_tags("q", loader, tags) == {"computed": True}
            assert loader.calls == 1
            none_loader = AsyncLoader(None)
            assert await frag.aget_or_set_with_tags("n", none_loader, tags) is None
            assert await frag.aget_or_set_with_tags("n", none_loader, tags) is None
            assert none_loader.calls == 1
            sync_loader = Loader("sync")
            assert await frag.aget_or_set_with_tags("s", sync_loader, tags) == "sync"
            assert sync_loader.calls == 1
            before = await frag.aget_tag_version("User", "42")
            assert await frag.ainvalidate_tags(tags) == 1
            assert await frag.aget_tag_version("User", "42") != before
            assert await frag.aget_with_tags("p", tags, default=MISS) is MISS
            assert await frag.aget_or_set_with_tags("q", loader, tags) == {"computed": True}
            assert loader.calls == 2
            assert await frag.adelete_with_tags("q", tags) is True
            assert await frag.aget_with_tags("q", tags, default=MISS) is MISS
            await frag.aset_with_tags("p", "v2", tags)
            await frag.ainvalidate_tenant()
            assert await frag.aget_with_tags("p", tags, default=MISS) is MISS

    async_to_sync(scenario)()


def test_async_and_sync_share_entries(frag):
    tags = [("User", "1")]
    with use_tenant("acme"):
        frag.set_with_tags("p", "sync", tags)

        async def read():
            with use_tenant("acme"):
                return await frag.aget_with_tags("p", tags, default=MISS)

        assert async_to_sync(read)() == "sync"
        frag.invalidate_tags(tags)
        assert async_to_sync(read)() is MISS


# -- round trips --------------------------------------------------------------------------


def counting_caches(**wrapper) -> dict:
    """CACHES over the counting store; a LocMemCache subclass, so its writes land or raise.

    The library recognises that by class (subclasses included); bump read-back
    is also switched off explicitly (VERIFY_BUMPS=False), so the counts below
    do not depend on it.
    """
    return {
        "default": {
            "BACKEND": "tests.counting_backend.CountingLocMemCache",
            "LOCATION": f"count-{uuid.uuid4().hex}",
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            "OPTIONS": {"VERIFY_BUMPS": False},
            **wrapper,
        },
    }


@pytest.mark.parametrize("ntags", [1, 10])
def test_warm_get_with_tags_is_one_store_call(ntags):
    tags = [(f"Tag{i}", str(i)) for i in range(ntags)]
    with override_settings(CACHES=counting_caches()):
        frag, store = caches["fragmented"], caches["default"]
        with use_tenant("acme"):
            frag.set_with_tags("p", "v", tags)
            store.reset_calls()
            assert frag.get_with_tags("p", tags) == "v"
            assert dict(store.calls) == {"get_many": 1}
            store.reset_calls()
            loader = Loader("other")
            assert frag.get_or_set_with_tags("p", loader, tags) == "v"
            assert loader.calls == 0
            assert dict(store.calls) == {"get_many": 1}


def test_other_operations_round_trips():
    tags = [(f"Tag{i}", str(i)) for i in range(5)]
    with override_settings(CACHES=counting_caches()):
        frag, store = caches["fragmented"], caches["default"]
        with use_tenant("acme"):
            for k in "abcde":
                frag.set_with_tags(k, k, tags)
            frag.set("plain", 1)
            store.reset_calls()
            assert frag.get_many_with_tags(list("abcde"), tags) == {k: k for k in "abcde"}
            assert dict(store.calls) == {"get_many": 1}
            store.reset_calls()
            assert frag.get("plain") == 1
            assert dict(store.calls) == {"get_many": 1}
            store.reset_calls()
            assert frag.invalidate_tags(tags) == 5
            assert dict(store.calls) == {"set_many": 1}
            store.reset_calls()
            frag.clear()
            assert dict(store.calls) == {"set_many": 1}


def _redis_commands(monitor, store_client, action) -> list[str]:
    """Return the commands Redis executed in the ``count`` database while *action* ran.

    Redis itself reports them (MONITOR). ``INFO commandstats`` would be simpler
    but is server-wide: other test processes sharing the server add commands to
    every measurement. MONITOR tags each command with its database, and this
    database is used by this test only; ECHO markers on the store's own
    connection delimit the window. Commands a Lua script runs are left out:
    they are part of the script's one round trip.
    """
    count_db = redis_db("count")
    marker = uuid.uuid4().hex
    store_client.echo(f"start-{marker}")
    action()
    store_client.echo(f"end-{marker}")
    seen: list[str] = []
    started = False
    for _ in range(1_000_000):
        rec = monitor.next_command()
        if rec["db"] != count_db or rec.get("client_type") == "lua":
            continue
        cmd = rec["command"]
        if cmd == f"ECHO start-{marker}":
            started = True
        elif cmd == f"ECHO end-{marker}":
            return seen
        elif started:
            seen.append(cmd.split(" ", 1)[0].upper())
    raise AssertionError("end marker never seen")  # pragma: no cover


def _count_db_caches() -> dict:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url("count"),
            "KEY_PREFIX": uuid.uuid4().hex[:8],
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
        },
    }


@pytest.mark.redis
def test_plain_get_and_set_in_a_tenant_are_one_redis_command_each():
    """The implicit tenant tag costs no round trip: get is one MGET, set (and set_many) one EVALSHA."""
    import redis

    watcher = redis.Redis.from_url(redis_url("count"), socket_timeout=10)
    with override_settings(CACHES=_count_db_caches()):
        frag = caches["fragmented"]
        store_client = caches["default"].client.get_client(write=True)
        try:
            with use_tenant("acme"), watcher.monitor() as monitor:
                frag.set("k", "v")  # loads the script, learns the stamp

                def write():
                    frag.set("k", "v2")

                def read():
                    assert frag.get("k") == "v2"

                assert _redis_commands(monitor, store_client, write) == ["EVALSHA"]
                assert _redis_commands(monitor, store_client, read) == ["MGET"]

                def write_many():
                    assert frag.set_many({f"m{i}": i for i in range(500)}) == []

                def write_more():  # one script call per 500 entries
                    assert frag.set_many({f"m{i}": i for i in range(1200)}) == []

                assert _redis_commands(monitor, store_client, write_many) == ["EVALSHA"]
                assert _redis_commands(monitor, store_client, write_more) == ["EVALSHA"] * 3
                assert frag.get_many(["m0", "m1199"]) == {"m0": 0, "m1199": 1199}
        finally:
            frag.close()
            watcher.close()


@pytest.mark.redis
@pytest.mark.parametrize("ntags", [1, 10])
def test_warm_get_with_tags_is_one_redis_command(ntags):
    """A warm tagged read is exactly one Redis command, an MGET, as Redis counts it."""
    import redis

    caches_conf = _count_db_caches()
    tags = [(f"Tag{i}", str(i)) for i in range(ntags)]
    watcher = redis.Redis.from_url(redis_url("count"), socket_timeout=10)
    with override_settings(CACHES=caches_conf):
        frag = caches["fragmented"]
        store_client = caches["default"].client.get_client(write=True)
        try:
            with use_tenant("acme"), watcher.monitor() as monitor:
                frag.set_with_tags("p", "v", tags)
                assert frag.get_with_tags("p", tags) == "v"  # warm the connection

                def read():
                    assert frag.get_with_tags("p", tags) == "v"

                assert _redis_commands(monitor, store_client, read) == ["MGET"]

                def miss():
                    assert frag.get_with_tags("absent", tags, default=MISS) is MISS

                assert _redis_commands(monitor, store_client, miss) == ["MGET"]
        finally:
            frag.close()
            watcher.close()


def test_add_after_set_many_sees_the_live_entry(frag):
    with TenantContext.use_tenant("acme"):
        assert frag.set_many({"k": 1, "j": 2}) == []
        assert frag.add("k", 99) is False
        assert frag.get_many(["k", "j"]) == {"k": 1, "j": 2}


# -- writes after another process's bump ----------------------------------------
#
# On Redis a write is stamped in a Lua script with the versions current in the
# store; the client sends the stamp it expects (the last one it wrote) so the
# script need not rebuild the entry. A thread has its own backends (Django's
# caches are per thread), like another process: its bumps make this thread's
# expectation stale, and writes made after them must still be read.


def _elsewhere(fn) -> None:
    """Run *fn* in a new thread (its own cache backends and store clients) and wait for it."""
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)
        finally:
            caches["fragmented"].close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_writes_after_a_flush_elsewhere_are_read_and_earlier_ones_are_not(frag):
    with use_tenant("acme"):
        frag.set("k", "before")
        frag.set_with_tags("t", "before", [("User", 1)])
        frag.set("k", "before, again")  # this thread now expects the current stamps
        frag.set_with_tags("t", "before, again", [("User", 1)])

        def flush() -> None:
            with use_tenant("acme"):
                caches["fragmented"].clear()

        _elsewhere(flush)
        assert frag.get("k", MISS) is MISS
        assert frag.get_with_tags("t", [("User", 1)], default=MISS) is MISS
        frag.set("k", "after")
        frag.set_with_tags("t", "after", [("User", 1)])
        assert frag.add("new", "added") is True
        assert frag.get("k") == "after"
        assert frag.get_with_tags("t", [("User", 1)]) == "after"
        assert frag.get("new") == "added"


def test_a_write_after_a_bump_elsewhere_is_read_without_an_intervening_read(frag):
    tags = [("User", 1), ("Org", 7)]
    with use_tenant("acme"):
        frag.set_with_tags("t", "v1", tags)
        frag.set_with_tags("t", "v2", tags)

        def bump() -> None:
            with use_tenant("acme"):
                caches["fragmented"].invalidate_tags([("Org", 7)])

        _elsewhere(bump)
        frag.set_with_tags("t", "v3", tags)  # no read in between: the expectation is stale
        assert frag.get_with_tags("t", tags) == "v3"
        frag.set("plain", 1)
        _elsewhere(bump)  # a tag bump leaves plain entries alone
        assert frag.get("plain") == 1


def test_set_many_after_a_flush_elsewhere_is_read(frag, store):
    # Redis: several script calls. locmem and the database cache cull beyond
    # 300 entries (the namespace version among them), so they get fewer.
    many = {f"k{i}": i for i in range(1200 if store == "redis" else 200)}
    with use_tenant("acme"):
        assert frag.set_many(many) == []

        def flush() -> None:
            with use_tenant("acme"):
                caches["fragmented"].clear()

        _elsewhere(flush)
        assert frag.get_many(list(many)) == {}
        assert frag.set_many(many) == []
        assert frag.get_many(list(many)) == many


def test_add_after_a_flush_elsewhere_replaces_the_dead_entry(frag):
    with use_tenant("acme"):
        frag.set("k", "old")
        assert frag.add("k", "nope") is False

        def flush() -> None:
            with use_tenant("acme"):
                caches["fragmented"].clear()

        _elsewhere(flush)
        assert frag.add("k", "new") is True
        assert frag.add("k", "newer") is False
        assert frag.get("k") == "new"


def test_add_sees_a_live_entry_written_with_early_recompute_data(frag):
    # get_or_set_with_tags with no tags addresses the plain key's entry; with
    # early recomputation on, the entry also carries expiry data (on Redis, a
    # different header). add must still see it as live.
    with use_tenant("acme"):
        assert frag.get_or_set_with_tags("k", lambda: "live", [], early_recompute=1.0) == "live"
        assert frag.get("k") == "live"
        assert frag.add("k", "other") is False
        assert frag.get("k") == "live"
