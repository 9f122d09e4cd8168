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

from fragmented_keys_django import ModelTagManager, TenantContext, metrics
from fragmented_keys_django.exceptions import ConfigurationError
from fragmented_keys_django.tenancy import stores as stores_mod
from fragmented_keys_django.tenancy.stores import (
    notify_tenant_config_changed,
    resolve_tenant_config,
)
from tests.redis_dbs import base_url, redis_db
from tests.testapp.models import Hospital

pytestmark = pytest.mark.redis

REDIS_URL = base_url()
SHARED_DB, OWN_DB, CONFIG_DB = (redis_db(r) for r in ("tenants_shared", "tenant", "config"))
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
    for db in (SHARED_DB, OWN_DB, OWN2_DB):
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


def test_a_tenant_backend_that_cannot_be_imported_is_named_with_its_tenant(prefix, frag):
    """A typo in one tenant row's BACKEND says which tenant and which path, not a bare ImportError."""
    CONFIGS["typo"] = {"BACKEND": "django_redis.cache.RedisCach"}
    with pytest.raises(ConfigurationError, match=r"Tenant 'typo'.*RedisCach.*cannot be imported"):
        frag.store_for("typo")


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


def test_removed_tenant_store_is_dropped(prefix, frag):
    CONFIGS["big"] = own()
    old = frag.store_for("big")
    del CONFIGS["big"]
    notify_tenant_config_changed("big")
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


