"""Drive a new project's first day (``python -m tests.first_day.run``; see tests/test_first_day.py).

``migrate`` (with a data migration), ``createsuperuser``, ``check``, an admin
login, and admin edits of registered models, through Django's test client, on
the README's recommended settings (``TENANT_REQUIRED``, a registered ``User``).
"""

from __future__ import annotations

import os

import django


def main() -> None:
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from fragmented_keys_django import TenantRequired
    from tests.first_day.clinics.models import Clinic

    call_command("migrate", verbosity=0)
    print("migrate: ok")
    os.environ["DJANGO_SUPERUSER_PASSWORD"] = "first-day-pass"
    call_command(
        "createsuperuser", interactive=False, username="boss", email="boss@example.com", verbosity=0
    )
    boss = User.objects.get(username="boss")
    print("createsuperuser: ok")
    call_command("check", fail_level="WARNING")
    print("check: ok")

    client = Client()
    r = client.post(
        "/admin/login/?next=/admin/", {"username": "boss", "password": "first-day-pass"}
    )
    assert r.status_code == 302 and r["Location"] == "/admin/", (r.status_code, r.content[:500])
    assert client.get("/admin/").status_code == 200
    boss.refresh_from_db()
    assert boss.last_login is not None  # a save of a registered model, outside any tenant
    print("admin login: ok")

    # Tenant pages: a fragment cached in acme, depending on the user's tag.
    assert client.get("/profile/", HTTP_X_TENANT="acme").content == b"boss:"
    assert client.get("/profile/", HTTP_X_TENANT="globex").content == b"boss:"
    assert client.get("/profile/", HTTP_X_TENANT="initech").status_code == 403  # TENANT_ACCESS
    # Edit the user in the admin (outside any tenant): every tenant's fragment follows.
    url = f"/admin/auth/user/{boss.pk}/change/"
    assert client.get(url).status_code == 200
    joined = boss.date_joined
    r = client.post(
        url,
        {
            "username": "boss",
            "first_name": "Ada",
            "last_name": "",
            "email": "boss@example.com",
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "date_joined_0": joined.strftime("%Y-%m-%d"),
            "date_joined_1": joined.strftime("%H:%M:%S"),
            "last_login_0": "",
            "last_login_1": "",
        },
    )
    assert r.status_code == 302, r.content[:3000]
    assert User.objects.get(pk=boss.pk).first_name == "Ada"
    assert client.get("/profile/", HTTP_X_TENANT="acme").content == b"boss:Ada"
    assert client.get("/profile/", HTTP_X_TENANT="globex").content == b"boss:Ada"
    print("admin edit of User: ok")

    # A row that names its tenant: staff pick the tenant in the form.
    assert client.get("/clinics/", HTTP_X_TENANT="acme").content == b"Main St"
    main_st = Clinic.objects.get(name="Main St")  # written by the data migration
    url = f"/admin/clinics/clinic/{main_st.pk}/change/"
    r = client.post(url, {"name": "Main Street", "tenant": "acme"})
    assert r.status_code == 302, r.content[:3000]
    assert client.get("/clinics/", HTTP_X_TENANT="acme").content == b"Main Street"
    r = client.post("/admin/clinics/clinic/add/", {"name": "Dockside", "tenant": "acme"})
    assert r.status_code == 302, r.content[:3000]
    assert client.get("/clinics/", HTTP_X_TENANT="acme").content == b"Main Street,Dockside"
    print("admin edit of a tenant_field model: ok")

    # A row that names no tenant would bump nothing anyone reads: refused before the write.
    try:
        client.post(url, {"name": "Nowhere", "tenant": ""})
    except TenantRequired as exc:
        assert "tenant_field" in str(exc), exc
    else:
        raise AssertionError("an edit naming no tenant was accepted")
    assert Clinic.objects.get(pk=main_st.pk).name == "Main Street"
    print("admin edit naming no tenant: refused before the write")
    print("FIRST DAY OK")


if __name__ == "__main__":
    main()
