"""The fk_* management commands, over Redis (a shared store and a tenant's own database) and locmem."""

from __future__ import annotations

import io
import uuid

import pytest
import redis
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from fragmented_keys_django import TenantContext

from .redis_dbs import base_url, redis_db

REDIS_URL = base_url()
SHARED_DB, OWN_DB = redis_db("commands"), redis_db("tenant")
DEAD = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def caches_conf(kind: str, prefix: str, **tenant_extra) -> dict:
    if kind == "redis":
        shared = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"{REDIS_URL}/{SHARED_DB}",
            "KEY_PREFIX": prefix,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
        big = {"LOCATION": f"{REDIS_URL}/{OWN_DB}", "ALIAS": "big_cache"}
    else:
        shared = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": prefix}
        big = {"LOCATION": prefix + "-big", "ALIAS": "big_cache"}
    return {
        "default": shared,
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "cmd",
            "OPTIONS": {"TENANT_STORES": {"big": big, **tenant_extra}},
        },
    }


LISTED = {
    "RESOLVER": "fragmented_keys_django.tenancy.resolvers.HeaderResolver",
    "TENANTS": {"acme", "globex"},
}


PREFIXES: list[str] = []


def new_prefix() -> str:
    PREFIXES.append(f"fkd-cmd-{uuid.uuid4().hex[:8]}")
    return PREFIXES[-1]


@pytest.fixture(autouse=True)
def _drop_redis_keys():
    yield
    for db in (SHARED_DB, OWN_DB):
        r = redis.Redis.from_url(f"{REDIS_URL}/{db}")
        for prefix in PREFIXES:
            keys = list(r.scan_iter(f"{prefix}*"))
            if keys:
                r.delete(*keys)
        r.close()
    PREFIXES.clear()


@pytest.fixture(params=["redis", "locmem"])
def kind(request):
    with override_settings(
        CACHES=caches_conf(request.param, new_prefix()), FRAGMENTED_KEYS_MIDDLEWARE=LISTED
    ):
        yield request.param
        caches["fragmented"].tenant_stores.forget()


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


def seed(tenants=("acme", "globex", "big")):
    frag = caches["fragmented"]
    for t in tenants:
        with TenantContext.use_tenant(t):
            frag.set_with_tags("profile", f"v-{t}", [("User", "42")])
            frag.set("plain", f"p-{t}")


def value(tenant, key="profile"):
    frag = caches["fragmented"]
    with TenantContext.use_tenant(tenant):
        if key == "profile":
            return frag.get_with_tags("profile", [("User", "42")])
        return frag.get(key)


def test_fk_invalidate_one_tenant(kind):
    seed()
    out = run("fk_invalidate", "--tenant", "acme", "--tag", "User:42")
    assert "invalidated 1 tag(s) in tenant acme (alias fragmented): User:42" in out
    assert value("acme") is None
    assert value("globex") == "v-globex"
    assert value("big") == "v-big"
    assert value("acme", "plain") == "p-acme"  # untagged entries untouched


def test_fk_invalidate_all_tenants_and_own_store(kind):
    seed()
    out = run("fk_invalidate", "--all-tenants", "--tag", "User:42", "--tag", "Org")
    for t in ("acme", "globex", "big"):
        assert f"in tenant {t} " in out
        assert value(t) is None
    if kind == "redis":
        from django.conf import settings

        prefix = settings.CACHES["default"]["KEY_PREFIX"]
        (vkey,) = caches["fragmented"].tag_version_keys([("User", "42")], tenant="big")
        own = redis.Redis.from_url(f"{REDIS_URL}/{OWN_DB}")
        shared = redis.Redis.from_url(f"{REDIS_URL}/{SHARED_DB}")
        assert own.exists(f"{prefix}:1:{vkey}"), "big's tag versions live in its own DB"
        assert not shared.exists(f"{prefix}:1:{vkey}")
        (akey,) = caches["fragmented"].tag_version_keys([("User", "42")], tenant="acme")
        assert shared.exists(f"{prefix}:1:{akey}")
        own.close()
        shared.close()


def test_fk_versions(kind):
    out = run("fk_versions", "--tenant", "acme", "--tag", "User:42")
    assert out.strip() == "acme\tUser:42\t0 (never bumped)"
    run("fk_invalidate", "--tenant", "acme", "--tenant", "big", "--tag", "User:42")
    out = run(
        "fk_versions",
        "--tenant",
        "acme",
        "--tenant",
        "big",
        "--public",
        "--tag",
        "User:42",
        "--tag",
        "User",
    )
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert [(t, tag) for t, tag, _ in lines] == [
        ("acme", "User:42"),
        ("acme", "User"),
        ("big", "User:42"),
        ("big", "User"),
        ("(public)", "User:42"),
        ("(public)", "User"),
    ]
    versions = {(t, tag): v for t, tag, v in lines}
    assert versions[("acme", "User:42")] not in ("", "0 (never bumped)")
    assert versions[("acme", "User:42")] != versions[("big", "User:42")]
    assert versions[("(public)", "User:42")] == "0 (never bumped)"
    with TenantContext.use_tenant("big"):
        assert (
            str(caches["fragmented"].get_tag_version("User", "42")) == versions[("big", "User:42")]
        )


