"""Review 2 (issue 14): tenant store moves that lose an invalidation or raise after a commit.

* S1: ``notify_tenant_config_changed()`` writes the config version in the shared
  store and, when that write fails, logs it and goes on ("never raised: other
  processes still recheck in time"). But the recheck compares that version: a
  process that never sees it change keeps the tenant on its old store for
  good. Its reads serve the old store's entries and its bumps go there, while
  the tenant's saves bump the new store: a save that returned is never seen
  by that process (not "at most ``TENANT_CONFIG_RECHECK`` seconds", T11). The
  failure here is a shared Redis refusing writes (``maxmemory`` reached) for
  the moment of the notification; a timeout, a failover or a restart that keeps
  its data do the same.
* S2: saving a ``MODEL`` source's tenant row whose cache config has a typo in
  ``BACKEND``, or a malformed ``LOCATION``, raises ``ImportError`` /
  ``ValueError`` from ``post_save`` after the row is committed (autocommit):
  the arrival bump (``TenantStores.arrive``) catches ``ConfigurationError``
  only, and the exception also skips the notification hook, so no other
  process learns of the change.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from django.core.cache import caches
from django.db import connection
from django.test import override_settings

from fragmented_keys_django import TenantContext
from fragmented_keys_django.tenancy.stores import notify_tenant_config_changed
from tests.race_support import RedisServer, settle_retries
from tests.redis_dbs import base_url
from tests.test_tenant_stores import (
    CONFIG_DB,
    Reader,
    TenantCacheConfig,
    caches_conf,
    drop_keys,
    own,
)

pytestmark = pytest.mark.redis


def _conf(shared: RedisServer, prefix: str) -> dict:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": shared.url,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "ts",
            "OPTIONS": {
                "TENANT_STORES": "tests.tenant_config_probe.redis_config",
                "TENANT_CONFIG_RECHECK": 0.3,
            },
        },
    }


def test_a_failed_config_version_write_never_strands_another_process_on_the_old_store(
    monkeypatch,
):
    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    cfg_hash, truth = f"fkd-test:{p}:configs", f"fkd-test:{p}:truth"
    tenant = f"x-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("FKD_CFG_HASH", cfg_hash)
    cfg = redis.Redis.from_url(f"{base_url()}/{CONFIG_DB}")
    cfg.set(truth, "v1")
    readers: list[Reader] = []
    with RedisServer() as shared:
        conf = _conf(shared, p)
        try:
            with override_settings(CACHES=conf):
                reader = Reader(conf, cfg_hash, truth)  # process 2, recheck every 0.3 s
                readers.append(reader)
                first = reader.read(tenant)
                assert (first["value"], first["alias"]) == ("v1", "default")  # shared store
                caches["fragmented"].store_for(tenant)
                cfg.hset(cfg_hash, tenant, json.dumps(own()))  # the tenant moves
                admin = shared.client()
                admin.config_set("maxmemory", 1)  # the shared store refuses writes a moment
                notify_tenant_config_changed(tenant)  # its config-version write fails
                admin.config_set("maxmemory", 0)
                admin.close()
                # The shared store takes writes again: the kept version write lands
                # (on the old code nothing was kept, so nothing is pending).
                assert settle_retries(15) == 0, "the config-version write never landed"
                cfg.set(truth, "v2")  # a save in the tenant ...
                with TenantContext.use_tenant(tenant):
                    caches["fragmented"].invalidate_tags([("Report", "")])  # ... returned
                returned = time.monotonic()
                reads = [reader.read(tenant)]
                deadline = time.monotonic() + 20  # a hang guard, not a measurement
                while reads[-1]["checked_at"] < returned:
                    assert time.monotonic() < deadline, reads[-3:]
                    time.sleep(0.05)
                    reads.append(reader.read(tenant))
                # T11: once process 2 has checked the config after the save, it is fresh.
                assert reads[-1]["value"] == "v2", reads[-1]
                caches["fragmented"].tenant_stores.forget()
        finally:
            for r in readers:
                r.stop()
            cfg.delete(cfg_hash, truth)
            cfg.close()
            drop_keys(p)


@pytest.fixture
def config_table(django_db_blocker):
    with django_db_blocker.unblock():
        if TenantCacheConfig._meta.db_table not in connection.introspection.table_names():
            with connection.schema_editor() as editor:
                editor.create_model(TenantCacheConfig)
    yield TenantCacheConfig


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "config",
    [
        {"BACKEND": "django_redis.cache.RedisCach"},  # a typo
        {"LOCATION": "127.0.0.1:6379"},  # no scheme
    ],
    ids=["backend-typo", "location-without-scheme"],
)
def test_a_tenant_row_with_a_bad_cache_config_never_raises_after_its_commit(config_table, config):
    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    spec = {"MODEL": "testapp.TenantCacheConfig", "ID_FIELD": "tenant_id"}
    try:
        with override_settings(CACHES=caches_conf(p, spec)):
            caches["fragmented"].tenant_stores.store_alias("warm")  # the source is in use
            try:
                config_table.objects.create(tenant_id="bad", config={"cache_config": config})
            except Exception:  # refused: then before the write, never after it
                assert not config_table.objects.filter(tenant_id="bad").exists()
            caches["fragmented"].tenant_stores.forget()
    finally:
        config_table.objects.filter(tenant_id="bad").delete()
        drop_keys(p)
