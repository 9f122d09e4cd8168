from django.apps import AppConfig


class ContractConfig(AppConfig):
    """Holds the vendored Django cache-test model (``Poll``).

    Label ``cache`` matches Django's own suite, so the vendored ``models.py``
    stays unmodified (its model has no explicit ``app_label``).
    """

    name = "tests.contract"
    label = "cache"
    default_auto_field = "django.db.models.AutoField"
