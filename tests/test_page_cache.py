"""``@tagged_cache_page`` and ``TaggedCachePageMixin``: whole pages per tenant, invalidated by tags.

Requests go through Django's request stack (``django.test.Client``) with
``TenantMiddleware`` (tenant from the ``X-Tenant`` header) and a header
authentication middleware, over locmem, the database cache and real Redis
(fixture ``store``), with registered models saved through the ORM.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import caches
from django.http import HttpResponse, HttpResponseForbidden, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.template import engines
from django.template.response import TemplateResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import cache_control, never_cache
from django.views.decorators.vary import vary_on_headers

from fragmented_keys_django import InvalidTagTemplate, ModelTagManager, TenantContext
from fragmented_keys_django.views import TaggedCachePageMixin, tagged_cache_page
from tests.testapp.models import Patient

calls = itertools.count()


def served(response) -> int:
    """The number the view wrote into the page: a new one each time the view ran."""
    return int(response.content.decode().split("#")[1].split()[0])


def page(text: str) -> HttpResponse:
    return HttpResponse(f"{text} #{next(calls)} ")


# -- views -----------------------------------------------------------------------------------


@tagged_cache_page(600, tags=["Patient:{pk}"])
def patient_view(request, pk):
    return page(f"patient {Patient.objects.get(pk=pk).name}")


@tagged_cache_page(600, tags=["Patient:{pk}"], per_user=False)
def shared_view(request, pk):
    who = request.user.username if request.user.is_authenticated else "anonymous"
    return page(f"shared for {who}")


@tagged_cache_page(600, tags=["Patient:{pk}"])
def per_user_view(request, pk):
    who = request.user.username if request.user.is_authenticated else "anonymous"
    return page(f"page of {who}")


@tagged_cache_page(600, tags=["Patient:{pk}"])
def bumping_view(request, pk):
    """Reads the row, then a concurrent writer commits a change (its bump) before the page is stored."""
    text = page(f"patient {Patient.objects.get(pk=pk).name}")
    Patient.objects.filter(pk=pk).update(name="renamed meanwhile")  # CacheAwareManager: bumps
    return text


RULES = {
    "ok": lambda r: page("ok"),
    "404": lambda r: HttpResponse(f"missing #{next(calls)} ", status=404),
    "private": cache_control(private=True)(lambda r: page("private")),
    "no_store": never_cache(lambda r: page("never")),
    "vary_star": lambda r: _with(page("star"), Vary="*"),
    "cookie": vary_on_headers("Cookie")(lambda r: _cookie(page("cookie"))),
    "streaming": lambda r: StreamingHttpResponse(iter([f"stream #{next(calls)} "])),
    "csrf": lambda r: (get_token(r), page("form"))[1],
    "template": lambda r: TemplateResponse(
        r, engines["django"].from_string("template #{{ n }} "), {"n": next(calls)}
    ),
    "flavor": vary_on_headers("X-Flavor")(lambda r: page(r.headers.get("X-Flavor"))),
}


def _with(response, **headers):
    for k, v in headers.items():
        response[k] = v
    return response


def _cookie(response):
    response.set_cookie("seen", "1")
    return response


@tagged_cache_page(600, tags=["Rule:{name}"])
def rules_view(request, name):
    return RULES[name](request)


class PatientPage(TaggedCachePageMixin, View):
    cache_timeout = 600
    cache_tags = ["Patient:{pk}"]

    def get(self, request, pk):
        return page(f"class {Patient.objects.get(pk=pk).name}")


class DecoratedPage(View):
    @method_decorator(tagged_cache_page(600, tags=["Patient:{pk}"]))
    def dispatch(self, *args, **kwargs):
        return super().dispatch(*args, **kwargs)

    def get(self, request, pk):
        return page(f"decorated {Patient.objects.get(pk=pk).name}")


@tagged_cache_page(600, tags=["Patient:{pk}"])
async def async_view(request, pk):
    row = await Patient.objects.aget(pk=pk)
    return page(f"async {row.name}")


class AsyncPage(TaggedCachePageMixin, View):
    cache_tags = ["Patient:{pk}"]

    async def get(self, request, pk):
        row = await Patient.objects.aget(pk=pk)
        return page(f"async class {row.name}")


urlpatterns = [
    path("p/<int:pk>/", patient_view),
    path("shared/<int:pk>/", shared_view),
    path("mine/<int:pk>/", per_user_view),
    path("bumping/<int:pk>/", bumping_view),
    path("rules/<str:name>/", rules_view),
    path("class/<int:pk>/", PatientPage.as_view()),
    path("decorated/<int:pk>/", DecoratedPage.as_view()),
    path("async/<int:pk>/", async_view),
    path("async-class/<int:pk>/", AsyncPage.as_view()),
]


class HeaderUserMiddleware:
    """Authentication by header (a ``RemoteUserMiddleware`` without sessions): ``X-User``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        name = request.headers.get("X-User")
        request.user = User.objects.get(username=name) if name else AnonymousUser()
        return self.get_response(request)


