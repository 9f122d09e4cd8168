"""``@tagged_cache`` keys: every argument has a stable identity, or the call is refused (issue 10, item 1).

A key built from ``repr()`` held a memory address for objects without a stable
representation; Python reuses addresses, so ``Report("west").total()``
returned the result cached for ``Report("south")``. Arguments now count by
value (scalars, containers), by model label + pk, by enum member, or by a
``__cache_key__()`` hook; anything else raises ``TypeError`` at call time.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from collections import namedtuple
from pathlib import PurePosixPath

import pytest
from django.core.cache import caches
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fragmented_keys_django import tagged_cache
from tests.testapp.models import Hospital, Patient

from .conftest import store_settings


@pytest.fixture(autouse=True)
def locmem_store():
    with override_settings(CACHES=store_settings("locmem")):
        yield caches["fragmented"]


# -- the bug: a memory address in the key ------------------------------------------------------


class Report:
    """A class with Python's default repr (``<Report object at 0x...>``)."""

    def __init__(self, region: str) -> None:
        self.region = region

    @tagged_cache(tags=["Report"])
    def total(self) -> str:
        return f"total of {self.region}"


class KeyedReport(Report):
    """The same class with the documented hook."""

    def __cache_key__(self) -> tuple:
        return (self.region,)

    @tagged_cache(tags=["Report"])
    def total(self) -> str:
        return f"total of {self.region}"


def test_an_object_without_a_stable_identity_is_refused_naming_the_parameter():
    with pytest.raises(TypeError) as info:
        Report("west").total()
    message = str(info.value)
    assert "argument self" in message and "Report" in message
    assert "__cache_key__" in message and "vary_on" in message


class SameAddress(KeyedReport):
    """Two objects whose reprs name one address: what a freed and reused address gives."""

    def __repr__(self) -> str:
        return "<SameAddress object at 0x7f3a2c1d0e50>"

    @tagged_cache(tags=["Report"])
    def total(self) -> str:
        return f"total of {self.region}"


def test_a_reused_memory_address_never_returns_another_objects_result():
    # Python reuses the address of a freed object, so Report("west") may get
    # the repr Report("south") had; the key must not depend on it.
    assert SameAddress("south").total() == "total of south"
    assert SameAddress("west").total() == "total of west"
    assert SameAddress("south").total() == "total of south"


def test_unsaved_model_instances_and_nested_objects_are_refused():
    @tagged_cache(tags=["T"])
    def f(patient=None, filters=None):
        return 1  # pragma: no cover

    with pytest.raises(TypeError, match=r"argument patient is an unsaved testapp\.Patient"):
        f(Patient(name="x"))
    with pytest.raises(TypeError, match=r"argument filters\[1\] is a .*Report"):
        f(filters=[1, Report("x")])


def test_vary_on_an_attribute_path_makes_such_an_argument_usable():
    class Plain:
        def __init__(self, region):
            self.region = region

        @tagged_cache(tags=["Report"], vary_on=["self.region"])
        def total(self):
            return f"total of {self.region}"

    assert Plain("south").total() == "total of south"
    assert Plain("west").total() == "total of west"


def test_remembered_resolutions_follow_the_same_rules():
    # Calls with short str/int positional arguments reuse their resolved key
    # (the fast path): 1, True, 1.0 and "1" are four arguments.
    @tagged_cache(tags=["T:{x}"])
    def f(x):
        return (type(x).__name__, x)

    for _ in range(2):
        assert [f(1), f(True), f(1.0), f("1")] == [
            ("int", 1),
            ("bool", True),
            ("float", 1.0),
            ("str", "1"),
        ]


# -- the property: different identities never share an entry -----------------------------------


class Color(enum.Enum):
    RED = 1
    ALSO_RED = "red"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Code(str):
    """A str subclass whose repr holds an address: it counts as its text."""

    def __repr__(self) -> str:
        return object.__repr__(self)


Point = namedtuple("Point", "x y")


class Region:
    def __init__(self, name: str) -> None:
        self.name = name

    def __cache_key__(self) -> str:
        return self.name


def ref(value):
    """The identity the docs promise, written independently of the implementation."""
    kind = type(value)
    if kind is float or isinstance(value, decimal.Decimal):
        return (kind, repr(value))
    if isinstance(value, enum.Enum):
        return (kind, value.name)
    if isinstance(value, Hospital | Patient):
        return ("model", value._meta.label, ref(value.pk))
    if isinstance(value, Region):
        return (kind, ref(value.__cache_key__()))
    if kind is Code:
        return (kind, str.__str__(value))
    if isinstance(value, list | tuple):
        return (kind, tuple(ref(v) for v in value))
    if isinstance(value, frozenset | set):
        return ("set", tuple(sorted(map(repr, map(ref, value)))))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(repr((ref(k), ref(v))) for k, v in value.items())))
    return (kind, value)


hashable = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "1", "a", "a'b", "1.0", "True", "None"]),
    st.binary(max_size=2),
    st.decimals(allow_nan=False, places=1, min_value=-2, max_value=2),
    st.uuids(),
    st.dates(min_value=datetime.date(2000, 1, 1), max_value=datetime.date(2000, 1, 3)),
    st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2000, 1, 2)),
    st.timedeltas(max_value=datetime.timedelta(seconds=3), min_value=datetime.timedelta(0)),
    st.sampled_from([*Color, *Level]),
    st.sampled_from(["1", "a"]).map(Code),
    st.sampled_from(["p", "q"]).map(PurePosixPath),
    st.tuples(st.integers(0, 2), st.integers(0, 2)).map(lambda t: Point(*t)),
)
leaves = st.one_of(
    hashable,
    st.integers(1, 3).map(lambda pk: Patient(pk=pk, name="x")),
    st.integers(1, 3).map(lambda pk: Hospital(pk=pk, name="x")),
    st.sampled_from(["south", "west"]).map(Region),
)
arguments = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.frozensets(hashable, max_size=3),
        st.dictionaries(hashable, inner, max_size=3),
    ),
    max_leaves=6,
)


@tagged_cache(tags=["Prop"])
def identity_of(x, y=None):
    return (ref(x), ref(y))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(arguments, arguments), min_size=1, max_size=4))
def test_calls_whose_arguments_differ_never_share_an_entry(calls):
    caches["fragmented"].clear()
    for x, y in calls + [(y, x) for x, y in calls]:
        # Served from the cache or computed: always the result for these arguments.
        assert identity_of(x, y) == (ref(x), ref(y))
        assert identity_of(x, y=y) == (ref(x), ref(y))
        same = ref(x) == ref(y)
        assert (identity_of.key(x) == identity_of.key(y)) == same


def test_equal_identities_share_an_entry():
    @tagged_cache(tags=["T"])
    def f(x):
        f.calls += 1
        return f.calls

    f.calls = 0
    values = [
        {"a": [1, (2, 3)], "b": frozenset({uuid.UUID(int=1)})},
        Patient(pk=4, name="x"),
        Region("south"),
        Level.HIGH,
        decimal.Decimal("1.5"),
    ]
    for value in values:
        first = f(value)
        assert f(value) == first
    same_again = [
        {"b": frozenset({uuid.UUID(int=1)}), "a": [1, (2, 3)]},  # dict order does not matter
        Patient(pk=4, name="y"),  # same row
        Region("south"),
        Level(2),
        decimal.Decimal("1.5"),
    ]
    before = f.calls
    for value in same_again:
        f(value)
    assert f.calls == before
