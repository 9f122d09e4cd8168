"""Review 2 (issue 13, item 2): ``@tagged_cache_page`` / ``TaggedCachePageMixin`` findings.

Requests go through Django's request stack (``django.test.Client``) with
``TenantMiddleware`` (tenant from ``X-Tenant``), sessions in signed cookies and
Django's ``AuthenticationMiddleware``, over locmem (the findings do not depend
on the store).

* P1: the page cache stores the response inside the view, before
  ``SessionMiddleware`` adds ``Vary: Cookie``: a page an anonymous visitor's
  session shaped (a cart, a "recently viewed" list, a form's saved answers) is
  stored under the anonymous entry and served to every other anonymous visitor
  of the tenant. The module already refuses pages that used the CSRF token
  because "it embeds one browser's secret"; session data is the same case.
  (Django's per-view ``cache_page`` has the same flaw, see e.g.
  fighthealthinsurance/fighthealthinsurance#1038; ``per_user`` only covers
  authenticated users.)
* P2: ``TaggedCachePageMixin`` placed before an access mixin (the docs only say
  "before ``View`` in the bases", and the docs' example puts it first) serves
  the cached page before ``LoginRequiredMixin``/``PermissionRequiredMixin`` run.
* P3: ``tagged_cache_page(float("nan"))`` is accepted when the view is
  decorated (the docstring: "``InvalidTimeout`` for a bad timeout"); every
  request to the view then fails with ``InvalidTimeout`` (a 500).
"""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.models import User
from django.core.cache import caches
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import path
from django.views import View

from fragmented_keys_django import InvalidTimeout
from fragmented_keys_django.views import TaggedCachePageMixin, tagged_cache_page

from .conftest import store_settings

pytestmark = pytest.mark.django_db(transaction=True)

calls = itertools.count()


@tagged_cache_page(600, tags=["Cart"])
def cart(request):
    """An anonymous visitor's cart, kept in the session (a common shop pattern)."""
    items = request.session.get("cart", [])
    return HttpResponse(f"cart: {', '.join(items) or 'empty'} #{next(calls)}")


def add_to_cart(request, item):
    request.session["cart"] = [*request.session.get("cart", []), item]
    return HttpResponse("added")


def login_as(request, username):
    from django.contrib.auth import login

    login(request, User.objects.get(username=username))
    return HttpResponse("logged in")


class Dashboard(TaggedCachePageMixin, LoginRequiredMixin, View):
    """The mixin first, as in docs/views.md; the access check after it."""

    cache_tags = ["Dashboard"]
    cache_per_user = False  # "for pages that show nothing user-specific"
    login_url = "/login-page/"

    def get(self, request):
        return HttpResponse(f"staff dashboard #{next(calls)}")


urlpatterns = [
    path("cart/", cart),
    path("cart/add/<str:item>/", add_to_cart),
    path("login/<str:username>/", login_as),
    path("dashboard/", Dashboard.as_view()),
]

MIDDLEWARE = [
    "fragmented_keys_django.tenancy.middleware.TenantMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.fixture
def site():
    with override_settings(
        CACHES=store_settings("locmem"),
        ROOT_URLCONF=__name__,
        MIDDLEWARE=MIDDLEWARE,
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        FRAGMENTED_KEYS_MIDDLEWARE={
            "RESOLVER": "fragmented_keys_django.tenancy.resolvers.HeaderResolver"
        },
        SILENCED_SYSTEM_CHECKS=["fragmented_keys_django.W001", "fragmented_keys_django.W011"],
    ):
        caches["fragmented"].clear()
        yield
        caches["fragmented"].close()


def visitor() -> Client:
    return Client(headers={"X-Tenant": "acme"}, raise_request_exception=True)


@pytest.mark.xfail(
    strict=True,
    reason="review2 P1: the page is stored before SessionMiddleware adds 'Vary: Cookie': one "
    "anonymous visitor's session data is served to every other anonymous visitor",
)
def test_an_anonymous_visitors_session_data_never_reaches_another_visitor(site):
    alice, bob = visitor(), visitor()
    alice.get("/cart/add/pregnancy-test/")
    assert b"pregnancy-test" in alice.get("/cart/").content
    page = bob.get("/cart/")
    assert b"pregnancy-test" not in page.content, page.content


def test_anonymous_visitors_without_session_data_still_share_the_page(site):
    """The fix must keep what works: a page no session shaped is one entry per tenant."""
    first = visitor().get("/cart/").content
    assert visitor().get("/cart/").content == first


@pytest.mark.xfail(
    strict=True,
    reason="review2 P2: TaggedCachePageMixin.dispatch serves the cached page before "
    "LoginRequiredMixin.dispatch runs: an anonymous request gets the page a user cached",
)
def test_an_access_mixin_after_the_page_cache_mixin_still_guards_the_page(site):
    User.objects.create(username="staff")
    staff = visitor()
    staff.get("/login/staff/")
    assert b"staff dashboard" in staff.get("/dashboard/").content  # cached now
    anonymous = visitor().get("/dashboard/")
    assert anonymous.status_code == 302, anonymous.content  # to the login page


@pytest.mark.xfail(
    strict=True,
    reason="review2 P3: a NaN (or inf, or 1e18) page timeout is accepted at decoration; every "
    "request then raises InvalidTimeout",
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e18])
def test_a_bad_page_timeout_is_refused_when_the_view_is_decorated(bad):
    with pytest.raises(InvalidTimeout):
        tagged_cache_page(bad)(lambda request: HttpResponse("x"))
