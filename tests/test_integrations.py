"""Existing tenancy packages as the tenant source: django-omnitenant and django-tenants.

django-omnitenant: its ``TenantContext.use_tenant`` also activates database
and schema backends (``connection.set_schema``, ``CREATE SCHEMA``) that need its
own PostgreSQL engine, and its app's ``ready()`` patches Django's cache handler.
So, in this process, the tenant is pushed with its real ``TenantContext``'s
``push_tenant``/``pop_tenant`` (the ContextVar stacks ``use_tenant`` itself uses)
and our source reads it through ``get_tenant()``.

django-tenants: cannot share a process with tests.settings (PostgreSQL backend,
router, tenant models), so tests/tenants_suite runs in a subprocess with
tests.settings_tenants on real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import TenantContext
from fragmented_keys_django.tenancy import context as fk_context
from fragmented_keys_django.tenancy import sources
from fragmented_keys_django.tenancy.context import current_tenant_id
from tests.subsuite import run_suite

ROOT = Path(__file__).resolve().parent.parent

# django-omnitenant reads these when its modules are first imported.
OMNITENANT_CONFIG = {"TENANT_MODEL": "testapp.Hospital", "DOMAIN_MODEL": "testapp.Hospital"}


class FakeTenant:
    """The least a django-omnitenant tenant offers our source: ``tenant_id``."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.config: dict = {}


@pytest.fixture
def omni():
    with override_settings(OMNITENANT_CONFIG=OMNITENANT_CONFIG):
        from django_omnitenant.tenant_context import TenantContext as OmniContext

        with override_settings(FRAGMENTED_KEYS={"TENANT_SOURCE": "omnitenant"}):
            assert fk_context._source is sources.omnitenant_tenant
            OmniContext.clear_all()
            yield OmniContext
            OmniContext.clear_all()
    assert fk_context._source is None  # back to ours only


def test_omnitenant_source_follows_its_tenant_context(omni):
    frag = caches["fragmented"]
    assert current_tenant_id() is None
    omni.push_tenant(FakeTenant("acme"))
    try:
        assert current_tenant_id() == "acme"
        assert TenantContext.get_tenant().tenant_id == "acme"
        frag.set("k", "acme-value")
        omni.push_tenant(FakeTenant("globex"))  # nested, as omnitenant's use_tenant nests
        try:
            assert current_tenant_id() == "globex"
            assert frag.get("k") is None
            frag.set("k", "globex-value")
        finally:
            omni.pop_tenant()
        assert frag.get("k") == "acme-value"
        # an explicit use_tenant of ours wins over omnitenant's
        with TenantContext.use_tenant("initech"):
            assert current_tenant_id() == "initech"
            assert frag.get("k") is None
        # use_tenant(None) names no tenant: omnitenant's still decides (docs/tenancy.md)
        with TenantContext.use_tenant(None):
            assert current_tenant_id() == "acme"
            assert frag.get("k") == "acme-value"
    finally:
        omni.pop_tenant()
    assert current_tenant_id() is None
    assert frag.get("k") is None  # public namespace


def test_omnitenant_tags_and_bumps_scoped_to_its_tenant(omni):
    frag = caches["fragmented"]
    for t in ("acme", "globex"):
        omni.push_tenant(FakeTenant(t))
        frag.set_with_tags("orders", f"orders-{t}", [("Order", "")])
        omni.pop_tenant()
    omni.push_tenant(FakeTenant("acme"))
    frag.invalidate_tags([("Order", "")])
    assert frag.get_with_tags("orders", [("Order", "")]) is None
    omni.pop_tenant()
    omni.push_tenant(FakeTenant("globex"))
    assert frag.get_with_tags("orders", [("Order", "")]) == "orders-globex"
    omni.pop_tenant()


def test_omnitenant_context_is_per_task(omni):
    async def in_tenant(tid: str) -> str | None:
        omni.push_tenant(FakeTenant(tid))
        await asyncio.sleep(0.01)
        try:
            return current_tenant_id()
        finally:
            omni.pop_tenant()

    async def main():
        return await asyncio.gather(*(in_tenant(f"t{i}") for i in range(5)))

    assert asyncio.run(main()) == [f"t{i}" for i in range(5)]


def test_django_tenants_source_without_django_tenants_connection():
    # tests.settings uses a plain backend: no schema_name -> the public namespace
    assert sources.django_tenants_tenant() is None


@pytest.mark.postgres
@pytest.mark.redis
def test_django_tenants_suite():
    """Run tests/tenants_suite with tests.settings_tenants on PostgreSQL (must pass, never skip)."""
    out = run_suite("tests.settings_tenants", "tests/tenants_suite")
    assert re.search(r"\b9 passed", out), out[-3000:]


@pytest.mark.postgres
@pytest.mark.redis
def test_omnitenant_suite():
    """Run tests/omnitenant_suite: django-omnitenant's app, engine and schemas on PostgreSQL."""
    out = run_suite("tests.settings_omnitenant", "tests/omnitenant_suite")
    assert re.search(r"\b4 passed", out), out[-3000:]
