"""The operator page in the Django admin (tests/admin_suite, in its own process).

The suite needs the admin, sessions and messages apps, so it runs in a pytest
subprocess under ``tests.settings_admin``, over the database cache and over
real Redis, with a real headless Chromium. It must pass and never skip.
"""

from __future__ import annotations

import pytest

from tests.subsuite import run_suite


@pytest.mark.parametrize("store", ["db", pytest.param("redis", marks=pytest.mark.redis)])
def test_admin_suite(store, monkeypatch):
    monkeypatch.setenv("FKD_ADMIN_STORE", store)
    out = run_suite("tests.settings_admin", "tests/admin_suite", "-rA")
    assert " passed" in out, out
    assert "PASSED tests/admin_suite/test_operator.py::test_in_chromium" in out, out


def test_the_page_needs_no_admin_to_import_the_package():
    """Only admin.py imports django.contrib.admin: projects without the admin are unaffected."""
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "fragmented_keys_django"
    importers = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "django.contrib import admin" in p.read_text() and p.name != "admin.py"
    )
    assert importers == [], importers
