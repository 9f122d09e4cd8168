"""Bad input gets a clear error that names the bad value, and nothing is lost."""

from __future__ import annotations

import pickle
import threading

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from fragmented_keys_django import (
    ConfigurationError,
    InvalidTag,
    InvalidTagTemplate,
    InvalidTenant,
    InvalidTimeout,
    TenantContext,
    TenantRequired,
    UnpicklableValue,
    tagged_cache,
)
from fragmented_keys_django.tenancy.context import MAX_TENANT_ID_LENGTH
from tests.conftest import store_settings

#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True


class NoTenantId:
    pass


class IntTenant:
    tenant_id = 7


@pytest.mark.parametrize(
    ("tenant", "fragment"),
    [
        ("", "must not be empty"),
        (42, "got int: 42"),
        (b"acme", "got bytes"),
        (NoTenantId(), "NoTenantId"),
        (IntTenant(), "tenant.tenant_id must be a string, got int: 7"),
        ("x" * (MAX_TENANT_ID_LENGTH + 1), f"at most {MAX_TENANT_ID_LENGTH} characters"),
    ],
)
def test_bad_tenant_ids_are_rejected_with_the_value(tenant, fragment):
    with pytest.raises(InvalidTenant, match=fragment) as info:
        TenantContext.use_tenant(tenant)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("tags", "fragment"),
    [
        ([("", "1")], "non-empty string"),
        ([(None, "1")], "non-empty string"),
        ([("User", None)], "string, an int or a UUID"),
        ([("User", 1.5)], "string, an int or a UUID"),
        ([("User",)], "got 1 elements"),
        ([("User", "1", "weird")], "'constant'"),
        (["User:1"], "must be a \\(name, instance\\) tuple"),
        ([{"instance": "1"}], "needs 'tag'"),
        ([{"tag": "User", "version": 3}], "lives in the store"),
        ([{"tag": "User", "type": "sticky"}], "'standard' or 'constant'"),
        (("User", "1"), "Wrap a single tag in a list"),
        ("User", "Wrap a single tag in a list"),
    ],
)
def test_bad_tags_are_rejected_with_the_value(frag, tags, fragment):
    for call in (
        lambda: frag.set_with_tags("k", 1, tags),
        lambda: frag.get_with_tags("k", tags),
        lambda: frag.invalidate_tags(tags),
    ):
        with pytest.raises(InvalidTag, match=fragment):
            call()


def test_bad_tag_does_not_half_bump(frag):
    frag.set_with_tags("k", "v", [("User", "1")])
    with pytest.raises(InvalidTag):
        frag.invalidate_tags([("User", "1"), ("", "2")])
    assert frag.get_with_tags("k", [("User", "1")]) == "v"


@pytest.mark.parametrize("timeout", [-1, -0.5, "60", [60], True])
def test_bad_timeouts_on_the_tag_api(frag, timeout):
    with pytest.raises(InvalidTimeout, match="timeout"):
        frag.set_with_tags("k", 1, [("User", "1")], timeout=timeout)
    with pytest.raises(InvalidTimeout, match="timeout"):
        frag.get_or_set_with_tags("k", lambda: 1, [("User", "1")], timeout=timeout)


@pytest.mark.parametrize("timeout", ["60", [60], object()])
def test_non_numeric_timeouts_on_the_plain_api(frag, timeout):
    with pytest.raises(InvalidTimeout):
        frag.set("k", 1, timeout=timeout)


@pytest.mark.parametrize("timeout", [-1, "soon"])
def test_bad_decorator_timeout(timeout):
    with pytest.raises(InvalidTimeout):
        tagged_cache(timeout=timeout)


