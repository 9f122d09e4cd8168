"""Redis outages: stopped, paused (SIGSTOP) and unreachable (issue 3, item 3).

Each test owns a throwaway ``redis-server`` (never the machine's Redis), used
through django-redis with 0.5 s socket timeouts. Checked:

* reads compute the value (``get_or_set_with_tags``, ``@tagged_cache``) or
  return the default (``get_with_tags``, ``get``), writes return without
  raising, nothing hangs (a generous hang guard, not a performance claim),
  and every failure is logged with tenant, alias and operation and counted;
* a bump that cannot be written: the model save still commits, an ERROR is
  logged, the bump is retried until it lands, and meanwhile the tenant's
  cached values are not served, also after a restart that keeps the data
  (AOF) and after one that does not;
* strict mode: the save inside ``atomic()`` raises ``BumpFailed`` and rolls back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from django.core.cache import caches
from django.db import transaction
from django.test import override_settings

from fragmented_keys_django import BumpFailed, TenantContext, metrics, tagged_cache
from fragmented_keys_django.invalidation import _retrier, pending_retries
from fragmented_keys_django.model_tags import ModelTagManager
from tests.race_support import RedisServer, free_port, reset_retrier, settle_retries, wrapper_alias
from tests.testapp.models import Patient

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TAGS = [("Ward", "7")]
HANG_GUARD = 10.0  # seconds; the socket timeouts are 0.5 s
MISS = object()
LOGGER = "fragmented_keys_django"


@pytest.fixture(autouse=True)
def _fresh_state(caplog):
    reset_retrier()
    metrics.reset()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    yield
    reset_retrier()


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(workdir=str(tmp_path)).start()
    yield srv
    srv.stop()


def use_server(srv: RedisServer | None, port: int | None = None, **wrapper):
    """override_settings: ``default`` = django-redis on *srv* (or on *port*), ``fragmented`` wraps it."""
    if srv is not None:
        store = srv.store(timeout=0.5)
    else:
        store = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    return override_settings(CACHES={"default": store, "fragmented": wrapper_alias(**wrapper)})


@tagged_cache(timeout=60, tags=["Ward:{ward}"], cache_name="fragmented")
def ward_report(ward: int) -> tuple:
    return ("computed", ward)


def timed(fn, *args, **kwargs):
    start = time.monotonic()
    result = fn(*args, **kwargs)
    elapsed = time.monotonic() - start
    assert elapsed < HANG_GUARD, f"{getattr(fn, '__name__', fn)} hung for {elapsed:.1f}s"
    return result


def store_error_records(caplog, operation: str | None = None) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LOGGER
        and getattr(r, "operation", None) is not None
        and (operation is None or r.operation == operation)
    ]


def assert_logged(
    caplog, operation: str, tenant: str = "acme", level: int = logging.WARNING
) -> None:
    recs = store_error_records(caplog, operation)
    assert recs, (
        f"no log record for operation {operation!r}: {[r.getMessage() for r in caplog.records]}"
    )
    for r in recs:
        assert r.alias == "fragmented" and r.tenant == tenant, (r.alias, r.tenant)
        assert r.levelno >= level
        msg = r.getMessage()
        assert operation in msg and "fragmented" in msg and tenant in msg, msg
    assert metrics.snapshot().get(("fragmented", operation), 0) >= len(recs) >= 1


# -- reads and writes during an outage -----------------------------------------


@pytest.mark.django_db(transaction=True)  # recovery drains the outbox, in the database
@pytest.mark.parametrize("mode", ["stopped", "paused", "unreachable"])
def test_reads_compute_and_writes_survive(server, caplog, mode):
    port = free_port() if mode == "unreachable" else None
    with use_server(None if port else server, port=port):
        frag = caches["fragmented"]
        with TenantContext.use_tenant("acme"):
            if mode != "unreachable":
                # Connections in the pool before the outage, and a value that must not be served.
                frag.set_with_tags("k", "cached", TAGS)
                assert frag.get_with_tags("k", TAGS) == "cached"
            if mode == "stopped":
                server.stop()
            elif mode == "paused":
                server.pause()
            calls = []

            def loader():
                calls.append(1)
                return "computed"

            assert timed(frag.get_or_set_with_tags, "k2", loader, TAGS) == "computed"
            assert calls == [1]
            assert timed(ward_report, 7) == ("computed", 7)
            assert timed(frag.get_with_tags, "k", TAGS, default="dflt") == "dflt"
            assert timed(frag.get_many_with_tags, ["k"], TAGS) == {}
            assert timed(frag.get, "k", "dflt") == "dflt"
            assert timed(frag.get_many, ["k", "x"]) == {}
            assert timed(frag.set, "k", 1) is None
            assert timed(frag.set_with_tags, "k", 1, TAGS) is False
            assert timed(frag.set_many, {"a": 1, "b": 2}) == ["a", "b"]
            assert timed(frag.add, "new", 1) is False
            timed(frag.delete, "k")
            timed(frag.delete_with_tags, "k", TAGS)
            assert asyncio.run(_aget_or_set(frag)) == "async-computed"
            timed(frag.invalidate_tags, TAGS)  # an autocommit bump: logged at ERROR, retried
            assert pending_retries() >= 1
        # The first failing call logs and opens the store's circuit breaker
        # (logged once); every call after it skips the store (no socket timeout
        # each) and is counted, until the store answers again and the outbox is
        # drained. A bump is the exception: it is sent (the store may be back,
        # and another process would serve what the commit replaced), fails,
        # is logged, kept and retried.
        assert_logged(caplog, "get_or_set_with_tags")
        assert [r.operation for r in store_error_records(caplog)] == [
            "get_or_set_with_tags",
            "breaker_open",
            "bump",
        ]
        counts = metrics.snapshot()
        for op in ("set", "set_with_tags", "set_many", "add", "get_with_tags", "get"):
            assert counts.get(("fragmented", f"{op} (breaker open)"), 0) >= 1, (op, counts)
        assert counts[("fragmented", "bump")] == 1
        assert ("fragmented", "bump (breaker open)") not in counts
        assert counts[("fragmented", "breaker_open")] == 1
        assert _retrier.recovering() == 1
        if mode == "paused":
            server.resume()
        elif mode == "stopped":
            server.start()
        if mode != "unreachable":
            assert settle_retries(15) == 0, "the failed bump never landed"
            with TenantContext.use_tenant("acme"):
                assert frag.get_with_tags("k", TAGS, default=MISS) is MISS
        frag.close()


async def _aget_or_set(frag):
    async def loader():
        return "async-computed"

    start = time.monotonic()
    value = await frag.aget_or_set_with_tags("ak", loader, TAGS)
    assert time.monotonic() - start < HANG_GUARD
    return value


# -- a bump that cannot be written ------------------------------------------------


def _aof(tmp_path) -> RedisServer:
    return RedisServer(
        "--appendonly", "yes", "--appendfsync", "always", "--save", "", workdir=str(tmp_path)
    ).start()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outage", ["restart-empty", "restart-keeps-data", "paused"])
@pytest.mark.parametrize("in_atomic", [False, True], ids=["autocommit", "atomic"])
def test_failed_bump_on_save_is_retried_and_nothing_stale_is_served(
    tmp_path, caplog, outage, in_atomic
):
    srv = (
        _aof(tmp_path)
        if outage == "restart-keeps-data"
        else RedisServer(workdir=str(tmp_path)).start()
    )
    try:
        with use_server(srv):
            _failed_bump_scenario(srv, caplog, outage, in_atomic)
    finally:
        srv.stop()


def _failed_bump_scenario(srv: RedisServer, caplog, outage: str, in_atomic: bool) -> None:
    ModelTagManager.register_model(Patient)
    frag = caches["fragmented"]
    with TenantContext.use_tenant("acme"):
        p = Patient.objects.create(name="old")
        tags = [("Patient", str(p.pk))]

        def load():
            return Patient.objects.get(pk=p.pk).name

        assert frag.get_or_set_with_tags("p", load, tags) == "old"
        assert frag.get_with_tags("p", tags) == "old"
        frag.set("plain", "old")  # a plain entry, flushed by clear() below
    with TenantContext.use_tenant("other"):
        frag.set_with_tags("p", "other-tenant", tags)

    if outage == "paused":
        srv.pause()
    else:
        srv.stop()

    with TenantContext.use_tenant("acme"):
        p.name = "new"
        start = time.monotonic()
        if in_atomic:
            with transaction.atomic():
                p.save()
        else:
            p.save()  # must not raise: the database write matters more than the cache
        frag.clear()
        assert time.monotonic() - start < 2 * HANG_GUARD
    assert Patient.objects.get(pk=p.pk).name == "new"
    assert pending_retries() >= 1
    assert_logged(caplog, "bump", level=logging.ERROR)
    with TenantContext.use_tenant("acme"):
        assert timed(frag.get_or_set_with_tags, "p", load, tags) == "new"

    if outage == "paused":
        srv.resume()
    else:
        srv.start()
        if outage == "restart-keeps-data":
            # The stale entry really survived the restart: only the retried bump can kill it.
            assert srv.client().dbsize() > 0

    deadline = time.monotonic() + 15
    served_during = []
    while True:
        landed = pending_retries() == 0
        with TenantContext.use_tenant("acme"):
            served_during.append(frag.get_with_tags("p", tags, default=MISS))
            served_during.append(frag.get_or_set_with_tags("p", load, tags))
            served_during.append(frag.get("plain", MISS))
            served_during.append(frag.get_many(["plain"]).get("plain", MISS))
        if landed or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert landed, "the failed bump was never retried successfully"
    assert "old" not in served_during, "a value invalidated during the outage was served"
    with TenantContext.use_tenant("acme"):
        assert frag.get_or_set_with_tags("p", load, tags) == "new"
        assert frag.get("plain", MISS) is MISS
    with TenantContext.use_tenant("other"):
        # Another tenant's entries were never invalidated (bumps are per tenant).
        if outage != "restart-empty":
            assert frag.get_with_tags("p", tags, default=MISS) == "other-tenant"
    assert any("delayed tag bump landed" in r.getMessage() for r in caplog.records)


# -- strict mode ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_strict_mode_rolls_the_transaction_back(server, caplog):
    ModelTagManager.register_model(Patient)
    with use_server(server, OPTIONS={"STRICT": True}):
        frag = caches["fragmented"]
        with TenantContext.use_tenant("acme"):
            p = Patient.objects.create(name="old")
            tags = [("Patient", str(p.pk))]
            assert frag.get_or_set_with_tags("p", lambda: "old", tags) == "old"
            server.stop()
            p.name = "new"
            start = time.monotonic()
            with pytest.raises(BumpFailed), transaction.atomic():
                p.save()
            assert time.monotonic() - start < HANG_GUARD
        assert Patient.objects.get(pk=p.pk).name == "old"  # rolled back
        assert_logged(caplog, "bump", level=logging.ERROR)
        server.start()
        # Until a probe finds the store back, its breaker stays open: strict bumps
        # would fail fast. It closes within CIRCUIT_BREAKER (1 s) plus a probe.
        assert settle_retries(15) == 0
        # Nothing changed, nothing is pending, the cached value is still right.
        with TenantContext.use_tenant("acme"):
            assert frag.get_or_set_with_tags("p", lambda: "recomputed", tags) in (
                "old",
                "recomputed",
            )
            Patient.objects.filter(pk=p.pk).update(name="newer")  # the store is back: works
            assert frag.get_with_tags("p", tags, default=MISS) is MISS
        frag.close()


@pytest.mark.django_db(transaction=True)
def test_strict_mode_autocommit_save_never_leaves_stale_entries(tmp_path, caplog):
    """Without a transaction the row is committed before post_save: the bump must not be dropped."""
    ModelTagManager.register_model(Patient)
    srv = _aof(tmp_path)
    try:
        with use_server(srv, OPTIONS={"STRICT": True}):
            frag = caches["fragmented"]
            with TenantContext.use_tenant("acme"):
                p = Patient.objects.create(name="old")
                tags = [("Patient", str(p.pk))]

                def load():
                    return Patient.objects.get(pk=p.pk).name

                assert frag.get_or_set_with_tags("p", load, tags) == "old"
                srv.stop()
                p.name = "new"
                with pytest.raises(BumpFailed):
                    p.save()
            assert Patient.objects.get(pk=p.pk).name == "new"  # autocommit: already committed
            srv.start()
            assert srv.client().dbsize() > 0  # the old entry survived the restart
            time.sleep(0.5)
            with TenantContext.use_tenant("acme"):
                assert frag.get_or_set_with_tags("p", load, tags) == "new", (
                    "strict mode dropped the bump of a committed autocommit save: stale value served"
                )
            frag.close()
    finally:
        srv.stop()


def test_many_failed_bumps_flush_the_tenant_namespace_once_back(tmp_path, caplog, monkeypatch):
    """Past ``compact_above`` pending keys, the retry becomes one flush of the tenant's namespace."""
    from fragmented_keys_django import invalidation

    monkeypatch.setattr(invalidation._retrier, "compact_above", 3)
    srv = _aof(tmp_path)
    try:
        with use_server(srv):
            frag = caches["fragmented"]
            with TenantContext.use_tenant("acme"):
                frag.set_with_tags("untouched", "old", [("Other", "1")])
                frag.set("plain", "old")
                for i in range(5):
                    frag.set_with_tags(f"k{i}", "old", [("Ward", str(i))])
            with TenantContext.use_tenant("other"):
                frag.set_with_tags("k0", "other-tenant", [("Ward", "0")])
            srv.stop()
            with TenantContext.use_tenant("acme"):
                for i in range(5):
                    frag.invalidate_tags([("Ward", str(i))])
            assert 1 <= pending_retries() < 5  # compacted: a namespace flush (+ later bumps)
            assert any(getattr(r, "operation", None) == "bump_compact" for r in caplog.records)
            srv.start()
            assert srv.client().dbsize() > 0
            assert settle_retries(15) == 0
            with TenantContext.use_tenant("acme"):
                for key, tags in [("untouched", [("Other", "1")]), ("k0", [("Ward", "0")])]:
                    assert frag.get_with_tags(key, tags, default=MISS) is MISS
                assert frag.get("plain", MISS) is MISS
            with TenantContext.use_tenant("other"):
                assert frag.get_with_tags("k0", [("Ward", "0")]) == "other-tenant"
            frag.close()
    finally:
        srv.stop()


