"""The safety net: writes that send no signal still invalidate the entries of the model they touch.

Real SQLite and PostgreSQL (aliases ``default`` and ``pg``), real locmem and
Redis stores, real transactions. Each signal-less write path (plain-manager
``update()`` and ``bulk_update()``, ``cursor.execute``/``executemany``, a
``SET_NULL`` cascade, a ``RunPython`` data migration over historical models)
must make every dependent entry of the written model miss after the commit,
and leave it warm after a rollback; precise paths (``save()``, ``delete()``,
m2m changes, ``CacheAwareManager``) must not move the net versions.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from django.apps import apps
from django.core import checks
from django.core.cache import caches
from django.db import IntegrityError, connections, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.test import override_settings

from fragmented_keys_django import ModelTagManager, TenantContext, net, precise, tagged_cache
from fragmented_keys_django.exceptions import ConfigurationError
from fragmented_keys_django.keys import entry_keys, net_version_key
from fragmented_keys_django.signals import tags_bumped
from fragmented_keys_django.sql_writes import EVERY_TABLE, written_tables
from tests.testapp.models import Doctor, Hospital, NetVisit, Note, Patient

from .conftest import AsyncAPI, store_settings
from .redis_dbs import redis_url
from .test_bump_retry import GatedLocMemCache, gated  # noqa: F401  (a fixture)

use_tenant = TenantContext.use_tenant
MISS = object()
TAGS = [("Hospital", "1"), ("Hospital", "")]  # an instance tag and the model-wide tag
DBS = [
    pytest.param("default", id="sqlite"),
    pytest.param("pg", id="pg", marks=pytest.mark.postgres),
]
STORES = [
    pytest.param("locmem", id="locmem"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
]

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "pg"])


class Boom(Exception):
    pass


#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True


@pytest.fixture(params=STORES)
def frag(request, api):
    with override_settings(CACHES=store_settings(request.param)):
        backend = caches["fragmented"]
        yield AsyncAPI(backend) if api == "async" else backend
        backend.close()


@pytest.fixture(params=DBS)
def using(request):
    return request.param


@pytest.fixture
def hospitals(using):
    """Hospital registered; two rows on *using*."""
    ModelTagManager.register_model(Hospital)
    return [Hospital.objects.using(using).create(name=n) for n in ("a", "b")]


def warm(frag, tags=TAGS, key="e"):
    frag.set_with_tags(key, "cached", tags)
    assert frag.get_with_tags(key, tags, MISS) == "cached"


def is_warm(frag, tags=TAGS, key="e"):
    return frag.get_with_tags(key, tags, MISS) == "cached"


def net_tokens(frag, name, tenant):
    """Return the net versions (tenant's, all tenants') of tag name *name*, as stored now."""
    prefix = frag.options.prefix
    store = frag.store_for(tenant)
    return (
        store.get(net_version_key(prefix, tenant, name)),
        store.get(net_version_key(prefix, None, name)),
    )


# -- each signal-less path: a miss after the commit, warm after a rollback --------------


def _plain_update(using, hospitals):
    Hospital.objects.using(using).filter(pk=hospitals[1].pk).update(name="x")


def _bulk_update(using, hospitals):
    for h in hospitals:
        h.name = h.name + "!"
    Hospital.objects.using(using).bulk_update(hospitals, ["name"])


def _bulk_create(using, hospitals):
    Hospital.objects.using(using).bulk_create([Hospital(name="new")])


def _cursor_execute(using, hospitals):
    with connections[using].cursor() as cursor:
        cursor.execute(
            "UPDATE testapp_hospital SET name = %s WHERE id = %s", ["x", hospitals[1].pk]
        )


def _cursor_executemany(using, hospitals):
    with connections[using].cursor() as cursor:
        cursor.executemany(
            'UPDATE "testapp_hospital" SET "name" = %s WHERE "id" = %s',
            [["x", h.pk] for h in hospitals],
        )


def _raw_delete(using, hospitals):
    with connections[using].cursor() as cursor:
        cursor.execute("DELETE FROM testapp_hospital WHERE id = %s", [hospitals[1].pk])


PATHS = [
    pytest.param(_plain_update, id="queryset-update"),
    pytest.param(_bulk_update, id="bulk_update"),
    pytest.param(_bulk_create, id="bulk_create"),
    pytest.param(_cursor_execute, id="cursor-execute"),
    pytest.param(_cursor_executemany, id="cursor-executemany"),
    pytest.param(_raw_delete, id="raw-delete"),
]


@pytest.mark.parametrize("write", PATHS)
def test_signal_less_write_misses_after_commit(frag, using, hospitals, write):
    other = [("Hospital", str(hospitals[0].pk))]  # a row the write does not touch
    warm(frag)
    warm(frag, other, key="other")
    warm(frag, [("Patient", "1")], key="unrelated")
    with transaction.atomic(using=using):
        write(using, hospitals)
        assert not is_warm(frag), "a dirty transaction must bypass the cache"
    assert not is_warm(frag)
    assert not is_warm(frag, other, key="other"), "table-level: every entry of the model misses"
    assert is_warm(frag, [("Patient", "1")], key="unrelated")


@pytest.mark.parametrize("write", PATHS)
def test_signal_less_write_in_autocommit_misses_at_once(frag, using, hospitals, write):
    warm(frag)
    write(using, hospitals)
    assert not is_warm(frag)


@pytest.mark.parametrize("write", PATHS)
def test_rolled_back_write_leaves_entries_warm(frag, using, hospitals, write):
    warm(frag)
    with pytest.raises(Boom), transaction.atomic(using=using):
        write(using, hospitals)
        raise Boom
    assert is_warm(frag)


def test_rolled_back_savepoint_bumps_nothing_but_the_outer_commit_lands(frag, using, hospitals):
    warm(frag)
    with transaction.atomic(using=using), pytest.raises(Boom), transaction.atomic(using=using):
        _cursor_execute(using, hospitals)
        raise Boom
    assert is_warm(frag)
    with transaction.atomic(using=using):
        _plain_update(using, hospitals)  # queued at the outer level
        with pytest.raises(Boom), transaction.atomic(using=using):
            _plain_update(using, hospitals)  # the same write again, inside a savepoint
            raise Boom
    assert not is_warm(frag), "the outer level's bump was lost with the savepoint"


def test_set_null_cascade_misses_after_commit(frag, using):
    ModelTagManager.register_model(NetVisit)
    hospital = Hospital.objects.using(using).create(name="h")
    visit = NetVisit.objects.using(using).create(hospital=hospital)
    tags = [("NetVisit", str(visit.pk))]
    warm(frag, tags)
    with pytest.raises(Boom), transaction.atomic(using=using):
        Hospital.objects.using(using).get(pk=hospital.pk).delete()
        raise Boom
    assert is_warm(frag, tags)
    # UPDATE testapp_netvisit SET hospital_id = NULL: no signal is sent for NetVisit.
    Hospital.objects.using(using).get(pk=hospital.pk).delete()
    assert NetVisit.objects.using(using).get().hospital_id is None
    assert not is_warm(frag, tags)


def _migration(using, forwards):
    """Run *forwards* as a ``RunPython`` operation, with historical models, on *using*."""
    from django.db.migrations.operations import RunPython
    from django.db.migrations.state import ProjectState

    state = ProjectState.from_apps(apps)
    with connections[using].schema_editor() as editor:
        RunPython(forwards).database_forwards("testapp", editor, state, state)


def test_data_migration_with_historical_models_misses_after_commit(frag, using, hospitals):
    def forwards(historical, schema_editor):
        model = historical.get_model("testapp", "Hospital")
        assert model is not Hospital  # the registered class is not the one writing
        for row in model.objects.using(schema_editor.connection.alias).all():
            row.name = "migrated"
            row.save()  # post_save is sent for the historical class: not registered

    warm(frag)
    _migration(using, forwards)
    assert set(Hospital.objects.using(using).values_list("name", flat=True)) == {"migrated"}
    assert not is_warm(frag)


def test_rolled_back_data_migration_leaves_entries_warm(frag, using, hospitals):
    def forwards(historical, schema_editor):
        historical.get_model("testapp", "Hospital").objects.using(
            schema_editor.connection.alias
        ).update(name="migrated")
        raise Boom

    warm(frag)
    with pytest.raises(Boom):
        _migration(using, forwards)
    assert is_warm(frag)


def test_reads_and_unregistered_tables_bump_nothing(frag, hospitals, using):
    warm(frag)
    before = net_tokens(frag, "Hospital", None)
    assert list(Hospital.objects.using(using).all())
    NetVisit.objects.using(using).create(note="unregistered")
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT name FROM testapp_hospital")
        cursor.execute("UPDATE testapp_netvisit SET note = %s", ["x"])
    assert net_tokens(frag, "Hospital", None) == before
    assert is_warm(frag)


def test_many_writes_in_one_transaction_bump_once(frag, using, hospitals):
    bumps = []

    def record(sender, alias, tenant, tags, **kwargs):
        if not tags:  # net bumps carry no tags
            bumps.append(tenant)

    warm(frag)
    tags_bumped.connect(record)
    try:
        with transaction.atomic(using=using):
            for _ in range(20):
                _cursor_execute(using, hospitals)
    finally:
        tags_bumped.disconnect(record)
    assert bumps == [None]
    assert not is_warm(frag)


# -- tenants --------------------------------------------------------------------------------


def test_write_in_a_tenant_leaves_other_tenants_warm(frag, using, hospitals):
    for tenant in ("a", "b"):
        with use_tenant(tenant):
            warm(frag)
    warm(frag)  # the public namespace
    with use_tenant("a"):
        _cursor_execute(using, hospitals)
        assert not is_warm(frag)
    with use_tenant("b"):
        assert is_warm(frag), "a schema/database-per-tenant write is that tenant's only"
    assert is_warm(frag)


def test_write_outside_any_tenant_invalidates_every_tenant(frag, using, hospitals):
    for tenant in ("a", "b"):
        with use_tenant(tenant):
            warm(frag)
    _plain_update(using, hospitals)
    for tenant in ("a", "b"):
        with use_tenant(tenant):
            assert not is_warm(frag)


def test_tenant_field_model_write_invalidates_every_tenant(frag, using):
    ModelTagManager.register_model(Note, tenant_field="tenant_id")
    note = Note.objects.using(using).create(tenant_id="a", text="t")
    for tenant in ("a", "b"):
        with use_tenant(tenant):
            warm(frag, [("Note", "")])
    with use_tenant("a"), connections[using].cursor() as cursor:
        cursor.execute("UPDATE testapp_note SET text = 'x' WHERE id = %s", [note.pk])
    for tenant in ("a", "b"):
        with use_tenant(tenant):
            assert not is_warm(frag, [("Note", "")]), f"shared table: tenant {tenant} stale"


def test_global_model_write_invalidates_every_tenant(frag, using):
    from fragmented_keys_django import keys as keys_mod

    before = keys_mod._global_tags
    try:
        ModelTagManager.register_model(Hospital, tag_name="Country", tenant_scoped=False)
        Hospital.objects.using(using).create(name="x")
        for tenant in ("a", "b"):
            with use_tenant(tenant):
                warm(frag, [("Country", "")])
        with use_tenant("a"):
            Hospital.objects.using(using).update(name="y")
        for tenant in ("a", "b"):
            with use_tenant(tenant):
                assert not is_warm(frag, [("Country", "")])
    finally:
        keys_mod._global_tags = before
        keys_mod.clear_memos()


def test_shared_alias_is_invalidated_by_a_tenant_write(using, hospitals):
    conf = store_settings("locmem")
    conf["shared"] = {**conf["fragmented"], "PREFIX": "s", "OPTIONS": {"SHARED": True}}
    with override_settings(CACHES=conf):
        shared = caches["shared"]
        warm(shared)
        with use_tenant("a"):
            _plain_update(using, hospitals)
        assert not is_warm(shared)


# -- tenant stores ----------------------------------------------------------------------------


def _tenant_stores_caches(source):
    conf = store_settings("locmem")
    conf["fragmented"]["OPTIONS"] = {"TENANT_STORES": source}
    return conf


def test_all_tenants_bump_reaches_each_tenant_store(using, hospitals):
    own = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}
    with override_settings(CACHES=_tenant_stores_caches({"big": own})):
        frag = caches["fragmented"]
        for tenant in ("big", "small"):
            with use_tenant(tenant):
                warm(frag)
        assert frag.store_for("big") is not frag.store_for("small")
        _plain_update(using, hospitals)  # outside any tenant: every tenant
        for tenant in ("big", "small"):
            with use_tenant(tenant):
                assert not is_warm(frag), tenant
        frag.tenant_stores.forget()


def _no_listing(tenant_id):
    return None


def test_tenant_stores_that_cannot_be_listed_are_refused(using, hospitals):
    with override_settings(CACHES=_tenant_stores_caches(f"{__name__}._no_listing")):
        frag = caches["fragmented"]
        errors = [e for e in checks.run_checks() if e.id == "fragmented_keys_django.E021"]
        assert [e.obj for e in errors] == ["fragmented"]
        with pytest.raises(ConfigurationError, match="cannot list its tenants"):
            _plain_update(using, hospitals)
        assert Hospital.objects.using(using).filter(name="x").count() == 0, "the write ran"
        with use_tenant("a"):  # a tenant's own write needs no listing
            _plain_update(using, hospitals)
        frag.tenant_stores.forget()


# -- precise paths keep the net versions still ----------------------------------------------------


def test_precise_paths_do_not_bump_the_net_versions(frag, using):
    ModelTagManager.register_model(Hospital)
    ModelTagManager.register_model(Patient)
    ModelTagManager.register_model(Doctor)
    warm(frag, [("Hospital", "0"), ("Patient", "0"), ("Doctor", "0")])
    before = {n: net_tokens(frag, n, None) for n in ("Hospital", "Patient", "Doctor")}
    assert all(t is not None for pair in before.values() for t in pair)
    hospital = Hospital.objects.using(using).create(name="h")
    hospital.name = "h2"
    hospital.save()
    patient = Patient.objects.using(using).create(name="p", hospital=hospital)
    doctor = Doctor.objects.using(using).create(name="d")
    with transaction.atomic(using=using):
        doctor.patients.add(patient)
        doctor.patients.remove(patient)
        doctor.patients.set([patient])
        patient.doctors.clear()
    # CacheAwareManager bumps the rows it writes precisely.
    Patient.objects.using(using).filter(pk=patient.pk).update(name="p2")
    Patient.objects.db_manager(using).bulk_update([patient], ["name"])
    [created] = Patient.objects.db_manager(using).bulk_create([Patient(name="q")])
    Patient.objects.using(using).filter(pk=created.pk).delete()
    doctor.delete()
    hospital.delete()  # cascades to the patient: deleted row by row, with signals
    assert {n: net_tokens(frag, n, None) for n in before} == before


def test_a_save_does_not_hide_a_post_save_receivers_write_to_the_same_table(frag, using):
    ModelTagManager.register_model(Hospital)
    hospital = Hospital.objects.using(using).create(name="h")
    Hospital.objects.using(using).create(name="other")
    warm(frag)

    def denormalise(sender, instance, **kwargs):
        Hospital.objects.using(using).exclude(pk=instance.pk).update(name="n")

    # The receiver runs before the net's own post_save (an app listed earlier
    # in INSTALLED_APPS): the save's window is still open when it writes.
    post_save.disconnect(dispatch_uid="fkd:net:post_save")
    post_save.connect(denormalise, sender=Hospital)
    post_save.connect(net._close_save, dispatch_uid="fkd:net:post_save", weak=False)
    try:
        before = net_tokens(frag, "Hospital", None)
        hospital.save()
    finally:
        post_save.disconnect(denormalise, sender=Hospital)
    assert net_tokens(frag, "Hospital", None) != before, "the receiver's update was hidden"


def _failing(sender, **kwargs):
    raise Boom


def _failing_pre_add(sender, action, **kwargs):
    if action == "pre_add":
        raise Boom


@pytest.mark.parametrize(
    "fail",
    [
        pytest.param("pre_save", id="pre_save-receiver"),
        pytest.param("post_save", id="post_save-receiver"),
        pytest.param("statement", id="failing-statement"),
        pytest.param("pre_delete", id="pre_delete-receiver"),
        pytest.param("m2m", id="failing-m2m"),
    ],
)
def test_a_failed_precise_write_leaves_no_window_open(frag, using, fail):
    """A save/delete/m2m change that raises between its pre_* and post_* signals hides no later write."""
    for model in (Hospital, Patient, Doctor):
        ModelTagManager.register_model(model)
    hospital = Hospital.objects.using(using).create(name="h")
    patient = Patient.objects.using(using).create(name="p")
    doctor = Doctor.objects.using(using).create(name="d")
    signal = {"pre_save": pre_save, "post_save": post_save, "pre_delete": pre_delete}.get(fail)
    if fail == "post_save":  # runs before the net's own post_save receiver could end the window
        post_save.disconnect(dispatch_uid="fkd:net:post_save")
    if signal is not None:
        signal.connect(_failing, sender=Hospital)
    if fail == "post_save":
        post_save.connect(net._close_save, dispatch_uid="fkd:net:post_save", weak=False)
    if fail == "m2m":
        m2m_changed.connect(_failing_pre_add, sender=Doctor.patients.through)
    try:
        with pytest.raises((Boom, IntegrityError)):
            if fail in ("pre_save", "post_save"):
                hospital.save()
            elif fail == "statement":
                Hospital(pk=hospital.pk, name="dup").save(using=using, force_insert=True)
            elif fail == "pre_delete":
                hospital.delete()
            else:
                doctor.patients.add(patient)
    finally:
        if signal is not None:
            signal.disconnect(_failing, sender=Hospital)
        m2m_changed.disconnect(_failing_pre_add, sender=Doctor.patients.through)
    # Later raw writes of the kinds the failed write's window covered, one at a time.
    table, statements = {
        "pre_save": ("Hospital", ["UPDATE testapp_hospital SET name = 'raw'"]),
        "post_save": ("Hospital", ["UPDATE testapp_hospital SET name = 'raw'"]),
        "statement": ("Hospital", ["UPDATE testapp_hospital SET name = 'raw'"]),
        "pre_delete": ("Hospital", ["DELETE FROM testapp_hospital"]),
        "m2m": (
            "Doctor",
            [
                f"INSERT INTO testapp_doctor_patients (doctor_id, patient_id) "
                f"VALUES ({doctor.pk}, {patient.pk})",
                "DELETE FROM testapp_doctor_patients",
            ],
        ),
    }[fail]
    for sql in statements:
        warm(frag, [(table, "")])
        with connections[using].cursor() as cursor:
            cursor.execute(sql)
        assert not is_warm(frag, [(table, "")]), f"a window left open hid {sql!r}"


def test_windows_are_per_thread(frag, using):
    """A save running in one thread never hides another thread's raw write to the same table."""
    ModelTagManager.register_model(Hospital)
    hospital = Hospital.objects.using(using).create(name="h")
    warm(frag)
    before = net_tokens(frag, "Hospital", None)
    in_save, written = threading.Event(), threading.Event()
    during = []

    def slow(sender, instance, **kwargs):  # the save's window is open while this waits
        in_save.set()
        assert written.wait(10)

    def raw_writer():
        assert in_save.wait(10)
        try:
            _cursor_execute(using, [hospital, hospital])  # autocommit: bumped at once
            during.append(net_tokens(frag, "Hospital", None))
        finally:
            connections.close_all()
            written.set()

    pre_save.connect(slow, sender=Hospital)
    thread = threading.Thread(target=raw_writer)
    try:
        thread.start()
        hospital.save()
    finally:
        pre_save.disconnect(slow, sender=Hospital)
        thread.join(10)
    assert during and during[0] != before, "the other thread's save window hid the raw write"