def spawn_probe(caches_conf: dict, cfg_hash: str, **env: str) -> subprocess.Popen:
    """Start tests/tenant_config_probe.py as another process, on *caches_conf* and *cfg_hash*."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tenant_config_probe"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "FKD_CACHES": json.dumps(caches_conf),
            "FKD_CFG_HASH": cfg_hash,
            "PYTHONPATH": str(ROOT),
            **env,
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Probe:
    """Process 2: prints the store alias of a tenant every 50 ms."""

    def __init__(self, caches_conf: dict, cfg_hash: str, tenant: str) -> None:
        self.proc = spawn_probe(caches_conf, cfg_hash, FKD_TENANT=tenant, FKD_PROBE_SECONDS="20")
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


# -- a tenant that moves: never its old entries, in this process or another ------------------

OWN2_DB = redis_db("tenant2")  # a second tenant store, for moves between two tenant stores


def own2(**extra) -> dict:
    return {"LOCATION": f"{REDIS_URL}/{OWN2_DB}", **extra}


ROUTES = {  # where the tenant lives before and after its time away, and while away
    "shared>own>shared": (None, own),
    "own>own2>own": (own, own2),
}


def _place(tenant: str, config) -> None:
    if config is None:
        CONFIGS.pop(tenant, None)
    else:
        CONFIGS[tenant] = config()
    notify_tenant_config_changed(tenant)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("away", ["save", "delete", "clear", "invalidate_tags"])
def test_a_tenant_that_moves_back_never_gets_its_old_entries(prefix, frag, route, away):
    home, elsewhere = ROUTES[route]
    ModelTagManager.register_model(Hospital)
    try:
        _place("big", home)
        with TenantContext.use_tenant("acme"):  # a neighbour on the shared store
            frag.set("plain", "acme's")
        with TenantContext.use_tenant("big"):
            frag.set_with_tags("hospitals", "before the move", [("Hospital", "")])
            frag.set("plain", "before the move")
            assert frag.get_with_tags("hospitals", [("Hospital", "")]) == "before the move"
        _place("big", elsewhere)
        with TenantContext.use_tenant("big"):
            if away == "save":  # a registered model: the bump lands in the store it moved to
                Hospital.objects.create(name="St Away")
            elif away == "delete":
                frag.delete("plain")
                frag.delete_with_tags("hospitals", [("Hospital", "")])
            elif away == "clear":
                frag.clear()
            else:
                frag.invalidate_tags([("Hospital", "")])
        _place("big", home)
        with TenantContext.use_tenant("big"):
            assert frag.get_with_tags("hospitals", [("Hospital", "")]) is None
            if away in ("delete", "clear"):
                assert frag.get("plain") is None
        with TenantContext.use_tenant("acme"):
            assert frag.get("plain") == "acme's"  # other tenants keep their entries
    finally:
        ModelTagManager.unregister_model(Hospital)
        drop_keys_in(OWN2_DB, prefix)


def drop_keys_in(db: int, prefix: str) -> None:
    r = redis.Redis.from_url(f"{REDIS_URL}/{db}")
    found = list(r.scan_iter(f"{prefix}*"))
    if found:
        r.delete(*found)
    r.close()


def test_a_failed_arrival_bump_bypasses_the_tenant_until_it_lands(prefix, frag):
    from fragmented_keys_django import invalidation

    failures = metrics.snapshot().get(("fragmented", "tenant_move"), 0)
    with TenantContext.use_tenant("big"):
        frag.set("plain", "before the move")
    frag.store_for("big")  # placed on the shared store, here
    CONFIGS["big"] = own(LOCATION="redis://127.0.0.1:1/0", OPTIONS={"SOCKET_CONNECT_TIMEOUT": 0.2})
    frag.tenant_stores.forget("big")  # as a notification from another process does
    with TenantContext.use_tenant("big"):
        assert frag.get("plain") is None  # the arrival bump failed: nothing is served
    assert invalidation.is_suspect("fragmented", "big")
    assert metrics.snapshot().get(("fragmented", "tenant_move"), 0) > failures
    # the store comes back (here: the config is fixed): the retried bump lands
    CONFIGS["big"] = own()
    frag.tenant_stores.forget("big")
    assert invalidation._retrier.flush()
    assert not invalidation.is_suspect("fragmented", "big")


class Reader:
    """A second real process reading one tenant's report on request (tests/tenant_config_probe.py)."""

    def __init__(self, caches_conf: dict, cfg_hash: str, truth: str) -> None:
        self.proc = spawn_probe(caches_conf, cfg_hash, FKD_TRUTH=truth, FKD_PROBE_MODE="serve")
        assert self._answer() == {"ready": True}

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise AssertionError(f"the reader process died: {self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def read(self, tenant: str) -> dict:
        self.proc.stdin.write(f"read {tenant}\n")
        self.proc.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


MODES = {
    "pubsub": {"TENANT_CONFIG_URL": f"{REDIS_URL}/{CONFIG_DB}", "TENANT_CONFIG_RECHECK": 60},
    "recheck": {"TENANT_CONFIG_RECHECK": 0.3},
}


@pytest.fixture
def two_processes(request):
    """Process 1 (this one) and a reader process, on one config hash and one "database" key.

    Yields ``(mode, tenant, start_reader, move, write)``: ``start_reader()``
    starts a reader process (subscribed, in pub/sub mode); ``move(config or
    None)`` changes the tenant's config and notifies; ``write(value)`` changes
    the data and bumps ``("Report", "")`` in the tenant, as a registered
    model's save does after its commit.
    """
    mode = request.param
    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    cfg_hash, truth = f"fkd-test:{p}:configs", f"fkd-test:{p}:truth"
    tenant = f"x-{uuid.uuid4().hex[:6]}"
    conf = caches_conf(p, "tests.tenant_config_probe.redis_config", **MODES[mode])
    cfg = redis.Redis.from_url(f"{REDIS_URL}/{CONFIG_DB}")
    readers: list[Reader] = []
    old = os.environ.get("FKD_CFG_HASH")
    os.environ["FKD_CFG_HASH"] = cfg_hash

    def start_reader() -> Reader:
        before = _subscribers(stores_mod.DEFAULT_CHANNEL)
        reader = Reader(conf, cfg_hash, truth)
        readers.append(reader)
        reader.read(tenant)  # uses the alias: subscribes in pub/sub mode
        deadline = time.monotonic() + 10
        while mode == "pubsub" and _subscribers(stores_mod.DEFAULT_CHANNEL) <= before:
            assert time.monotonic() < deadline, "the reader never subscribed"
            time.sleep(0.02)
        return reader

    def move(config) -> None:
        if config is None:
            cfg.hdel(cfg_hash, tenant)
        else:
            cfg.hset(cfg_hash, tenant, json.dumps(config))
        notify_tenant_config_changed(tenant)

    def write(value: str) -> None:
        cfg.set(truth, value)
        with TenantContext.use_tenant(tenant):
            caches["fragmented"].invalidate_tags([("Report", "")])

    try:
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]
            if mode == "pubsub":
                frag.store_for(tenant)
                assert stores_mod._listener.ready[MODES[mode]["TENANT_CONFIG_URL"]].wait(5)
            yield mode, tenant, start_reader, move, write
            frag.tenant_stores.forget()
    finally:
        for reader in readers:
            reader.stop()
        if old is None:
            os.environ.pop("FKD_CFG_HASH", None)
        else:
            os.environ["FKD_CFG_HASH"] = old
        cfg.delete(cfg_hash, truth)
        cfg.close()
        drop_keys(p)


