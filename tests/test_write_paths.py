"""Every ORM write path of a registered model bumps its tags ("Exact everywhere", items 1-5, 7).

Each test writes through one path Django offers and checks that the tag
versions the change must move did move (or, for a rolled-back transaction,
did not), through real SQLite and PostgreSQL transactions. Tests that cache a
value check the user-visible outcome as well: the entry misses after the
write.
"""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches
from django.db import connections, transaction
from django.test import override_settings

from fragmented_keys_django import ModelTagManager, TenantContext, metrics
from tests.testapp.models import (
    Badge,
    Hospital,
    Item,
    ItemProxy,
    Org,
    Patient,
    Place,
    Restaurant,
    Review,
    Sticker,
)

from .conftest import store_settings

use_tenant = TenantContext.use_tenant
MISS = object()

DATABASES = [
    pytest.param("default", id="sqlite", marks=pytest.mark.django_db(transaction=True)),
    pytest.param(
        "pg",
        id="pg",
        marks=[
            pytest.mark.postgres,
            pytest.mark.django_db(transaction=True, databases=["default", "pg"]),
        ],
    ),
]


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def frag():
    with override_settings(CACHES=store_settings("locmem")):
        yield caches["fragmented"]


@pytest.fixture(params=DATABASES)
def db(request):
    """The database alias the test writes to (SQLite and PostgreSQL)."""
    return request.param


def versions(frag, *tags, tenant=None):
    with use_tenant(tenant):
        return tuple(frag.get_tag_version(name, str(inst)) for name, inst in tags)


def moved(before, after):
    return tuple(a != b for a, b in zip(before, after, strict=True))


def cached(frag, key, tags, tenant=None, value="v"):
    """Cache *value* under *key* with *tags*; return a function telling if it is still served."""
    with use_tenant(tenant):
        frag.set_with_tags(key, value, tags)

    def served():
        with use_tenant(tenant):
            return frag.get_with_tags(key, tags, default=MISS) == value

    assert served()
    return served


# -- 1. proxy models and multi-table inheritance ---------------------------------------------


def test_save_through_a_proxy_bumps_the_registered_concrete_model(frag, db):
    ModelTagManager.register_model(Item)
    item = Item.objects.using(db).create(name="a")
    served = cached(frag, "item", [("Item", item.pk)])
    proxy = ItemProxy.objects.using(db).get(pk=item.pk)
    proxy.qty = 5
    proxy.save()
    assert not served()


def test_save_through_the_concrete_model_bumps_a_registered_proxy(frag, db):
    ModelTagManager.register_model(ItemProxy)
    item = Item.objects.using(db).create(name="a")
    served = cached(frag, "item", [("ItemProxy", item.pk), ("ItemProxy", "")])
    item.qty = 5
    item.save()
    assert not served()
    served = cached(frag, "item", [("ItemProxy", "")])
    Item.objects.using(db).get(pk=item.pk).delete()
    assert not served()


def test_save_through_the_mti_parent_bumps_a_registered_child(frag, db):
    ModelTagManager.register_model(Restaurant)
    r = Restaurant.objects.using(db).create(name="r", serves="soup")
    served = cached(frag, "r", [("Restaurant", r.pk)])
    place = Place.objects.using(db).get(pk=r.pk)
    place.name = "renamed"
    place.save()
    assert not served()


def test_a_plain_parent_row_does_not_call_a_child_callback(frag, db):
    seen = []
    ModelTagManager.register_model(
        Restaurant, on_update=lambda sender, r, fields: seen.append(r.serves) or [("R", r.pk)]
    )
    lone = Place.objects.using(db).create(name="no restaurant here")
    lone.name = "still none"
    lone.save()
    assert seen == []
    r = Restaurant.objects.using(db).create(name="r", serves="soup")
    Place.objects.using(db).get(pk=r.pk).save()
    assert seen == ["soup", "soup"]  # the child row, fetched: as it was and as it is


def test_save_of_an_mti_child_bumps_a_registered_parent(frag, db):
    ModelTagManager.register_model(Place)
    model_wide = cached(frag, "places", [("Place", "")])
    r = Restaurant.objects.using(db).create(name="r")
    assert not model_wide()  # the create inserted a Place row
    served = cached(frag, "p", [("Place", r.pk)])
    r.name = "renamed"
    r.save()
    assert not served()
    served = cached(frag, "p", [("Place", r.pk)])
    r.delete()
    assert not served()


