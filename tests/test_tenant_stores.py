"""Tenant-bound stores on real Redis.

Shared store: DB 5; tenants' own stores: DB 8; config hash and pub/sub: DB 6.
Every key carries a per-test KEY_PREFIX, and only those keys are inspected and
deleted.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.core.cache import caches
from django.db import connection, models
from django.test import override_settings

from fragmented_keys_django import ModelTagManager, TenantContext
from fragmented_keys_django.exceptions import ConfigurationError
from fragmented_keys_django.tenancy import stores as stores_mod
from fragmented_keys_django.tenancy.stores import (
    notify_tenant_config_changed,
    resolve_tenant_config,
)
from tests.testapp.models import Hospital

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
SHARED_DB, OWN_DB, CONFIG_DB = 5, 8, 6
ROOT = Path(__file__).resolve().parent.parent


class TenantCacheConfig(models.Model):
    """A django-omnitenant style tenant row: ``config["cache_config"]``."""

    tenant_id = models.CharField(max_length=64, unique=True)
    config = models.JSONField(default=dict)

    class Meta:
        app_label = "testapp"


# -- a callable config source --------------------------------------------------------

CONFIGS: dict[str, dict] = {}
CALLS: list[str] = []


def configs(tenant_id: str):
    CALLS.append(tenant_id)
    return CONFIGS.get(tenant_id)


configs.tenants = lambda: list(CONFIGS)  # type: ignore[attr-defined]


def shared_store(prefix: str, **extra) -> dict:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"{REDIS_URL}/{SHARED_DB}",
        "KEY_PREFIX": prefix,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        **extra,
    }


def caches_conf(prefix: str, tenant_stores, **options) -> dict:
    return {
        "default": shared_store(prefix),
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "ts",
            "OPTIONS": {"TENANT_STORES": tenant_stores, **options},
        },
    }


def own(**extra) -> dict:
    return {"LOCATION": f"{REDIS_URL}/{OWN_DB}", **extra}


def keys_in(db: int, prefix: str) -> set[bytes]:
    r = redis.Redis.from_url(f"{REDIS_URL}/{db}")
    try:
        return set(r.scan_iter(f"{prefix}:*"))
    finally:
        r.close()


def drop_keys(prefix: str) -> None:
    for db in (SHARED_DB, OWN_DB):
        r = redis.Redis.from_url(f"{REDIS_URL}/{db}")
        found = list(r.scan_iter(f"{prefix}*"))
        if found:
            r.delete(*found)
        r.close()


@pytest.fixture
def prefix():
    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    CONFIGS.clear()
    CALLS.clear()
    with override_settings(CACHES=caches_conf(p, f"{__name__}.configs")):
        yield p
    drop_keys(p)
    CONFIGS.clear()


@pytest.fixture
def frag(prefix):
    backend = caches["fragmented"]
    yield backend
    backend.tenant_stores.forget()


# -- where a tenant's data lives ------------------------------------------------------


def test_tenant_entries_and_versions_live_in_its_own_db(prefix, frag):
    CONFIGS["big"] = own()
    for tenant in ("big", "acme"):
        with TenantContext.use_tenant(tenant):
            frag.set_with_tags("report", f"r-{tenant}", [("Invoice", "1")])
            frag.set("plain", tenant)
    big_own = keys_in(OWN_DB, prefix)
    shared = keys_in(SHARED_DB, prefix)
    # big: entry for "report", entry for "plain", namespace version, tag version
    assert len(big_own) == 4
    (vkey,) = frag.tag_version_keys([("Invoice", "1")], tenant="big")
    (akey,) = frag.tag_version_keys([("Invoice", "1")], tenant="acme")
    assert f"{prefix}:1:{vkey}".encode() in big_own
    assert f"{prefix}:1:{akey}".encode() in shared
    assert not (big_own & shared)
    assert len(shared) == 4  # acme's, on the shared store
    # a bump in big writes to big's DB only
    before_shared = {k: redis.Redis.from_url(f"{REDIS_URL}/{SHARED_DB}").get(k) for k in shared}
    with TenantContext.use_tenant("big"):
        frag.invalidate_tags([("Invoice", "1")])
        assert frag.get_with_tags("report", [("Invoice", "1")]) is None
    after_shared = {k: redis.Redis.from_url(f"{REDIS_URL}/{SHARED_DB}").get(k) for k in shared}
    assert before_shared == after_shared
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("report", [("Invoice", "1")]) == "r-acme"
    assert frag.store_for("big") is not frag.store
    assert frag.store_for("acme") is frag.store
    assert frag.store_for(None) is frag.store


def test_config_merge_precedence_and_case_insensitive_keys(prefix, frag):
    template = {
        **shared_store(prefix, TIMEOUT=123),
        "OPTIONS": {"SOCKET_TIMEOUT": 2, "SOCKET_CONNECT_TIMEOUT": 2},
    }
    alias, merged = resolve_tenant_config(
        "big",
        {"LoCaTiOn": f"{REDIS_URL}/{OWN_DB}", "timeout": 45, "Options": {"SOCKET_TIMEOUT": 3}},
        template,
    )
    assert alias == "big"  # ALIAS defaults to the tenant id
    assert merged["LOCATION"] == f"{REDIS_URL}/{OWN_DB}"  # tenant
    assert merged["TIMEOUT"] == 45  # tenant over template
    assert merged["KEY_PREFIX"] == prefix  # template
    assert merged["BACKEND"] == "django_redis.cache.RedisCache"  # template
    assert merged["OPTIONS"] == {
        "SOCKET_TIMEOUT": 3,
        "SOCKET_CONNECT_TIMEOUT": 2,
    }  # merged key by key
    assert resolve_tenant_config("big", {"alias": "big_cache"}, template)[0] == "big_cache"
    with pytest.raises(ConfigurationError, match="unknown key"):
        resolve_tenant_config("big", {"LOCATON": "x"}, template)

    # the built stores: tenant > template > Django's defaults
    CONFIGS["t1"] = {"location": f"{REDIS_URL}/{OWN_DB}", "Timeout": 45}
    CONFIGS["t2"] = {"Location": f"{REDIS_URL}/{OWN_DB}", "ALIAS": "t2_cache"}
    CONFIGS["t3"] = {"backend": "django.core.cache.backends.locmem.LocMemCache", "location": prefix}
    s1, s2, s3 = frag.store_for("t1"), frag.store_for("t2"), frag.store_for("t3")
    assert s1.default_timeout == 45
    assert s2.default_timeout == 300  # neither tenant nor template: Django's default
    assert s1.key_prefix == s2.key_prefix == prefix
    assert type(s3).__name__ == "LocMemCache"
    ts = frag.tenant_stores
    assert (ts.store_alias("t1"), ts.store_alias("t2"), ts.store_alias("acme")) == (
        "t1",
        "t2_cache",
        "default",
    )


def test_fragmented_backend_as_tenant_store_is_rejected(prefix, frag):
    CONFIGS["bad"] = {"BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend"}
    with pytest.raises(ConfigurationError, match="plain store BACKEND"):
        frag.store_for("bad")


def test_store_built_once_and_shared_by_threads(prefix, frag):
    CONFIGS["big"] = own()
    barrier = threading.Barrier(8)
    got: list = []

    def worker():
        barrier.wait()
        got.append(frag.store_for("big"))
        with TenantContext.use_tenant("big"):
            frag.set("k", 1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8
    assert all(s is got[0] for s in got)
    assert CALLS.count("big") == 1  # built once per process
    # later uses (any thread) reuse it: no rebuild per request
    assert caches["fragmented"].store_for("big") is got[0]
    assert CALLS.count("big") == 1


def test_removed_tenant_store_is_closed_and_dropped(prefix, frag):
    CONFIGS["big"] = own()
    old = frag.store_for("big")
    closed = []
    old.close = lambda **kw: closed.append(True)  # spy on this instance only
    del CONFIGS["big"]
    notify_tenant_config_changed("big")
    assert closed == [True]
    assert frag.store_for("big") is frag.store  # back on the shared store
    with TenantContext.use_tenant("big"):
        frag.set("after", 1)
    assert keys_in(OWN_DB, prefix) == set()
    # changing a config rebuilds a new store
    CONFIGS["big"] = own(ALIAS="big2")
    notify_tenant_config_changed("big")
    new = frag.store_for("big")
    assert new is not old
    assert frag.tenant_stores.store_alias("big") == "big2"


def test_removed_tenant_connections_are_closed(prefix):
    name = f"fkd-ts-conn-{uuid.uuid4().hex[:6]}"
    stores_mod.reset_registry()  # "big" may hold a store built by an earlier test
    # django-redis shares one pool per URL process-wide: a URL of our own gets a
    # pool (and connections) of our own, named so CLIENT LIST can count them.
    CONFIGS["big"] = own(LOCATION=f"{REDIS_URL}/{OWN_DB}?client_name={name}")
    frag = caches["fragmented"]
    with TenantContext.use_tenant("big"):
        frag.set("k", 1)
    admin = redis.Redis.from_url(f"{REDIS_URL}/{CONFIG_DB}")

    def count():
        return sum(1 for c in admin.client_list() if c.get("name") == name)

    assert count() >= 1
    del CONFIGS["big"]
    notify_tenant_config_changed("big")
    deadline = time.monotonic() + 1
    while count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count() == 0


@pytest.mark.django_db
def test_model_save_bumps_in_the_tenants_own_store(
    prefix, frag, django_capture_on_commit_callbacks
):
    CONFIGS["big"] = own()
    ModelTagManager.register_model(Hospital)
    for tenant in ("big", "acme"):
        with TenantContext.use_tenant(tenant):
            frag.set_with_tags("hospitals", f"list-{tenant}", [("Hospital", "")])
    (vkey,) = frag.tag_version_keys([("Hospital", "")], tenant="big")
    own_before = redis.Redis.from_url(f"{REDIS_URL}/{OWN_DB}").get(f"{prefix}:1:{vkey}")
    shared_before = {
        k: redis.Redis.from_url(f"{REDIS_URL}/{SHARED_DB}").get(k)
        for k in keys_in(SHARED_DB, prefix)
    }
    with django_capture_on_commit_callbacks(execute=True), TenantContext.use_tenant("big"):
        Hospital.objects.create(name="St Big")
    own_after = redis.Redis.from_url(f"{REDIS_URL}/{OWN_DB}").get(f"{prefix}:1:{vkey}")
    assert own_after is not None
    assert own_after != own_before  # bumped in big's own DB
    shared_after = {
        k: redis.Redis.from_url(f"{REDIS_URL}/{SHARED_DB}").get(k)
        for k in keys_in(SHARED_DB, prefix)
    }
    assert shared_after == shared_before  # nothing written to the shared store
    with TenantContext.use_tenant("big"):
        assert frag.get_with_tags("hospitals", [("Hospital", "")]) is None
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("hospitals", [("Hospital", "")]) == "list-acme"


@pytest.fixture
def config_table(django_db_blocker):
    with django_db_blocker.unblock():
        if TenantCacheConfig._meta.db_table not in connection.introspection.table_names():
            with connection.schema_editor() as editor:
                editor.create_model(TenantCacheConfig)
    yield TenantCacheConfig


@pytest.mark.django_db(transaction=True)
def test_model_source(config_table):
    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    spec = {
        "MODEL": "testapp.TenantCacheConfig",
        "ID_FIELD": "tenant_id",
        "CONFIG_FIELD": "config",
        "KEY": "cache_config",
    }
    try:
        with override_settings(CACHES=caches_conf(p, spec)):
            frag = caches["fragmented"]
            ts = frag.tenant_stores
            row = config_table.objects.create(
                tenant_id="m1",
                config={"cache_config": {"LOCATION": f"{REDIS_URL}/{OWN_DB}", "ALIAS": "m1_cache"}},
            )
            config_table.objects.create(tenant_id="m2", config={})
            assert ts.store_alias("m1") == "m1_cache"
            assert ts.store_alias("m2") == "default"
            assert sorted(ts.tenants()) == ["m1", "m2"]
            with TenantContext.use_tenant("m1"):
                frag.set("k", "v")
            assert len(keys_in(OWN_DB, p)) == 2
            # saving the row notifies: the store is dropped at once, no explicit call
            row.config = {}
            row.save()
            assert ts.store_alias("m1") == "default"
            row.config = {"cache_config": {"LOCATION": f"{REDIS_URL}/{OWN_DB}"}}
            row.save()
            assert ts.store_alias("m1") == "m1"
            row.delete()
            assert ts.store_alias("m1") == "default"
            ts.forget()
    finally:
        drop_keys(p)


# -- reactive configuration across two real processes -----------------------------------


class Probe:
    """Process 2: prints the store alias of a tenant every 50 ms."""

    def __init__(self, caches_conf: dict, cfg_hash: str, tenant: str) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "FKD_CACHES": json.dumps(caches_conf),
            "FKD_CFG_HASH": cfg_hash,
            "FKD_TENANT": tenant,
            "FKD_PROBE_SECONDS": "20",
            "PYTHONPATH": str(ROOT),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.tenant_config_probe"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t, alias = line.split()
            self.lines.put((float(t), alias))

    def wait_for(self, alias: str, timeout: float) -> float:
        """Return the (monotonic) time process 2 first reported *alias*."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"process 2 never reported {alias!r}; stderr: {self.stderr()}")
            try:
                t, seen = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if seen == alias:
                return t

    def stderr(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.stderr.read()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _subscribers(channel: str) -> int:
    r = redis.Redis.from_url(f"{REDIS_URL}/{CONFIG_DB}")
    try:
        return dict(r.pubsub_numsub(channel)).get(channel.encode(), 0)
    finally:
        r.close()


@pytest.mark.parametrize("mode", ["pubsub", "recheck"])
def test_config_change_reaches_another_process_within_a_second(mode, monkeypatch):
    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    cfg_hash = f"fkd-test:{p}:configs"
    tenant = f"x-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("FKD_CFG_HASH", cfg_hash)
    options = (
        {"TENANT_CONFIG_URL": f"{REDIS_URL}/{CONFIG_DB}", "TENANT_CONFIG_RECHECK": 60}
        if mode == "pubsub"
        else {"TENANT_CONFIG_RECHECK": 0.3}
    )
    conf = caches_conf(p, "tests.tenant_config_probe.redis_config", **options)
    cfg = redis.Redis.from_url(f"{REDIS_URL}/{CONFIG_DB}")
    cfg.hset(cfg_hash, tenant, json.dumps(own(ALIAS="first")))
    probe = None
    try:
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]
            assert frag.tenant_stores.store_alias(tenant) == "first"  # process 1 is registered too
            if mode == "pubsub":
                assert stores_mod._listener.ready[options["TENANT_CONFIG_URL"]].wait(5)
            baseline = _subscribers(stores_mod.DEFAULT_CHANNEL)
            probe = Probe(conf, cfg_hash, tenant)
            probe.wait_for("first", timeout=30)
            if mode == "pubsub":
                deadline = time.monotonic() + 10
                while _subscribers(stores_mod.DEFAULT_CHANNEL) <= baseline:
                    assert time.monotonic() < deadline, "process 2 never subscribed"
                    time.sleep(0.05)
            # process 1 changes the tenant's config and notifies
            cfg.hset(cfg_hash, tenant, json.dumps(own(ALIAS="second")))
            t0 = time.monotonic()
            notify_tenant_config_changed(tenant)
            assert frag.tenant_stores.store_alias(tenant) == "second"  # at once here
            switched = probe.wait_for("second", timeout=5)
            assert switched - t0 < 1.0, f"process 2 switched after {switched - t0:.2f}s"
            # removal: back to the shared store
            cfg.hdel(cfg_hash, tenant)
            t1 = time.monotonic()
            notify_tenant_config_changed(tenant)
            back = probe.wait_for("default", timeout=5)
            assert back - t1 < 1.0, f"process 2 dropped the store after {back - t1:.2f}s"
            frag.tenant_stores.forget()
    finally:
        if probe is not None:
            probe.stop()
        cfg.delete(cfg_hash)
        cfg.close()
        drop_keys(p)


def test_notify_from_a_process_that_never_used_the_alias(prefix):
    from fragmented_keys_django.tenancy.stores import CONFIG_VERSION_KEY

    stores_mod.reset_registry()
    notify_tenant_config_changed("big")
    assert caches["default"].get(CONFIG_VERSION_KEY) is not None
