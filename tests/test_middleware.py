"""TenantMiddleware and the tenant resolvers, through Django's test clients (sync and async).

This module is also the URLconf of its tests (``ROOT_URLCONF = __name__``).
"""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.http import HttpResponse, JsonResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.urls import include, path
from django.views import View
from django.views.decorators.cache import cache_page

from fragmented_keys_django import TenantContext
from fragmented_keys_django.exceptions import ConfigurationError
from fragmented_keys_django.tenancy.checks import check_tenant_middleware
from fragmented_keys_django.tenancy.context import current_tenant_id
from fragmented_keys_django.tenancy.middleware import MIDDLEWARE_PATH, get_middleware_settings
from fragmented_keys_django.tenancy.resolvers import (
    HeaderResolver,
    HostResolver,
    PathResolver,
    SubdomainResolver,
    TenantResolver,
    load_resolver,
)

# -- views and URLconf -----------------------------------------------------------

_counter = itertools.count(1)
calls: list[str | None] = []


def whoami(request):
    calls.append(current_tenant_id())
    return JsonResponse(
        {
            "tenant": current_tenant_id(),
            "request_tenant": request.tenant_id,
            "path_info": request.path_info,
        }
    )


async def awhoami(request):
    await asyncio.sleep(0.01)  # let concurrent requests interleave
    calls.append(current_tenant_id())
    return JsonResponse({"tenant": current_tenant_id(), "request_tenant": request.tenant_id})


@cache_page(60, cache="fragmented")
def cached_page(request):
    return HttpResponse(f"page {next(_counter)} for {current_tenant_id()}")


class HealthView(View):
    def get(self, request):
        return JsonResponse({"tenant": current_tenant_id(), "request_tenant": request.tenant_id})


def status(request, **kwargs):
    return JsonResponse({"tenant": current_tenant_id()})


def not_found_view(request):
    return HttpResponse(f"custom: {request.tenant_error}", status=404)


async def anot_found_view(request):
    return HttpResponse(f"acustom: {request.tenant_error}", status=410)


ops_patterns = ([path("health/", HealthView.as_view(), name="health")], "ops")
backoffice_patterns = (
    [
        path("", status, name="index"),
        path("auth/user/<int:pk>/change/", status, name="user_change"),
    ],
    "backoffice",
)

urlpatterns = [
    path("whoami/", whoami, name="whoami"),
    path("awhoami/", awhoami, name="awhoami"),
    path("page/", cached_page, name="page"),
    path("ops/", include(ops_patterns)),
    path("public/status/", status, name="status"),
    path("orders/", whoami, name="orders"),
    path("backoffice/", include(backoffice_patterns)),
]

# -- helpers -----------------------------------------------------------------------

KNOWN = {"acme", "globex", "initech"}


def tenant_exists(tenant_id: str) -> bool:
    return tenant_id in KNOWN


async def atenant_exists(tenant_id: str) -> bool:
    return tenant_id in KNOWN


def tenant_from_query(request):
    return request.GET.get("tenant")


def mw_settings(resolver, **extra):
    return override_settings(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[MIDDLEWARE_PATH],
        FRAGMENTED_KEYS_MIDDLEWARE={"RESOLVER": resolver, **extra},
    )


def body(response) -> dict:
    return json.loads(response.content)


def aget(client: AsyncClient, url: str, **kwargs):
    return async_to_sync(client.get)(url, **kwargs)


@pytest.fixture(autouse=True)
def _reset():
    calls.clear()
    caches["default"].clear()
    yield
    assert current_tenant_id() is None  # nothing leaks out of a request


# -- resolvers, unit level -----------------------------------------------------------

rf = RequestFactory()