def test_parent_and_child_both_registered_each_get_their_tags(frag, db):
    ModelTagManager.register_model(Place)
    ModelTagManager.register_model(Restaurant)
    r = Restaurant.objects.using(db).create(name="r")
    before = versions(frag, ("Place", r.pk), ("Restaurant", r.pk))
    r.serves = "tea"
    r.save()
    assert moved(before, versions(frag, ("Place", r.pk), ("Restaurant", r.pk))) == (True, True)


# -- 2. cascades that send no signal --------------------------------------------------------


@pytest.mark.parametrize("model", [Review, Badge, Sticker], ids=["SET_NULL", "SET_DEFAULT", "SET"])
def test_delete_rewriting_registered_children_bumps_them(frag, db, model):
    ModelTagManager.register_model(model)
    Org.objects.using(db).create(name="fallback")
    org = Org.objects.using(db).create(name="o")
    children = [model.objects.using(db).create(org=org) for _ in range(3)]
    other = model.objects.using(db).create(org=None)
    served = [cached(frag, f"c{c.pk}", [(model.__name__, c.pk)]) for c in children]
    untouched = cached(frag, "other", [(model.__name__, other.pk)])
    org_pk = org.pk
    org.delete()
    assert all(model.objects.using(db).get(pk=c.pk).org_id != org_pk for c in children)
    assert not any(s() for s in served)
    assert untouched()


def test_set_null_cascade_bumps_the_scope_the_children_left(frag, db):
    ModelTagManager.register_model(
        Review, on_update=lambda sender, r, fields: [("Review", f"org:{r.org_id}")]
    )
    org = Org.objects.using(db).create(name="o")
    Review.objects.using(db).create(org=org, text="t")
    org_list = cached(frag, "org-reviews", [("Review", f"org:{org.pk}")])
    unscoped = cached(frag, "unscoped", [("Review", "org:None")])
    org.delete()
    assert not org_list()
    assert not unscoped()  # the rows joined the "no org" scope


def test_set_null_cascade_rolled_back_bumps_nothing(frag, db):
    ModelTagManager.register_model(Review)
    org = Org.objects.using(db).create(name="o")
    review = Review.objects.using(db).create(org=org, text="t")
    served = cached(frag, "r", [("Review", review.pk)])
    with pytest.raises(Boom), transaction.atomic(using=db):
        org.delete()
        raise Boom
    assert served()


def test_cascade_delete_of_100_registered_children_is_one_bump_round_trip(db):
    ModelTagManager.register_model(Patient)
    conf = store_settings("locmem", OPTIONS={"VERIFY_BUMPS": False})
    conf["default"] = {
        "BACKEND": "tests.counting_backend.CountingLocMemCache",
        "LOCATION": f"count-{uuid.uuid4().hex}",
    }
    with override_settings(CACHES=conf):
        frag, store = caches["fragmented"], caches["default"]
        hospital = Hospital.objects.using(db).create(name="h")
        Patient.objects.using(db).bulk_create(
            [Patient(name=str(i), hospital=hospital) for i in range(100)]
        )
        pks = list(Patient.objects.using(db).values_list("pk", flat=True))
        before = versions(frag, *[("Patient", pk) for pk in pks])
        store.reset_calls()
        hospital.delete()
        assert dict(store.calls) == {"set_many": 1}
        assert all(moved(before, versions(frag, *[("Patient", pk) for pk in pks])))


# -- 3. bulk writes that return no primary keys --------------------------------------------------


def test_bulk_create_ignoring_conflicts_bumps_the_model_wide_tag(frag, db):
    ModelTagManager.register_model(Item)
    Item.objects.using(db).create(name="dup")
    listing = cached(frag, "items", [("Item", "")])
    created = Item.objects.using(db).bulk_create(
        [Item(name="dup", qty=1), Item(name="new", qty=2)], ignore_conflicts=True
    )
    assert all(i.pk is None for i in created)  # the database reported no keys
    assert not listing()


