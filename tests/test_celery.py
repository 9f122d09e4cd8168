"""Celery: tasks run in the tenant that enqueued them, with a real worker on the Redis broker (DB 7)."""

from __future__ import annotations

import threading
import uuid

import pytest
from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import TenantContext
from fragmented_keys_django.tenancy import celery as fk_celery
from fragmented_keys_django.tenancy.context import _UNSET, _current, current_tenant_id
from tests.redis_dbs import redis_url

pytestmark = [
    pytest.mark.redis,
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

BROKER = redis_url("celery")
RUN = uuid.uuid4().hex[:8]

app = Celery(f"fkd-test-{RUN}", broker=BROKER, backend=BROKER, set_as_current=False)
app.conf.update(
    task_default_queue=f"fkd-test-{RUN}",
    result_expires=60,
    broker_connection_retry_on_startup=False,
    worker_hijack_root_logger=False,
    task_ignore_result=False,
)

# What the worker's context looked like after each task, recorded by a
# task_postrun receiver connected after ours (so it runs after the restore).
after_task: list[tuple[str, bool]] = []
after_lock = threading.Lock()


@app.task(name="fkd.whoami")
def whoami(key: str | None = None) -> dict:
    cache = caches["fragmented"]
    seen = None
    if key:
        seen = cache.get(key)  # what this tenant sees of a key set by the test
        cache.set(key + ":from-task", current_tenant_id())
    return {"tenant": current_tenant_id(), "seen": seen}


@app.task(name="fkd.boom")
def boom() -> None:
    raise RuntimeError(f"failed in {current_tenant_id()}")


def _record_after(sender=None, task_id=None, **kwargs):
    with after_lock:
        after_task.append((task_id, _current.get() is _UNSET))


@pytest.fixture(scope="module")
def worker():
    fk_celery.install()
    fk_celery.install()  # idempotent
    signals.task_postrun.connect(_record_after, weak=False, dispatch_uid="fkd-test-after")
    with (
        override_settings(
            CACHES={
                "default": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": BROKER,
                    "KEY_PREFIX": f"fkd-celery-{RUN}",
                },
                "fragmented": {
                    "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
                    "CACHE_NAME": "default",
                    "PREFIX": "c",
                },
            }
        ),
        start_worker(
            app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10
        ),
    ):
        yield app
    signals.task_postrun.disconnect(dispatch_uid="fkd-test-after")
    fk_celery.uninstall()
    import redis

    r = redis.Redis.from_url(BROKER)
    for pattern in (f"*fkd-celery-{RUN}*", f"*fkd-test-{RUN}*"):
        for k in r.scan_iter(pattern):
            r.delete(k)
    r.close()


def _run(sig, timeout=20):
    result = sig.apply_async()
    try:
        return result.get(timeout=timeout, propagate=False), result
    finally:
        result.forget()


def test_install_connects_receivers_once(worker):
    assert fk_celery.installed()
    receivers = [r for r in signals.task_prerun.receivers if "fragmented_keys_django" in str(r[0])]
    assert len(receivers) == 1


def test_task_runs_in_publishing_tenant(worker):
    cache = caches["fragmented"]
    with TenantContext.use_tenant("acme"):
        cache.set("k", "acme-value")
    with TenantContext.use_tenant("globex"):
        cache.set("k", "globex-value")

    with TenantContext.use_tenant("acme"):
        out, _ = _run(whoami.s("k"))
    assert out == {"tenant": "acme", "seen": "acme-value"}
    with TenantContext.use_tenant("globex"):
        out, _ = _run(whoami.s("k"))
    assert out == {"tenant": "globex", "seen": "globex-value"}
    # writes from the task landed in the task's tenant
    with TenantContext.use_tenant("acme"):
        assert cache.get("k:from-task") == "acme"
    assert cache.get("k:from-task") is None  # not in public


def test_task_enqueued_outside_runs_in_public(worker):
    caches["fragmented"].set("p", "public-value")
    out, _ = _run(whoami.s("p"))
    assert out == {"tenant": None, "seen": "public-value"}
    with TenantContext.use_tenant(None):  # explicit public namespace
        out, _ = _run(whoami.s())
    assert out["tenant"] is None


def test_explicit_header_wins(worker):
    with TenantContext.use_tenant("acme"):
        out, _ = _run(whoami.signature(options={"headers": {fk_celery.HEADER: "initech"}}))
    assert out["tenant"] == "initech"


def test_worker_context_clean_after_each_task(worker):
    after_task.clear()
    with TenantContext.use_tenant("acme"):
        out, r1 = _run(whoami.s())
    assert out["tenant"] == "acme"
    with TenantContext.use_tenant("globex"):
        out, r2 = _run(boom.s())
    assert isinstance(out, RuntimeError)
    assert "failed in globex" in str(out)
    # a message without our header (published with the publish receiver off)
    # sees nothing left over from the previous tasks. (Only the publish side is
    # disconnected: the worker may still be sending task_postrun for r2.)
    signals.before_task_publish.disconnect(
        dispatch_uid="fragmented_keys_django.tenancy.celery:publish"
    )
    try:
        with TenantContext.use_tenant("acme"):
            out, r3 = _run(whoami.s())
    finally:
        fk_celery.install()
    assert out["tenant"] is None
    done = dict(after_task)
    assert done[r1.id] is True
    assert done[r2.id] is True  # restored after a failure too
    assert done[r3.id] is True


def test_eager_apply_restores_the_callers_tenant():
    fk_celery.install()
    try:
        with TenantContext.use_tenant("acme"):
            res = whoami.apply(headers={fk_celery.HEADER: "globex"})
            assert res.get()["tenant"] == "globex"
            assert current_tenant_id() == "acme"
            assert whoami.apply().get()["tenant"] == "acme"  # no header: caller's context
        assert current_tenant_id() is None
    finally:
        fk_celery.uninstall()


def test_auto_install_from_settings(settings):
    from django.apps import apps

    fk_celery.uninstall()
    settings.FRAGMENTED_KEYS_CELERY = True
    apps.get_app_config("fragmented_keys_django").ready()
    assert fk_celery.installed()
    fk_celery.uninstall()
    settings.FRAGMENTED_KEYS_CELERY = False
    apps.get_app_config("fragmented_keys_django").ready()
    assert not fk_celery.installed()