# -- reads, memos and the store paths --------------------------------------------------------------


def test_entries_cached_before_registration_are_netted_after_it(frag, using):
    calls = []

    @tagged_cache(tags=["Hospital:{pk}"], vary_on=["pk"])
    def name_of(pk):
        calls.append(pk)
        return Hospital.objects.using(using).get(pk=pk).name

    hospital = Hospital.objects.using(using).create(name="h")
    name_of(hospital.pk)  # entry keys remembered without net versions
    ModelTagManager.register_model(Hospital)
    assert name_of(hospital.pk) == "h"
    assert name_of(hospital.pk) == "h"
    n = len(calls)
    Hospital.objects.using(using).update(name="h2")
    assert name_of(hospital.pk) == "h2", "a remembered pre-registration key skipped the net"
    assert len(calls) == n + 1


def test_many_and_set_many_paths_follow_the_net(frag, using, hospitals):
    frag.set_many({"p1": 1, "p2": 2})
    for i in range(3):
        frag.set_with_tags(f"k{i}", i, [("Hospital", str(i))])
    plans = {f"k{i}": [("Hospital", str(i))] for i in range(3)}
    assert frag.get_many_with_tags(plans) == {"k0": 0, "k1": 1, "k2": 2}
    _plain_update(using, hospitals)
    assert frag.get_many_with_tags(plans) == {}
    assert frag.get_many(["p1", "p2"]) == {"p1": 1, "p2": 2}  # untagged: outside the net
    for i in range(3):  # the next write is stamped with the bumped versions
        frag.set_with_tags(f"k{i}", i, [("Hospital", str(i))])
    assert frag.get_many_with_tags(plans) == {"k0": 0, "k1": 1, "k2": 2}