def test_bulk_create_ignoring_conflicts_calls_on_create_and_uses_the_row_tenant(frag, db):
    ModelTagManager.register_model(
        Review,
        tenant_field="org",
        on_create=lambda sender, r: [("Review", f"text:{r.text}")],
    )
    org = Org.objects.using(db).create(name="o")
    tenant = str(org.pk)
    listing = cached(frag, "list", [("Review", "")], tenant=tenant)
    scoped = cached(frag, "scoped", [("Review", "text:hello")], tenant=tenant)
    Review.objects.using(db).bulk_create([Review(org=org, text="hello")], ignore_conflicts=True)
    assert not listing()
    assert not scoped()


def test_bulk_create_updating_conflicts_bumps_the_updated_rows(frag, db):
    ModelTagManager.register_model(Item)
    old = Item.objects.using(db).create(name="dup", qty=1)
    served = cached(frag, "item", [("Item", old.pk)])
    Item.objects.using(db).bulk_create(
        [Item(name="dup", qty=9)],
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=["qty"],
    )
    assert Item.objects.using(db).get(pk=old.pk).qty == 9
    assert not served()


# -- 4. tenant_field: one definition on every path; callbacks get real rows --------------------


@pytest.mark.parametrize("field", ["org", "org_id"])
def test_tenant_field_naming_a_foreign_key_is_its_column_on_every_path(frag, db, field):
    ModelTagManager.register_model(Review, tenant_field=field)
    org = Org.objects.using(db).create(name="o")
    tenant = str(org.pk)
    review = Review.objects.using(db).create(org=org, text="a")
    with use_tenant("elsewhere"):
        paths = [
            lambda: review.save(),
            lambda: Review.objects.using(db).filter(pk=review.pk).update(text="b"),
            lambda: Review.objects.using(db).bulk_update([review], ["text"]),
        ]
        for write in paths:
            served = cached(frag, "r", [("Review", review.pk)], tenant=tenant)
            write()
            assert not served()


def test_update_callbacks_receive_real_rows_as_they_were_and_are(frag, db):
    seen = []

    def on_update(sender, review, fields):
        seen.append((type(review), review.org_id, review.text))
        return [("Review", f"org:{review.org_id}")]

    ModelTagManager.register_model(Review, on_update=on_update)
    a = Org.objects.using(db).create(name="a")
    b = Org.objects.using(db).create(name="b")
    review = Review.objects.using(db).create(org=a, text="t")
    lists = [cached(frag, f"org{o.pk}", [("Review", f"org:{o.pk}")]) for o in (a, b)]
    Review.objects.using(db).filter(pk=review.pk).update(org=b)
    assert sorted(seen) == sorted([(Review, b.pk, "t"), (Review, a.pk, "t")])
    assert not any(s() for s in lists)  # left org a's list, joined org b's


def test_a_scope_move_through_save_bumps_both_scopes(frag, db):
    ModelTagManager.register_model(
        Review, on_update=lambda sender, r, fields: [("Review", f"org:{r.org_id}")]
    )
    a = Org.objects.using(db).create(name="a")
    b = Org.objects.using(db).create(name="b")
    review = Review.objects.using(db).create(org=a, text="t")
    lists = [cached(frag, f"org{o.pk}", [("Review", f"org:{o.pk}")]) for o in (a, b)]
    review.org = b
    review.save()
    assert not any(s() for s in lists)


def test_a_row_moving_between_tenants_bumps_both_tenants(frag, db):
    ModelTagManager.register_model(Review, tenant_field="org")
    a = Org.objects.using(db).create(name="a")
    b = Org.objects.using(db).create(name="b")
    review = Review.objects.using(db).create(org=a, text="t")
    lists = [cached(frag, "list", [("Review", "")], tenant=str(o.pk)) for o in (a, b)]
    review.org = b
    review.save()
    assert not any(s() for s in lists)
    lists = [cached(frag, "list", [("Review", "")], tenant=str(o.pk)) for o in (a, b)]
    Review.objects.using(db).filter(pk=review.pk).update(org=a)
    assert not any(s() for s in lists)


