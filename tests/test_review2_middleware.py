"""Review 2 (issue 10, items 5 and 8): a ``WHITELIST_ROUTES`` prefix reaches views it does not name.

A prefix entry (``"health*"``) is matched against the route, the url name
*and* the dotted view path of the request (``MiddlewareSettings.is_whitelisted``),
whatever the entry looks like. So ``"health*"``, written for ``health/`` and
``healthz/``, also whitelists a tenant view whose url name is
``health_records``: that view runs outside the tenant and without the
``TENANT_ACCESS`` check (the 403 a client that may not act as the tenant
gets). Whitelisting skips the access check by design; matching names the
entry's shape does not suggest makes it skip views nobody meant to expose.
"""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import path

from fragmented_keys_django.tenancy.context import current_tenant_id


def health(request):
    return HttpResponse("ok")


def records(request):
    return HttpResponse(f"records of {current_tenant_id()}")


urlpatterns = [
    path("health/", health, name="health"),
    path("patients/records/", records, name="health_records"),
]


def nobody_may(request, tenant_id):
    return False


@pytest.fixture
def site():
    with override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["fragmented_keys_django.tenancy.middleware.TenantMiddleware"],
        FRAGMENTED_KEYS_MIDDLEWARE={
            "RESOLVER": "fragmented_keys_django.tenancy.resolvers.HeaderResolver",
            "WHITELIST_ROUTES": {"health*"},
            "TENANT_ACCESS": nobody_may,
        },
    ):
        yield


def test_the_whitelisted_route_needs_no_tenant(site):
    assert Client().get("/health/").status_code == 200


def test_a_route_prefix_never_whitelists_a_view_by_its_url_name(site):
    response = Client(headers={"X-Tenant": "acme"}).get("/patients/records/")
    assert response.status_code == 403, response.content  # TENANT_ACCESS refuses
