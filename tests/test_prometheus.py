"""Prometheus metrics (the ``prometheus`` extra): counts after known operations, per alias and tenant.

Real stores (the suite's Redis and the database cache), the retry backlog
against a Redis the test stops and starts, gunicorn's multiprocess mode in
real subprocesses (``PROMETHEUS_MULTIPROC_DIR``), and a process where
``prometheus_client`` cannot be imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from django.core.cache import caches
from django.db import transaction
from django.test import RequestFactory, override_settings
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from fragmented_keys_django import TenantContext, invalidation, prometheus, signals
from fragmented_keys_django.exceptions import ConfigurationError
from tests.conftest import store_settings
from tests.race_support import RedisServer
from tests.redis_dbs import redis_url

ROOT = Path(__file__).resolve().parent.parent
TAGS = [("Project", "1")]
ON = {"PROMETHEUS": True, "PROMETHEUS_TENANT_LABELS": True}

STORES = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("db", id="db", marks=pytest.mark.django_db(transaction=True)),
]


def value(name: str, **labels: str) -> float:
    """The current value of sample *name* with *labels* in the global registry (0 if none)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(params=STORES)
def frag(request):
    with override_settings(CACHES=store_settings(request.param)):
        if request.param == "db":
            from django.core.management import call_command

            call_command("createcachetable", verbosity=0)
            caches["default"].clear()
        yield caches["fragmented"]
        caches["fragmented"].close()


def test_counts_per_alias_and_tenant_after_known_operations(frag):
    with override_settings(FRAGMENTED_KEYS=ON):
        with TenantContext.use_tenant("acme"):
            assert frag.get_with_tags("k", TAGS) is None  # miss
            frag.set_with_tags("k", "v", TAGS)
            assert frag.get_with_tags("k", TAGS) == "v"  # hit
            assert frag.get_or_set_with_tags("k", "x", TAGS) == "v"  # hit
            assert frag.invalidate_tags(TAGS) == 1  # one bump of one tag
            assert frag.get_with_tags("k", TAGS) is None  # miss
            frag.clear()  # a tenant flush
        with TenantContext.use_tenant("globex"):
            assert frag.get_many_with_tags(["a", "b"], TAGS) == {}  # two misses

        acme = {"alias": "fragmented", "tenant": "acme"}
        globex = {"alias": "fragmented", "tenant": "globex"}
        assert value("fragmented_keys_cache_hits_total", **acme) == 2
        assert value("fragmented_keys_cache_misses_total", **acme) == 2
        assert value("fragmented_keys_cache_misses_total", **globex) == 2
        assert value("fragmented_keys_cache_hits_total", **globex) == 0
        assert value("fragmented_keys_bumps_total", kind="tags", **acme) == 1
        assert value("fragmented_keys_bumped_tags_total", **acme) == 1
        assert value("fragmented_keys_bumps_total", kind="flush", **acme) == 1
        assert value("fragmented_keys_bumps_total", kind="tags", **globex) == 0
        # A series that only ever hit has its misses at 0 (not absent): the ratio is defined.
        with TenantContext.use_tenant("initech"):
            frag.set_with_tags("k", "v", TAGS)
            assert frag.get_with_tags("k", TAGS) == "v"
        initech = {"alias": "fragmented", "tenant": "initech"}
        assert REGISTRY.get_sample_value("fragmented_keys_cache_misses_total", initech) == 0.0


def test_without_tenant_labels_one_series_per_alias(frag):
    with override_settings(FRAGMENTED_KEYS={"PROMETHEUS": True}):
        for tenant in ("acme", "globex"):
            with TenantContext.use_tenant(tenant):
                frag.get_with_tags("k", TAGS)
        assert value("fragmented_keys_cache_misses_total", alias="fragmented") == 2
        assert value("fragmented_keys_cache_misses_total", alias="fragmented", tenant="acme") == 0


