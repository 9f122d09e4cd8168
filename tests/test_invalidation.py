"""ModelTagManager and transactions: bumps after commit, in the writer's tenant, never on rollback.

Real SQLite transactions (``django_db(transaction=True)``), a fresh locmem
store per test, and ``@tagged_cache`` functions that count their calls.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from django.core.cache import caches
from django.db import transaction
from django.test import override_settings

from fragmented_keys_django import ModelTagManager, TenantContext, tagged_cache
from tests.testapp.models import Doctor, Hospital, Patient

from .conftest import AsyncAPI, store_settings

use_tenant = TenantContext.use_tenant
MISS = object()
CALLS: Counter[str] = Counter()

transactional = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


@tagged_cache(tags=["Patient:{pk}"], vary_on=["pk"])
def patient_name(pk):
    CALLS["patient_name"] += 1
    return Patient.objects.get(pk=pk).name


@tagged_cache(tags=["Patient"], vary_on=[])
def patient_names():
    CALLS["patient_names"] += 1
    return sorted(Patient.objects.values_list("name", flat=True))


#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True


@pytest.fixture(autouse=True)
def fresh_store():
    CALLS.clear()
    with override_settings(CACHES=store_settings("locmem")):
        yield caches["fragmented"]


@pytest.fixture
def frag(fresh_store, api):
    return AsyncAPI(fresh_store) if api == "async" else fresh_store


@pytest.fixture
def registered():
    ModelTagManager.register_model(Patient)
    return Patient


def versions(frag, *tags):
    return tuple(frag.get_tag_version(name, str(inst)) for name, inst in tags)


def patient_versions(frag, p):
    return versions(frag, ("Patient", p.pk), ("Patient", ""))


def moved(before, after):
    """Return which of the versions changed, as booleans."""
    return tuple(a != b for a, b in zip(before, after, strict=True))


# -- autocommit ------------------------------------------------------------------------


@transactional
def test_save_bumps_instance_and_model_tags(frag, registered):
    p = Patient.objects.create(name="a")
    other = Patient.objects.create(name="z")
    before = patient_versions(frag, p)
    other_before = frag.get_tag_version("Patient", other.pk)
    assert 0 not in before  # the create bumped both
    p.name = "b"
    p.save()
    assert moved(before, patient_versions(frag, p)) == (True, True)
    assert frag.get_tag_version("Patient", other.pk) == other_before


@transactional
def test_cached_function_sees_saves_and_deletes(frag, registered):
    p = Patient.objects.create(name="a")
    assert patient_name(p.pk) == "a"
    assert patient_name(p.pk) == "a"
    assert patient_names() == ["a"]
    assert CALLS == {"patient_name": 1, "patient_names": 1}
    p.name = "b"
    p.save()
    assert patient_name(p.pk) == "b"
    assert patient_names() == ["b"]
    assert CALLS == {"patient_name": 2, "patient_names": 2}
    Patient.objects.create(name="c")
    assert patient_names() == ["b", "c"]
    assert patient_name(p.pk) == "b"
    assert CALLS == {"patient_name": 2, "patient_names": 3}


@transactional
def test_delete_bumps(frag, registered):
    p = Patient.objects.create(name="a")
    pk = p.pk
    before = patient_versions(frag, p)
    p.delete()
    after = versions(frag, ("Patient", pk), ("Patient", ""))
    assert moved(before, after) == (True, True)


@transactional
def test_m2m_change_bumps_both_sides(frag, registered):
    ModelTagManager.register_model(Doctor)
    p = Patient.objects.create(name="p")
    d = Doctor.objects.create(name="d")
    tags = [("Patient", p.pk), ("Patient", ""), ("Doctor", d.pk)]
    for change in (
        lambda: d.patients.add(p),
        lambda: d.patients.remove(p),
        lambda: p.doctors.add(d),
        lambda: p.doctors.remove(d),
    ):
        before = versions(frag, *tags)
        change()
        assert moved(before, versions(frag, *tags)) == (True, True, True)


@transactional
def test_m2m_add_from_unregistered_side_bumps_registered_rows(frag, registered):
    p = Patient.objects.create(name="p")
    d = Doctor.objects.create(name="d")
    before = patient_versions(frag, p)
    d.patients.add(p)
    assert moved(before, patient_versions(frag, p)) == (True, True)
    before = patient_versions(frag, p)
    d.patients.remove(p)
    assert moved(before, patient_versions(frag, p)) == (True, True)


@transactional
def test_m2m_clear_from_unregistered_side_bumps_registered_rows(frag, registered):
    """``doctor.patients.clear()`` changes p's relations exactly as ``remove(p)`` does."""
    p = Patient.objects.create(name="p")
    d = Doctor.objects.create(name="d")
    d.patients.add(p)
    before = patient_versions(frag, p)
    d.patients.clear()
    assert moved(before, patient_versions(frag, p)) == (True, True)


