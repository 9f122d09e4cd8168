"""A hung store trips a circuit breaker: later calls fail fast, exactly (issue 10, item 7).

With the store paused (``SIGSTOP``) each call waited for a full socket
timeout. Now the first failure opens the breaker of that store (logged
once, counted); every later call of this process on it skips the store
(reads miss, writes are skipped, bumps are kept, ``incr`` raises
``StoreUnavailable``) until the retry thread's probe finds it answering and
the outbox is drained. Per store: a hung tenant store does not trip the
shared one. Nothing stale survives: a write that was lost (failed or
skipped) flushes its tenant once the store is back.

Two throwaway Redis servers: the shared store and tenant ``big``'s own
store, which is the one paused. Whether a call reached the paused server is
read from the logs: each call that did would log a timeout.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import ConfigurationError, StoreUnavailable, TenantContext, metrics
from fragmented_keys_django.invalidation import _retrier
from tests.race_support import RedisServer, reset_retrier, settle_retries, wrapper_alias

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

TAGS = [("Ward", "7")]
LOGGER = "fragmented_keys_django"


@pytest.fixture
def servers(caplog):
    reset_retrier()
    metrics.reset()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with RedisServer() as shared, RedisServer() as own:
        yield shared, own
        if own.paused:
            own.resume()
        reset_retrier()


def breaker_caches(shared, own, **options) -> dict:
    return {
        "default": shared.store(timeout=0.5),
        "fragmented": wrapper_alias(
            OPTIONS={"TENANT_STORES": {"big": {"LOCATION": own.url}}, **options}
        ),
    }


def logged(caplog) -> list[tuple[str, str | None]]:
    """(operation, tenant) of every store error and breaker event logged for the alias.

    (The retry thread's outbox upkeep logs under alias ``-``: not the store's.)
    """
    return [
        (r.operation, r.tenant)
        for r in caplog.records
        if r.name == LOGGER
        and getattr(r, "operation", None)
        and getattr(r, "alias", None) == "fragmented"
        and r.levelno >= logging.WARNING
    ]


def test_after_a_timeout_calls_on_that_store_fail_fast_and_others_go_on(servers, caplog):
    shared, own = servers
    with override_settings(CACHES=breaker_caches(shared, own)):
        frag = caches["fragmented"]
        with TenantContext.use_tenant("big"):
            frag.set("k", "big-1")
            frag.set_with_tags("t", "big-1", TAGS)
        with TenantContext.use_tenant("acme"):
            frag.set("k", "acme-1")
        own.pause()
        with TenantContext.use_tenant("big"):
            assert (
                frag.get("k", "dflt") == "dflt"
            )  # waits for the socket timeout, opens the breaker
            for _ in range(3):
                assert frag.get("k", "dflt") == "dflt"
                assert frag.get_with_tags("t", TAGS, default="dflt") == "dflt"
                assert frag.get_or_set_with_tags("t", lambda: "computed", TAGS) == "computed"
                assert frag.set("k", "big-2") is None
                assert frag.set_with_tags("t", "big-2", TAGS) is False
                assert frag.add("new", 1) is False
                assert frag.delete("k") is False
                assert frag.set_many({"a": 1}) == ["a"]
                frag.invalidate_tags(TAGS)  # sent (one timeout each), failed: kept, retried
            assert asyncio.run(frag.aget("k", "dflt")) == "dflt"
            assert asyncio.run(frag.aset("k", "big-2")) is None
            assert asyncio.run(frag.aset_many({"a": 1})) == ["a"]
            asyncio.run(frag.ainvalidate_tags(TAGS))
            with pytest.raises(StoreUnavailable, match="circuit breaker"):
                frag.incr("k")
            with pytest.raises(StoreUnavailable):
                asyncio.run(frag.aget_tag_version("Ward", "7"))
        # The shared store's tenants are not tripped.
        with TenantContext.use_tenant("acme"):
            assert frag.get("k") == "acme-1"
            frag.set("k2", "acme-2")
            assert frag.get("k2") == "acme-2"
        # One timeout, logged; the breaker's opening, logged once; the rest counted.
        # Bumps are the exception: each is sent (the store may answer again) and
        # its failure logged (and the retry thread's probes, due meanwhile, fail).
        ops = logged(caplog)
        assert ops[:2] == [("get", "big"), ("breaker_open", "big")], ops
        assert [op for op in ops[2:] if op[0] != "recover_probe"] == [("bump", "big")] * 4, ops
        counts = metrics.snapshot()
        assert counts[("fragmented", "breaker_open")] == 1
        for op in ("get", "get_with_tags", "set", "set_with_tags", "add", "delete", "set_many"):
            assert counts[("fragmented", f"{op} (breaker open)")] >= 3, op
        assert ("fragmented", "bump (breaker open)") not in counts
        own.resume()
        assert settle_retries(15) == 0, "the probe never closed the breaker"
        with TenantContext.use_tenant("big"):
            frag.set("k", "big-3")
            assert frag.get("k") == "big-3"  # served again


def test_writes_lost_while_the_store_hangs_leave_nothing_stale(servers):
    shared, own = servers
    with override_settings(CACHES=breaker_caches(shared, own)):
        frag = caches["fragmented"]
        with TenantContext.use_tenant("big"):
            frag.set("k", "old")
            frag.set("gone", "deleted during the outage")
            frag.set_many({"m": "old"})
            frag.set_with_tags("t", "old", TAGS)
        own.pause()
        with TenantContext.use_tenant("big"):
            frag.set("k", "new")  # times out: lost
            frag.set("k", "newer")  # skipped
            frag.delete("gone")  # skipped
            frag.set_many({"m": "new"})  # skipped
            frag.invalidate_tags(TAGS)  # skipped, kept
        own.resume()
        assert settle_retries(15) == 0
        with TenantContext.use_tenant("big"):
            # None of the old values comes back: the tenant was flushed, the bump landed.
            assert frag.get("k", "miss") == "miss"
            assert frag.get("gone", "miss") == "miss"
            assert frag.get("m", "miss") == "miss"
            assert frag.get_with_tags("t", TAGS, default="miss") == "miss"
            frag.set("k", "after")
            assert frag.get("k") == "after"


def test_the_breaker_stays_open_for_its_configured_time(servers):
    shared, own = servers
    with override_settings(CACHES=breaker_caches(shared, own, CIRCUIT_BREAKER=3600)):
        frag = caches["fragmented"]
        own.pause()
        with TenantContext.use_tenant("big"):
            frag.get("k")  # opens the breaker
        own.resume()
        for _ in range(3):
            _retrier.flush()  # a retry round: the store is not probed before its time
        assert _retrier.recovering() == 1
        with TenantContext.use_tenant("big"), pytest.raises(StoreUnavailable):
            frag.incr("k")
    with override_settings(CACHES=breaker_caches(shared, own, CIRCUIT_BREAKER=0)):
        frag = caches["fragmented"]
        own.pause()
        with TenantContext.use_tenant("big"):
            frag.get("k")
        own.resume()
        _retrier.flush()  # due at once: probed, back, drained
        assert _retrier.recovering() == 0


@pytest.mark.parametrize("bad", [-1, float("nan"), None, "1s", True])
def test_the_option_is_checked(bad):
    from tests.conftest import store_settings

    with (
        override_settings(CACHES=store_settings("locmem", OPTIONS={"CIRCUIT_BREAKER": bad})),
        pytest.raises(ConfigurationError, match="CIRCUIT_BREAKER"),
    ):
        caches["fragmented"].get("k")
