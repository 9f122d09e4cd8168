"""A writer process for the durability tests (``tests/test_durability.py``).

Run as ``python -m tests.durability_child``, configured by environment:

* ``FKD_DUR_DB``: name of the PostgreSQL database (the parent test's);
* ``FKD_DUR_REDIS``: URL of the throwaway Redis the parent controls;
* ``FKD_DUR_SCENARIO``: what to do (see ``main``);
* ``FKD_DUR_ITEM``: primary key of the ``Item`` row to update, in tenant ``acme``.

The process prints one line per step (``saved``, ``forked <pid>``, ...) and
flushes it, so the parent can act (stop a server, ``kill -9``) at the right
moment. It never touches anything but that database and that Redis.
"""

from __future__ import annotations

import os
import sys
import time

TENANT = "acme"


def caches_for(url: str, socket_timeout: float = 0.5) -> dict:
    """``CACHES`` shared by the parent test and this process (same keys, same store)."""
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": socket_timeout},
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "durable",
        },
    }


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def setup(socket_timeout: float) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="durability-child",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "fragmented_keys_django",
            "tests.testapp",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": os.environ["FKD_DUR_DB"],
                "USER": os.environ.get("PGUSER", "postgres"),
                "HOST": os.environ.get("PGHOST", "127.0.0.1"),
                "PORT": os.environ.get("PGPORT", "5432"),
            }
        },
        CACHES=caches_for(os.environ["FKD_DUR_REDIS"], socket_timeout),
        LOGGING_CONFIG=None,
    )
    django.setup()


def save_in_acme(qty: int) -> None:
    """Update the Item row inside ``atomic()`` in tenant acme (its bump runs at commit)."""
    from django.db import transaction

    from fragmented_keys_django import TenantContext
    from tests.testapp.models import Item

    with TenantContext.use_tenant(TENANT), transaction.atomic():
        item = Item.objects.get(pk=int(os.environ["FKD_DUR_ITEM"]))
        item.qty = qty
        item.save()


def write_for_every_tenant(scenario: str) -> None:
    """A write whose bump every tenant reads, inside ``atomic()`` (its bump runs at commit).

    ``hang-net``: a raw ``UPDATE`` outside any tenant (the safety net's "all
    tenants" version); ``hang-global``: a save of a model registered with
    ``tenant_scoped=False``, in tenant ``beta`` (a global tag's version).
    """
    from django.db import connection, transaction

    from fragmented_keys_django import TenantContext
    from tests.testapp.models import Item

    pk = int(os.environ["FKD_DUR_ITEM"])
    if scenario == "hang-net":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE testapp_item SET qty = 7 WHERE id = %s", [pk])
        return
    with TenantContext.use_tenant("beta"), transaction.atomic():
        item = Item.objects.get(pk=pk)
        item.qty = 7
        item.save()


def main() -> None:
    scenario = os.environ["FKD_DUR_SCENARIO"]
    # hang: the store is paused; a long socket timeout keeps the bump hanging after the commit.
    setup(socket_timeout=60.0 if scenario.startswith("hang") else 0.5)
    from fragmented_keys_django import ModelTagManager
    from fragmented_keys_django.invalidation import _retrier, pending_retries
    from tests.testapp.models import Item

    ModelTagManager.register_model(Item, tenant_scoped=scenario != "hang-global")
    if scenario in ("hang-net", "hang-global"):
        say("saving")
        write_for_every_tenant(scenario)  # blocks in the bump until killed
        say("unreachable")
        return
    if scenario in ("fail-and-stay", "fail-and-die"):
        _retrier.interval = _retrier.max_interval = 3600.0  # this process never retries
    if scenario == "hang":
        say("saving")
        save_in_acme(7)  # blocks in the bump until killed
        say("unreachable")
        return
    save_in_acme(7)  # the store is down: the bump fails, is kept in the outbox
    assert pending_retries() == 1, pending_retries()
    say("saved")
    if scenario == "fork":
        pid = os.fork()
        if pid:  # the original process leaves at once, its retry never runs again
            say(f"forked {pid}")
            os._exit(0)
        # The child inherited the pending bump; its own retry thread must land it.
        while pending_retries():
            time.sleep(0.05)
        say("landed")
        time.sleep(3600)
        return
    if scenario == "retry":
        while pending_retries():
            time.sleep(0.05)
        say("landed")
    time.sleep(3600)  # until the parent kills this process


if __name__ == "__main__":
    main()