def test_fk_flush_tenant(kind):
    seed()
    out = run("fk_flush_tenant", "--tenant", "acme", "--tenant", "big")
    assert "flushed tenant acme (alias fragmented, store default)" in out
    assert "flushed tenant big (alias fragmented, store big_cache)" in out
    assert value("acme", "plain") is None
    assert value("acme") is None
    assert value("big", "plain") is None
    assert value("globex", "plain") == "p-globex"
    seed(["globex"])
    run("fk_flush_tenant", "--all-tenants")
    assert value("globex", "plain") is None


def test_fk_tenants(kind):
    out = run("fk_tenants")
    lines = out.strip().splitlines()
    assert lines[0] == "alias fragmented: 3 tenant(s), and the public namespace"
    assert lines[1].split()[:3] == ["TENANT", "STORE", "BACKEND"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"(public)", "acme", "big", "globex"}
    assert "big_cache (own)" in rows["big"]
    if kind == "redis":
        assert f"{REDIS_URL}/{OWN_DB}" in rows["big"]
        assert f"{REDIS_URL}/{SHARED_DB}" in rows["acme"]
        assert "django_redis.cache.RedisCache" in rows["acme"]
    else:
        assert "LocMemCache" in rows["big"]


def test_fk_tenants_masks_passwords():
    conf = caches_conf(
        "locmem",
        "fkd-cmd-mask",
        sec={
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://user:s3cret@127.0.0.1:6379/8",
        },
    )
    with override_settings(CACHES=conf, FRAGMENTED_KEYS_MIDDLEWARE=LISTED):
        out = run("fk_tenants")
    assert "s3cret" not in out
    assert "redis://user:***@127.0.0.1:6379/8" in out


def test_fk_check_ok_and_failing_store(kind):
    out = run("fk_check")
    assert "OK    (public): store default" in out
    assert "OK    big: store big_cache" in out
    assert "all 4 tenant store(s) reachable" in out
    conf = caches_conf(
        kind,
        new_prefix(),
        down={
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": DEAD,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5},
        },
    )
    with override_settings(CACHES=conf):
        out = io.StringIO()
        with pytest.raises(CommandError) as err:
            call_command("fk_check", stdout=out, stderr=io.StringIO())
        assert err.value.returncode == 1
        assert "1 of 5 tenant store(s) failed" in str(err.value)
        assert "down: store down" in str(err.value)
        assert "FAIL  down:" in out.getvalue()
        assert "OK    acme" in out.getvalue()
        run("fk_check", "--tenant", "acme")  # only acme: fine
        caches["fragmented"].tenant_stores.forget()


def test_fk_check_without_tenant_listing_checks_shared_store():
    conf = caches_conf("locmem", "fkd-cmd-nolist")
    conf["fragmented"]["OPTIONS"] = {}
    with override_settings(CACHES=conf, FRAGMENTED_KEYS_MIDDLEWARE=None):
        err = io.StringIO()
        out = io.StringIO()
        call_command("fk_check", stdout=out, stderr=err)
        assert "only the shared store is checked" in err.getvalue()
        assert "all 1 tenant store(s) reachable" in out.getvalue()
        with pytest.raises(CommandError, match="Cannot list tenants"):
            run("fk_invalidate", "--all-tenants", "--tag", "User:1")
        with pytest.raises(CommandError, match="Cannot list tenants"):
            run("fk_tenants")


def test_bump_failure_exits_non_zero():
    conf = caches_conf("locmem", "fkd-cmd-strict")
    conf["default"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": DEAD,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5},
    }
    conf["fragmented"]["OPTIONS"] = {"STRICT": True}
    with override_settings(CACHES=conf, FRAGMENTED_KEYS_MIDDLEWARE=LISTED):
        with pytest.raises(CommandError, match="invalidation failed for:\n  acme"):
            run("fk_invalidate", "--tenant", "acme", "--tag", "User:1")
        with pytest.raises(CommandError, match="flush failed for"):
            run("fk_flush_tenant", "--tenant", "acme")
        with pytest.raises(CommandError, match="could not read versions"):
            run("fk_versions", "--tenant", "acme", "--tag", "User:1")
        with pytest.raises(CommandError, match="1 of 1 tenant store"):
            run("fk_check", "--public")


def test_argument_errors(kind):
    with pytest.raises(CommandError, match="Say which tenants"):
        run("fk_invalidate", "--tag", "User:1")
    with pytest.raises(CommandError, match="at least one --tag"):
        run("fk_invalidate", "--tenant", "acme")
    with pytest.raises(CommandError, match="tag name"):
        run("fk_invalidate", "--tenant", "acme", "--tag", ":1")
    with pytest.raises(CommandError, match="not both"):
        run("fk_flush_tenant", "--tenant", "acme", "--all-tenants")
    # the store alias a fragmented alias wraps names that alias (seed's cache_name="default")
    assert "(alias fragmented," in run("fk_flush_tenant", "--alias", "default", "--tenant", "acme")
    with pytest.raises(CommandError, match="not an alias"):
        run("fk_flush_tenant", "--alias", "nope", "--tenant", "acme")
    with pytest.raises(CommandError, match="tenant id must not be empty"):
        run("fk_flush_tenant", "--tenant", "")