def test_netted_entry_keys_record_the_net_versions():
    ModelTagManager.register_model(Hospital)
    from fragmented_keys_django.tags import normalize_tags

    specs = normalize_tags([("Hospital", "1"), ("Hospital", ""), ("Other", "1")])
    ek = entry_keys("p", "acme", "1", "k", "", specs)
    assert ek.version_keys[-2:] == (
        net_version_key("p", "acme", "Hospital"),
        net_version_key("p", None, "Hospital"),
    )
    assert len(ek.version_keys) == 1 + 3 + 2  # namespace, three tags, one netted name
    plain = entry_keys("p", "acme", "1", "k", "", normalize_tags([("Other", "1")]))
    assert len(plain.version_keys) == 2, "entries without netted tags pay nothing"
    public = entry_keys("p", None, "1", "k", "", specs)
    assert public.version_keys[-1] == net_version_key("p", None, "Hospital")
    assert len(public.version_keys) == 1 + 3 + 1


@pytest.mark.redis
def test_a_netted_read_is_one_mget_on_redis(using, hospitals):
    import redis

    conf = store_settings("redis")
    key_prefix = conf["default"]["KEY_PREFIX"]
    watcher = redis.Redis.from_url(redis_url("store"), socket_timeout=10)
    with override_settings(CACHES=conf):
        frag = caches["fragmented"]
        try:
            with use_tenant("acme"), watcher.monitor() as monitor:
                warm(frag)
                marker = uuid.uuid4().hex
                client = caches["default"].client.get_client(write=True)
                client.echo(f"start-{marker}")
                assert is_warm(frag)
                client.echo(f"end-{marker}")
                seen, started = [], False
                while True:
                    cmd = monitor.next_command()["command"]
                    if cmd == f"ECHO start-{marker}":
                        started = True
                    elif cmd == f"ECHO end-{marker}":
                        break
                    elif started and key_prefix in cmd:
                        seen.append(cmd)
            assert [c.split()[0] for c in seen] == ["MGET"]
            assert seen[0].count(":m:") == 2, "the tenant's and all tenants' net versions"
        finally:
            frag.close()
            watcher.close()