@pytest.mark.django_db(transaction=True)
def test_bypassed_reads_in_a_dirty_transaction(frag):
    with override_settings(FRAGMENTED_KEYS=ON), TenantContext.use_tenant("acme"):
        frag.set_with_tags("k", "v", TAGS)
        with transaction.atomic():
            frag.invalidate_tags([("Other", "1")])  # a bump waits for the commit: dirty
            assert frag.get_with_tags("k", TAGS) is None  # bypassed, not a miss
        assert frag.get_with_tags("k", TAGS) == "v"
        acme = {"alias": "fragmented", "tenant": "acme"}
        assert value("fragmented_keys_bypassed_reads_total", reason="transaction", **acme) == 1
        assert value("fragmented_keys_cache_hits_total", **acme) == 1
        assert value("fragmented_keys_cache_misses_total", **acme) == 0


def test_stampede_wait_and_early_recompute(frag):
    """A second caller waits for the first one's value; a huge beta recomputes a live entry."""
    with override_settings(FRAGMENTED_KEYS=ON), TenantContext.use_tenant("acme"):
        waiting = threading.Event()
        signals.stampede_waited.connect(lambda **kw: waiting.set(), weak=False, dispatch_uid="t")
        try:

            def slow():
                assert waiting.wait(30), "the second caller never waited"
                return "computed"

            got = []
            first = threading.Thread(target=lambda: got.append(_first("s", slow)))
            first.start()
            # Once the first holds the lock, this caller waits for it, then gets its value.
            second = _wait_until_locked(frag, first)
            first.join(30)
            assert got == ["computed"] and second == "computed"
        finally:
            signals.stampede_waited.disconnect(dispatch_uid="t")
        beta = 1e12  # the expiry always looks imminent (tests/test_early_recompute.py)
        frag.get_or_set_with_tags("e", lambda: 1, TAGS, timeout=60, early_recompute=beta)
        frag.get_or_set_with_tags("e", lambda: 2, TAGS, timeout=60, early_recompute=beta)
        acme = {"alias": "fragmented", "tenant": "acme"}
        assert value("fragmented_keys_stampede_waits_total", **acme) == 1
        assert value("fragmented_keys_early_recomputes_total", **acme) == 1


def _first(key, loader):
    """In a thread of its own: its own backend (Django's are per thread), in tenant acme."""
    with TenantContext.use_tenant("acme"):
        return caches["fragmented"].get_or_set_with_tags(key, loader, TAGS)


def _wait_until_locked(frag, first):
    """Call get_or_set for key "s" once the first thread holds its stampede lock."""
    from fragmented_keys_django.keys import lock_key

    with TenantContext.use_tenant("acme"):
        _, _, ek = frag._tagged("s", TAGS, "", None)
        adapter = frag._adapter("acme")
        while adapter.read([lock_key(ek.entry)], 0)[0] is None:
            assert first.is_alive(), "the first caller finished without taking the lock"
        return frag.get_or_set_with_tags("s", lambda: "not me", TAGS)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_store_errors_breaker_bypass_and_the_retry_backlog():
    """A store that goes away: errors and skipped reads counted; the backlog gauge goes up and down."""
    server = RedisServer().start()
    try:
        settings = {**ON, "OUTBOX": False}
        with (
            override_settings(CACHES=_caches(server.url)),
            override_settings(FRAGMENTED_KEYS=settings),
        ):
            frag = caches["fragmented"]
            acme = {"alias": "fragmented", "tenant": "acme"}
            with TenantContext.use_tenant("acme"):
                frag.set_with_tags("k", "v", TAGS)
                server.stop()
                assert frag.get_with_tags("k", TAGS) is None  # error: breaker opens
                assert frag.get_with_tags("k", TAGS) is None  # skipped by the breaker
                frag.invalidate_tags(TAGS)  # fails: kept for retry
            errors = {**acme, "operation": "get_with_tags"}
            assert value("fragmented_keys_store_errors_total", **errors) == 1
            assert value("fragmented_keys_store_errors_total", **acme, operation="bump") == 1
            skipped = {**acme, "reason": "breaker_open"}
            assert value("fragmented_keys_bypassed_reads_total", **skipped) == 1
            assert invalidation.pending_retries() == 1
            assert value("fragmented_keys_retry_backlog", **acme) == 1
            server.start()
            assert _until(lambda: invalidation.pending_retries() == 0)
            assert _until(lambda: value("fragmented_keys_retry_backlog", **acme) == 0)
            with TenantContext.use_tenant("acme"):
                assert frag.get_with_tags("k", TAGS) is None  # the bump landed
            assert value("fragmented_keys_bumps_total", kind="tags", **acme) == 1
    finally:
        server.stop()


