"""The TENANT_STORES MODEL source under django-omnitenant's schema isolation, on PostgreSQL.

Inside omnitenant's ``TenantContext.use_tenant(tenant)`` the connection's
search_path is the tenant's schema only, where the tenant table does not
exist. The source must read the tenant's cache config all the same, and never
break (or abort) the caller's transaction.
"""

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django_omnitenant.models import BaseTenant
from django_omnitenant.tenant_context import TenantContext as OmniContext

from fragmented_keys_django import ModelTagManager
from fragmented_keys_django.conf import get_cache
from fragmented_keys_django.tenancy.context import current_tenant_id
from tests.omnitenant_app.models import Item, Tenant
from tests.redis_dbs import redis_db

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

OWN_DB = redis_db("tenant")


def own_keys() -> list[bytes]:
    r = redis.Redis.from_url(f"{settings.REDIS_URL}/{OWN_DB}")
    try:
        return list(r.scan_iter(f"{settings.KEY_PREFIX}:*"))
    finally:
        r.close()


@pytest.fixture
def acme():
    """Tenant acme: its own schema (with the Item table) and its own cache store (database ``tenant``)."""
    tenant = Tenant.objects.create(
        tenant_id="acme",
        name="Acme",
        isolation_type=BaseTenant.IsolationType.SCHEMA,
        config={
            "cache_config": {"LOCATION": f"{settings.REDIS_URL}/{OWN_DB}", "ALIAS": "acme_cache"}
        },
    )
    with OmniContext.use_tenant(tenant), connection.schema_editor() as editor:
        editor.create_model(Item)  # in schema acme: the search_path is acme's
    ModelTagManager.register_model(Item)
    yield tenant
    ModelTagManager.unregister_model(Item)
    get_cache("fragmented").tenant_stores.forget()
    with connection.cursor() as cursor:
        cursor.execute('DROP SCHEMA IF EXISTS "acme" CASCADE')
    found = own_keys()
    if found:
        r = redis.Redis.from_url(f"{settings.REDIS_URL}/{OWN_DB}")
        r.delete(*found)
        r.close()
    base = get_cache("default")
    base.delete_pattern("*")


def test_cache_calls_inside_an_omnitenant_schema_find_the_tenants_store(acme):
    frag = get_cache("fragmented")  # omnitenant replaced django.core.cache.caches
    frag.tenant_stores.forget()  # built (and bumped) when the row was saved: look it up again
    with OmniContext.use_tenant(acme):
        with connection.cursor() as cursor:
            cursor.execute("SHOW search_path")
            assert cursor.fetchone()[0] == "acme"  # only: the tenant table is not reachable
        assert current_tenant_id() == "acme"
        frag.set("greeting", "hello acme")
        assert frag.get("greeting") == "hello acme"
        assert frag.tenant_stores.store_alias("acme") == "acme_cache"
    assert own_keys()  # the entry went to acme's own store


def test_registered_saves_inside_atomic_in_an_omnitenant_schema(acme):
    frag = get_cache("fragmented")
    with OmniContext.use_tenant(acme):
        frag.set_with_tags("items", ["old"], [("Item", "")])
        before = frag.get_tag_version("Item")
        frag.tenant_stores.forget()  # the next lookup runs inside the transaction below
        with transaction.atomic():
            assert frag.get_with_tags("items", [("Item", "")]) == ["old"]
            Item.objects.create(name="widget")
            assert Item.objects.count() == 1  # the transaction is intact
        assert frag.get_tag_version("Item") != before  # bumped after the commit, in acme's store
        assert frag.get_with_tags("items", [("Item", "")]) is None
        assert frag.tenant_stores.store_alias("acme") == "acme_cache"
