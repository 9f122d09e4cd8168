"""``@tagged_cache``: tags from templates, entries from arguments, sync and async."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import (
    ConfigurationError,
    InvalidTag,
    InvalidTagTemplate,
    InvalidTimeout,
    ModelTagManager,
    TenantContext,
    tagged_cache,
)
from tests.testapp.models import Patient

from .conftest import store_settings

use_tenant = TenantContext.use_tenant
CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def fresh_store():
    CALLS.clear()
    with override_settings(CACHES=store_settings("locmem")):
        yield caches["fragmented"]


@pytest.fixture
def frag(fresh_store):
    return fresh_store


# The seed's example, verbatim.
@tagged_cache(
    timeout=3600, tags=["Dashboard", "User:{user_id}"], vary_on=["user_id", "filter_type"]
)
def get_dashboard_statistics(user_id, filter_type):
    CALLS["dashboard"] += 1
    return {"user": user_id, "filter": filter_type, "n": CALLS["dashboard"]}


def test_seed_example_tags_and_caching(frag):
    assert get_dashboard_statistics.tags(42, "all") == [("Dashboard", ""), ("User", "42")]
    first = get_dashboard_statistics(42, "all")
    assert first == {"user": 42, "filter": "all", "n": 1}
    assert get_dashboard_statistics(42, "all") == first
    assert get_dashboard_statistics(user_id=42, filter_type="all") == first
    assert get_dashboard_statistics(42, filter_type="all") == first
    assert CALLS["dashboard"] == 1
    weekly = get_dashboard_statistics(42, "weekly")
    other_user = get_dashboard_statistics(43, "all")
    assert weekly["n"] == 2
    assert other_user["n"] == 3
    # Bumping User:42 drops that user's entries only.
    frag.invalidate_tags([("User", "42")])
    assert get_dashboard_statistics(42, "all")["n"] == 4
    assert get_dashboard_statistics(43, "all") == other_user
    # Bumping Dashboard drops everything.
    frag.invalidate_tags([("Dashboard", "")])
    assert get_dashboard_statistics(43, "all")["n"] == 5


def test_seed_example_is_per_tenant(frag):
    with use_tenant("A"):
        a = get_dashboard_statistics(1, "all")
    with use_tenant("B"):
        b = get_dashboard_statistics(1, "all")
        frag.invalidate_tags([("User", "1")])
    with use_tenant("A"):
        assert get_dashboard_statistics(1, "all") == a
    assert a != b
    assert CALLS["dashboard"] == 2


@tagged_cache(
    tags=["Org:{user.org_id}", "User:{user.pk}", "Filter:{kind}"], vary_on=["user.pk", "kind"]
)
def user_report(user, kind="all"):
    CALLS["report"] += 1
    return (user.pk, kind, CALLS["report"])


def test_attribute_paths_and_defaults(frag):
    ada = SimpleNamespace(pk=5, org_id=9)
    assert user_report.tags(ada) == [("Org", "9"), ("User", "5"), ("Filter", "all")]
    assert user_report.tags(ada, kind="x") == [("Org", "9"), ("User", "5"), ("Filter", "x")]
    assert user_report(ada) == (5, "all", 1)
    assert user_report(ada, "all") == (5, "all", 1)
    # vary_on "user.pk": another object with the same pk shares the entry.
    assert user_report(SimpleNamespace(pk=5, org_id=9)) == (5, "all", 1)
    assert user_report(SimpleNamespace(pk=6, org_id=9)) == (6, "all", 2)
    frag.invalidate_tags([("Org", "9")])
    assert user_report(ada) == (5, "all", 3)
    frag.invalidate_tags([("Filter", "other")])
    assert user_report(ada) == (5, "all", 3)


def test_missing_attribute_raises_at_call():
    @tagged_cache(tags=["Org:{user.org_id}"], vary_on=[])
    def f(user):
        return 1  # pragma: no cover

    with pytest.raises(InvalidTagTemplate) as info:
        f(SimpleNamespace(pk=1))
    assert "org_id" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"tags": ["User:{uid}"]}, "uid"),
        ({"tags": ["Org:{usr.org_id}"]}, "usr"),
        ({"tags": ["User:{user_id}", "X:{nope}"]}, "nope"),
        ({"vary_on": ["nope"]}, "nope"),
        ({"vary_on": ["user_id", "filter"]}, "filter"),
    ],
)
def test_unknown_parameter_raises_at_decoration_time(kwargs, named):
    decorate = tagged_cache(**kwargs)
    with pytest.raises(InvalidTagTemplate) as info:

        @decorate
        def f(user_id, filter_type="all"):
            return 1  # pragma: no cover

    assert named in str(info.value)
    assert isinstance(info.value, InvalidTag)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tags": "User:{user_id}"},
        {"vary_on": "user_id"},
        {"tags": ["{user_id}"]},
        {"tags": [""]},
        {"tags": ["User:{}"]},
        {"tags": ["User:{user_id"]},
    ],
)
def test_malformed_templates_raise_at_decoration_time(kwargs):
    with pytest.raises(InvalidTagTemplate):

        @tagged_cache(**kwargs)
        def f(user_id):
            return 1  # pragma: no cover


@pytest.mark.parametrize("timeout", [-1, "60", True])
def test_bad_timeout_raises_at_decoration_time(timeout):
    with pytest.raises(InvalidTimeout):
        tagged_cache(timeout=timeout)


def test_vary_on_all_arguments_by_default(frag):
    @tagged_cache(tags=["T"])
    def f(a, b=0, *rest, **extra):
        CALLS["f"] += 1
        return (a, b, rest, extra, CALLS["f"])

    assert f(1, 2)[-1] == 1
    assert f(1, 2)[-1] == 1
    assert f(1, b=2)[-1] == 1
    assert f(1, 3)[-1] == 2
    assert f(2, 2)[-1] == 3
    assert f(1)[-1] == 4
    assert f(1, 0)[-1] == 4  # the default is the same argument
    assert f(1, 2, 3)[-1] == 5
    assert f(1, 2, 3)[-1] == 5
    assert f(1, 2, x=1)[-1] == 6
    assert f(1, 2, x=2)[-1] == 7
    # Equal-looking values of different types are different arguments.
    assert f("1", 2)[-1] == 8
    assert f([1], 2)[-1] == 9
    assert f((1,), 2)[-1] == 10
    assert f([1], 2)[-1] == 9


def test_equal_values_of_other_types_never_share_an_entry(frag):
    # Calls with str/int arguments reuse their resolved key: True == 1 == 1.0
    # must not pick up int 1's remembered key, nor "1" int 1's.
    @tagged_cache(tags=["Item:{x}"])
    def f(x):
        CALLS["f"] += 1
        return (type(x).__name__, x)

    assert f(1) == ("int", 1)
    assert f(True) == ("bool", True)
    assert f(1.0) == ("float", 1.0)
    assert f("1") == ("str", "1")
    assert f(1) == ("int", 1)
    assert CALLS["f"] == 4
    frag.invalidate_tags([("Item", 1)])
    assert f(1) == ("int", 1)
    assert CALLS["f"] == 5
    for i in range(3000):  # more than the remembered calls: answers stay right
        assert f(i) == ("int", i)
    assert f(True) == ("bool", True)
    assert f.tags(True) == [("Item", "True")]


def test_vary_on_empty_shares_one_entry(frag):
    @tagged_cache(tags=["T"], vary_on=[])
    def f(a):
        CALLS["f"] += 1
        return a

    assert f(1) == 1
    assert f(2) == 1
    assert CALLS["f"] == 1


def test_vary_on_subset(frag):
    @tagged_cache(tags=["T"], vary_on=["a"])
    def f(a, noise):
        CALLS["f"] += 1
        return (a, noise)

    assert f(1, "x") == (1, "x")
    assert f(1, "y") == (1, "x")
    assert f(2, "y") == (2, "y")
    assert CALLS["f"] == 2


def test_none_results_are_cached(frag):
    @tagged_cache(tags=["T:{a}"])
    def f(a):
        CALLS["f"] += 1

    assert f(1) is None
    assert f(1) is None
    assert CALLS["f"] == 1
    frag.invalidate_tags([("T", "1")])
    assert f(1) is None
    assert CALLS["f"] == 2


def test_exceptions_are_not_cached(frag):
    @tagged_cache(tags=["T"])
    def f():
        CALLS["f"] += 1
        raise KeyError("nope")

    for _ in range(2):
        with pytest.raises(KeyError):
            f()
    assert CALLS["f"] == 2


def test_async_function_gets_async_wrapper_caching_the_result(frag):
    @tagged_cache(tags=["User:{user_id}"])
    async def load(user_id):
        await asyncio.sleep(0)
        CALLS["load"] += 1
        return {"user": user_id, "n": CALLS["load"]}

    assert inspect.iscoroutinefunction(load)

    async def scenario():
        first = await load(1)
        second = await load(1)
        third = await load(2)
        return first, second, third

    first, second, third = async_to_sync(scenario)()
    assert first == second == {"user": 1, "n": 1}
    assert third == {"user": 2, "n": 2}
    # The cached object is the result: a sync read of the same entry works too.
    assert async_to_sync(scenario)()[0] == {"user": 1, "n": 1}
    assert CALLS["load"] == 2
    frag.invalidate_tags([("User", "1")])
    assert async_to_sync(load)(1) == {"user": 1, "n": 3}


def test_async_none_result_cached(frag):
    @tagged_cache(tags=["T"])
    async def f():
        CALLS["f"] += 1

    async def twice():
        return await f(), await f()

    assert async_to_sync(twice)() == (None, None)
    assert CALLS["f"] == 1


def test_wrapper_helpers(frag):
    @tagged_cache(tags=["User:{user_id}"])
    def f(user_id):
        CALLS["f"] += 1
        return user_id

    assert f.__name__ == "f"
    assert f.tags(7) == [("User", "7")]
    assert f.tags(user_id=7) == [("User", "7")]
    k7, k8 = f.key(7), f.key(8)
    assert isinstance(k7, str)
    assert k7.startswith("fk:{")
    assert k7 != k8
    assert f.key(user_id=7) == k7
    with use_tenant("A"):
        assert f.key(7) != k7
    assert f.invalidate(7) is False  # nothing cached yet
    f(7)
    f(8)
    assert f.invalidate(7) is True
    f(7)
    f(8)
    assert CALLS["f"] == 3
    assert f.invalidate(7) is True
    assert f.invalidate(7) is False


def test_key_is_the_store_entry(frag):
    @tagged_cache(tags=["User:{user_id}"])
    def f(user_id):
        return {"v": user_id}

    f(3)
    envelope = caches["default"].get(f.key(3))
    assert envelope is not None
    assert envelope[1] == {"v": 3}


def test_version_and_key_name_change_the_entry(frag):
    def body(a):
        CALLS["v"] += 1
        return CALLS["v"]

    v1 = tagged_cache(tags=["T"], version=1, key_name="shared")(body)
    v1b = tagged_cache(tags=["T"], version=1, key_name="shared")(body)
    v2 = tagged_cache(tags=["T"], version=2, key_name="shared")(body)
    other = tagged_cache(tags=["T"], version=1, key_name="other")(body)
    assert v1(1) == 1
    assert v1b(1) == 1
    assert v2(1) == 2
    assert other(1) == 3
    assert v1.key(1) == v1b.key(1) != v2.key(1)


def test_cache_name_store_alias_resolves_to_wrapping_alias():
    conf = store_settings("locmem")
    conf["second"] = {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": uuid.uuid4().hex,
    }
    conf["other"] = {
        "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
        "CACHE_NAME": "second",
        "PREFIX": "o",
    }
    conf["lonely"] = {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "lonely",
    }
    with override_settings(CACHES=conf):

        def body():
            CALLS["n"] += 1
            return CALLS["n"]

        via_store = tagged_cache(tags=["T"], cache_name="second")(body)
        via_alias = tagged_cache(tags=["T"], cache_name="other", key_name="k2")(body)
        default = tagged_cache(tags=["T"], key_name="k3")(body)
        assert via_store.cache_name == "second"
        assert via_store() == 1
        assert via_alias() == 2
        assert default() == 3
        # The entry lives in "other" (over "second"): only its bumps drop it.
        caches["fragmented"].invalidate_tags([("T", "")])
        assert via_store() == 1
        assert via_alias() == 2
        assert default() == 4
        caches["other"].invalidate_tags([("T", "")])
        assert via_store() == 5
        assert via_alias() == 6
        assert caches["second"].get(via_store.key()) is not None

        lonely = tagged_cache(tags=["T"], cache_name="lonely")(body)
        with pytest.raises(ConfigurationError):
            lonely()
        missing = tagged_cache(tags=["T"], cache_name="no-such-alias")(body)
        with pytest.raises(ConfigurationError):
            missing()


@tagged_cache(tags=["Patient:{patient}", "Hospital:{patient.hospital}"], vary_on=["patient"])
def patient_label(patient):
    CALLS["label"] += 1
    return f"{patient.name}#{CALLS['label']}"


@pytest.mark.django_db(transaction=True)
def test_model_instance_arguments_resolve_to_pk(frag):
    from tests.testapp.models import Hospital

    ModelTagManager.register_model(Patient)
    h = Hospital.objects.create(name="h")
    p = Patient.objects.create(name="ada", hospital=h)
    assert patient_label.tags(p) == [("Patient", str(p.pk)), ("Hospital", str(h.pk))]
    assert patient_label(p) == "ada#1"
    # Another instance of the same row is the same argument.
    assert patient_label(Patient.objects.get(pk=p.pk)) == "ada#1"
    p.name = "bob"
    p.save()
    assert patient_label(p) == "bob#2"
    q = Patient.objects.create(name="q", hospital=h)
    assert patient_label(q) == "q#3"