@pytest.mark.parametrize("path", ["save", "update", "bulk_update"])
def test_a_raising_callback_still_bumps_the_row_then_raises(frag, db, path):
    def on_update(sender, review, fields):
        raise Boom("callback bug")

    ModelTagManager.register_model(Review, on_update=on_update)
    review = Review.objects.using(db).create(text="a")
    served = cached(frag, "r", [("Review", review.pk)])
    listing = cached(frag, "l", [("Review", "")])
    with pytest.raises(Boom):
        if path == "save":
            review.text = "b"
            review.save()
        elif path == "update":
            Review.objects.using(db).filter(pk=review.pk).update(text="b")
        else:
            review.text = "b"
            Review.objects.using(db).bulk_update([review], ["text"])
    if path == "save":  # post_save runs after the autocommit: the row is written and bumped
        assert Review.objects.using(db).get(pk=review.pk).text == "b"
        assert not served() and not listing()
    else:  # the update and its bumps are one transaction: neither happened
        assert Review.objects.using(db).get(pk=review.pk).text == "a"
        assert served() and listing()


# -- 5. other on_commit hooks ---------------------------------------------------------------


def test_a_failing_hook_queued_earlier_does_not_cost_the_bump(frag, db):
    ModelTagManager.register_model(Item)
    item = Item.objects.using(db).create(name="a")
    served = cached(frag, "item", [("Item", item.pk)])

    def send_mail():
        raise Boom("smtp down")

    with pytest.raises(Boom), transaction.atomic(using=db):
        transaction.on_commit(send_mail, using=db)  # not robust: Django stops at it
        item.qty = 3
        item.save()
    assert Item.objects.using(db).get(pk=item.pk).qty == 3  # committed
    assert not served()


def test_our_failing_hook_never_costs_a_later_hook(frag, db, caplog):
    """A ``tags_bumped`` receiver that raises is logged; later hooks still run."""
    from fragmented_keys_django.signals import tags_bumped

    ModelTagManager.register_model(Item)
    ran = []

    def receiver(**kwargs):
        raise Boom("receiver bug")

    tags_bumped.connect(receiver, weak=False, dispatch_uid="test-raising-receiver")
    try:
        metrics.reset()
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="a")
            transaction.on_commit(lambda: ran.append(1), using=db)
    finally:
        tags_bumped.disconnect(dispatch_uid="test-raising-receiver")
    assert ran == [1]
    assert metrics.snapshot().get(("fragmented", "bump_signal")) == 1
    assert any("receiver bug" in r.getMessage() for r in caplog.records)


def test_hooks_of_ours_have_a_qualname_for_djangos_logging(db):
    from fragmented_keys_django.invalidation import PendingBump, _Bump
    from fragmented_keys_django.transactions import CommitHook

    for hook in (CommitHook(lambda: None, "x"), PendingBump(db, [_Bump("a", None, [])])):
        assert "fragmented_keys_django" in hook.__qualname__


def test_bump_hook_is_rolled_back_with_its_savepoint_even_when_placed_first(frag, db):
    ModelTagManager.register_model(Item)
    item = Item.objects.using(db).create(name="a")
    before = versions(frag, ("Item", item.pk))
    ran = []
    with transaction.atomic(using=db):
        transaction.on_commit(lambda: ran.append("outer"), using=db, robust=False)
        with pytest.raises(Boom), transaction.atomic(using=db):
            item.qty = 1
            item.save()
            raise Boom
    assert ran == ["outer"]
    assert versions(frag, ("Item", item.pk)) == before


# -- 6. async calls inside a sync transaction ------------------------------------------------


def test_async_invalidate_inside_a_sync_transaction_waits_for_the_commit(frag, db):
    from asgiref.sync import async_to_sync

    before = versions(frag, ("T", "1"))
    with transaction.atomic(using=db):
        async_to_sync(frag.ainvalidate_tags)([("T", "1")])
        assert versions(frag, ("T", "1")) == before  # not before the commit
    assert moved(before, versions(frag, ("T", "1"))) == (True,)
    before = versions(frag, ("T", "1"))
    with pytest.raises(Boom), transaction.atomic(using=db):
        async_to_sync(frag.ainvalidate_tags)([("T", "1")])
        async_to_sync(frag.ainvalidate_tenant)()
        raise Boom
    assert versions(frag, ("T", "1")) == before  # rolled back: nothing bumped