@override_settings(ALLOWED_HOSTS=["*"])
def test_host_resolver_mapping_and_first_label():
    r = HostResolver({"Shop.Acme.test": "acme", "globex.example.com.": "globex"})
    assert r(rf.get("/", HTTP_HOST="shop.acme.test:8000")) == "acme"
    assert r(rf.get("/", HTTP_HOST="GLOBEX.example.com")) == "globex"
    assert r(rf.get("/", HTTP_HOST="other.example.com")) is None
    first = HostResolver(first_label=True)
    assert first(rf.get("/", HTTP_HOST="acme.example.com")) == "acme"
    assert first(rf.get("/", HTTP_HOST="www.example.com")) is None
    assert first(rf.get("/", HTTP_HOST="localhost")) is None
    assert first(rf.get("/", HTTP_HOST="10.0.0.1:80")) is None
    assert isinstance(first, TenantResolver)
    with pytest.raises(ConfigurationError):
        HostResolver()
    with pytest.raises(ConfigurationError):
        HostResolver({"a": "b"}, first_label=True)


@override_settings(ALLOWED_HOSTS=["*"])
def test_subdomain_resolver():
    r = SubdomainResolver("Example.com")
    assert r(rf.get("/", HTTP_HOST="acme.example.com:8443")) == "acme"
    assert r(rf.get("/", HTTP_HOST="example.com")) is None
    assert r(rf.get("/", HTTP_HOST="www.example.com")) is None
    assert r(rf.get("/", HTTP_HOST="a.b.example.com")) is None
    assert r(rf.get("/", HTTP_HOST="acme.example.org")) is None
    assert r(rf.get("/", HTTP_HOST="evilexample.com")) is None
    with pytest.raises(ConfigurationError):
        SubdomainResolver("")


def test_header_and_path_resolvers():
    h = HeaderResolver()
    assert h(rf.get("/", HTTP_X_TENANT=" acme ")) == "acme"
    assert h(rf.get("/", HTTP_X_TENANT="  ")) is None
    assert h(rf.get("/")) is None
    assert HeaderResolver("X-Org")(rf.get("/", HTTP_X_ORG="globex")) == "globex"
    p = PathResolver()
    req = rf.get("/acme/orders/")
    assert p(req) == "acme"
    assert req.path_info == "/acme/orders/"
    s = PathResolver(strip=True)
    req = rf.get("/acme/orders/?x=1")
    assert s(req) == "acme"
    assert req.path_info == "/orders/"
    assert req.path == "/acme/orders/"
    assert req.tenant_path_prefix == "/acme"
    assert s(rf.get("/")) is None
    assert PathResolver(exclude=("static",))(rf.get("/static/x.css")) is None


def test_load_resolver_forms():
    assert load_resolver(f"{__name__}.tenant_from_query") is tenant_from_query
    assert isinstance(
        load_resolver("fragmented_keys_django.tenancy.resolvers.HeaderResolver"), HeaderResolver
    )
    sub = load_resolver(
        {
            "CLASS": "fragmented_keys_django.tenancy.resolvers.SubdomainResolver",
            "OPTIONS": {"base_domain": "x.io"},
        }
    )
    assert isinstance(sub, SubdomainResolver)
    assert sub.base_domain == "x.io"
    for bad in (
        "no.such.module.f",
        42,
        {"CLASS": "x"},
        {"OPTIONS": {}},
        "fragmented_keys_django.tenancy.resolvers.SubdomainResolver",
    ):
        with pytest.raises(ConfigurationError):
            load_resolver(bad)


# -- middleware over the test clients --------------------------------------------------


def test_header_resolver_sync_and_async():
    with mw_settings("fragmented_keys_django.tenancy.resolvers.HeaderResolver"):
        r = Client().get("/whoami/", HTTP_X_TENANT="acme")
        assert r.status_code == 200
        assert body(r)["tenant"] == "acme"
        assert body(r)["request_tenant"] == "acme"
        ac = AsyncClient()
        r = aget(ac, "/awhoami/", headers={"X-Tenant": "globex"})
        assert r.status_code == 200
        assert body(r) == {"tenant": "globex", "request_tenant": "globex"}
        # a sync view under the async handler (run in a thread) sees the tenant too
        r = aget(ac, "/whoami/", headers={"X-Tenant": "initech"})
        assert body(r)["tenant"] == "initech"