@pytest.mark.parametrize("two_processes", ["pubsub", "recheck"], indirect=True)
@pytest.mark.parametrize("route", list(ROUTES))
def test_a_tenant_that_moves_back_is_fresh_in_other_processes(two_processes, route):
    _mode, tenant, start_reader, move, write = two_processes
    home, elsewhere = ROUTES[route]
    move(home and home())
    write("v1")
    reader = start_reader()
    assert reader.read(tenant)["value"] == "v1"
    assert reader.read(tenant)["computed"] is False  # cached in its home store
    move(elsewhere())
    write("v2")  # the bump lands where the tenant is now
    move(home and home())
    # The reader process (whether or not it noticed the time away) and a process
    # started now never serve the entry cached before the move.
    assert reader.read(tenant)["value"] == "v2"
    assert start_reader().read(tenant)["value"] == "v2"


@pytest.mark.parametrize("two_processes", ["pubsub", "recheck"], indirect=True)
def test_across_a_switch_another_process_is_stale_at_most_until_it_rechecks(two_processes):
    """docs/guarantees.md T10: with pub/sub no read after the save is stale; without, the bound.

    A save in the tenant that returned after the switch bumps the new store.
    With pub/sub, ``notify_tenant_config_changed`` returned after the reader
    confirmed the switch: its next read is fresh. On the recheck path, the
    reader may serve the old store's entry, but only from a config-version
    check made before the switch; its first check after the switch ends it.
    """
    mode, tenant, start_reader, move, write = two_processes
    write("v1")
    reader = start_reader()
    assert reader.read(tenant)["value"] == "v1"
    move(own())
    switched = time.monotonic()  # the config version was bumped before this
    write("v2")
    reads = [reader.read(tenant)]
    if mode == "pubsub":
        assert reads[0]["value"] == "v2"
        return
    deadline = time.monotonic() + 30  # a hang guard, not a measurement
    while reads[-1]["checked_at"] < switched:
        assert time.monotonic() < deadline, f"the reader never rechecked: {reads[-3:]}"
        time.sleep(0.02)
        reads.append(reader.read(tenant))
    reads += [reader.read(tenant) for _ in range(3)]
    for read in reads:
        if read["value"] != "v2":
            assert read["checked_at"] < switched, read  # stale only before its recheck
    assert all(r["value"] == "v2" for r in reads if r["checked_at"] >= switched)
    assert reads[-1]["alias"] == tenant  # and it moved to the tenant's store


