from fragmented_keys_django import TenantContext

#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True


def test_roundtrip_isolated_by_tenant(frag):
    frag.set("k", 1)
    with TenantContext.use_tenant("a"):
        assert frag.get("k") is None
        frag.set("k", "A")
        assert frag.get("k") == "A"
    assert frag.get("k") == 1


def test_tagged_invalidation(frag):
    frag.set_with_tags("p", {"x": 1}, [("User", "42")])
    assert frag.get_with_tags("p", [("User", "42")]) == {"x": 1}
    assert frag.invalidate_tags([("User", "42")]) == 1
    assert frag.get_with_tags("p", [("User", "42")], default="miss") == "miss"
