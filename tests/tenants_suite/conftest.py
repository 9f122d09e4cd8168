"""Collect this suite only under its own settings (tests.settings_tenants).

The main suite runs it in a subprocess (tests/test_integrations.py); collected
under tests.settings it is ignored.
"""

import os

if os.environ.get("DJANGO_SETTINGS_MODULE") != "tests.settings_tenants":
    collect_ignore_glob = ["test_*.py"]
else:
    import pytest

    @pytest.fixture(scope="session")
    def tenants(django_db_setup, django_db_blocker):
        """Public tenant and two tenant schemas (acme, globex), each with a domain; dropped at the end."""
        from django.db import connection

        from tests.tenants_app.models import Client, Domain

        with django_db_blocker.unblock():
            connection.set_schema_to_public()
            public = Client.objects.create(schema_name="public", name="public")
            Domain.objects.create(domain="public.fkd.test", tenant=public, is_primary=True)
            made = {}
            for schema in ("acme", "globex"):
                tenant = Client.objects.create(schema_name=schema, name=schema)
                Domain.objects.create(domain=f"{schema}.fkd.test", tenant=tenant, is_primary=True)
                made[schema] = tenant
            yield made
            connection.set_schema_to_public()
            for tenant in made.values():
                tenant.delete(force_drop=True)  # auto_drop_schema: DROP SCHEMA ... CASCADE
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name IN ('acme', 'globex')"
                )
                assert cursor.fetchone()[0] == 0
            # the public rows go with the test database, which pytest-django drops
            from django.conf import settings
            from django_redis import get_redis_connection

            prefix = settings.CACHES["default"]["KEY_PREFIX"]
            conn = get_redis_connection("default")
            found = list(conn.scan_iter(f"{prefix}:*"))
            if found:
                conn.delete(*found)

    @pytest.fixture(autouse=True)
    def _public_schema_after():
        """django-tenants leaves the connection on the last request's schema: reset it."""
        yield
        from django.db import connection

        connection.set_schema_to_public()