def _caches(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "prom",
            "OPTIONS": {"CIRCUIT_BREAKER": 0.05},
        },
    }


def _until(check, seconds: float = 30.0) -> bool:
    """Poll *check* until it holds (the retry thread works in the background)."""
    import time

    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_settings_install_and_remove_the_metrics():
    """Off by default: no receiver, no metric; on with the setting; off again when it goes."""
    uid = f"fkd-prometheus:{id(signals.cache_hit)}"
    assert prometheus.installed() is None
    assert not any(r[0][0] == uid for r in signals.cache_hit.receivers)
    with override_settings(FRAGMENTED_KEYS={"PROMETHEUS": True}):
        assert prometheus.installed() is not None
        assert any(r[0][0] == uid for r in signals.cache_hit.receivers)
        assert "fragmented_keys_cache_hits" in REGISTRY._names_to_collectors
    assert prometheus.installed() is None
    assert not any(r[0][0] == uid for r in signals.cache_hit.receivers)
    assert "fragmented_keys_cache_hits" not in REGISTRY._names_to_collectors


@pytest.mark.django_db
def test_metrics_view_exposes_the_text_format_with_the_outbox_backlog():
    from fragmented_keys_django import outbox

    with override_settings(CACHES=store_settings("locmem"), FRAGMENTED_KEYS=ON):
        outbox.forget_deferred()  # ids earlier tests left waiting: a flushed table reuses them
        frag = caches["fragmented"]
        with TenantContext.use_tenant("acme"):
            frag.get_with_tags("k", TAGS)
        # A bump some process kept and never applied, older than the grace period.
        ref = outbox.record("default", [("fragmented", "acme", ["a-key"], (), False)])[0]
        _age("default", ref[1])
        response = prometheus.metrics_view(RequestFactory().get("/metrics"))
        assert response["Content-Type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode())
            for s in family.samples
        }
        acme = (("alias", "fragmented"), ("tenant", "acme"))
        assert samples[("fragmented_keys_cache_misses_total", acme)] == 1
        backlog = (("alias", "fragmented"), ("database", "default"), ("tenant", "acme"))
        assert samples[("fragmented_keys_outbox_backlog", backlog)] == 1


@pytest.mark.django_db(transaction=True)
def test_this_process_s_landed_sqlite_markers_are_not_outbox_backlog():
    """On SQLite a landed marker waits for the process's next transaction: not a backlog."""
    from fragmented_keys_django import outbox

    with override_settings(CACHES=store_settings("locmem")):
        outbox.forget_deferred()  # what earlier tests of this process left waiting
        landed, lost = outbox.record(
            "default", [("fragmented", "acme", ["a-key"], (), False) for _ in range(2)]
        )
        for ref in (landed, lost):
            _age("default", ref[1])
        outbox.forget([landed])  # its bump landed: deleted by the next transaction
        assert outbox.waiting("default") == {landed[1]}
        assert outbox.backlog("default", older_than=5) == {("fragmented", "acme"): 1}
        outbox.forget([lost])
        assert outbox.backlog("default", older_than=5) == {}
        outbox.forget_deferred()


def _age(using: str, pk: int) -> None:
    """Make outbox row *pk* older than the grace period (as a row a dead process left)."""
    import datetime

    from django.utils import timezone

    from fragmented_keys_django.models import OutboxEntry

    old = timezone.now() - datetime.timedelta(seconds=60)
    OutboxEntry.objects.using(using).filter(pk=pk).update(created=old)


