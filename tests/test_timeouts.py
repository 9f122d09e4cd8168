"""Timeouts: one check, the same on every store; bad ones are refused, never an outage (issue 10, item 3).

On Redis ``timeout=float("nan")`` deleted the existing value and returned
True, ``inf`` raised ``OverflowError`` (locmem accepted it), and a timeout of
1e17 s was logged and counted as a store outage with nothing stored. Options
and system checks accepted non-finite values, and ``VERSION_TIMEOUT=inf``
then failed inside ``save()``.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from django.core import checks
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import (
    ConfigurationError,
    InvalidTimeout,
    TenantContext,
    metrics,
    tagged_cache,
)
from fragmented_keys_django.conf import MAX_TIMEOUT
from fragmented_keys_django.invalidation import _retrier

from .conftest import store_settings

#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True

BAD = [math.nan, math.inf, -math.inf, 1e17, MAX_TIMEOUT + 1]
TAGS = [("User", "1")]


@pytest.fixture(autouse=True)
def _counts():
    metrics.reset()
    yield
    metrics.reset()


def calls(frag):
    """Every call that takes a timeout, as (name, call(timeout))."""
    return [
        ("set", lambda t: frag.set("k", "new", timeout=t)),
        ("add", lambda t: frag.add("fresh", "new", timeout=t)),
        ("touch", lambda t: frag.touch("k", timeout=t)),
        ("set_many", lambda t: frag.set_many({"k": "new"}, timeout=t)),
        ("get_or_set", lambda t: frag.get_or_set("fresh", "new", timeout=t)),
        ("set_with_tags", lambda t: frag.set_with_tags("tk", "new", TAGS, timeout=t)),
        (
            "get_or_set_with_tags",
            lambda t: frag.get_or_set_with_tags("fresh", lambda: "new", TAGS, timeout=t),
        ),
        ("aset", lambda t: asyncio.run(frag.aset("k", "new", timeout=t))),
        (
            "aget_or_set_with_tags",
            lambda t: asyncio.run(frag.aget_or_set_with_tags("fresh", "new", TAGS, timeout=t)),
        ),
    ]


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_a_bad_timeout_is_refused_and_loses_nothing(frag, bad):
    with TenantContext.use_tenant("acme"):
        frag.set("k", "old")
        frag.set_with_tags("tk", "old", TAGS)
        for name, call in calls(frag):
            with pytest.raises(InvalidTimeout) as info:
                call(bad)
            assert isinstance(info.value, ValueError), name
            assert repr(bad) in str(info.value), (name, str(info.value))
        assert frag.get("k") == "old"
        assert frag.get_with_tags("tk", TAGS) == "old"
        assert frag.get("fresh", "absent") == "absent"
    # Bad input is not a store outage.
    assert metrics.snapshot() == {}
    assert _retrier.recovering() == 0


def test_the_longest_timeout_is_kept_on_every_store(frag):
    with TenantContext.use_tenant("acme"):
        frag.set("k", "v", timeout=MAX_TIMEOUT)
        assert frag.set_with_tags("tk", "v", TAGS, timeout=MAX_TIMEOUT) is True
        assert frag.get("k") == "v"
        assert frag.get_with_tags("tk", TAGS) == "v"
        assert frag.touch("k", timeout=float(MAX_TIMEOUT)) is True
    assert metrics.snapshot() == {}


def test_django_rules_stand(frag):
    with TenantContext.use_tenant("acme"):
        frag.set("forever", "v", timeout=None)  # None: never expire
        assert frag.get("forever") == "v"
        frag.set("gone", "v", timeout=-1)  # negative on the plain API: expire at once
        assert frag.get("gone", "absent") == "absent"
        with pytest.raises(InvalidTimeout, match="non-negative"):
            frag.set_with_tags("tk", "v", TAGS, timeout=-1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "fast", 0, -1, True])
def test_early_recompute_argument_is_checked(frag, bad):
    with TenantContext.use_tenant("acme"):
        with pytest.raises(InvalidTimeout, match=r"early_recompute must be a positive finite"):
            frag.get_or_set_with_tags("k", lambda: 1, TAGS, early_recompute=bad)
        with pytest.raises(InvalidTimeout, match=r"early_recompute must be a positive finite"):
            asyncio.run(frag.aget_or_set_with_tags("k", 1, TAGS, early_recompute=bad))
    with pytest.raises(InvalidTimeout, match=r"early_recompute=\.\.\.\) must be"):
        tagged_cache(early_recompute=bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e17])
def test_decorator_timeout_is_checked(bad):
    with pytest.raises(InvalidTimeout, match="timeout"):
        tagged_cache(timeout=bad)


OPTIONS = [
    "VERSION_TIMEOUT",
    "STAMPEDE_LOCK_TIMEOUT",
    "STAMPEDE_POLL",
    "STAMPEDE_WAIT",
    "TENANT_CONFIG_RECHECK",
    "EARLY_RECOMPUTE",
]


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e17], ids=repr)
@pytest.mark.parametrize("name", [*OPTIONS, "TIMEOUT"])
def test_options_refuse_non_finite_and_out_of_range_values(name, bad):
    if name == "EARLY_RECOMPUTE" and bad == 1e17:
        bad = -1.0  # a beta has no upper bound: its range is positive numbers
    conf = store_settings("locmem")
    if name == "TIMEOUT":
        conf["fragmented"]["TIMEOUT"] = bad
    else:
        conf["fragmented"]["OPTIONS"] = {name: bad}
    with override_settings(CACHES=conf):
        errors = [e for e in checks.run_checks() if e.id == "fragmented_keys_django.E001"]
        assert len(errors) == 1 and name in errors[0].msg and repr(bad) in errors[0].msg
        with pytest.raises(ConfigurationError, match=name):
            caches["fragmented"].get("k")


@pytest.mark.django_db(transaction=True)
def test_an_infinite_version_timeout_is_a_configuration_error_not_an_overflow():
    from fragmented_keys_django import ModelTagManager
    from tests.testapp.models import Patient

    conf = store_settings("locmem")
    conf["fragmented"]["OPTIONS"] = {"VERSION_TIMEOUT": math.inf}
    with override_settings(CACHES=conf):
        ModelTagManager.register_model(Patient)
        with (
            pytest.raises(ConfigurationError, match="VERSION_TIMEOUT"),
            TenantContext.use_tenant("acme"),
        ):
            Patient.objects.create(name="x")