def test_async_concurrent_requests_keep_their_tenants():
    with mw_settings(HeaderResolver()):
        ac = AsyncClient()

        async def run():
            tenants = [f"t{i}" for i in range(12)]
            responses = await asyncio.gather(
                *(ac.get("/awhoami/", headers={"X-Tenant": t}) for t in tenants)
            )
            return tenants, [json.loads(r.content)["tenant"] for r in responses]

        tenants, seen = async_to_sync(run)()
        assert seen == tenants


@pytest.mark.parametrize("resolver", ["host-map", "first-label", "subdomain"])
def test_host_based_resolvers(resolver):
    spec = {
        "host-map": HostResolver({"acme.test": "acme", "www.globex.test": "globex"}),
        "first-label": HostResolver(first_label=True),
        "subdomain": {
            "CLASS": "fragmented_keys_django.tenancy.resolvers.SubdomainResolver",
            "OPTIONS": {"base_domain": "test"},
        },
    }[resolver]
    with mw_settings(spec):
        c = Client()
        r = c.get("/whoami/", HTTP_HOST="acme.test")
        assert body(r)["tenant"] == "acme"
        r = c.get("/whoami/", HTTP_HOST="nowhere")
        assert r.status_code == 404
        assert r["X-Tenant-Error"] == "no-tenant"


def test_path_resolver_strips_segment_sync_and_async():
    with mw_settings(PathResolver(strip=True), WHITELIST_ROUTES={"ops:health"}):
        r = Client().get("/acme/orders/")
        assert r.status_code == 200
        assert body(r) == {"tenant": "acme", "request_tenant": "acme", "path_info": "/orders/"}
        r = aget(AsyncClient(), "/globex/awhoami/")
        assert body(r)["tenant"] == "globex"
        # whitelist is matched on the path as received, before any stripping
        r = Client().get("/ops/health/")
        assert r.status_code == 200
        assert body(r) == {"tenant": None, "request_tenant": None}
        assert Client().get("/").status_code == 404


def test_dotted_path_resolver_and_seed_alias():
    with mw_settings(f"{__name__}.tenant_from_query"):
        assert body(Client().get("/whoami/?tenant=acme"))["tenant"] == "acme"
    with override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[MIDDLEWARE_PATH],
        FRAGMENTED_KEYS_MIDDLEWARE={"TENANT_ID_RESOLVER": f"{__name__}.tenant_from_query"},
    ):
        assert body(Client().get("/whoami/?tenant=globex"))["tenant"] == "globex"


@pytest.mark.parametrize(
    "entry",
    [
        "ops:health",
        "tests.test_middleware.HealthView",
        "ops/health/",
        "status",
        "public/status/",
        "tests.test_middleware.status",
    ],
)
def test_whitelist_entries(entry):
    with mw_settings(HeaderResolver(), WHITELIST_ROUTES={entry}):
        c = Client()
        url = "/ops/health/" if "health" in entry.lower() else "/public/status/"
        r = c.get(url)  # no tenant header at all
        assert r.status_code == 200, entry
        assert body(r)["tenant"] is None
        # a whitelisted route runs in the public namespace even if a tenant is sent
        assert body(c.get(url, HTTP_X_TENANT="acme"))["tenant"] is None
        # other routes still need a tenant
        assert c.get("/whoami/").status_code == 404
        assert aget(AsyncClient(), url).status_code == 200


def test_unknown_tenant_gets_404_and_view_never_runs():
    with mw_settings(HeaderResolver(), TENANTS=f"{__name__}.tenant_exists"):
        c = Client()
        r = c.get("/whoami/", HTTP_X_TENANT="umbrella")
        assert r.status_code == 404
        assert r["X-Tenant-Error"] == "unknown-tenant"
        assert b"unknown tenant" in r.content
        assert b"umbrella" not in r.content  # the id is not echoed back
        r = c.get("/whoami/")
        assert r.status_code == 404
        assert r["X-Tenant-Error"] == "no-tenant"
        assert calls == []  # never served from the public namespace
        assert c.get("/whoami/", HTTP_X_TENANT="acme").status_code == 200
        # async: sync validator runs in a thread
        ac = AsyncClient()
        assert aget(ac, "/awhoami/", headers={"X-Tenant": "umbrella"}).status_code == 404
        assert aget(ac, "/awhoami/", headers={"X-Tenant": "acme"}).status_code == 200
    with mw_settings(HeaderResolver(), TENANTS=atenant_exists):
        assert Client().get("/whoami/", HTTP_X_TENANT="umbrella").status_code == 404
        assert aget(AsyncClient(), "/awhoami/", headers={"X-Tenant": "umbrella"}).status_code == 404
        assert aget(AsyncClient(), "/awhoami/", headers={"X-Tenant": "globex"}).status_code == 200
    with mw_settings(HeaderResolver(), TENANTS=["acme"]):
        assert Client().get("/whoami/", HTTP_X_TENANT="globex").status_code == 404
        assert Client().get("/whoami/", HTTP_X_TENANT="acme").status_code == 200