# -- the installation and the setting ------------------------------------------------------------


def test_net_off_installs_no_wrapper_and_reads_no_net_version(using, hospitals):
    with override_settings(CACHES=store_settings("locmem")):
        frag = caches["fragmented"]
        assert net.execute_wrapper in connections[using].execute_wrappers
        with override_settings(FRAGMENTED_KEYS={"SAFETY_NET": False}):
            assert not net.is_enabled()
            assert net.execute_wrapper not in connections[using].execute_wrappers
            connections[using].close()
            list(Hospital.objects.using(using).all())  # a new connection: nothing added
            assert net.execute_wrapper not in connections[using].execute_wrappers
            warm(frag)
            _plain_update(using, hospitals)
            assert is_warm(frag), "with the net off, only precise bumps invalidate"
        assert net.execute_wrapper in connections[using].execute_wrappers
        assert not is_warm(frag), "entries written with the net off lack its versions: a miss"


def test_safety_net_setting_is_checked():
    with override_settings(FRAGMENTED_KEYS={"SAFETY_NET": "yes"}):
        assert net.is_enabled(), "a bad value must not turn the net off"
        errors = [e for e in checks.run_checks() if e.id == "fragmented_keys_django.E020"]
    assert errors and "'yes'" in errors[0].msg


def test_wrapper_survives_a_user_execute_wrapper_block(using, hospitals):
    """A connection first opened inside ``connection.execute_wrapper()`` keeps the net after it."""
    seen, found = [], []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    def in_a_new_thread():  # a new thread: a new connection object, never connected
        conn = connections[using]
        try:
            with conn.execute_wrapper(spy):  # Django pops the *last* wrapper on exit
                list(Hospital.objects.using(using).all())
            found.extend(conn.execute_wrappers)
        finally:
            conn.close()

    thread = threading.Thread(target=in_a_new_thread)
    thread.start()
    thread.join(10)
    assert seen
    assert found == [net.execute_wrapper]