@transactional
def test_m2m_clear_from_registered_side_bumps(frag, registered):
    p = Patient.objects.create(name="p")
    d = Doctor.objects.create(name="d")
    p.doctors.add(d)
    before = patient_versions(frag, p)
    p.doctors.clear()
    assert moved(before, patient_versions(frag, p)) == (True, True)


@transactional
def test_unregistered_models_bump_nothing(frag, registered):
    h = Hospital.objects.create(name="h")
    h.name = "h2"
    h.save()
    assert frag.get_tag_version("Hospital", h.pk) == 0
    assert frag.get_tag_version("Hospital", "") == 0


# -- transactions --------------------------------------------------------------------------


@transactional
def test_bump_waits_for_commit(frag, registered):
    p = Patient.objects.create(name="a")
    before = patient_versions(frag, p)
    with transaction.atomic():
        p.name = "b"
        p.save()
        assert patient_versions(frag, p) == before
    assert moved(before, patient_versions(frag, p)) == (True, True)


@transactional
def test_rollback_bumps_nothing(frag, registered):
    p = Patient.objects.create(name="a")
    before = patient_versions(frag, p)
    with pytest.raises(Boom), transaction.atomic():
        p.name = "b"
        p.save()
        Patient.objects.create(name="new")
        raise Boom
    assert patient_versions(frag, p) == before


@transactional
def test_savepoint_rollback_bumps_nothing_but_outer_commit_lands(frag, registered):
    p1 = Patient.objects.create(name="1")
    p2 = Patient.objects.create(name="2")
    b1, b2 = patient_versions(frag, p1), patient_versions(frag, p2)
    with transaction.atomic():
        p1.name = "1b"
        p1.save()
        with pytest.raises(Boom), transaction.atomic():
            p2.name = "2b"
            p2.save()
            raise Boom
    assert moved(b1, patient_versions(frag, p1)) == (True, True)
    assert moved(b2[:1], patient_versions(frag, p2)[:1]) == (False,)


@transactional
def test_savepoint_rollback_alone_bumps_nothing(frag, registered):
    p = Patient.objects.create(name="a")
    before = patient_versions(frag, p)
    with transaction.atomic(), pytest.raises(Boom), transaction.atomic():
        p.name = "b"
        p.save()
        raise Boom
    assert patient_versions(frag, p) == before


@transactional
def test_tenant_is_the_one_current_at_save_time(frag, registered):
    p = Patient.objects.create(name="a")
    with use_tenant("A"):
        before_a = patient_versions(frag, p)
    with use_tenant("B"):
        before_b = patient_versions(frag, p)
        with transaction.atomic(), use_tenant("A"):
            p.name = "b"
            p.save()
        # Committed while tenant B is current.
        assert patient_versions(frag, p) == before_b
    with use_tenant("A"):
        assert moved(before_a, patient_versions(frag, p)) == (True, True)


@transactional
def test_commit_after_leaving_tenant_bumps_that_tenant(frag, registered):
    p = Patient.objects.create(name="a")
    with use_tenant("A"):
        before = patient_versions(frag, p)
    public_before = patient_versions(frag, p)
    with transaction.atomic(), use_tenant("A"):  # use_tenant exits first: commit outside A
        p.save()
    with use_tenant("A"):
        assert moved(before, patient_versions(frag, p)) == (True, True)
    assert patient_versions(frag, p) == public_before


