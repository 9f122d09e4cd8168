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


@tagged_cache_page(600, tags=["Visits"])
def counted_visit(request):
    """Writes the session: the response's cookie is set after the view, never stored."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(f"visit {request.session['visits']} #{next(calls)}")


@tagged_cache_page(600, tags=["Profile"])
def profile(request):
    """Reads no session itself (the page cache reads the user for its per-user key)."""
    return HttpResponse(f"profile of {request.user.username} #{next(calls)}")


def login_as(request, username):
    from django.contrib.auth import login

    login(request, User.objects.get(username=username))
    return HttpResponse("logged in")


class Dashboard(LoginRequiredMixin, TaggedCachePageMixin, View):
    """The access check first, then the page cache (the order docs/views.md shows)."""

    cache_tags = ["Dashboard"]
    cache_per_user = False  # "for pages that show nothing user-specific"
    login_url = "/login-page/"

    def get(self, request):
        return HttpResponse(f"staff dashboard #{next(calls)}")


urlpatterns = [
    path("cart/", cart),
    path("cart/add/<str:item>/", add_to_cart),
    path("login/<str:username>/", login_as),
    path("visit/", counted_visit),
    path("profile/", profile),
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


def test_a_visitor_with_session_data_never_gets_the_page_a_visitor_without_cached(site):
    bob, alice = visitor(), visitor()
    assert b"cart: empty" in bob.get("/cart/").content  # cached for session-less visitors
    alice.get("/cart/add/book/")
    assert b"cart: book" in alice.get("/cart/").content


def test_a_page_whose_view_wrote_the_session_is_never_stored(site):
    alice = visitor()
    assert b"visit 1 " in alice.get("/visit/").content
    assert b"visit 2 " in alice.get("/visit/").content
    assert b"visit 1 " in visitor().get("/visit/").content


def test_the_page_caches_own_read_of_the_user_does_not_make_a_page_vary_on_cookie(site):
    """Two logins of one user share the user's entry when the view reads no session."""
    User.objects.create(username="ann")
    first, second = visitor(), visitor()
    first.get("/login/ann/")
    second.get("/login/ann/")
    page = first.get("/profile/")
    assert b"profile of ann" in page.content
    assert second.get("/profile/").content == page.content


def test_the_page_cache_mixin_before_an_access_mixin_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="LoginRequiredMixin, TaggedCachePageMixin"):

        class Unguarded(TaggedCachePageMixin, LoginRequiredMixin, View):
            cache_tags = ["Dashboard"]


def test_an_access_mixin_before_the_page_cache_mixin_guards_the_cached_page(site):
    User.objects.create(username="staff")
    staff = visitor()
    staff.get("/login/staff/")
    assert b"staff dashboard" in staff.get("/dashboard/").content  # cached now
    anonymous = visitor().get("/dashboard/")
    assert anonymous.status_code == 302, anonymous.content  # to the login page


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e18])
def test_a_bad_page_timeout_is_refused_when_the_view_is_decorated(bad):
    with pytest.raises(InvalidTimeout):
        tagged_cache_page(bad)(lambda request: HttpResponse("x"))
