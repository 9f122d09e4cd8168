"""The failed-bump retry queue keeps its books while a retry is in flight.

A tenant stays suspect (its tagged entries are not served) exactly while one of
its failed bumps has not landed. A retry takes bumps off the queue and may hold
them for a while (a store that answers slowly); meanwhile ``CACHES`` may change
(the queue is reset) or the tenant's many bumps may be compacted into one
namespace flush. None of that may clear the suspicion early, lose a bump, or
stop the retry halfway.

The store is a LocMemCache whose ``set_many`` (a bump) waits on a gate: a tiny
subclass, so the retry is held in flight at a known point.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings

from fragmented_keys_django.invalidation import _Bump, _Retrier, _space
from fragmented_keys_django.signals import tags_bumped

ALIAS, TENANT = "fragmented", "acme"


def suspect(retrier: _Retrier) -> bool:
    """True while *retrier* bypasses TENANT's versions read by ALIAS."""
    return retrier.is_suspect(_space(ALIAS, TENANT), TENANT)


class GatedLocMemCache(LocMemCache):
    """A LocMemCache whose ``set_many`` waits for ``gate`` while one is set."""

    gate: threading.Event | None = None
    entered = threading.Event()
    failing: frozenset[str] = frozenset()  # keys whose write raises, as a down store would

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        if type(self).failing.intersection(data):
            raise ConnectionError("store down (test)")
        gate = type(self).gate
        if gate is not None:
            type(self).entered.set()
            assert gate.wait(10), "the test never opened the gate"
        return super().set_many(data, timeout, version)


@pytest.fixture
def gated():
    conf = {
        "default": {
            "BACKEND": "tests.test_bump_retry.GatedLocMemCache",
            "LOCATION": f"gated-{uuid.uuid4().hex}",
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "t",
            # Its breaker is probed at once: a test's flush() lands what failed before.
            "OPTIONS": {"VERIFY_BUMPS": False, "CIRCUIT_BREAKER": 0},
        },
    }
    GatedLocMemCache.entered.clear()
    with override_settings(CACHES=conf):
        yield caches["default"]
    GatedLocMemCache.gate = None
    GatedLocMemCache.failing = frozenset()


@pytest.fixture
def retrier():
    r = _Retrier()
    r.interval = 3600  # its own thread never wakes up during a test: flush() is called here
    return r


def flush_in_flight(retrier: _Retrier) -> tuple[threading.Thread, threading.Event, list]:
    """Start ``retrier.flush()`` in a thread and return once it holds its bumps at the store."""
    gate = GatedLocMemCache.gate = threading.Event()
    out: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(retrier.flush())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert GatedLocMemCache.entered.wait(10), "flush never reached the store"
    out.append(errors)
    return thread, gate, out


def test_a_retry_in_flight_across_a_reset_does_not_clear_the_new_suspicion(gated, retrier):
    retrier.add([_Bump(ALIAS, TENANT, ["old-version-key"])])
    thread, gate, out = flush_in_flight(retrier)
    assert retrier.pending() == 1  # in flight is not landed: pending_retries() must say so
    retrier.reset()  # CACHES changed while the old bump was in flight
    retrier.add([_Bump(ALIAS, TENANT, ["new-version-key"])])
    GatedLocMemCache.gate = None
    gate.set()
    thread.join(10)
    assert out[0] == [], out[0]  # the in-flight flush raised nothing
    # The old configuration's bump came back: it must not count against the new one.
    assert suspect(retrier)
    assert retrier.pending() == 1
    assert retrier.flush() is True
    assert not suspect(retrier)
    assert gated.get("new-version-key") is not None  # the new bump landed


def test_a_failed_retry_stays_counted_while_the_round_goes_on(gated, retrier):
    GatedLocMemCache.failing = frozenset({"fails"})
    retrier.add([_Bump(ALIAS, TENANT, ["fails"]), _Bump(ALIAS, TENANT, ["slow"])])
    thread, gate, out = flush_in_flight(retrier)  # "fails" failed; "slow" waits at the store
    assert retrier.pending() == 2
    GatedLocMemCache.gate = None
    gate.set()
    thread.join(10)
    assert out[0] == [], out[0]
    assert retrier.pending() == 1 and suspect(retrier)
    GatedLocMemCache.failing = frozenset()
    assert retrier.flush() is True
    assert retrier.pending() == 0 and not suspect(retrier)


def test_compaction_keeps_the_tenant_suspect_until_its_flush_lands(gated, retrier):
    retrier.compact_above = 2
    retrier.add([_Bump(ALIAS, TENANT, ["a"])])
    thread, gate, out = flush_in_flight(retrier)  # holds "a"
    retrier.add([_Bump(ALIAS, TENANT, [k]) for k in "bcd"])  # compacted into one flush
    assert retrier.pending() == 2  # the flush, and "a" in flight
    GatedLocMemCache.gate = None
    gate.set()
    thread.join(10)
    assert out[0] == [], out[0]
    # "a" landed, but the namespace flush standing for b, c and d has not.
    assert suspect(retrier)
    assert retrier.flush() is True
    assert not suspect(retrier)
    assert retrier.pending() == 0


def test_a_failing_receiver_stops_no_other_retry(gated, retrier):
    calls: list = []

    def receiver(sender, **kwargs):
        calls.append(kwargs["tags"])
        raise RuntimeError("receiver failed")

    tags_bumped.connect(receiver)
    try:
        retrier.add(
            [
                _Bump(ALIAS, TENANT, ["v1"], (("T", "1"),)),
                _Bump(ALIAS, TENANT, ["v2"], (("T", "2"),)),
            ]
        )
        assert retrier.flush() is True
    finally:
        tags_bumped.disconnect(receiver)
    assert len(calls) == 2
    assert gated.get("v1") is not None and gated.get("v2") is not None
    assert not suspect(retrier)
