"""Settings of the django-debug-toolbar suite (tests/toolbar_suite), run in its own pytest process.

The toolbar's app wraps Django's cache handler at start-up (its CachePanel), so
it does not share a process with tests.settings. ``FKD_TOOLBAR_STORE`` picks the
store under the fragmented alias: ``db`` (Django's database cache) or ``redis``.
"""

import os

from tests.conftest import store_settings
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, TEMPLATES

DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles", "debug_toolbar"]
STATIC_URL = "/static/"
ROOT_URLCONF = "tests.toolbar_suite.urls"
MIDDLEWARE = [
    "debug_toolbar.middleware.DebugToolbarMiddleware",
    "fragmented_keys_django.tenancy.middleware.TenantMiddleware",
]
FRAGMENTED_KEYS_MIDDLEWARE = {
    "RESOLVER": "fragmented_keys_django.tenancy.resolvers.HeaderResolver",
    "WHITELIST_ROUTES": {"djdt:render_panel"},
}
DEBUG_TOOLBAR_CONFIG = {"SHOW_TOOLBAR_CALLBACK": lambda request: True}
DEBUG_TOOLBAR_PANELS = [
    "debug_toolbar.panels.timer.TimerPanel",
    "debug_toolbar.panels.cache.CachePanel",
    "debug_toolbar.panels.sql.SQLPanel",
    "fragmented_keys_django.panels.FragmentedKeysPanel",
]
TEMPLATES = [{**TEMPLATES[0], "DIRS": [os.path.join(os.path.dirname(__file__), "toolbar_suite")]}]
CACHES = store_settings(os.environ.get("FKD_TOOLBAR_STORE", "db"))