CHILD = textwrap.dedent(
    """
    import os, sys
    import django
    from django.conf import settings

    url, mode = sys.argv[1], sys.argv[2]
    settings.configure(
        SECRET_KEY="prometheus-child",
        INSTALLED_APPS=["django.contrib.contenttypes", "fragmented_keys_django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
            },
            "fragmented": {
                "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
                "CACHE_NAME": "default",
                "PREFIX": "mp",
                "OPTIONS": {"CIRCUIT_BREAKER": 3600},
            },
        },
        FRAGMENTED_KEYS={"PROMETHEUS": True, "PROMETHEUS_TENANT_LABELS": True, "OUTBOX": False},
    )
    django.setup()
    from django.core.cache import caches
    from fragmented_keys_django import TenantContext

    frag = caches["fragmented"]
    with TenantContext.use_tenant("acme"):
        if mode == "reads":
            frag.set_with_tags("k", "v", [("P", 1)])
            for _ in range(3):
                assert frag.get_with_tags("k", [("P", 1)]) == "v"
            print("done", flush=True)
        else:  # a bump that cannot land: this process keeps it while it lives
            frag.invalidate_tags([("P", 1)])
            print("pending", flush=True)
            sys.stdin.read()  # until the parent closes our stdin
    """
)


@pytest.mark.redis
def test_gunicorn_multiprocess_mode(tmp_path):
    """Workers write to PROMETHEUS_MULTIPROC_DIR; counters sum; the backlog is the live ones'."""
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir), "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    url = redis_url("store")
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, url, "reads"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.stdout.strip() == "done", done.stderr
    dead = RedisServer()  # never started: bumps there fail
    holder = subprocess.Popen(
        [sys.executable, "-c", CHILD, dead.url, "backlog"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "pending", holder.stderr.read()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(mp_dir))
        acme = {"alias": "fragmented", "tenant": "acme"}
        assert registry.get_sample_value("fragmented_keys_cache_hits_total", acme) == 6
        assert registry.get_sample_value("fragmented_keys_retry_backlog", acme) == 1
    finally:
        holder.stdin.close()
        holder.wait(60)
    mark_process_dead(holder.pid, str(mp_dir))  # gunicorn's child_exit hook does this
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(mp_dir))
    assert not registry.get_sample_value("fragmented_keys_retry_backlog", acme)
    assert registry.get_sample_value("fragmented_keys_cache_hits_total", acme) == 6


WITHOUT_EXTRA = textwrap.dedent(
    """
    import sys
    import importlib.abc

    class NoPrometheus(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "prometheus_client" or name.startswith("prometheus_client."):
                raise ImportError("No module named 'prometheus_client' (hidden by the test)")
            return None

    sys.meta_path.insert(0, NoPrometheus())
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="no-extra",
        INSTALLED_APPS=["django.contrib.contenttypes", "fragmented_keys_django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "fragmented": {
                "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
                "CACHE_NAME": "default",
            },
        },
    )
    django.setup()
    from django.core.cache import caches
    from django.test import override_settings
    from fragmented_keys_django import TenantContext
    from fragmented_keys_django.exceptions import ConfigurationError

    frag = caches["fragmented"]
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("k", "v", [("P", 1)])
        assert frag.get_with_tags("k", [("P", 1)]) == "v"
        frag.invalidate_tags([("P", 1)])
        assert frag.get_with_tags("k", [("P", 1)]) is None
    assert "prometheus_client" not in sys.modules
    try:
        with override_settings(FRAGMENTED_KEYS={"PROMETHEUS": True}):
            pass
    except ConfigurationError as exc:
        print("refused:", exc)
    """
)


def test_without_the_extra_nothing_breaks_and_enabling_it_says_what_to_install():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout, done.stdout + done.stderr
    assert "pip install 'prometheus-client>=0.20'" in done.stdout


def test_enabling_without_prometheus_client_is_a_configuration_error(monkeypatch):
    """In-process twin of the subprocess test: the error names the setting and the extra."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    with pytest.raises(ConfigurationError, match=r"FRAGMENTED_KEYS\['PROMETHEUS'\]"):
        prometheus.CacheMetrics()