def test_a_save_in_a_process_that_has_not_seen_the_switch_is_not_lost(monkeypatch):
    """X4/T11 from the writer's side: a save that returned is never lost by a store switch.

    Process 2 (the writer) uses the tenant on the shared store and checks the
    config version rarely (recheck path, no pub/sub). This process moves the
    tenant to its own store and caches the report there. Process 2 then saves
    (the "database" changes, its bump returns) and exits. Neither this process,
    which notified the switch, nor a process started afterwards may serve the
    value that save replaced.
    """
    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    cfg_hash, truth = f"fkd-test:{p}:configs", f"fkd-test:{p}:truth"
    tenant = f"x-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("FKD_CFG_HASH", cfg_hash)
    source = "tests.tenant_config_probe.redis_config"
    here = caches_conf(p, source, TENANT_CONFIG_RECHECK=0.3)
    lagging = caches_conf(p, source, TENANT_CONFIG_RECHECK=3600)
    cfg = redis.Redis.from_url(f"{REDIS_URL}/{CONFIG_DB}")
    cfg.set(truth, "v1")
    procs: list[Reader] = []

    def report() -> str:
        with TenantContext.use_tenant(tenant):
            return caches["fragmented"].get_or_set_with_tags(
                "report", lambda: cfg.get(truth).decode(), [("Report", "")], timeout=60
            )

    try:
        with override_settings(CACHES=here):
            writer = Reader(lagging, cfg_hash, truth)
            procs.append(writer)
            first = writer.read(tenant)
            assert (first["value"], first["alias"]) == ("v1", "default")  # the shared store
            cfg.hset(cfg_hash, tenant, json.dumps(own()))
            notify_tenant_config_changed(tenant)
            assert report() == "v1"  # cached in the tenant's own store
            writer.proc.stdin.write(f"write {tenant} v2\n")
            writer.proc.stdin.flush()
            assert writer._answer() == {"written": "v2"}  # the save returned
            writer.stop()  # and its process is gone (a deploy, a short command)
            assert report() == "v2", "the notifying process serves what the save replaced"
            later = Reader(here, cfg_hash, truth)
            procs.append(later)
            assert later.read(tenant)["value"] == "v2", "so does a process started after it"
            caches["fragmented"].tenant_stores.forget()
    finally:
        for proc in procs:
            proc.stop()
        cfg.delete(cfg_hash, truth)
        cfg.close()
        drop_keys(p)


class _SourceDown(dict):
    """A config source that fails (its database or Redis is unreachable for a moment)."""

    def get(self, tenant_id, default=None):
        raise ConnectionError(f"config source unreachable (tenant {tenant_id})")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("atomic", [False, True], ids=["autocommit", "atomic"])
def test_a_bump_whose_tenant_store_cannot_be_looked_up_is_kept_until_it_lands(
    prefix, frag, monkeypatch, atomic
):
    from contextlib import nullcontext

    from django.db import transaction

    from fragmented_keys_django import invalidation

    ModelTagManager.register_model(Hospital)
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("hospitals", "before", [("Hospital", "")])
    frag.tenant_stores.forget("acme")  # as a notification does: looked up again on next use
    raised = None
    monkeypatch.setattr(sys.modules[__name__], "CONFIGS", _SourceDown())
    try:
        with TenantContext.use_tenant("acme"), transaction.atomic() if atomic else nullcontext():
            Hospital.objects.create(name="St New")
    except ConnectionError as exc:
        raised = exc
    finally:
        monkeypatch.setattr(sys.modules[__name__], "CONFIGS", {})  # the source answers again
    assert Hospital.objects.filter(name="St New").exists()  # the row is committed
    invalidation._retrier.flush()  # whatever was kept for retry lands now
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("hospitals", [("Hospital", "")]) is None, "the bump was lost"
    assert raised is None, f"raised after the row was committed: {raised!r}"


class NotMigratedTenantConfig(models.Model):
    """A MODEL source whose table is not there yet (its app migrates after the others)."""

    tenant_id = models.CharField(max_length=64, unique=True)
    config = models.JSONField(default=dict)

    class Meta:
        app_label = "testapp"


@pytest.mark.django_db(transaction=True)
def test_migrating_a_registered_table_before_the_tenant_table_exists():
    """``manage.py migrate`` on a fresh database: a registered model's table is altered first."""
    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    spec = {"MODEL": "testapp.NotMigratedTenantConfig"}
    field = models.IntegerField(null=True)
    field.set_attributes_from_name("review_extra")
    table = NotMigratedTenantConfig._meta.db_table
    if table in connection.introspection.table_names():  # made with the test database
        with connection.schema_editor() as editor:
            editor.delete_model(NotMigratedTenantConfig)
    try:
        with override_settings(CACHES=caches_conf(p, spec)):
            ModelTagManager.register_model(Hospital)
            try:
                with connection.schema_editor() as editor:  # what a migration's AddField runs
                    editor.add_field(Hospital, field)
                assert "review_extra" in {
                    c.name
                    for c in connection.introspection.get_table_description(
                        connection.cursor(), Hospital._meta.db_table
                    )
                }
            finally:
                ModelTagManager.unregister_model(Hospital)
                columns = {
                    c.name
                    for c in connection.introspection.get_table_description(
                        connection.cursor(), Hospital._meta.db_table
                    )
                }
                if "review_extra" in columns:
                    with connection.schema_editor() as editor:
                        editor.remove_field(Hospital, field)
            caches["fragmented"].tenant_stores.source.close()
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(NotMigratedTenantConfig)
        drop_keys(p)


