"""Which tenant is current when django-tenants' schema and our context disagree.

"No tenant" from our side (``use_tenant(None)``, a Celery task enqueued
outside any tenant: header ``fkd_tenant=None``) names no tenant, so the schema
the code runs in decides; an explicit tenant still wins. A task that writes
rows in a tenant schema must bump that tenant's tags, or its entries stay stale.

The Celery worker is real (a worker thread, Redis broker DB 7), its tasks use
their own database connection, as in production.
"""

import uuid

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.test import override_settings
from django_tenants.utils import schema_context

from fragmented_keys_django import ModelTagManager, TenantContext
from fragmented_keys_django.exceptions import TenantRequired
from fragmented_keys_django.tenancy import celery as fk_celery
from fragmented_keys_django.tenancy.context import current_tenant_id
from tests.redis_dbs import redis_url
from tests.tenants_app.models import Item

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db]

RUN = uuid.uuid4().hex[:8]
app = Celery(
    f"fkd-dt-{RUN}",
    broker=redis_url("celery"),
    backend=redis_url("celery"),
    set_as_current=False,
)
app.conf.update(
    task_default_queue=f"fkd-dt-{RUN}",
    result_expires=60,
    broker_connection_retry_on_startup=False,
    worker_hijack_root_logger=False,
)


@app.task(name="fkd.dt.add_item")
def add_item(schema: str, name: str) -> str | None:
    """A beat-style job: enqueued outside any tenant, it writes a row in *schema*."""
    try:
        with schema_context(schema):
            Item.objects.create(name=name)  # registered: bumps after its (autocommit) commit
            return current_tenant_id()
    finally:
        connection.close()  # the worker thread's own connection


@app.task(name="fkd.dt.drop_items")
def drop_items(schema: str) -> None:
    try:
        with schema_context(schema), TenantContext.use_tenant(schema):
            Item.objects.all().delete()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def worker():
    fk_celery.install()
    try:
        with start_worker(
            app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10
        ):
            yield app
    finally:
        fk_celery.uninstall()
        import redis

        r = redis.Redis.from_url(redis_url("celery"))
        for key in r.scan_iter(f"*fkd-dt-{RUN}*"):
            r.delete(key)
        r.close()


@pytest.fixture
def registered():
    ModelTagManager.register_model(Item)
    yield
    ModelTagManager.unregister_model(Item)


@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_a_task_enqueued_outside_any_tenant_bumps_the_schema_it_writes_in(
    tenants, worker, registered
):
    frag = caches["fragmented"]
    with schema_context("acme"):
        frag.set_with_tags("items", "before the job", [("Item", "")])
    assert current_tenant_id() is None  # enqueued from the public schema: fkd_tenant=None
    try:
        assert add_item.delay("acme", "from the job").get(timeout=20) == "acme"
        with schema_context("acme"):
            assert frag.get_with_tags("items", [("Item", "")]) is None
    finally:
        drop_items.delay("acme").get(timeout=20)


def test_use_tenant_none_never_hides_the_schema(
    tenants, registered, django_capture_on_commit_callbacks
):
    frag = caches["fragmented"]
    with schema_context("acme"):
        frag.set_with_tags("items", "before the save", [("Item", "")])
        with TenantContext.use_tenant(None), django_capture_on_commit_callbacks(execute=True):
            assert current_tenant_id() == "acme"
            Item.objects.create(name="saved inside use_tenant(None)")
        assert frag.get_with_tags("items", [("Item", "")]) is None
        with TenantContext.use_tenant("globex"):  # an explicit tenant still wins
            assert current_tenant_id() == "globex"


def test_no_tenant_anywhere_is_still_the_public_namespace_or_refused(tenants):
    frag = caches["fragmented"]
    with schema_context("public"), TenantContext.use_tenant(None):
        assert current_tenant_id() is None
        frag.set("setting", "public")
    assert frag.get("setting") == "public"
    conf = {
        **settings.CACHES,
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "dt-required",
            "OPTIONS": {"TENANT_REQUIRED": True},
        },
    }
    with override_settings(CACHES=conf):
        strict = caches["fragmented"]
        with TenantContext.use_tenant(None), pytest.raises(TenantRequired):
            strict.get("setting")
        with schema_context("acme"), TenantContext.use_tenant(None):
            assert strict.get("setting") is None  # acme is current: no error


@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_a_task_enqueued_in_one_tenant_bumps_the_schema_it_writes_in(tenants, worker, registered):
    """django-tenants' pattern: a job started from one tenant's request writes another schema."""
    frag = caches["fragmented"]
    with schema_context("globex"):
        frag.set_with_tags("items", "before the job", [("Item", "")])
    try:
        with schema_context("acme"):
            assert current_tenant_id() == "acme"  # the message carries fkd_tenant="acme"
            result = add_item.delay("globex", "copied from acme")
        assert result.get(timeout=20) == "globex", "the task wrote globex's rows as acme"
        with schema_context("globex"):
            assert frag.get_with_tags("items", [("Item", "")]) is None
    finally:
        drop_items.delay("globex").get(timeout=20)