def test_invalid_tenant_id_is_404():
    with mw_settings(HeaderResolver()):
        r = Client().get("/whoami/", HTTP_X_TENANT="x" * 70_000)
        assert r.status_code == 404


def test_custom_unknown_tenant_response():
    with mw_settings(
        HeaderResolver(), TENANTS=KNOWN, UNKNOWN_TENANT_RESPONSE=f"{__name__}.not_found_view"
    ):
        r = Client().get("/whoami/", HTTP_X_TENANT="umbrella")
        assert (r.status_code, r.content) == (404, b"custom: unknown-tenant")
        r = aget(AsyncClient(), "/whoami/")
        assert (r.status_code, r.content) == (404, b"custom: no-tenant")
    with mw_settings(HeaderResolver(), UNKNOWN_TENANT_RESPONSE=anot_found_view):
        r = Client().get("/whoami/")
        assert (r.status_code, r.content) == (410, b"acustom: no-tenant")
        r = aget(AsyncClient(), "/whoami/")
        assert (r.status_code, r.content) == (410, b"acustom: no-tenant")


def test_disallowed_host_is_400_not_a_tenant():
    with override_settings(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=[".example.com"],
        MIDDLEWARE=[MIDDLEWARE_PATH],
        FRAGMENTED_KEYS_MIDDLEWARE={"RESOLVER": SubdomainResolver("example.com")},
    ):
        assert Client().get("/whoami/", HTTP_HOST="acme.example.com").status_code == 200
        assert Client().get("/whoami/", HTTP_HOST="acme.evil.com").status_code == 400


def test_cached_page_isolated_per_tenant():
    with mw_settings(HeaderResolver()):
        c = Client()
        a1 = c.get("/page/", HTTP_X_TENANT="acme").content
        a2 = c.get("/page/", HTTP_X_TENANT="acme").content
        assert a1 == a2  # cached in acme
        assert a1.endswith(b"for acme")
        b1 = c.get("/page/", HTTP_X_TENANT="globex").content
        assert b1 != a1  # acme's cached page is not served to globex
        assert b1.endswith(b"for globex")
        assert c.get("/page/", HTTP_X_TENANT="globex").content == b1
        # async clients share the same per-tenant pages
        assert aget(AsyncClient(), "/page/", headers={"X-Tenant": "acme"}).content == a1
        # invalidating acme leaves globex cached
        with TenantContext.use_tenant("acme"):
            caches["fragmented"].clear()
        a3 = c.get("/page/", HTTP_X_TENANT="acme").content
        assert a3 != a1
        assert c.get("/page/", HTTP_X_TENANT="globex").content == b1


def test_tenant_restored_after_request_even_on_error():
    def boom(request):
        raise RuntimeError("boom")

    with mw_settings(HeaderResolver()):
        from fragmented_keys_django.tenancy.middleware import TenantMiddleware

        mw = TenantMiddleware(boom)
        with pytest.raises(RuntimeError):
            mw(rf.get("/", HTTP_X_TENANT="acme"))
        assert current_tenant_id() is None
        with TenantContext.use_tenant("outer"):
            mw2 = TenantMiddleware(lambda request: HttpResponse(current_tenant_id()))
            assert mw2(rf.get("/", HTTP_X_TENANT="acme")).content == b"acme"
            assert current_tenant_id() == "outer"