@transactional
def test_save_in_tenant_a_invalidates_only_a(frag, registered):
    p = Patient.objects.create(name="a")
    for tenant in ("A", "B"):
        with use_tenant(tenant):
            assert patient_name(p.pk) == "a"
    assert CALLS["patient_name"] == 2
    with use_tenant("A"):
        p.name = "b"
        p.save()
        assert patient_name(p.pk) == "b"
    assert CALLS["patient_name"] == 3
    with use_tenant("B"):
        assert patient_name(p.pk) == "a"  # B's entry stays warm (B never saw the write)
    assert CALLS["patient_name"] == 3


@transactional
def test_many_saves_in_one_transaction_cost_one_bump_round_trip(registered):
    caches_conf = store_settings("locmem", OPTIONS={"VERIFY_BUMPS": False})
    caches_conf["default"] = {
        "BACKEND": "tests.counting_backend.CountingLocMemCache",
        "LOCATION": f"count-{uuid.uuid4().hex}",
    }
    with override_settings(CACHES=caches_conf):
        frag, store = caches["fragmented"], caches["default"]
        patients = [Patient.objects.create(name=str(i)) for i in range(5)]
        before = [patient_versions(frag, p) for p in patients]
        with transaction.atomic():
            for p in patients:
                p.name += "!"
                p.save()
            store.reset_calls()
        assert dict(store.calls) == {"set_many": 1}
        for p, b in zip(patients, before, strict=True):
            assert moved(b, patient_versions(frag, p)) == (True, True)


@transactional
def test_a_save_bumps_every_alias_of_one_store_in_one_round_trip(registered):
    caches_conf = store_settings("locmem", OPTIONS={"VERIFY_BUMPS": False})
    caches_conf["default"] = {
        "BACKEND": "tests.counting_backend.CountingLocMemCache",
        "LOCATION": f"count-{uuid.uuid4().hex}",
    }
    caches_conf["second"] = {**caches_conf["fragmented"], "PREFIX": "second"}
    with override_settings(CACHES=caches_conf):
        first, second, store = caches["fragmented"], caches["second"], caches["default"]
        patient = Patient.objects.create(name="p")
        before = [patient_versions(c, patient) for c in (first, second)]
        store.reset_calls()
        patient.name = "q"
        patient.save()  # autocommit: bumped at once, both aliases together
        assert dict(store.calls) == {"set_many": 1}
        after = [patient_versions(c, patient) for c in (first, second)]
        assert [moved(b, a) for b, a in zip(before, after, strict=True)] == [(True, True)] * 2


@transactional
def test_user_on_commit_hook_sees_earlier_bumps(frag, registered):
    """A user's hook queued after a save reads the cache after that save's bump."""
    p = Patient.objects.create(name="a")
    assert patient_name(p.pk) == "a"
    seen = []
    with transaction.atomic():
        p.name = "b"
        p.save()
        transaction.on_commit(lambda: seen.append(patient_name(p.pk)))
        p.save()
    assert seen == ["b"]


# -- lifecycle callbacks and helpers -------------------------------------------------------


@transactional
def test_lifecycle_callbacks(frag):
    got = []

    def on_create(sender, instance):
        got.append(("create", sender, instance.pk))
        return [("Ward", "created")]

    def on_update(sender, instance, update_fields):
        got.append(("update", sender, instance.pk, update_fields))
        return [("Ward", f"updated:{instance.pk}")]

    def on_delete(sender, instance):
        got.append(("delete", sender, instance.pk))
        return [("Ward", "deleted")]

    ModelTagManager.register_model(
        Patient, tag_name="Ward", on_create=on_create, on_update=on_update, on_delete=on_delete
    )
    watched = [("Ward", "created"), ("Ward", "deleted"), ("Ward", "")]
    p = Patient.objects.create(name="a")
    assert got == [("create", Patient, p.pk)]
    assert frag.get_tag_version("Ward", "created") != 0
    # The callback's tags replace the defaults.
    assert frag.get_tag_version("Ward", "") == 0
    assert frag.get_tag_version("Ward", p.pk) == 0
    before = versions(frag, *watched, ("Ward", f"updated:{p.pk}"))
    p.save(update_fields=["name"])
    assert got[-1] == ("update", Patient, p.pk, frozenset({"name"}))
    assert moved(before, versions(frag, *watched, ("Ward", f"updated:{p.pk}"))) == (
        False,
        False,
        False,
        True,
    )
    pk = p.pk
    p.delete()
    assert got[-1] == ("delete", Patient, pk)
    assert frag.get_tag_version("Ward", "deleted") != 0