class RefuseMiddleware:
    """Stands for an access check in the view stack: ``X-Refuse`` gets a 403 before the view."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.headers.get("X-Refuse"):
            return HttpResponseForbidden("refused")
        return self.get_response(request)


MIDDLEWARE = [
    "fragmented_keys_django.tenancy.middleware.TenantMiddleware",
    f"{__name__}.HeaderUserMiddleware",
    f"{__name__}.RefuseMiddleware",
]


@pytest.fixture
def site(store):
    with override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=MIDDLEWARE,
        FRAGMENTED_KEYS_MIDDLEWARE={
            "RESOLVER": "fragmented_keys_django.tenancy.resolvers.HeaderResolver"
        },
    ):
        ModelTagManager.register_model(Patient)
        yield store


def client(tenant: str, user: str | None = None) -> Client:
    headers = {"X-Tenant": tenant}
    if user:
        headers["X-User"] = user
    return Client(headers=headers, raise_request_exception=True)


def new_patient(name: str) -> Patient:
    return Patient.objects.create(name=name)


pytestmark = pytest.mark.django_db(transaction=True)


def test_a_save_invalidates_the_page_in_its_tenant_only(site):
    pk = new_patient("Alice").pk
    acme, globex = client("acme"), client("globex")
    first, other = acme.get(f"/p/{pk}/"), globex.get(f"/p/{pk}/")
    assert served(acme.get(f"/p/{pk}/")) == served(first)  # cached
    with TenantContext.use_tenant("acme"):
        row = Patient.objects.get(pk=pk)
        row.name = "Alice Archer"
        row.save()  # ModelTagManager bumps ("Patient", pk) in acme
    again = acme.get(f"/p/{pk}/")
    assert served(again) != served(first)
    assert b"Alice Archer" in again.content
    assert served(acme.get(f"/p/{pk}/")) == served(again)
    assert served(globex.get(f"/p/{pk}/")) == served(other)  # globex: still its cached page


def test_a_page_computed_before_a_bump_is_never_served_after_it(site):
    """The tag versions are read before the view runs: a bump while it runs wins."""
    pk = new_patient("Bob").pk
    acme = client("acme")
    first = acme.get(f"/bumping/{pk}/")
    assert b"Bob" in first.content
    second = acme.get(f"/bumping/{pk}/")
    assert served(second) != served(first)  # the first page was stale when stored: not served
    assert b"renamed meanwhile" in second.content


def test_class_based_views_mixin_and_method_decorator(site):
    pk = new_patient("Carol").pk
    acme = client("acme")
    for url in (f"/class/{pk}/", f"/decorated/{pk}/"):
        first = acme.get(url)
        assert served(acme.get(url)) == served(first), url
    with TenantContext.use_tenant("acme"):
        Patient.objects.filter(pk=pk).update(name="Carol Chen")
    for url in (f"/class/{pk}/", f"/decorated/{pk}/"):
        assert b"Carol Chen" in acme.get(url).content, url


def test_async_views(site):
    """Async function views and async class-based views: the a* methods of the backend."""
    pk = new_patient("Dan").pk
    acme = AsyncClient(raise_request_exception=True)
    urls = (f"/async/{pk}/", f"/async-class/{pk}/")

    async def get_all():
        return [await acme.get(url, headers={"X-Tenant": "acme"}) for url in urls]

    first = asyncio.run(get_all())
    assert [served(r) for r in asyncio.run(get_all())] == [served(r) for r in first]
    with TenantContext.use_tenant("acme"):
        Patient.objects.filter(pk=pk).update(name="Dan Diaz")
    after = asyncio.run(get_all())
    for before, now in zip(first, after, strict=True):
        assert served(now) != served(before) and b"Dan Diaz" in now.content


@pytest.mark.parametrize(
    ("name", "cached"),
    [
        ("ok", True),
        ("template", True),
        ("404", False),
        ("private", False),
        ("no_store", False),
        ("vary_star", False),
        ("cookie", False),
        ("streaming", False),
        ("csrf", False),
    ],
)
def test_what_is_cached_follows_djangos_rules(site, name, cached):
    acme = client("acme")

    def number(response):
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return int(body.decode().split("#")[1].split()[0])

    first, second = number(acme.get(f"/rules/{name}/")), number(acme.get(f"/rules/{name}/"))
    assert (first == second) is cached
    if name == "ok":  # no Expires/max-age: a browser would keep the page past a bump
        response = acme.get("/rules/ok/")
        assert "Expires" not in response and "Cache-Control" not in response


def test_post_is_never_cached_and_head_uses_the_get_page(site):
    acme = client("acme")
    first = acme.get("/rules/ok/")
    assert served(acme.post("/rules/ok/")) != served(first)
    head = acme.head("/rules/ok/")
    assert head.status_code == 200
    assert served(acme.get("/rules/ok/")) == served(first)


def test_vary_headers_are_part_of_the_key(site):
    acme = client("acme")
    acme.get("/rules/flavor/", headers={"X-Flavor": "fig"})  # learns the Vary header list
    fig = acme.get("/rules/flavor/", headers={"X-Flavor": "fig"})
    lime = acme.get("/rules/flavor/", headers={"X-Flavor": "lime"})
    assert b"fig" in fig.content and b"lime" in lime.content
    assert served(acme.get("/rules/flavor/", headers={"X-Flavor": "fig"})) == served(fig)
    assert served(acme.get("/rules/flavor/", headers={"X-Flavor": "lime"})) == served(lime)


def test_authorization_requests_vary_on_it(site):
    acme = client("acme")
    acme.get("/rules/ok/", headers={"Authorization": "Bearer a"})  # learns the header list
    a = acme.get("/rules/ok/", headers={"Authorization": "Bearer a"})
    assert "Authorization" in a["Vary"]
    b = acme.get("/rules/ok/", headers={"Authorization": "Bearer b"})
    assert served(b) != served(a)
    assert served(acme.get("/rules/ok/", headers={"Authorization": "Bearer a"})) == served(a)


def test_pages_of_authenticated_users_are_per_user_by_default(site):
    pk = new_patient("Eve").pk
    User.objects.create(username="alice")
    User.objects.create(username="bob")
    alice, bob, anon = client("acme", "alice"), client("acme", "bob"), client("acme")
    mine = alice.get(f"/mine/{pk}/")
    assert b"page of alice" in mine.content
    assert b"page of bob" in bob.get(f"/mine/{pk}/").content
    assert b"page of anonymous" in anon.get(f"/mine/{pk}/").content
    assert served(alice.get(f"/mine/{pk}/")) == served(mine)
    # per_user=False: one page per tenant, whoever asked first
    shared = alice.get(f"/shared/{pk}/")
    assert bob.get(f"/shared/{pk}/").content == shared.content


def test_a_refused_request_never_gets_a_cached_page(site):
    """The cache runs inside the view stack: a middleware's refusal comes first."""
    pk = new_patient("Fay").pk
    acme = client("acme")
    assert acme.get(f"/p/{pk}/").status_code == 200  # cached now
    refused = acme.get(f"/p/{pk}/", headers={"X-Refuse": "1"})
    assert refused.status_code == 403 and b"Fay" not in refused.content
    unknown = Client().get(f"/p/{pk}/")  # no tenant: TenantMiddleware answers 404
    assert unknown.status_code == 404 and b"Fay" not in unknown.content


def test_a_bad_tag_template_fails_at_decoration_time():
    with pytest.raises(InvalidTagTemplate, match="patient_id"):

        @tagged_cache_page(60, tags=["Patient:{patient_id}"])
        def view(request, pk):
            return HttpResponse()


def test_pages_are_not_cached_inside_a_transaction_that_wrote_a_registered_model(site):
    from django.db import transaction

    pk = new_patient("Gus").pk
    request_client = client("acme")
    with TenantContext.use_tenant("acme"), transaction.atomic():
        Patient.objects.filter(pk=pk).update(name="Gus Grey")  # queues a bump: dirty
        first = request_client.get(f"/p/{pk}/")
        assert b"Gus Grey" in first.content
    assert caches["fragmented"] is not None
    second = request_client.get(f"/p/{pk}/")
    assert b"Gus Grey" in second.content and served(second) != served(first)