def test_async_get_or_set_inside_a_rolled_back_transaction_stores_nothing(frag, db):
    from asgiref.sync import async_to_sync, sync_to_async

    ModelTagManager.register_model(Item)
    item = Item.objects.using(db).create(name="a", qty=1)
    tags = [("Item", item.pk)]

    async def qty():
        return await sync_to_async(
            lambda: Item.objects.using(db).get(pk=item.pk).qty, thread_sensitive=True
        )()

    with pytest.raises(Boom), transaction.atomic(using=db):
        Item.objects.using(db).filter(pk=item.pk).update(qty=99)  # dirty: bumps queued
        assert async_to_sync(frag.aget_or_set_with_tags)("qty", qty, tags) == 99
        raise Boom
    # A clean transaction reading a value the database will roll back: a raw write
    # nobody sees (the safety net off; with it on, the write makes it dirty).
    with (
        override_settings(FRAGMENTED_KEYS={"SAFETY_NET": False}),
        pytest.raises(Boom),
        transaction.atomic(using=db),
    ):
        connections[db].cursor().execute(
            f"UPDATE {Item._meta.db_table} SET qty = 77 WHERE id = %s", [item.pk]
        )
        assert async_to_sync(frag.aget_or_set_with_tags)("qty", qty, tags) == 77
        assert async_to_sync(frag.aset_with_tags)("other", 77, tags) is True
        raise Boom
    assert frag.get_with_tags("qty", tags, default=MISS) is MISS
    assert frag.get_with_tags("other", tags, default=MISS) is MISS
    assert async_to_sync(frag.aget_or_set_with_tags)("qty", qty, tags) == 1


def test_async_reads_inside_a_dirty_sync_transaction_bypass_the_cache(frag, db):
    from asgiref.sync import async_to_sync

    ModelTagManager.register_model(Item)
    item = Item.objects.using(db).create(name="a")
    tags = [("Item", item.pk)]
    frag.set_with_tags("k", "old", tags)
    with transaction.atomic(using=db):
        item.qty = 5
        item.save()
        assert async_to_sync(frag.aget_with_tags)("k", tags, default=MISS) is MISS
        assert async_to_sync(frag.aget_many_with_tags)(["k"], tags) == {}
    assert frag.get_with_tags("k", tags, default=MISS) is MISS  # bumped at commit


def test_async_get_or_set_in_a_clean_transaction_stores_at_commit(frag, db):
    from asgiref.sync import async_to_sync

    calls = []

    async def load():
        calls.append(1)
        return "v"

    with transaction.atomic(using=db):
        assert async_to_sync(frag.aget_or_set_with_tags)("k", load, [("T", "1")]) == "v"
        assert frag.get_with_tags("k", [("T", "1")], default=MISS) is MISS
    assert frag.get_with_tags("k", [("T", "1")]) == "v"


# -- 7. several aliases on one store ---------------------------------------------------------


def _two_aliases(tenant_store: dict | None) -> dict:
    conf = store_settings("locmem")
    conf["tenanted"] = {
        **conf["fragmented"],
        "OPTIONS": {"TENANT_STORES": tenant_store or {}},
    }
    return conf


@pytest.mark.django_db(transaction=True)
def test_a_save_bumps_every_alias_including_one_with_tenant_stores():
    ModelTagManager.register_model(Item)
    own = {"acme": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "x"}}
    own["acme"]["LOCATION"] = uuid.uuid4().hex
    with override_settings(CACHES=_two_aliases(own)):
        plain, tenanted = caches["fragmented"], caches["tenanted"]
        with use_tenant("acme"):
            item = Item.objects.create(name="a")
            served = [cached(c, "i", [("Item", item.pk)], tenant="acme") for c in (plain, tenanted)]
            item.qty = 2
            item.save()
        assert not any(s() for s in served)