@transactional
def test_registration_api(frag):
    assert ModelTagManager.is_registered(Patient) is False
    assert ModelTagManager.get_registered_models() == {}
    ModelTagManager.register_model(Patient)
    ModelTagManager.register_model(Hospital, tag_name="Clinic")
    assert ModelTagManager.is_registered(Patient) is True
    assert ModelTagManager.get_registered_models() == {Patient: "Patient", Hospital: "Clinic"}
    assert ModelTagManager.get_tag_name_for_model(Hospital) == "Clinic"
    assert ModelTagManager.get_tag_name_for_model(Doctor) is None
    h = Hospital.objects.create(name="h")
    assert frag.get_tag_version("Clinic", h.pk) != 0
    assert frag.get_tag_version("Hospital", h.pk) == 0
    ModelTagManager.unregister_model(Hospital)
    assert ModelTagManager.is_registered(Hospital) is False
    assert ModelTagManager.get_registered_models() == {Patient: "Patient"}
    before = frag.get_tag_version("Clinic", h.pk)
    h.save()
    assert frag.get_tag_version("Clinic", h.pk) == before
    ModelTagManager.unregister_model(Hospital)  # twice: harmless
    with pytest.raises(TypeError):
        ModelTagManager.register_model("Patient")


@transactional
def test_invalidate_model_tag(frag, registered):
    before = versions(frag, ("Patient", 7), ("Patient", ""), ("Patient", 8))
    assert ModelTagManager.invalidate_model_tag(Patient, 7) is True
    assert moved(before, versions(frag, ("Patient", 7), ("Patient", ""), ("Patient", 8))) == (
        True,
        True,
        False,
    )
    before = versions(frag, ("Patient", 8))
    assert ModelTagManager.invalidate_model_tag("Patient", 8) is True
    assert moved(before, versions(frag, ("Patient", 8))) == (True,)
    assert ModelTagManager.invalidate_model_tag(Doctor, 1) is False
    assert ModelTagManager.invalidate_model_tag("Nope", 1) is False
    assert frag.get_tag_version("Nope", 1) == 0


@transactional
def test_invalidate_model_tag_invalidates_cached_function(frag, registered):
    p = Patient.objects.create(name="a")
    assert patient_name(p.pk) == "a"
    Patient.objects.filter(pk=p.pk).update(name="raw")  # bumps via CacheAwareQuerySet too
    ModelTagManager.invalidate_model_tag(Patient, p.pk)
    assert patient_name(p.pk) == "raw"
    assert CALLS["patient_name"] == 2


@transactional
def test_invalidate_scope(frag):
    before = frag.get_tag_version("Review", "org:42")
    assert ModelTagManager.invalidate_scope("Review", "org:42") is True
    assert frag.get_tag_version("Review", "org:42") not in (0, before)
    assert frag.get_tag_version("Review", "") == 0


@transactional
def test_invalidate_bulk(frag, registered):
    tags = [("Patient", 1), ("Patient", 2), ("Patient", "org:1"), ("Patient", ""), ("Patient", 3)]
    before = versions(frag, *tags)
    assert ModelTagManager.invalidate_bulk(Patient, pks=[1, 2], scopes=["org:1"]) == 4
    assert moved(before, versions(frag, *tags)) == (True, True, True, True, False)
    # A string that is not a registered name is the tag name itself.
    before = versions(frag, ("Thing", 5), ("Thing", ""))
    assert ModelTagManager.invalidate_bulk("Thing", pks=[5]) == 2
    assert moved(before, versions(frag, ("Thing", 5), ("Thing", ""))) == (True, True)
    # Scopes only: no model-wide bump.
    before = versions(frag, ("Patient", ""))
    assert ModelTagManager.invalidate_bulk("Patient", scopes=["s"]) == 1
    assert versions(frag, ("Patient", "")) == before
    # An unregistered model class bumps nothing.
    assert ModelTagManager.invalidate_bulk(Doctor, pks=[1]) == 0
    assert frag.get_tag_version("Doctor", 1) == 0


