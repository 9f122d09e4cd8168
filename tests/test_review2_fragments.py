"""Review 2 (issue 13, item 1): ``{% tagged_cache %}`` vary-on values that share a fragment.

docs/views.md: "then any number of *vary-on* values, as for ``{% cache %}``:
each distinct list of values has its own entry". The key is Django's
``make_template_fragment_key``, which hashes ``str(value) + ":"`` per value, so
``["x:y", "z"]`` and ``["x", "y:z"]`` hash the same text (``"x:y:z:"``), as do
``None`` and ``"None"``: one visitor's fragment is served for the other's
values.

F4: a fragment that renders ``{% csrf_token %}`` is stored with the first
visitor's masked token and served to the next visitors: their forms fail the
CSRF check, and each of them can unmask the first visitor's CSRF secret
(Django's ``{% cache %}`` does the same; our page cache refuses such pages
because "it embeds one browser's secret", the fragment tag does not).
"""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.middleware.csrf import _unmask_cipher_token
from django.template import Context, RequestContext, Template, TemplateSyntaxError
from django.test import RequestFactory, override_settings

from fragmented_keys_django import TenantContext

from .conftest import store_settings


@pytest.fixture(autouse=True)
def locmem_store():
    with override_settings(CACHES=store_settings("locmem")):
        caches["fragmented"].clear()
        yield caches["fragmented"]


def render(source: str, **context) -> str:
    return Template("{% load fragmented_keys %}" + source).render(Context(context))


NOTE = '{% tagged_cache 600 note owner topic tags="Note" %}{{ owner }} / {{ topic }}{% endtagged_cache %}'


def test_vary_on_values_containing_colons_never_share_a_fragment():
    with TenantContext.use_tenant("acme"):
        assert render(NOTE, owner="ann:admin", topic="pay") == "ann:admin / pay"
        assert render(NOTE, owner="ann", topic="admin:pay") == "ann / admin:pay"


def test_none_and_the_string_none_never_share_a_fragment():
    source = (
        "{% tagged_cache 600 who name tags='User' %}"
        "{% if name is None %}nobody{% else %}{{ name }}{% endif %}{% endtagged_cache %}"
    )
    with TenantContext.use_tenant("acme"):
        assert render(source, name=None) == "nobody"
        assert render(source, name="None") == "None"


def test_an_infinite_timeout_raises_the_documented_template_syntax_error():
    with TenantContext.use_tenant("acme"), pytest.raises(TemplateSyntaxError, match="timeout"):
        render("{% tagged_cache t f %}x{% endtagged_cache %}", t=float("inf"))


def test_a_fragment_never_serves_one_visitors_csrf_token_to_another():
    form = Template(
        "{% load fragmented_keys %}{% tagged_cache 600 form tags='Form' %}"
        "<input name=csrfmiddlewaretoken value={{ csrf_token }}>{% endtagged_cache %}"
    )

    def token_in_page_of(secret: str) -> str:
        request = RequestFactory().get("/form/")
        request.META["CSRF_COOKIE"] = secret  # what CsrfViewMiddleware reads from the cookie
        html = form.render(RequestContext(request))
        return html.split("value=")[1].split(">")[0]

    with TenantContext.use_tenant("acme"):
        alice = "a" * 32
        assert _unmask_cipher_token(token_in_page_of(alice)) == alice
        bob = "b" * 32
        assert _unmask_cipher_token(token_in_page_of(bob)) == bob, "Bob got Alice's secret"
