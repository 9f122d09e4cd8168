"""The debug-toolbar panel lists a request's tagged reads, writes and bumps (through the toolbar).

Requests go through ``DebugToolbarMiddleware`` and ``TenantMiddleware``; the
panel's content is fetched the way the toolbar's front end does
(``render_panel``), on the store named by ``FKD_TOOLBAR_STORE``.
"""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.test import Client

from fragmented_keys_django import ModelTagManager
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def registered():
    call_command("createcachetable", verbosity=0)
    from django.core.cache import caches

    caches["default"].clear()
    ModelTagManager.register_model(Patient)
    yield
    ModelTagManager.clear_all()


def panel(client: Client, response) -> str:
    """The HTML of our panel for the request that gave *response*."""
    request_id = re.search(rb'data-request-id="([0-9a-f]+)"', response.content).group(1)
    got = client.get(
        "/__debug__/render_panel/",
        {"request_id": request_id.decode(), "panel_id": "FragmentedKeysPanel"},
    )
    assert got.status_code == 200, got.content[:500]
    return got.json()["content"]


def rows(html: str) -> list[list[str]]:
    """The table rows of the panel: [at, operation, alias, tenant, key, tags, computed in]."""
    out = []
    for row in re.findall(r"<tr class=[^>]*>(.*?)</tr>", html, re.S):
        cells = [
            re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)
        ]
        out.append(cells)
    return out


def test_the_panel_lists_reads_writes_and_bumps_of_the_request():
    pk = Patient.objects.create(name="Alice").pk
    client = Client(headers={"X-Tenant": "acme"})

    cold = rows(panel(client, client.get(f"/page/{pk}/")))
    ops = [r[1] for r in cold]
    assert ops == ["miss", "stored"], cold
    miss, stored = cold
    assert miss[2] == "fragmented" and miss[3] == "acme"
    assert "views.decorators.cache.cache_page" in miss[4]
    assert miss[5] == f"Patient:{pk}" and stored[5] == f"Patient:{pk}"
    assert float(miss[6]) >= 0  # computed in: from the miss to the store

    warm = rows(panel(client, client.get(f"/page/{pk}/")))
    assert [r[1] for r in warm] == ["hit"] and warm[0][6] == "", warm

    fragment = rows(panel(client, client.get(f"/card/{pk}/")))
    assert [r[1] for r in fragment] == ["miss", "stored"], fragment
    assert fragment[0][4].startswith("template.cache.card.")

    edit = rows(panel(client, client.post(f"/edit/{pk}/", {"name": "Alice Archer"})))
    bumps = [r for r in edit if r[1] == "bump"]
    assert bumps and bumps[0][3] == "acme", edit
    assert {f"Patient:{pk}", "Patient"} <= set(bumps[0][5].split(", ")), edit

    again = rows(panel(client, client.get(f"/page/{pk}/")))
    assert [r[1] for r in again] == ["miss", "stored"], again


def test_another_tenant_is_listed_as_such_and_stays_warm():
    pk = Patient.objects.create(name="Bob").pk
    acme, globex = Client(headers={"X-Tenant": "acme"}), Client(headers={"X-Tenant": "globex"})
    acme.get(f"/page/{pk}/")
    globex.get(f"/page/{pk}/")
    acme.post(f"/edit/{pk}/", {"name": "Bob Baker"})
    got = rows(panel(globex, globex.get(f"/page/{pk}/")))
    assert [(r[1], r[3]) for r in got] == [("hit", "globex")], got