# -- the failed-bump queue keeps "all tenants" bumps whole --------------------------------------


@pytest.fixture
def failing_store(request):
    """The fragmented alias over a locmem store whose writes of ``failing`` keys raise."""
    request.getfixturevalue("gated")  # tests/test_bump_retry.py's store (imported above)
    return caches["fragmented"], GatedLocMemCache


def test_failed_all_tenants_bump_keeps_every_tenant_bypassed_until_it_lands(
    failing_store, using, hospitals, monkeypatch
):
    from fragmented_keys_django import invalidation

    frag, store_cls = failing_store
    monkeypatch.setattr(invalidation._retrier, "interval", 30)  # no retry during the test
    with use_tenant("acme"):
        warm(frag)
    store_cls.failing = frozenset({net_version_key("t", None, "Hospital")})
    _plain_update(using, hospitals)  # the net bump fails: queued for retry
    with use_tenant("acme"):
        assert not is_warm(frag), "a tenant served an entry whose all-tenants bump is pending"
    store_cls.failing = frozenset()
    assert invalidation._retrier.flush()
    with use_tenant("acme"):
        assert not is_warm(frag)


def test_compaction_never_drops_an_all_tenants_bump(failing_store, using, hospitals, monkeypatch):
    from fragmented_keys_django import invalidation

    frag, store_cls = failing_store
    monkeypatch.setattr(invalidation._retrier, "interval", 30)
    monkeypatch.setattr(invalidation._retrier, "compact_above", 2)
    with use_tenant("acme"):
        warm(frag)
    public = frag.tag_version_keys([("X", str(i)) for i in range(5)], tenant=None)
    store_cls.failing = frozenset([net_version_key("t", None, "Hospital"), *public])
    _plain_update(using, hospitals)
    frag.invalidate_tags([("X", str(i)) for i in range(5)])  # public bumps past compact_above
    store_cls.failing = frozenset()
    assert invalidation._retrier.flush()
    with use_tenant("acme"):
        assert not is_warm(frag), "the all-tenants bump was compacted into a public flush"