def test_bad_configuration_raises_at_startup():
    with (
        override_settings(FRAGMENTED_KEYS_MIDDLEWARE={"RESOLVER": "no.such.thing"}),
        pytest.raises(ConfigurationError, match="E012"),
    ):
        get_middleware_settings()


# -- system checks --------------------------------------------------------------------


def _ids(**overrides):
    with override_settings(**overrides):
        return sorted(m.id for m in check_tenant_middleware())


def test_checks():
    ok = {"RESOLVER": "fragmented_keys_django.tenancy.resolvers.PathResolver"}
    assert _ids(MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE=ok) == []
    assert _ids(MIDDLEWARE=[]) == []
    assert _ids(MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE=["x"]) == [
        "fragmented_keys_django.E010"
    ]
    assert _ids(
        MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE={**ok, "WHITELIST": {"x"}}
    ) == ["fragmented_keys_django.E010"]
    assert _ids(MIDDLEWARE=[MIDDLEWARE_PATH]) == ["fragmented_keys_django.E011"]
    assert _ids(MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE={}) == [
        "fragmented_keys_django.E011"
    ]
    assert _ids(
        MIDDLEWARE=[MIDDLEWARE_PATH],
        FRAGMENTED_KEYS_MIDDLEWARE={**ok, "TENANT_ID_RESOLVER": ok["RESOLVER"]},
    ) == ["fragmented_keys_django.E011"]
    assert _ids(
        MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE={"RESOLVER": "nope.nope"}
    ) == ["fragmented_keys_django.E012"]
    assert _ids(MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE={"RESOLVER": 3}) == [
        "fragmented_keys_django.E012"
    ]
    assert _ids(
        MIDDLEWARE=[MIDDLEWARE_PATH],
        FRAGMENTED_KEYS_MIDDLEWARE={**ok, "WHITELIST_ROUTES": "health"},
    ) == ["fragmented_keys_django.E013"]
    assert _ids(MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE={**ok, "TENANTS": 5}) == [
        "fragmented_keys_django.E014"
    ]
    assert _ids(
        MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE={**ok, "TENANTS": "no.where"}
    ) == ["fragmented_keys_django.E014"]
    assert _ids(
        MIDDLEWARE=[MIDDLEWARE_PATH],
        FRAGMENTED_KEYS_MIDDLEWARE={**ok, "UNKNOWN_TENANT_RESPONSE": "no.where"},
    ) == ["fragmented_keys_django.E015"]
    assert _ids(
        MIDDLEWARE=["django.middleware.cache.UpdateCacheMiddleware", MIDDLEWARE_PATH],
        FRAGMENTED_KEYS_MIDDLEWARE=ok,
    ) == ["fragmented_keys_django.E016"]
    assert (
        _ids(
            MIDDLEWARE=[MIDDLEWARE_PATH, "django.middleware.cache.FetchFromCacheMiddleware"],
            FRAGMENTED_KEYS_MIDDLEWARE=ok,
        )
        == []
    )
    assert _ids(MIDDLEWARE=[], FRAGMENTED_KEYS_MIDDLEWARE=ok) == ["fragmented_keys_django.W010"]


def test_checks_are_registered():
    from django.core import checks

    with override_settings(
        MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE={"RESOLVER": 1}
    ):
        ids = {m.id for m in checks.run_checks()}
    assert "fragmented_keys_django.E012" in ids


# -- issue 10: whitelist prefixes (item 5), the access check (item 8) -----------------------


@pytest.mark.parametrize("entry", ["backoffice/*", "backoffice:*", "/backoffice/*"])
def test_whitelist_prefixes_cover_every_route_under_them(entry):
    with mw_settings(HeaderResolver(), WHITELIST_ROUTES={entry}):
        c = Client()
        for url in ("/backoffice/", "/backoffice/auth/user/7/change/"):
            r = c.get(url)  # no tenant: an admin behind a header resolver
            assert r.status_code == 200, (entry, url, r.content)
            assert body(r)["tenant"] is None
        assert c.get("/whoami/").status_code == 404  # other routes still need a tenant
        assert aget(AsyncClient(), "/backoffice/auth/user/7/change/").status_code == 200


