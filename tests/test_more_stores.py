"""The core behaviour over the stores the main suite does not cover: the file-based
cache and Django's own ``RedisCache`` (the main suite runs locmem, the database
cache and django-redis)."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import TenantContext
from tests.conftest import AsyncAPI, store_settings

KINDS = [
    pytest.param("file", id="file"),
    pytest.param("django-redis-builtin", id="django-RedisCache", marks=pytest.mark.redis),
    pytest.param("django-valkey", id="django-valkey", marks=pytest.mark.redis),
]


#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True


@pytest.fixture(params=KINDS)
def frag(request, api):
    import shutil

    conf = store_settings(request.param)
    with override_settings(CACHES=conf):
        backend = caches["fragmented"]
        yield AsyncAPI(backend) if api == "async" else backend
    if request.param == "file":
        shutil.rmtree(conf["default"]["LOCATION"], ignore_errors=True)


def test_plain_api_is_scoped_to_the_tenant(frag):
    frag.set("k", "public")
    with TenantContext.use_tenant("acme"):
        assert frag.get("k") is None
        frag.set("k", None)
        assert frag.get("k", "default") is None  # a stored None is a value
        assert frag.add("k", "again") is False
        assert frag.get_many(["k", "missing"]) == {"k": None}
    assert frag.get("k") == "public"


def test_a_bump_invalidates_only_its_tenant(frag):
    for tenant in ("acme", "globex"):
        with TenantContext.use_tenant(tenant):
            frag.set_with_tags("page", tenant, [("User", "1")])
    with TenantContext.use_tenant("acme"):
        assert frag.invalidate_tags([("User", "1")]) == 1
        assert frag.get_with_tags("page", [("User", "1")], default="miss") == "miss"
        calls = []
        value = frag.get_or_set_with_tags(
            "page", lambda: calls.append(1) or "fresh", [("User", "1")]
        )
        assert (value, calls) == ("fresh", [1])
        assert (
            frag.get_or_set_with_tags("page", lambda: calls.append(1), [("User", "1")]) == "fresh"
        )
        assert calls == [1]
    with TenantContext.use_tenant("globex"):
        assert frag.get_with_tags("page", [("User", "1")]) == "globex"


def test_clear_empties_one_tenant_and_not_the_store(frag):
    frag.store.set("outside", "kept")
    with TenantContext.use_tenant("acme"):
        frag.set("k", "acme")
        frag.clear()
        assert frag.get("k") is None
    with TenantContext.use_tenant("globex"):
        frag.set("k", "globex")
    assert frag.store.get("outside") == "kept"
    with TenantContext.use_tenant("globex"):
        assert frag.get("k") == "globex"
