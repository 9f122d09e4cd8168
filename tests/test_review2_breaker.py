"""Review 2 (issue 10, item 7): the circuit breaker is not per store in two ways.

Two throwaway Redis servers: the shared store and tenant ``big``'s own store.

* B1: a store's breaker closes only when the *whole* outbox drains
  (``_Retrier._recover_stores``: ``if report.failed or report.errors:
  continue``). A bump kept for another store that is still down (a tenant's
  own Redis in maintenance) fails the drain every round, so after one timeout
  on the shared store, every tenant of the shared store is served uncached by
  this process for as long as the other store is down: "a hung tenant store
  does not trip the shared one" (O6) does not hold in this direction.
* B2: the tenant config-version checks (``TenantStores.sync()`` before and
  after every bump of a tenant on an alias with ``TENANT_STORES``, and the
  recheck on reads) read the shared store directly, past its breaker. With
  the shared store hung, each bump of a tenant whose own store is healthy waits
  for two socket timeouts, every time (3 bumps: 6 timeouts, 3 s with 0.5 s
  timeouts), and the shared store's breaker never opens.
* B3: while a process's breaker is open, its bumps are skipped (kept and
  retried after the probe) even when the store already answers again: another
  process, whose breaker never opened, serves what a returned save replaced
  for up to ``CIRCUIT_BREAKER`` seconds (plus a retry round) after every store
  error the writer saw. X4 says no read that starts after a commit returned is
  older; before the breaker the bump was simply sent.
"""

from __future__ import annotations

import logging
import uuid

import pytest
import redis as redis_py
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import TenantContext, metrics
from fragmented_keys_django.invalidation import _retrier
from tests.race_support import RedisServer, reset_retrier, wrapper_alias
from tests.redis_dbs import base_url
from tests.test_tenant_stores import CONFIG_DB, Reader

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

LOGGER = "fragmented_keys_django"


@pytest.fixture
def servers(caplog):
    reset_retrier()
    metrics.reset()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with RedisServer() as shared, RedisServer() as own:
        yield shared, own
        if shared.paused:
            shared.resume()
        reset_retrier()


def breaker_caches(shared, own, **options) -> dict:
    return {
        "default": shared.store(timeout=0.5),
        "fragmented": wrapper_alias(
            OPTIONS={"TENANT_STORES": {"big": {"LOCATION": own.url}}, **options}
        ),
    }


def test_a_tenant_store_that_is_down_never_keeps_the_shared_stores_breaker_open(servers):
    shared, own = servers
    with override_settings(CACHES=breaker_caches(shared, own, CIRCUIT_BREAKER=0)):
        frag = caches["fragmented"]
        own.stop()  # big's own Redis is down for a while (maintenance)
        with TenantContext.use_tenant("big"):
            frag.invalidate_tags([("Ward", "7")])  # fails: kept in the outbox, retried
        shared.pause()
        with TenantContext.use_tenant("acme"):
            frag.get("k")  # one timeout on the shared store: its breaker opens
        shared.resume()  # the shared store answers again
        for _ in range(5):
            _retrier.flush()  # retry rounds: the shared store is probed (CIRCUIT_BREAKER=0)
        with TenantContext.use_tenant("acme"):
            frag.set("k", "acme-value")
            assert frag.get("k") == "acme-value", "acme is still served uncached"
        own.start()


def test_a_hung_shared_store_costs_a_tenant_stores_bumps_one_timeout_at_most(servers, caplog):
    shared, own = servers
    with override_settings(CACHES=breaker_caches(shared, own)):
        frag = caches["fragmented"]
        with TenantContext.use_tenant("big"):
            frag.set_with_tags("t", "v", [("Ward", "7")])
        shared.pause()
        with TenantContext.use_tenant("big"):
            for _ in range(3):
                frag.invalidate_tags([("Ward", "7")])  # big's own store is healthy
        # Each call that reached the paused server logged a timeout.
        reached = [
            r
            for r in caplog.records
            if r.name == LOGGER and getattr(r, "operation", None) == "tenant_config_check"
        ]
        assert len(reached) <= 1, f"{len(reached)} socket timeouts on the shared store"


def test_a_save_that_returned_is_seen_by_another_process_once_the_store_answers(
    servers, monkeypatch
):
    """X4 across the breaker: the store is back, this process's breaker is still open.

    ``CIRCUIT_BREAKER`` is large here so that the window cannot close by chance;
    with the default (1 s) the same stale read happens for up to a second
    after every store error a web process sees.
    """
    shared, _own = servers
    p = f"fkd-b3-{uuid.uuid4().hex[:8]}"
    cfg_hash, truth = f"fkd-test:{p}:configs", f"fkd-test:{p}:truth"
    monkeypatch.setenv("FKD_CFG_HASH", cfg_hash)  # no tenant has its own store
    conf = {
        "default": shared.store(timeout=0.5),
        "fragmented": wrapper_alias(
            OPTIONS={
                "TENANT_STORES": "tests.tenant_config_probe.redis_config",
                "CIRCUIT_BREAKER": 3600,
            }
        ),
    }
    cfg = redis_py.Redis.from_url(f"{base_url()}/{CONFIG_DB}")
    cfg.set(truth, "v1")
    reader = None
    try:
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]
            reader = Reader(conf, cfg_hash, truth)
            assert reader.read("acme")["value"] == "v1"  # cached by the other process
            shared.pause()
            with TenantContext.use_tenant("acme"):
                frag.get("anything")  # one timeout here: this process's breaker opens
            shared.resume()  # the store answers again
            cfg.set(truth, "v2")  # a save in acme ...
            with TenantContext.use_tenant("acme"):
                frag.invalidate_tags([("Report", "")])  # ... and its bump: the save returned
            assert reader.read("acme")["value"] == "v2", "the other process serves the old value"
    finally:
        if reader is not None:
            reader.stop()
        cfg.delete(cfg_hash, truth)
        cfg.close()