def test_alias_option(kind):
    conf = caches_conf(kind, new_prefix())
    conf["other"] = {**conf["fragmented"], "PREFIX": "other", "OPTIONS": {}}
    conf["plain"] = {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "fkd-cmd-plain",
    }
    with override_settings(CACHES=conf, FRAGMENTED_KEYS_MIDDLEWARE=LISTED):
        with pytest.raises(CommandError, match="plain cache alias"):
            run("fk_flush_tenant", "--alias", "plain", "--tenant", "acme")
        with TenantContext.use_tenant("acme"):
            caches["other"].set_with_tags("k", 1, [("User", "1")])
            caches["fragmented"].set_with_tags("k", 1, [("User", "1")])
        out = run("fk_invalidate", "--alias", "other", "--tenant", "acme", "--tag", "User:1")
        assert "(alias other)" in out
        with TenantContext.use_tenant("acme"):
            assert caches["other"].get_with_tags("k", [("User", "1")]) is None
            assert caches["fragmented"].get_with_tags("k", [("User", "1")]) == 1
        caches["fragmented"].tenant_stores.forget()


# -- issue 10: an unknown --tenant is an error; sources that cannot list say why --------------


def test_an_unknown_tenant_is_an_error_and_nothing_is_bumped(kind):
    seed()
    for command in (
        ("fk_invalidate", "--tag", "User:42"),
        ("fk_flush_tenant",),
        ("fk_versions", "--tag", "User:42"),
    ):
        with pytest.raises(
            CommandError, match=r"Unknown tenant\(s\) 'acmee'.*Known tenants: acme, big, globex"
        ):
            run(*command, "--tenant", "acme", "--tenant", "acmee")
    for t in ("acme", "globex", "big"):
        assert value(t) == f"v-{t}"
        assert value(t, "plain") == f"p-{t}"


def tenant_exists(tenant_id):
    return tenant_id in {"acme", "globex"}


def _unlisted_conf() -> dict:
    conf = caches_conf("locmem", "fkd-cmd-callable")
    conf["fragmented"]["OPTIONS"] = {}
    return conf


def test_a_callable_tenants_check_without_tenants_method_is_named():
    check = {**LISTED, "TENANTS": "tests.test_commands.tenant_exists"}
    with override_settings(CACHES=_unlisted_conf(), FRAGMENTED_KEYS_MIDDLEWARE=check):
        for command in (("fk_tenants",), ("fk_invalidate", "--all-tenants", "--tag", "User")):
            with pytest.raises(CommandError) as err:
                run(*command)
            message = str(err.value)
            assert (
                "settings.FRAGMENTED_KEYS_MIDDLEWARE['TENANTS'] is the callable "
                "tests.test_commands.tenant_exists, which has no tenants() method"
            ) in message
            assert "needs a tenants() method" in message
        # Checking one tenant needs no listing: the callable answers.
        assert "in tenant acme" in run("fk_invalidate", "--tenant", "acme", "--tag", "User")
        with pytest.raises(CommandError, match="Unknown tenant"):
            run("fk_invalidate", "--tenant", "initech", "--tag", "User")
        tenant_exists.tenants = lambda: ["acme", "globex"]
        try:
            assert "2 tenant(s)" in run("fk_tenants")
            out = run("fk_invalidate", "--all-tenants", "--tag", "User")
            assert "in tenant acme" in out and "in tenant globex" in out
        finally:
            del tenant_exists.tenants


def test_a_tenant_store_callable_without_tenants_method_is_named():
    conf = _unlisted_conf()
    conf["fragmented"]["OPTIONS"] = {"TENANT_STORES": tenant_exists}
    with override_settings(CACHES=conf, FRAGMENTED_KEYS_MIDDLEWARE=None):
        with pytest.raises(CommandError) as err:
            run("fk_tenants")
        assert (
            "CACHES['fragmented']['OPTIONS']['TENANT_STORES'] is the callable "
            "tests.test_commands.tenant_exists, which has no tenants() method"
        ) in str(err.value)


def test_without_any_tenant_source_a_tenant_cannot_be_checked_and_the_command_says_so():
    with override_settings(CACHES=_unlisted_conf(), FRAGMENTED_KEYS_MIDDLEWARE=None):
        out, err = io.StringIO(), io.StringIO()
        call_command("fk_invalidate", "--tenant", "acme", "--tag", "User", stdout=out, stderr=err)
        assert "in tenant acme" in out.getvalue()
        assert "cannot check that tenant(s) 'acme' exist" in err.getvalue()
        assert "no tenant source is configured" in err.getvalue()