def test_a_path_prefix_whitelists_paths_no_route_serves():
    with mw_settings(HeaderResolver(), WHITELIST_ROUTES={"/static/*"}):
        r = Client().get("/static/app.css")
        assert r.status_code == 404 and "X-Tenant-Error" not in r  # Django's 404, not ours


def test_misplaced_stars_are_refused():
    for bad in ({"*"}, {"/*"}, {"back*office/"}):
        assert _ids(
            MIDDLEWARE=[MIDDLEWARE_PATH],
            FRAGMENTED_KEYS_MIDDLEWARE={"RESOLVER": PathResolver(), "WHITELIST_ROUTES": bad},
        ) == ["fragmented_keys_django.E013"], bad


checked: list[tuple[str, str]] = []


def member_of(request, tenant_id):
    """A stand-in for "is the logged-in user a member of that tenant?"."""
    checked.append((tenant_id, current_tenant_id()))
    return request.headers.get("X-Member-Of") == tenant_id


async def amember_of(request, tenant_id):
    return request.headers.get("X-Member-Of") == tenant_id


@pytest.mark.parametrize("check", [member_of, f"{__name__}.member_of", amember_of])
def test_the_access_check_runs_before_the_view_and_any_cached_page(check):
    checked.clear()
    middleware = [MIDDLEWARE_PATH, "django.middleware.cache.FetchFromCacheMiddleware"]
    with (
        mw_settings(HeaderResolver(), TENANT_ACCESS=check),
        override_settings(MIDDLEWARE=middleware, CACHE_MIDDLEWARE_ALIAS="fragmented"),
    ):
        c = Client()
        page = c.get("/page/", HTTP_X_TENANT="acme", HTTP_X_MEMBER_OF="acme")
        assert page.status_code == 200 and page.content.endswith(b"for acme")
        assert c.get("/page/", HTTP_X_TENANT="acme", HTTP_X_MEMBER_OF="acme").content == (
            page.content
        )
        calls.clear()
        # A client that picks acme without being allowed gets neither the view nor the cache.
        for r in (
            c.get("/page/", HTTP_X_TENANT="acme"),
            c.get("/page/", HTTP_X_TENANT="acme", HTTP_X_MEMBER_OF="globex"),
            aget(AsyncClient(), "/page/", headers={"X-Tenant": "acme"}),
            c.get("/whoami/", HTTP_X_TENANT="acme"),
        ):
            assert r.status_code == 403, r.content
            assert r["X-Tenant-Error"] == "forbidden-tenant"
            assert page.content not in r.content
        assert calls == []
        assert body(c.get("/whoami/", HTTP_X_TENANT="acme", HTTP_X_MEMBER_OF="acme")) == {
            "tenant": "acme",
            "request_tenant": "acme",
            "path_info": "/whoami/",
        }
    if check is member_of:
        assert ("acme", None) in checked  # asked before the tenant is entered


def test_a_custom_response_sees_the_forbidden_reason():
    with mw_settings(
        HeaderResolver(), TENANT_ACCESS=member_of, UNKNOWN_TENANT_RESPONSE=not_found_view
    ):
        r = Client().get("/whoami/", HTTP_X_TENANT="acme")
        assert r.content == b"custom: forbidden-tenant"


def test_a_header_resolver_without_access_check_is_warned_about():
    header = {"RESOLVER": "fragmented_keys_django.tenancy.resolvers.HeaderResolver"}
    assert _ids(MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE=header) == [
        "fragmented_keys_django.W011"
    ]
    with override_settings(MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE=header):
        (warning,) = check_tenant_middleware()
        assert warning.level == 30 and "X-Tenant" in warning.msg and "TENANT_ACCESS" in warning.hint
        get_middleware_settings()  # a warning does not stop the middleware
    with_check = {**header, "TENANT_ACCESS": f"{__name__}.member_of"}
    assert _ids(MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE=with_check) == []
    assert _ids(
        MIDDLEWARE=[MIDDLEWARE_PATH], FRAGMENTED_KEYS_MIDDLEWARE={**header, "TENANT_ACCESS": 3}
    ) == ["fragmented_keys_django.E017"]