# -- reading statements ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM testapp_hospital", ()),
        ('SAVEPOINT "s1_x1"', ()),
        ('UPDATE "testapp_hospital" SET "name" = %s', (("UPDATE", "testapp_hospital"),)),
        ("update public.TestApp_Hospital set name = 1", (("UPDATE", "testapp_hospital"),)),
        ('INSERT INTO "public"."t" ("a") VALUES (%s) RETURNING "t"."id"', (("INSERT", "t"),)),
        ("INSERT OR IGNORE INTO `t` (a) VALUES (1)", (("INSERT", "t"),)),
        ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", (("INSERT", "t"),)),
        ("REPLACE INTO [dbo].[T] VALUES (1)", (("INSERT", "t"),)),
        ("DELETE FROM t WHERE id IN (SELECT id FROM u)", (("DELETE", "t"),)),
        ("WITH d AS (DELETE FROM t RETURNING id) SELECT * FROM d", (("DELETE", "t"),)),
        ("WITH x AS (SELECT 1) SELECT * FROM x", ()),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", (("MERGE", "t"),)),
        (
            "UPDATE t1 JOIN t2 ON t1.x = t2.x SET t1.b = 1",
            (("UPDATE", "t1"), ("UPDATE", "t2"), ("UPDATE", "x")),
        ),
        ("TRUNCATE TABLE a, b RESTART IDENTITY", (("DDL", "a"), ("DDL", "b"))),
        ("TRUNCATE a CASCADE", EVERY_TABLE),
        ("ALTER TABLE t ADD COLUMN c int", (("DDL", "t"),)),
        ("ALTER SEQUENCE s RESTART", ()),
        ("COPY t (a) FROM STDIN", (("DDL", "t"),)),
        ("/* x */ -- y\n (UPDATE t SET a = 1)", (("UPDATE", "t"),)),
        ("UPDATE t SET a = 'UPDATE u SET b = 1'", (("UPDATE", "t"),)),
        ("INSERT INTO a SELECT * FROM b; DELETE FROM c", (("INSERT", "a"), ("DELETE", "c"))),
        ("CALL refresh_everything()", EVERY_TABLE),
        ("UPDATE", EVERY_TABLE),
    ],
)
def test_written_tables(sql, expected):
    assert written_tables(sql) == expected


