"""The django-debug-toolbar panel, through the real toolbar (tests/toolbar_suite, own process).

The toolbar's app wraps Django's cache handler when it starts, so its suite
runs in a pytest subprocess under ``tests.settings_toolbar``, once over the
database cache and once over real Redis. It must pass and never skip.
"""

from __future__ import annotations

import os

import pytest

from tests.subsuite import run_suite


@pytest.mark.parametrize("store", ["db", pytest.param("redis", marks=pytest.mark.redis)])
def test_toolbar_suite(store, monkeypatch):
    monkeypatch.setenv("FKD_TOOLBAR_STORE", store)
    out = run_suite("tests.settings_toolbar", "tests/toolbar_suite")
    assert " passed" in out, out


def test_the_panel_module_is_the_only_one_importing_the_toolbar():
    """Nothing in the package imports debug_toolbar but panels.py (it is an optional extra)."""
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "fragmented_keys_django"
    importers = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "debug_toolbar" in p.read_text() and p.name != "panels.py"
    )
    assert importers == [], importers
    assert os.path.exists(package / "templates" / "fragmented_keys_django" / "panel.html")