def test_unpicklable_values_name_the_key(frag):
    lock = threading.Lock()
    for call in (
        lambda: frag.set("the-key", lock),
        lambda: frag.set_with_tags("the-key", lock, [("User", "1")]),
        lambda: frag.get_or_set_with_tags("the-key", lambda: lock, [("User", "1")]),
        lambda: frag.set_many({"the-key": lock}),
    ):
        with pytest.raises(UnpicklableValue, match="the-key") as info:
            call()
        assert isinstance(info.value, pickle.PicklingError)
    # Nothing was left behind under that key.
    assert frag.get("the-key", "absent") == "absent"


def test_templates_naming_unknown_parameters_fail_at_decoration():
    with pytest.raises(InvalidTagTemplate, match=r"'user_idd'.*not a parameter"):

        @tagged_cache(tags=["User:{user_idd}"])
        def f(user_id):
            return user_id

    with pytest.raises(InvalidTagTemplate, match="vary_on names 'nope'"):

        @tagged_cache(tags=["User:{user_id}"], vary_on=["nope"])
        def g(user_id):
            return user_id

    with pytest.raises(InvalidTagTemplate, match="no tag name"):

        @tagged_cache(tags=["{user_id}"])
        def h(user_id):
            return user_id


def test_template_attribute_errors_name_the_path(frag):
    @tagged_cache(tags=["Org:{user.org_id}"])
    def f(user):
        return 1

    with pytest.raises(InvalidTagTemplate, match=r"\{user.org_id\}"):
        f(object())


def _build(caches_conf):
    with override_settings(CACHES=caches_conf):
        return caches["fragmented"].store


@pytest.mark.parametrize(
    ("wrapper", "fragment"),
    [
        ({"CACHE_NAME": "missing"}, "'missing', which is not in settings.CACHES"),
        ({"CACHE_NAME": "fragmented"}, "itself a FragmentedKeysCacheBackend"),
        ({"CACHE_NAME": ""}, "must name another cache alias"),
        ({"PREFX": "x"}, "unknown key 'PREFX'. Did you mean 'PREFIX'"),
        ({"OPTIONS": {"TENANT_REQUIRD": True}}, "Did you mean 'TENANT_REQUIRED'"),
        ({"OPTIONS": {"STRICT": "yes"}}, "must be True or False, got 'yes'"),
        ({"TIMEOUT": -5}, "non-negative number of seconds"),
        ({"TIMEOUT": "300"}, "non-negative number of seconds"),
        ({"LOCATION": "redis://x"}, "sets LOCATION"),
        ({"EPOCH": []}, "number or string"),
    ],
)
def test_bad_configuration_raises_improperly_configured(wrapper, fragment):
    conf = store_settings("locmem")
    conf["fragmented"].update(wrapper)
    with pytest.raises(ConfigurationError, match=fragment) as info:
        _build(conf)
    assert isinstance(info.value, ImproperlyConfigured)


def test_tenant_required_outside_a_tenant():
    conf = store_settings("locmem", OPTIONS={"TENANT_REQUIRED": True})
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        for call in (
            lambda: frag.get("k"),
            lambda: frag.set("k", 1),
            lambda: frag.get_with_tags("k", [("User", "1")]),
            lambda: frag.invalidate_tags([("User", "1")]),
            lambda: frag.clear(),
        ):
            with pytest.raises(TenantRequired, match="requires a tenant") as info:
                call()
            assert isinstance(info.value, LookupError)
        with TenantContext.use_tenant("acme"):
            frag.set("k", 1)
            assert frag.get("k") == 1


@pytest.mark.parametrize("bad", [True, 1.0, 2.5])
def test_tags_remembered_from_earlier_calls_do_not_admit_bad_instances(frag, bad):
    # ("User", True) == ("User", 1) and 1.0 == 1 in Python: a remembered
    # normalisation of a good tag must not be handed to a bad one.
    frag.set_with_tags("k", "v", [("User", "1")])
    frag.set_with_tags("k", "v", [("User", 1)])
    with pytest.raises(InvalidTag, match="string, an int or a UUID"):
        frag.get_with_tags("k", [("User", bad)])