@transactional
def test_invalidate_bulk_inside_transaction_waits_for_commit(frag, registered):
    before = versions(frag, ("Patient", 1))
    with transaction.atomic():
        ModelTagManager.invalidate_bulk(Patient, pks=[1])
        assert versions(frag, ("Patient", 1)) == before
    assert moved(before, versions(frag, ("Patient", 1))) == (True,)
    with pytest.raises(Boom), transaction.atomic():
        ModelTagManager.invalidate_bulk(Patient, pks=[1])
        after_commit = versions(frag, ("Patient", 1))
        raise Boom
    assert versions(frag, ("Patient", 1)) == after_commit


@transactional
def test_backend_invalidate_tags_inside_transaction_waits_for_commit(frag):
    frag.set_with_tags("k", "v", [("X", "1")])
    with transaction.atomic():
        frag.invalidate_tags([("X", "1")])
    assert frag.get_with_tags("k", [("X", "1")], default=MISS) is MISS
    frag.set_with_tags("k", "v2", [("X", "1")])
    with pytest.raises(Boom), transaction.atomic():
        frag.invalidate_tags([("X", "1")])
        raise Boom
    assert frag.get_with_tags("k", [("X", "1")]) == "v2"


# -- CacheAwareManager ----------------------------------------------------------------------


@transactional
def test_bulk_create_bumps(frag, registered):
    model_before = frag.get_tag_version("Patient", "")
    created = Patient.objects.bulk_create([Patient(name="x"), Patient(name="y")])
    assert all(p.pk is not None for p in created)
    assert frag.get_tag_version("Patient", "") != model_before
    for p in created:
        assert frag.get_tag_version("Patient", p.pk) != 0


@transactional
def test_bulk_update_bumps(frag, registered):
    ps = [Patient.objects.create(name=str(i)) for i in range(3)]
    before = [patient_versions(frag, p) for p in ps]
    for p in ps[:2]:
        p.name += "!"
    assert Patient.objects.bulk_update(ps[:2], ["name"]) == 2
    assert moved(before[0], patient_versions(frag, ps[0])) == (True, True)
    assert moved(before[1], patient_versions(frag, ps[1])) == (True, True)
    assert moved(before[2][:1], patient_versions(frag, ps[2])[:1]) == (False,)


@transactional
def test_queryset_update_bumps_touched_rows(frag, registered):
    a = Patient.objects.create(name="a")
    b = Patient.objects.create(name="b")
    assert patient_name(a.pk) == "a"
    assert patient_names() == ["a", "b"]
    before_b = frag.get_tag_version("Patient", b.pk)
    assert Patient.objects.filter(pk=a.pk).update(name="A") == 1
    assert patient_name(a.pk) == "A"
    assert patient_names() == ["A", "b"]
    assert frag.get_tag_version("Patient", b.pk) == before_b


@transactional
def test_queryset_update_inside_rolled_back_transaction_bumps_nothing(frag, registered):
    a = Patient.objects.create(name="a")
    before = patient_versions(frag, a)
    with pytest.raises(Boom), transaction.atomic():
        Patient.objects.filter(pk=a.pk).update(name="A")
        raise Boom
    assert patient_versions(frag, a) == before


@transactional
def test_queryset_delete_bumps_when_signals_are_not_connected(frag):
    ModelTagManager.register_model(Patient, auto_connect=False)
    a = Patient.objects.create(name="a")
    assert frag.get_tag_version("Patient", a.pk) == 0  # not connected: save bumps nothing
    pk = a.pk
    Patient.objects.filter(pk=pk).delete()
    assert frag.get_tag_version("Patient", pk) != 0
    assert frag.get_tag_version("Patient", "") != 0


@transactional
def test_queryset_delete_bumps_when_connected(frag, registered):
    a = Patient.objects.create(name="a")
    before = patient_versions(frag, a)
    Patient.objects.filter(pk=a.pk).delete()
    assert moved(before, versions(frag, ("Patient", a.pk), ("Patient", ""))) == (True, True)


# -- reads and writes inside transactions --------------------------------------------------


