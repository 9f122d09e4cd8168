"""One text form for tags: templates, commands and docs read ``Name:instance`` alike (issue 10, item 2).

``tags=["Review:org:{org_id}"]`` resolved to ``("Review:org", "42")`` while
``invalidate_scope("Review", "org:42")`` and the docs use ``("Review",
"org:42")``, so the decorated entry was never invalidated; and
``fk_invalidate`` could not name a tag whose name holds a colon.
"""

from __future__ import annotations

import io

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from fragmented_keys_django import (
    InvalidTag,
    InvalidTagTemplate,
    ModelTagManager,
    TenantContext,
    tagged_cache,
)
from fragmented_keys_django.tags import format_tag, parse_tag

from .conftest import store_settings

CALLS: list[int] = []


@pytest.fixture(autouse=True)
def locmem_store():
    CALLS.clear()
    with override_settings(
        CACHES=store_settings("locmem"),
        FRAGMENTED_KEYS_MIDDLEWARE={
            "RESOLVER": "fragmented_keys_django.tenancy.resolvers.HeaderResolver",
            "TENANTS": {"acme", "globex"},
        },
    ):
        yield caches["fragmented"]


@tagged_cache(tags=["Review:org:{org_id}"])
def reviews_of(org_id):
    CALLS.append(org_id)
    return f"reviews of {org_id} #{len(CALLS)}"


def test_a_template_and_invalidate_scope_name_the_same_tag():
    assert reviews_of.tags(42) == [("Review", "org:42")]
    with TenantContext.use_tenant("acme"):
        first = reviews_of(42)
        assert reviews_of(42) == first
        ModelTagManager.invalidate_scope("Review", "org:42")  # the documented call
        assert reviews_of(42) != first


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_fk_invalidate_reads_tags_as_templates_do_and_can_name_any_tag(locmem_store):
    frag = locmem_store
    with TenantContext.use_tenant("acme"):
        first = reviews_of(42)
        frag.set_with_tags("colon-name", "v", [("Review:org", "42")])
    out, _ = run("fk_invalidate", "--tenant", "acme", "--tag", "Review:org:42")
    assert "Review:org:42" in out
    with TenantContext.use_tenant("acme"):
        assert reviews_of(42) != first  # the template's tag was bumped
        assert frag.get_with_tags("colon-name", [("Review:org", "42")]) == "v"
    out, _ = run("fk_invalidate", "--tenant", "acme", "--tag", "Review\\:org:42")
    assert "Review\\:org:42" in out  # printed in the form that reads back
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("colon-name", [("Review:org", "42")]) is None


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("User:42", ("User", "42")),
        ("User", ("User", "")),
        ("User:", ("User", "")),
        ("Review:org:42", ("Review", "org:42")),
        ("Review\\:org:42", ("Review:org", "42")),
        ("a\\\\:b", ("a\\", "b")),
        ("a\\b:c", ("a\\b", "c")),
        ("Dashboard:all", ("Dashboard", "all")),
    ],
)
def test_the_rule(text, tag):
    assert parse_tag(text) == tag
    # A template without placeholders is read the same way.
    static = tagged_cache(tags=[text])(lambda: None)
    assert static.tags() == [tag]


names = st.text(min_size=1, max_size=8)
instances = st.text(max_size=8)


@given(names, instances)
def test_format_tag_writes_any_tag_so_that_parse_tag_reads_it_back(name, instance):
    assert parse_tag(format_tag(name, instance)) == (name, instance)


@given(names.filter(lambda n: "{" not in n and "}" not in n), st.integers())
def test_templates_follow_the_rule(name, value):
    template = format_tag(name, "x:{v}").replace("{", "{{").replace("}", "}}")
    template = template.replace("{{v}}", "{v}")
    f = tagged_cache(tags=[template])(lambda v: v)
    assert f.tags(value) == [(name, f"x:{value}")]


def test_a_placeholder_in_a_tag_name_is_refused():
    with pytest.raises(InvalidTagTemplate, match=r"placeholder in its tag name.*'User:\{\.\.\.\}'"):
        tagged_cache(tags=["User{user_id}"])(lambda user_id: None)
    with pytest.raises(InvalidTagTemplate, match="no tag name"):
        tagged_cache(tags=["{kind}:{id}"])(lambda kind, id: None)
    with pytest.raises(InvalidTag, match="tag name"):
        parse_tag(":42")
