"""Every recipe of docs/tenancy.md runs as written.

Each recipe's ``settings`` block is executed and its upper-case names applied
with ``override_settings``; its other blocks run as written. Only Redis URLs are
rewritten: each distinct URL of a recipe becomes one of the test Redis
databases (5, 8, 4, 3), and Redis stores get a unique KEY_PREFIX, deleted after.

How each integration is exercised here:

* django-tenants: by tests/tenants_suite/test_docs_recipe.py, in its own
  process with tests.settings_tenants on PostgreSQL (run below).
* django-omnitenant: its real ``TenantContext.use_tenant`` runs, with the
  activation of its database, schema and cache backends stubbed out (they need
  its PostgreSQL engine; its cache backend would add aliases to
  ``settings.CACHES``); the tenant stack our source reads is omnitenant's own.
* Celery: a real worker thread on the Redis broker (DB 7).
"""

from __future__ import annotations

import sys
import types
import uuid
from pathlib import Path

import pytest
import redis
from django.core.cache import caches
from django.test import override_settings
from django.urls import clear_url_caches

from fragmented_keys_django import TenantContext
from tests import recipes
from tests.redis_dbs import base_url, redis_db, redis_url
from tests.subsuite import run_suite

REDIS_URL = base_url()
ROOT = Path(__file__).resolve().parent.parent
TESTED = {
    "shared-store",
    "redis-db-per-tenant",
    "server-per-tenant",
    "django-tenants",
    "omnitenant",
    "celery",
    "middleware",
}


@pytest.fixture
def blocks():
    return recipes.load()


@pytest.fixture
def redis_env():
    """A rewriter for the recipe's Redis URLs and cleanup of the keys it made."""
    prefix = f"fkd-doc-{uuid.uuid4().hex[:8]}"
    roles = ("tenants_shared", "tenant", "subsuite", "commands")
    rw = recipes.RedisRewriter(REDIS_URL, [redis_db(role) for role in roles])
    yield prefix, rw
    for db in rw.used():
        r = redis.Redis.from_url(f"{REDIS_URL}/{db}")
        found = list(r.scan_iter(f"{prefix}*"))
        if found:
            r.delete(*found)
        r.close()


def recipe_settings(blocks, name, rw=None, prefix=None) -> tuple[dict, dict]:
    code = blocks[f"{name} settings"]
    ns = recipes.run(rw(code) if rw else code, {}, f"{name} settings")
    conf = recipes.settings_from(ns)
    for cache in conf.get("CACHES", {}).values():
        if "redis" in cache.get("BACKEND", "").lower() and prefix:
            cache.setdefault("KEY_PREFIX", prefix)
    return conf, ns


def test_every_recipe_is_tested(blocks):
    names = {n for n in blocks if " " not in n}
    assert names == TESTED
    for name in names:
        assert f"{name} settings" in blocks, f"recipe {name!r} has no settings block"


@pytest.mark.redis
@pytest.mark.parametrize("name", ["shared-store", "redis-db-per-tenant", "server-per-tenant"])
def test_store_recipes(blocks, redis_env, name):
    prefix, rw = redis_env
    conf, ns = recipe_settings(blocks, name, rw, prefix)
    with override_settings(**conf):
        try:
            recipes.run(rw(blocks[name]), ns, name)
            if name == "redis-db-per-tenant":
                # acme's entry and versions are in acme's own database, not the shared one
                shared_db, acme_db = (
                    rw.mapping["redis://127.0.0.1:6379/0"],
                    rw.mapping["redis://127.0.0.1:6379/1"],
                )
                own = redis.Redis.from_url(f"{REDIS_URL}/{acme_db}")
                shared = redis.Redis.from_url(f"{REDIS_URL}/{shared_db}")
                assert len(list(own.scan_iter(f"{prefix}:*"))) == 2  # entry + namespace version
                assert len(list(shared.scan_iter(f"{prefix}:*"))) == 2  # initech's
                own.close()
                shared.close()
        finally:
            ts = caches["fragmented"].tenant_stores
            if ts is not None:
                ts.forget()


@pytest.mark.postgres
def test_django_tenants_recipe():
    out = run_suite("tests.settings_tenants", "tests/tenants_suite", "-k", "docs_recipe")
    assert "1 passed" in out, out[-3000:]


class Tenant:
    """Stands for a django-omnitenant ``BaseTenant`` row (what ``use_tenant`` reads of it)."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.config: dict = {}
        self.isolation_type = Tenant.isolation


def test_omnitenant_recipe(blocks, monkeypatch):
    with override_settings(
        OMNITENANT_CONFIG={"TENANT_MODEL": "testapp.Hospital", "DOMAIN_MODEL": "testapp.Hospital"}
    ):
        from django_omnitenant.backends import cache_backend, database_backend, schema_backend
        from django_omnitenant.models import BaseTenant
        from django_omnitenant.tenant_context import TenantContext as OmniContext

    monkeypatch.setattr(Tenant, "isolation", BaseTenant.IsolationType.SCHEMA, raising=False)
    for cls in (
        schema_backend.SchemaTenantBackend,
        database_backend.DatabaseTenantBackend,
        cache_backend.CacheTenantBackend,
    ):
        monkeypatch.setattr(cls, "activate", lambda self: None)
        monkeypatch.setattr(cls, "deactivate", lambda self: None)
    conf, ns = recipe_settings(blocks, "omnitenant")
    OmniContext.clear_all()
    with override_settings(**conf):
        ns["Tenant"] = Tenant
        recipes.run(blocks["omnitenant"], ns, "omnitenant")
    OmniContext.clear_all()


@pytest.mark.redis
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_celery_recipe(blocks):
    from celery import Celery
    from celery.contrib.testing.worker import start_worker
    from django.apps import apps

    from fragmented_keys_django.tenancy import celery as fk_celery

    run = uuid.uuid4().hex[:8]
    app = Celery(
        f"fkd-doc-{run}",
        broker=redis_url("celery"),
        backend=redis_url("celery"),
        set_as_current=False,
    )
    app.conf.update(
        task_default_queue=f"fkd-doc-{run}", result_expires=60, worker_hijack_root_logger=False
    )
    conf, ns = recipe_settings(blocks, "celery")
    ns["app"] = app
    recipes.run(blocks["celery tasks"], ns, "celery tasks")
    try:
        with override_settings(**conf):
            fk_celery.uninstall()
            apps.get_app_config(
                "fragmented_keys_django"
            ).ready()  # FRAGMENTED_KEYS_CELERY installs it
            assert fk_celery.installed()
            with start_worker(
                app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10
            ):
                recipes.run(blocks["celery"], ns, "celery")
    finally:
        fk_celery.uninstall()
        r = redis.Redis.from_url(redis_url("celery"))
        for k in r.scan_iter(f"*fkd-doc-{run}*"):
            r.delete(k)
        r.close()


def test_middleware_recipe(blocks):
    module = types.ModuleType(f"fkd_recipe_urls_{uuid.uuid4().hex[:6]}")
    sys.modules[module.__name__] = module
    conf, ns = recipe_settings(blocks, "middleware")
    caches["default"].clear()
    try:
        with override_settings(ROOT_URLCONF=module.__name__, **conf):
            recipes.run(blocks["middleware urls"], module.__dict__, "middleware urls")
            recipes.run(blocks["middleware"], ns, "middleware")
            assert TenantContext.get_tenant_id() is None  # nothing leaked out of the requests
    finally:
        del sys.modules[module.__name__]
        clear_url_caches()