def test_table_map_covers_m2m_through_tables_of_either_side():
    from django.contrib.auth.models import Group, User

    ModelTagManager.register_model(Group)
    tables = net.netted_tables()
    assert tables["auth_group"] == {"Group"}
    assert tables["auth_user_groups"] == {"Group"}  # the through table of User.groups
    assert tables["auth_group_permissions"] == {"Group"}
    ModelTagManager.register_model(User)
    assert net.netted_tables()["auth_user_groups"] == {"Group", "User"}
    ModelTagManager.unregister_model(Group)
    assert "auth_group" not in net.netted_tables()


def test_precise_write_window_closes_on_error(frag, using, hospitals):
    warm(frag)
    with pytest.raises(Boom), precise.precise_write(Hospital, ["Hospital"], using):
        raise Boom
    _plain_update(using, hospitals)
    assert not is_warm(frag)


# -- table-level invalidation on demand -----------------------------------------------------------


def test_invalidate_models_for_writes_the_net_cannot_see(frag, using, hospitals):
    for tenant in ("a", "b"):
        with use_tenant(tenant):
            warm(frag)
    with use_tenant("a"):
        before = net_tokens(frag, "Hospital", "a")
        with transaction.atomic(using=using):
            assert net.invalidate_models(Hospital, using=using) == 1
            assert net_tokens(frag, "Hospital", "a") == before, "bumped before the commit"
        assert not is_warm(frag)
    with use_tenant("b"):
        assert is_warm(frag)
    assert net.invalidate_models("Hospital", tenant=None) == 1  # every tenant
    with use_tenant("b"):
        assert not is_warm(frag)
    with pytest.raises(ConfigurationError, match="not a registered model"):
        net.invalidate_models(Patient)
    off = override_settings(FRAGMENTED_KEYS={"SAFETY_NET": False})
    with off, pytest.raises(ConfigurationError, match="needs the safety net"):
        net.invalidate_models(Hospital)


