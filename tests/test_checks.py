"""System checks (E001-E004, W001) and configuration errors raised by the backend."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches
from django.core.checks import Error, Warning, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from fragmented_keys_django import ConfigurationError, FragmentedKeysCacheBackend, TenantContext
from fragmented_keys_django.cache_backends.django_backend import (
    FragmentedKeysCacheBackend as SeedPathBackend,
)
from fragmented_keys_django.checks import check_caches

BACKEND = "fragmented_keys_django.FragmentedKeysCacheBackend"
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "checks"}
REDIS = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:6379/1"}
DB = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "some_table"}


def ours(caches_conf: dict) -> list:
    """Run the cache checks under *caches_conf*; return our messages only."""
    with override_settings(CACHES=caches_conf):
        return [
            m for m in run_checks(tags=["caches"]) if m.id.startswith("fragmented_keys_django.")
        ]


def ours_direct(caches_conf: dict) -> list:
    """Run only our check function under *caches_conf* (no other check instantiates caches)."""
    with override_settings(CACHES=caches_conf):
        return check_caches()


def frag(**conf) -> dict:
    return {"BACKEND": BACKEND, "CACHE_NAME": "default", **conf}


# -- clean configurations ---------------------------------------------------------------


@pytest.mark.parametrize("store", [REDIS, DB], ids=["redis", "db"])
def test_clean_configuration_has_no_messages(store):
    assert ours({"default": store, "fragmented": frag(PREFIX="app")}) == []


def test_seed_settings_snippet_is_accepted():
    conf = {
        "default": REDIS,
        "fragmented": {
            "BACKEND": "fragmented_keys_django.cache_backends.django_backend.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "myapp",
            "EPOCH": 1.0,
        },
    }
    assert ours(conf) == []
    assert SeedPathBackend is FragmentedKeysCacheBackend


def test_seed_settings_snippet_works():
    conf = {
        "default": {**LOCMEM, "LOCATION": uuid.uuid4().hex},
        "fragmented": {
            "BACKEND": "fragmented_keys_django.cache_backends.django_backend.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "myapp",
            "EPOCH": 1.0,
            "TIMEOUT": 60,
            "OPTIONS": {"TENANT_REQUIRED": False, "STRICT": False},
        },
    }
    with override_settings(CACHES=conf):
        backend = caches["fragmented"]
        assert isinstance(backend, FragmentedKeysCacheBackend)
        assert backend.options.prefix == "myapp"
        assert backend.options.epoch == "1.0"
        with TenantContext.use_tenant("acme"):
            backend.set_with_tags("k", "v", [("User", "1")])
            assert backend.get_with_tags("k", [("User", "1")]) == "v"


# -- E001: invalid options ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        (frag(CACHE_NAM="default"), "'CACHE_NAM'"),
        (frag(PREFX="x"), "'PREFX'"),
        (frag(OPTIONS={"TENANT_REQUIRD": True}), "'TENANT_REQUIRD'"),
        (frag(OPTIONS={"STAMPEDE_LOCKS": True}), "'STAMPEDE_LOCKS'"),
        (frag(LOCATION="redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0"),
        (frag(PREFIX=42), "42"),
        (frag(EPOCH=[1]), "[1]"),
        (frag(EPOCH=""), "EPOCH"),
        (frag(CACHE_NAME=""), "CACHE_NAME"),
        (frag(TIMEOUT=-5), "-5"),
        (frag(OPTIONS="TENANT_REQUIRED"), "OPTIONS"),
        (frag(OPTIONS={"TENANT_REQUIRED": "yes"}), "'yes'"),
        (frag(OPTIONS={"STRICT": 1}), "STRICT"),
        (frag(OPTIONS={"STAMPEDE_WAIT": -1}), "-1"),
        (frag(OPTIONS={"VERSION_TIMEOUT": "30d"}), "'30d'"),
        (frag(OPTIONS={"VERIFY_BUMPS": "auto"}), "'auto'"),
    ],
)
def test_e001_invalid_options(conf, named):
    msgs = ours_direct({"default": REDIS, "fragmented": conf})
    assert [(type(m), m.id, m.obj) for m in msgs] == [
        (Error, "fragmented_keys_django.E001", "fragmented")
    ]
    assert named in msgs[0].msg


def test_e001_typo_suggests_the_right_name():
    (msg,) = ours_direct({"default": REDIS, "fragmented": frag(OPTIONS={"TENANT_REQUIRD": True})})
    assert "Did you mean 'TENANT_REQUIRED'?" in msg.msg
    (msg,) = ours_direct({"default": REDIS, "fragmented": frag(PREFX="x")})
    assert "Did you mean 'PREFIX'?" in msg.msg


@pytest.mark.parametrize(
    "conf",
    [frag(OPTIONS={"TENANT_REQUIRD": True}), frag(LOCATION="redis://127.0.0.1:6379/0")],
    ids=["options-typo", "location"],
)
def test_e001_reported_by_run_checks(conf):
    """``manage.py check`` must report E001, not crash.

    Django's own ``caches`` check (``check_file_based_cache_is_absolute``)
    instantiates every alias, so a backend whose constructor raises turns the
    whole check run into a traceback before E001 can be reported.
    """
    msgs = ours({"default": REDIS, "fragmented": conf})
    assert [(m.id, m.obj) for m in msgs] == [("fragmented_keys_django.E001", "fragmented")]


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        (frag(CACHE_NAM="default"), "CACHE_NAM"),
        (frag(OPTIONS={"TENANT_REQUIRD": True}), "TENANT_REQUIRD"),
        (frag(LOCATION="redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0"),
        (frag(PREFIX=42), "42"),
        (frag(OPTIONS={"STAMPEDE_POLL": -0.5}), "-0.5"),
        (frag(EPOCH=True), "True"),
    ],
)
def test_using_an_alias_with_bad_config_raises_configuration_error(conf, named):
    # Construction succeeds so that Django's checks (which build every alias)
    # and ours (E001) can report the problem; the first use raises it.
    with override_settings(CACHES={"default": REDIS, "fragmented": conf}):
        frag_cache = caches["fragmented"]
        with pytest.raises(ConfigurationError) as info:
            frag_cache.get("k")
    assert isinstance(info.value, ImproperlyConfigured)
    assert named in str(info.value)


# -- E002-E004, W001 -------------------------------------------------------------------------


def test_e002_missing_store_alias():
    conf = {"default": REDIS, "fragmented": frag(CACHE_NAME="nope")}
    (msg,) = ours(conf)
    assert (type(msg), msg.id, msg.obj) == (Error, "fragmented_keys_django.E002", "fragmented")
    assert "'nope'" in msg.msg
    with override_settings(CACHES=conf):
        backend = caches["fragmented"]
        with pytest.raises(ConfigurationError) as info:
            backend.get("k")
        assert "'nope'" in str(info.value)


def test_e002_default_cache_name_missing():
    conf = {"store": REDIS, "fragmented": {"BACKEND": BACKEND}}
    ids = [m.id for m in ours(conf)]
    assert ids == ["fragmented_keys_django.E002"]


def test_e003_wraps_itself():
    conf = {"default": REDIS, "fragmented": frag(CACHE_NAME="fragmented")}
    (msg,) = ours(conf)
    assert (type(msg), msg.id, msg.obj) == (Error, "fragmented_keys_django.E003", "fragmented")
    assert "itself" in msg.msg
    with override_settings(CACHES=conf), pytest.raises(ConfigurationError):
        caches["fragmented"].get("k")


def test_e003_wraps_another_wrapper():
    conf = {
        "default": REDIS,
        "fragmented": frag(),
        "outer": {"BACKEND": BACKEND, "CACHE_NAME": "fragmented"},
    }
    msgs = ours(conf)
    assert [(m.id, m.obj) for m in msgs] == [("fragmented_keys_django.E003", "outer")]
    assert "another wrapper" in msgs[0].msg
    with override_settings(CACHES=conf), pytest.raises(ConfigurationError):
        caches["outer"].set("k", 1)


def test_e003_also_for_seed_backend_path():
    conf = {
        "default": REDIS,
        "inner": {
            "BACKEND": "fragmented_keys_django.cache_backends.django_backend.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
        },
        "outer": {"BACKEND": BACKEND, "CACHE_NAME": "inner"},
    }
    assert [(m.id, m.obj) for m in ours(conf)] == [("fragmented_keys_django.E003", "outer")]


def test_e004_dummy_store():
    conf = {
        "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "fragmented": frag(),
    }
    (msg,) = ours(conf)
    assert (type(msg), msg.id, msg.obj) == (Error, "fragmented_keys_django.E004", "fragmented")


def test_w001_locmem_store():
    (msg,) = ours({"default": LOCMEM, "fragmented": frag()})
    assert (type(msg), msg.id, msg.obj) == (Warning, "fragmented_keys_django.W001", "fragmented")
    assert msg.is_serious() is False


def test_every_alias_is_checked():
    conf = {
        "default": REDIS,
        "mem": LOCMEM,
        "good": frag(),
        "bad": frag(OPTIONS={"NOPE": 1}),
        "missing": frag(CACHE_NAME="ghost"),
        "local": frag(CACHE_NAME="mem"),
    }
    got = sorted((m.obj, m.id) for m in ours_direct(conf))
    assert got == [
        ("bad", "fragmented_keys_django.E001"),
        ("local", "fragmented_keys_django.W001"),
        ("missing", "fragmented_keys_django.E002"),
    ]


def test_checks_ignore_other_backends():
    assert ours({"default": REDIS, "mem": LOCMEM}) == []