# -- a dropped store is retired without breaking calls or tenants still using it -----------


def test_switching_stores_never_breaks_calls_in_flight_or_tenants_sharing_a_pool(prefix, frag):
    """300 switches of one tenant's store while 4 threads read; another tenant shares a pool.

    django-redis keeps one connection pool per URL for the whole process:
    "big"'s first store and "neighbour"'s store (same URL, only TIMEOUT
    differs) share one. No read may raise or fail, the neighbour's entry stays
    readable, and the bump made right after each switch lands.
    """
    from fragmented_keys_django.invalidation import pending_retries

    url = f"{REDIS_URL}/{OWN_DB}"
    first = own(LOCATION=f"{url}?client_name=fkd-switch-a", TIMEOUT=60)
    second = own(LOCATION=f"{url}?client_name=fkd-switch-b")
    CONFIGS["neighbour"] = own(LOCATION=f"{url}?client_name=fkd-switch-a", TIMEOUT=30)
    CONFIGS["big"] = first
    with TenantContext.use_tenant("neighbour"):
        frag.set("k", "neighbour's")
    errors_before = sum(n for (alias, _), n in metrics.snapshot().items() if alias == "fragmented")
    stop = threading.Event()
    raised: list[BaseException] = []
    misses: list[object] = []

    def reader(tenant: str) -> None:
        with TenantContext.use_tenant(tenant):
            while not stop.is_set():
                try:
                    got = frag.get("k")
                except BaseException as exc:  # what the test counts: any error reaching the caller
                    raised.append(exc)
                    continue
                if tenant == "neighbour" and got != "neighbour's":
                    misses.append(got)

    tenants = ("big", "big", "neighbour", "neighbour")
    threads = [threading.Thread(target=reader, args=(t,)) for t in tenants]
    for t in threads:
        t.start()
    try:
        for i in range(300):
            CONFIGS["big"] = second if i % 2 == 0 else first
            notify_tenant_config_changed("big")
            with TenantContext.use_tenant("big"):
                frag.invalidate_tags([("Report", "")])  # right after the save that moved it
    finally:
        stop.set()
        for t in threads:
            t.join()
    errors = sum(n for (alias, _), n in metrics.snapshot().items() if alias == "fragmented")
    assert raised == []
    assert misses == []
    assert errors - errors_before == 0
    assert pending_retries() == 0


@pytest.mark.django_db(transaction=True)
def test_a_failed_config_notification_never_breaks_the_save_or_later_hooks(config_table):
    """The pub/sub Redis is down: the tenant row's save commits, later hooks and bumps run."""
    from django.db import transaction

    from tests.race_support import free_port

    p = f"fkd-ts-{uuid.uuid4().hex[:8]}"
    spec = {"MODEL": "testapp.TenantCacheConfig", "ID_FIELD": "tenant_id"}
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ModelTagManager.register_model(Hospital)
    try:
        with override_settings(CACHES=caches_conf(p, spec, TENANT_CONFIG_URL=dead)):
            frag = caches["fragmented"]
            metrics.reset()
            hospital = Hospital.objects.create(name="h")
            with TenantContext.use_tenant("n1"):
                frag.set_with_tags("h", "old", [("Hospital", hospital.pk)])
            ran = []
            with TenantContext.use_tenant("n1"), transaction.atomic():
                config_table.objects.create(tenant_id="n1", config={})  # notifies on commit
                transaction.on_commit(lambda: ran.append("later"))  # not robust
                hospital.name = "renamed"
                hospital.save()
            assert ran == ["later"]
            assert config_table.objects.filter(tenant_id="n1").exists()
            with TenantContext.use_tenant("n1"):
                assert frag.get_with_tags("h", [("Hospital", hospital.pk)]) is None
            assert metrics.snapshot().get(("-", "tenant_config_notify"), 0) >= 1
            frag.tenant_stores.forget()
    finally:
        drop_keys(p)
