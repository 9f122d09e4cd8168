"""fragmented_keys_django with django-tenants on real PostgreSQL: two schemas, TenantMainMiddleware.

Run by tests/test_integrations.py in its own process with
DJANGO_SETTINGS_MODULE=tests.settings_tenants.
"""

import pytest
from django.core.cache import caches
from django.db import connection
from django.test import Client as HttpClient
from django_tenants.utils import schema_context, tenant_context

from fragmented_keys_django import ModelTagManager, TenantContext
from fragmented_keys_django.signals import tags_bumped
from fragmented_keys_django.tenancy.context import current_tenant_id

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db]


def test_source_is_django_tenants():
    from fragmented_keys_django.tenancy import context, sources

    assert context._source is sources.django_tenants_tenant


def test_entries_set_in_schema_a_are_invisible_in_schema_b(tenants):
    http = HttpClient()
    r = http.get("/set/", {"v": "hello-a"}, HTTP_HOST="acme.fkd.test")
    assert r.json() == {"tenant": "acme", "schema": "acme"}
    connection.set_schema_to_public()
    r = http.get("/get/", HTTP_HOST="globex.fkd.test")
    assert r.json() == {"tenant": "globex", "schema": "globex", "value": None}
    r = http.get("/set/", {"v": "hello-b"}, HTTP_HOST="globex.fkd.test")
    r = http.get("/get/", HTTP_HOST="acme.fkd.test")
    assert r.json()["value"] == "hello-a"
    r = http.get("/get/", HTTP_HOST="globex.fkd.test")
    assert r.json()["value"] == "hello-b"
    # the public domain maps to the public namespace, which sees neither
    r = http.get("/get/", HTTP_HOST="public.fkd.test")
    assert r.json() == {"tenant": None, "schema": "public", "value": None}
    # unknown domain: django-tenants answers 404 before any view runs
    assert http.get("/get/", HTTP_HOST="nowhere.fkd.test").status_code == 404


def test_public_schema_is_the_public_namespace(tenants):
    frag = caches["fragmented"]
    with schema_context("public"):
        assert current_tenant_id() is None
        frag.set("shared-setting", "public-value")
    with TenantContext.use_tenant(None):
        assert frag.get("shared-setting") == "public-value"
    with schema_context("acme"):
        assert current_tenant_id() == "acme"
        assert frag.get("shared-setting") is None
        frag.set("shared-setting", "a-value")
        # an explicit use_tenant wins over django-tenants' schema
        with TenantContext.use_tenant("globex"):
            assert current_tenant_id() == "globex"
            assert frag.get("shared-setting") is None
    with tenant_context(tenants["acme"]):
        assert frag.get("shared-setting") == "a-value"
    assert current_tenant_id() is None  # back on public


def test_model_save_bumps_in_that_tenants_namespace_only(
    tenants, django_capture_on_commit_callbacks
):
    from tests.tenants_app.models import Item

    frag = caches["fragmented"]
    ModelTagManager.register_model(Item)
    for schema in ("acme", "globex"):
        with schema_context(schema):
            frag.set_with_tags("items", f"list-{schema}", [("Item", "")])
    bumped = []

    def record(sender, alias, tenant, tags, **kwargs):
        bumped.append((tenant, tags))

    tags_bumped.connect(record)
    try:
        with django_capture_on_commit_callbacks(execute=True), tenant_context(tenants["acme"]):
            item = Item.objects.create(name="widget")
            assert Item.objects.count() == 1
    finally:
        tags_bumped.disconnect(record)
    assert [(t, sorted(tags)) for t, tags in bumped] == [
        ("acme", [("Item", ""), ("Item", str(item.pk))])
    ]
    with schema_context("acme"):
        assert frag.get_with_tags("items", [("Item", "")]) is None
    with schema_context("globex"):
        assert frag.get_with_tags("items", [("Item", "")]) == "list-globex"
        assert Item.objects.count() == 0  # rows are per schema too