def test_bump_failing_while_the_retry_thread_exits_is_still_retried(server, monkeypatch):
    """A failure queued between the retry thread's last successful pass and its exit must not be stranded.

    The window is widened by holding the thread just after ``flush()`` reported
    "nothing left" (as a preemption there would): it is still alive, so
    ``add()`` starts no new thread.
    """
    from fragmented_keys_django import invalidation

    real_flush = invalidation._Retrier.flush
    exiting = threading.Event()
    proceed = threading.Event()

    def flush_then_pause(self):
        done = real_flush(self)
        if done and not exiting.is_set():
            exiting.set()
            proceed.wait(10)
        return done

    monkeypatch.setattr(invalidation._Retrier, "flush", flush_then_pause)
    with use_server(server):
        frag = caches["fragmented"]
        with TenantContext.use_tenant("acme"):
            server.stop()
            frag.invalidate_tags(TAGS)  # fails: the retry thread starts
            server.start()
            assert exiting.wait(10), "the first failed bump was never retried"
            server.stop()
            frag.invalidate_tags([("Ward", "8")])  # fails while the retry thread is on its way out
            assert pending_retries() == 1
            proceed.set()
            server.start()
            assert settle_retries(6) == 0, (
                "a failed bump queued while the retry thread was exiting is never retried "
                "(its tenant stays bypassed here and stale everywhere else)"
            )
        frag.close()


