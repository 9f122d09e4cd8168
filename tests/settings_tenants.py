"""Settings of the django-tenants suite (tests/tenants_suite), run in its own pytest process.

django-tenants needs its PostgreSQL backend, router and tenant models; it cannot
share a process with tests.settings.
"""

import os

from tests.redis_dbs import redis_url

SECRET_KEY = "tests-only"
USE_TZ = True
DEBUG = False
ALLOWED_HOSTS = ["*"]

SHARED_APPS = [
    "django_tenants",
    "django.contrib.contenttypes",
    "fragmented_keys_django",
    "tests.tenants_app",
]
TENANT_APPS = ["django.contrib.contenttypes", "tests.tenants_app"]
INSTALLED_APPS = SHARED_APPS + [a for a in TENANT_APPS if a not in SHARED_APPS]

TENANT_MODEL = "tenants_app.Client"
TENANT_DOMAIN_MODEL = "tenants_app.Domain"

DATABASES = {
    "default": {
        "ENGINE": "django_tenants.postgresql_backend",
        "NAME": os.environ.get("PGDATABASE", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "TEST": {"NAME": f"test_fkd_tenants_{os.getpid()}"},
    }
}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

MIDDLEWARE = ["django_tenants.middleware.main.TenantMainMiddleware"]
ROOT_URLCONF = "tests.tenants_suite.urls"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": redis_url("subsuite"),
        "KEY_PREFIX": f"fkd-tenants-{os.getpid()}",
    },
    "fragmented": {
        "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
        "CACHE_NAME": "default",
        "PREFIX": "dt",
    },
}

# The current tenant is django-tenants' current schema (public -> public namespace).
FRAGMENTED_KEYS = {"TENANT_SOURCE": "django_tenants"}

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