@transactional
def test_writer_reads_its_own_writes_and_does_not_populate_cache(frag, registered):
    p = Patient.objects.create(name="a")
    assert patient_name(p.pk) == "a"
    with transaction.atomic():
        p.name = "b"
        p.save()
        assert patient_name(p.pk) == "b"
        assert patient_name(p.pk) == "b"
        assert CALLS["patient_name"] == 3  # bypassed: computed each time
        assert frag.get_with_tags("x", [("Other", "1")], default=MISS) is MISS
    assert patient_name(p.pk) == "b"
    assert CALLS["patient_name"] == 4
    assert patient_name(p.pk) == "b"
    assert CALLS["patient_name"] == 4


@transactional
def test_dirty_value_never_cached_after_rollback(frag, registered):
    p = Patient.objects.create(name="a")
    assert patient_name(p.pk) == "a"
    with pytest.raises(Boom), transaction.atomic():
        p.name = "dirty"
        p.save()
        assert patient_name(p.pk) == "dirty"
        assert patient_names() == ["dirty"]
        frag.set_with_tags("direct", "dirty", [("Patient", str(p.pk))])
        raise Boom
    assert patient_name(p.pk) == "a"
    assert patient_names() == ["a"]
    assert frag.get_with_tags("direct", [("Patient", str(p.pk))], default=MISS) is MISS


@transactional
def test_clean_transaction_stores_only_after_commit(frag, registered):
    p = Patient.objects.create(name="a")
    with transaction.atomic():
        assert patient_name(p.pk) == "a"
        assert patient_name(p.pk) == "a"
        assert CALLS["patient_name"] == 2  # not stored yet
        assert frag.set_with_tags("direct", "v", [("Patient", str(p.pk))]) is True
        assert frag.get_with_tags("direct", [("Patient", str(p.pk))], default=MISS) is MISS
    assert patient_name(p.pk) == "a"
    assert CALLS["patient_name"] == 2  # stored on commit
    assert frag.get_with_tags("direct", [("Patient", str(p.pk))]) == "v"


@transactional
def test_clean_transaction_stores_nothing_on_rollback(frag, registered):
    p = Patient.objects.create(name="a")
    with pytest.raises(Boom), transaction.atomic():
        assert patient_name(p.pk) == "a"
        frag.set_with_tags("direct", "v", [("Patient", str(p.pk))])
        raise Boom
    assert frag.get_with_tags("direct", [("Patient", str(p.pk))], default=MISS) is MISS
    assert patient_name(p.pk) == "a"
    assert CALLS["patient_name"] == 2


@transactional
def test_hit_inside_clean_transaction_is_served(frag, registered):
    p = Patient.objects.create(name="a")
    assert patient_name(p.pk) == "a"
    with transaction.atomic():
        assert patient_name(p.pk) == "a"
    assert CALLS["patient_name"] == 1


# -- Django TestCase-style tests --------------------------------------------------------------


@pytest.mark.django_db
def test_testcase_atomic_does_not_defer_bumps(frag, registered):
    p = Patient.objects.create(name="a")
    before = patient_versions(frag, p)
    assert 0 not in before
    assert patient_name(p.pk) == "a"
    p.name = "b"
    p.save()
    assert moved(before, patient_versions(frag, p)) == (True, True)
    assert patient_name(p.pk) == "b"
    assert patient_name(p.pk) == "b"
    assert CALLS["patient_name"] == 2  # stored at once, not deferred


@pytest.mark.django_db
def test_testcase_capture_on_commit_callbacks_executes_bumps(
    frag, registered, django_capture_on_commit_callbacks
):
    """Django's recommended way to test on_commit code must run our bumps."""
    p = Patient.objects.create(name="a")
    before = patient_versions(frag, p)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            p.name = "b"
            p.save()
        assert patient_versions(frag, p) == before
    assert len(callbacks) >= 1
    assert moved(before, patient_versions(frag, p)) == (True, True)


@pytest.mark.django_db
def test_testcase_capture_on_commit_callbacks_two_saves(
    frag, registered, django_capture_on_commit_callbacks
):
    p = Patient.objects.create(name="a")
    q = Patient.objects.create(name="q")
    before_p, before_q = patient_versions(frag, p), patient_versions(frag, q)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        p.save()
        q.save()
    assert moved(before_p, patient_versions(frag, p)) == (True, True)
    assert moved(before_q, patient_versions(frag, q)) == (True, True)
