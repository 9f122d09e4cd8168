"""Review 2 (issue 10, item 1): two *functions* decorated with ``@tagged_cache`` share entries.

The default key is ``f"{func.__module__}.{func.__qualname__}"`` plus the
arguments' identities. Lambdas all have the qualname ``<lambda>``, and the
functions a factory returns all have ``factory.<locals>.name``: in one module
they get the same key, so one function returns the result the other computed.
(``_identity`` already refuses *arguments* that are local classes for this
reason; the decorated function itself is not checked.)

Each test accepts either fix: decorating such a function is refused (an error
naming ``key_name``), or the two functions never share an entry.
"""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import tagged_cache

from .conftest import store_settings


@pytest.fixture(autouse=True)
def locmem_store():
    with override_settings(CACHES=store_settings("locmem")):
        caches["fragmented"].clear()
        yield caches["fragmented"]


def test_two_decorated_lambdas_never_share_an_entry():
    try:
        double = tagged_cache(tags=[])(lambda x: x * 2)
        triple = tagged_cache(tags=[])(lambda x: x * 3)
    except (TypeError, ValueError) as exc:  # refused at decoration: also a fix
        assert "key_name" in str(exc)
        return
    assert double(2) == 4
    assert triple(2) == 6


def _report_for(region: str):
    @tagged_cache(tags=["Report"])
    def total() -> str:
        return f"total of {region}"

    return total


def test_functions_made_by_one_factory_never_share_an_entry():
    try:
        west = _report_for("west")
        south = _report_for("south")
    except (TypeError, ValueError) as exc:  # refused at decoration: also a fix
        assert "key_name" in str(exc)
        return
    assert west() == "total of west"
    assert south() == "total of south"


def test_an_explicit_key_name_keeps_factory_functions_apart():
    """What a user can do today (and what a refusal should point to): ``key_name``."""

    def make(region: str):
        @tagged_cache(tags=["Report"], key_name=f"report-total:{region}")
        def total() -> str:
            return f"total of {region}"

        return total

    assert make("west")() == "total of west"
    assert make("south")() == "total of south"