@pytest.mark.django_db(transaction=True)
def test_the_retry_thread_survives_a_database_it_cannot_use(server, django_db_blocker, monkeypatch):
    """A database the retry thread cannot use (down, or closed to it, as pytest-django's blocker
    closes it) must not kill the thread: a dead thread stayed registered, so no bump was ever
    retried again (seen in a full run: every later outage test waited in vain)."""
    from django.db import connections

    from fragmented_keys_django import invalidation

    real_flush = invalidation._Retrier.flush
    rounds = threading.Semaphore(0)

    def flush_with_the_database(self):
        rounds.release()
        connections["default"].ensure_connection()  # as a round that drains the outbox does
        return real_flush(self)

    monkeypatch.setattr(invalidation._Retrier, "flush", flush_with_the_database)
    with use_server(server):
        frag = caches["fragmented"]
        with TenantContext.use_tenant("acme"):
            frag.set_with_tags("page", "old", TAGS)
            server.stop()
            frag.invalidate_tags(TAGS)  # fails: the retry thread starts
            assert rounds.acquire(timeout=10), "the retry thread never ran"
            django_db_blocker.block()  # from now on its database use raises
            try:
                assert rounds.acquire(timeout=10) and rounds.acquire(timeout=10)
            finally:
                django_db_blocker.restore()
            server.start()
            assert settle_retries(10) == 0, "the retry thread died: the bump is never retried"
            assert frag.get_with_tags("page", TAGS, default=None) is None
        frag.close()