@pytest.mark.django_db(transaction=True)
def test_a_failed_bump_bypasses_every_alias_reading_those_versions(tmp_path, monkeypatch):
    from fragmented_keys_django.invalidation import _retrier

    from .race_support import RedisServer

    monkeypatch.setattr(_retrier, "interval", 60.0)  # the test lands the retry itself
    # AOF: the restarted server has the old entries and versions back.
    srv = RedisServer(
        "--appendonly", "yes", "--appendfsync", "always", workdir=str(tmp_path)
    ).start()
    try:
        conf = store_settings("locmem")
        conf["default"] = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": srv.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
        # The store's breaker is probed at once (the test's flush() lands the retry).
        conf["fragmented"]["OPTIONS"] = {"CIRCUIT_BREAKER": 0}
        conf["second"] = {**conf["fragmented"], "TIMEOUT": 600}  # same versions, another alias
        with override_settings(CACHES=conf):
            first, second = caches["fragmented"], caches["second"]
            served = [cached(c, "k", [("T", "1")], tenant="acme") for c in (first, second)]
            srv.stop()  # the bump is refused, never executed
            with use_tenant("acme"):
                first.invalidate_tags([("T", "1")])  # fails: queued for retry
            srv.start()
            assert _retrier.pending() == 1
            # The store answers again, the bump has not landed: no alias reading
            # those versions may serve the old entry.
            assert not any(s() for s in served)
            assert _retrier.flush()
            assert not any(s() for s in served)
    finally:
        srv.stop()
        _retrier.reset()


def test_connections_used(db):
    """Sanity: the test's writes went to the parametrised database."""
    assert connections[db].vendor in ("sqlite", "postgresql")


def test_deleting_one_side_of_an_m2m_link_bumps_the_other_side(frag, db):
    from tests.testapp.models import Doctor

    ModelTagManager.register_model(Patient)
    patient = Patient.objects.using(db).create(name="p")
    doctor = Doctor.objects.using(db).create(name="d")
    doctor.patients.add(patient)
    served = cached(frag, "doctors-of-p", [("Patient", patient.pk)])
    # Precisely, not by the table-level safety net: it is off here.
    with override_settings(FRAGMENTED_KEYS={"SAFETY_NET": False}):
        doctor.delete()  # Doctor is not registered: Django drops the link with no signal
    assert not served()


def test_a_save_through_the_parent_calls_a_child_callback_with_the_child_as_it_was(frag, db):
    seen = []
    ModelTagManager.register_model(
        Restaurant,
        on_update=lambda sender, r, fields: seen.append(r.name) or [("R", f"name:{r.name}")],
    )
    r = Restaurant.objects.using(db).create(name="old", serves="soup")
    lists = [cached(frag, f"n{n}", [("R", f"name:{n}")]) for n in ("old", "new")]
    place = Place.objects.using(db).get(pk=r.pk)
    place.name = "new"
    place.save()
    assert sorted(seen) == ["new", "old"]  # the child row as it is and as it was
    assert not any(s() for s in lists)


@pytest.mark.parametrize("shape", ["distinct", "outer-join", "annotated"])
def test_update_through_the_cache_aware_manager_accepts_what_django_accepts(frag, db, shape):
    """``CacheAwareQuerySet.update()`` locks the rows it reads: never a query Django's own refuses.

    PostgreSQL rejects ``FOR UPDATE`` with ``DISTINCT``, ``GROUP BY`` and on the
    nullable side of an outer join; Django's ``update()`` accepts such querysets.
    """
    from django.db.models import Count

    ModelTagManager.register_model(Patient)
    hospital = Hospital.objects.using(db).create(name="h")
    patient = Patient.objects.using(db).create(name="p", hospital=hospital)
    served = cached(frag, "patient", [("Patient", patient.pk)])
    qs = Patient.objects.using(db)
    if shape == "distinct":
        qs = qs.filter(hospital__name="h").distinct()
    elif shape == "outer-join":
        qs = qs.filter(doctors__isnull=True)
    else:
        qs = qs.annotate(n=Count("doctors")).filter(n=0)
    assert qs.update(name="x") == 1
    assert Patient.objects.using(db).get(pk=patient.pk).name == "x"
    assert not served()


def test_incr_and_touch_never_build_on_an_entry_a_pending_bump_invalidated(frag, monkeypatch):
    """A failed bump pending for the tenant: incr must not add to the old value (nor touch it)."""
    from fragmented_keys_django.invalidation import _Bump, _retrier, _space

    monkeypatch.setattr(_retrier, "interval", 3600.0)  # the bump stays pending here
    with use_tenant("acme"):
        frag.set("counter", 41)
        item = _Bump("fragmented", "acme", ["some-version-key"], space=_space("fragmented", "acme"))
        _retrier.add([item])
        try:
            with pytest.raises(ValueError):
                frag.incr("counter")
            assert frag.touch("counter") is False
        finally:
            _retrier.reset()
        assert frag.incr("counter") == 42
