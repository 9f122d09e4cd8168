"""``{% tagged_cache %}``: template fragments per tenant, invalidated by their tags' bumps.

Over locmem, the database cache and real Redis (fixture ``store``), with a
registered model saved through the ORM.
"""

from __future__ import annotations

import itertools

import pytest
from django.core.cache import caches
from django.db import transaction
from django.template import Context, Template, TemplateSyntaxError
from django.test import override_settings

from fragmented_keys_django import (
    InvalidTag,
    InvalidTagTemplate,
    ModelTagManager,
    TenantContext,
)
from fragmented_keys_django.templatetags.fragmented_keys import fragment_key
from tests.conftest import store_settings
from tests.testapp.models import Hospital, Patient

pytestmark = pytest.mark.django_db(transaction=True)


class _Counter:
    """``{{ n.next }}``: a new number each time the fragment really renders."""

    def __init__(self) -> None:
        self._it = itertools.count()

    @property
    def next(self) -> int:
        return next(self._it)


counter = _Counter()


def render(source: str, **context) -> str:
    context.setdefault("n", counter)
    return Template("{% load fragmented_keys %}" + source).render(Context(context))


SIDEBAR = (
    '{% tagged_cache 600 sidebar tags="Patient:{patient.pk}" %}'
    "{{ patient.name }} #{{ n.next }}{% endtagged_cache %}"
)


@pytest.fixture
def registered(store):
    ModelTagManager.register_model(Patient)
    ModelTagManager.register_model(Hospital)
    return store


def test_a_save_invalidates_the_fragment_in_its_tenant_only(registered):
    patient = Patient.objects.create(name="Alice")
    with TenantContext.use_tenant("acme"):
        acme = render(SIDEBAR, patient=patient)
        assert render(SIDEBAR, patient=patient) == acme
    with TenantContext.use_tenant("globex"):
        globex = render(SIDEBAR, patient=patient)
        assert globex != acme  # its own entry
    with TenantContext.use_tenant("acme"):
        patient.name = "Alice Archer"
        patient.save()
        fresh = render(SIDEBAR, patient=Patient.objects.get(pk=patient.pk))
        assert fresh.startswith("Alice Archer #") and fresh != acme
        assert render(SIDEBAR, patient=patient) == fresh
    with TenantContext.use_tenant("globex"):
        assert render(SIDEBAR, patient=patient) == globex  # globex stays warm


def test_tag_versions_are_read_before_the_fragment_renders(registered):
    """A bump that lands while the fragment renders wins: the fragment is not served after it."""
    patient = Patient.objects.create(name="Bob")

    class Renamer:
        def __str__(self):
            Patient.objects.filter(pk=patient.pk).update(name="Bob renamed")  # bumps
            return ""

    source = (
        '{% tagged_cache 600 card tags="Patient:{patient.pk}" %}'
        "{{ patient.name }}{{ renamer }} #{{ n.next }}{% endtagged_cache %}"
    )
    with TenantContext.use_tenant("acme"):
        first = render(source, patient=patient, renamer=Renamer())
        second = render(source, patient=Patient.objects.get(pk=patient.pk), renamer="")
    assert first.startswith("Bob #")
    assert second.startswith("Bob renamed #")


def test_vary_on_values_and_tags_from_variables(registered):
    a, b = Patient.objects.create(name="A"), Patient.objects.create(name="B")
    source = (
        "{% tagged_cache 600 row p.pk tags=tag_list tags=one_tag %}"
        "{{ p.name }} #{{ n.next }}{% endtagged_cache %}"
    )
    with TenantContext.use_tenant("acme"):
        ra = render(source, p=a, tag_list=["Patient:{p.pk}"], one_tag=("Hospital", "1"))
        rb = render(source, p=b, tag_list=["Patient:{p.pk}"], one_tag=("Hospital", "1"))
        assert ra.startswith("A #") and rb.startswith("B #")
        assert render(source, p=a, tag_list=["Patient:{p.pk}"], one_tag=("Hospital", "1")) == ra
        caches["fragmented"].invalidate_tags([("Hospital", "1")])
        assert render(source, p=a, tag_list=["Patient:{p.pk}"], one_tag=("Hospital", "1")) != ra
    # vary= is the keyword form of a vary-on value
    kw = "{% tagged_cache 600 kw vary=x %}{{ x }} #{{ n.next }}{% endtagged_cache %}"
    with TenantContext.use_tenant("acme"):
        assert render(kw, x=1) != render(kw, x=2)
        assert render(kw, x=1) == render(kw, x=1)