# -- review: windows opened by a delete must not hide what its receivers write ---------------


def _raw_delete_other(using, other):
    def receiver(sender, instance, **kwargs):
        with connections[using].cursor() as cursor:
            cursor.execute("DELETE FROM testapp_hospital WHERE id = %s", [other.pk])

    return receiver


def test_a_delete_does_not_hide_a_post_delete_receivers_raw_delete(frag, using):
    ModelTagManager.register_model(Hospital)
    doomed = Hospital.objects.using(using).create(name="doomed")
    other = Hospital.objects.using(using).create(name="other")
    tags = [("Hospital", str(other.pk))]
    warm(frag, tags)
    receiver = _raw_delete_other(using, other)
    post_delete.connect(receiver, sender=Hospital)
    try:
        doomed.delete()
    finally:
        post_delete.disconnect(receiver, sender=Hospital)
    assert not Hospital.objects.using(using).filter(pk=other.pk).exists()
    assert not is_warm(frag, tags), "the row is gone, its entry is still served"


def test_a_set_null_cascade_does_not_hide_a_receivers_update_of_other_children(frag, using):
    ModelTagManager.register_model(Hospital)
    ModelTagManager.register_model(NetVisit)
    hospital = Hospital.objects.using(using).create(name="closing")
    NetVisit.objects.using(using).create(hospital=hospital)
    elsewhere = NetVisit.objects.using(using).create(hospital=None, note="waiting")
    tags = [("NetVisit", str(elsewhere.pk))]
    warm(frag, tags)

    def reassign(sender, instance, **kwargs):  # e.g. flag the waiting list for review
        NetVisit.objects.using(using).filter(hospital=None).update(note="to review")

    post_delete.connect(reassign, sender=Hospital)
    try:
        hospital.delete()
    finally:
        post_delete.disconnect(reassign, sender=Hospital)
    assert NetVisit.objects.using(using).get(pk=elsewhere.pk).note == "to review"
    assert not is_warm(frag, tags), "the row changed, its entry is still served"


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["SET LOCAL lock_timeout = '5s'", "SELECT 1"])
def test_a_write_after_a_first_statement_that_cannot_write_is_netted(frag, first):
    ModelTagManager.register_model(Hospital)
    hospital = Hospital.objects.using("pg").create(name="h")
    tags = [("Hospital", str(hospital.pk))]
    warm(frag, tags)
    with transaction.atomic(using="pg"), connections["pg"].cursor() as cursor:
        cursor.execute(f"{first}; UPDATE testapp_hospital SET name = 'x' WHERE id = {hospital.pk}")
    assert Hospital.objects.using("pg").get(pk=hospital.pk).name == "x"
    assert not is_warm(frag, tags), "the row changed, its entry is still served"
