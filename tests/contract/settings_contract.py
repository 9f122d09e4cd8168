"""Stand-alone settings for the cache-contract suite.

Only for running ``tests/contract`` while ``tests/settings.py`` lacks the
``"tests.contract"`` app: ``pytest tests/contract --ds tests.contract.settings_contract``.
"""

SECRET_KEY = "cache-contract"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "fragmented_keys_django",
    "tests.contract",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
# Replaced per test class by override_settings(CACHES=...).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