def test_timeout_none_and_a_variable(registered):
    source = '{% tagged_cache t "quoted name" %}#{{ n.next }}{% endtagged_cache %}'
    with TenantContext.use_tenant("acme"):
        assert render(source, t=None) == render(source, t=None)
        assert render(source, t="60") == render(source, t=60)


def test_nested_fragments(registered):
    patient = Patient.objects.create(name="Nest")
    source = (
        '{% tagged_cache 600 outer tags="Hospital" %}[#{{ n.next }} '
        '{% tagged_cache 600 inner tags="Patient:{p.pk}" %}{{ p.name }}{% endtagged_cache %}]'
        "{% endtagged_cache %}"
    )
    with TenantContext.use_tenant("acme"):
        first = render(source, p=patient)
        assert render(source, p=patient) == first
        caches["fragmented"].invalidate_tags([("Hospital", "")])
        assert render(source, p=patient) != first


def test_using_names_another_alias(registered):
    conf = store_settings(registered)
    conf["other"] = {**conf["fragmented"], "PREFIX": "other"}
    with override_settings(CACHES=conf), TenantContext.use_tenant("acme"):
        mine = "{% tagged_cache 600 f using='other' %}#{{ n.next }}{% endtagged_cache %}"
        theirs = "{% tagged_cache 600 f %}#{{ n.next }}{% endtagged_cache %}"
        assert render(mine) == render(mine)
        assert render(theirs) != render(mine)
        caches["other"].clear()
        caches["fragmented"].clear()


def test_not_cached_inside_a_transaction_that_wrote_a_registered_model(registered):
    patient = Patient.objects.create(name="Tx")
    with TenantContext.use_tenant("acme"):
        with transaction.atomic():
            Patient.objects.filter(pk=patient.pk).update(name="Tx2")  # dirty: reads bypass
            inside = render(SIDEBAR, patient=Patient.objects.get(pk=patient.pk))
        after = render(SIDEBAR, patient=Patient.objects.get(pk=patient.pk))
    assert inside.startswith("Tx2 #") and after.startswith("Tx2 #") and inside != after


def test_fragment_key_names_the_entry(registered):
    # Not Django's make_template_fragment_key: its "str(value) + ':'" joins collide
    # (tests/test_review2_fragments.py); each value is typed and length-prefixed.
    assert fragment_key("sidebar", [1]) != fragment_key("sidebar", ["1"])
    patient = Patient.objects.create(name="Del")
    with TenantContext.use_tenant("acme"):
        first = render(SIDEBAR, patient=patient)
        frag = caches["fragmented"]
        assert frag.delete_with_tags(fragment_key("sidebar"), [("Patient", str(patient.pk))])
        assert render(SIDEBAR, patient=patient) != first


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ("{% tagged_cache 600 %}x{% endtagged_cache %}", TemplateSyntaxError, "at least 2"),
        ("{% tagged_cache 600 f colour=1 %}x{% endtagged_cache %}", TemplateSyntaxError, "colour"),
        (
            '{% tagged_cache 600 f tags="Patient:{" %}x{% endtagged_cache %}',
            TemplateSyntaxError,
            "malformed",
        ),
        ("{% tagged_cache t f %}x{% endtagged_cache %}", TemplateSyntaxError, "non-integer"),
        (
            "{% tagged_cache 600 f using='nope' %}x{% endtagged_cache %}",
            TemplateSyntaxError,
            "nope",
        ),
        (
            '{% tagged_cache 600 f tags="Patient:{missing.pk}" %}x{% endtagged_cache %}',
            InvalidTagTemplate,
            "missing.pk",
        ),
        ("{% tagged_cache 600 f tags=missing %}x{% endtagged_cache %}", InvalidTag, "tags=None"),
    ],
)
def test_errors_are_loud(registered, source, error, match):
    with TenantContext.use_tenant("acme"), pytest.raises(error, match=match):
        render(source, t="soon")
