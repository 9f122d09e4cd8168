"""App config: registers system checks and settings-change hooks. No monkeypatching."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


def on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """Forget what was derived from ``CACHES``, ``DATABASES`` or ``FRAGMENTED_KEYS`` (``override_settings``).

    The one ``setting_changed`` receiver for the package's process state:
    resolved aliases and the project settings (``conf``), the outbox tables
    found per database, the Prometheus metrics, the retry queue, the routes and
    store adapters, the tenant stores (they name aliases that may be gone), and
    the dependency keys remembered per nested entry.
    """
    from . import conf, deps, outbox, routing
    from .invalidation import _retrier
    from .tenancy.stores import reset_registry

    conf.forget_choices(setting)
    if setting in ("DATABASES", "FRAGMENTED_KEYS"):
        outbox.reset()
    if setting == "FRAGMENTED_KEYS":
        from .prometheus import configure as configure_prometheus

        configure_prometheus()
    if setting == "CACHES":
        _retrier.reset()
        routing.reset()
        reset_registry()
        deps.forget()


class FragmentedKeysConfig(AppConfig):
    name = "fragmented_keys_django"
    label = "fragmented_keys_django"
    verbose_name = "Fragmented keys cache"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from . import checks  # noqa: F401  (registers the checks)
        from .conf import apply_project_settings
        from .tenancy import checks as _tenancy_checks  # noqa: F401  (middleware checks)

        apply_project_settings()

        from .prometheus import configure as configure_prometheus

        configure_prometheus()  # the metrics of the "prometheus" extra, if enabled

        from .tenancy.stores import connect_model_sources

        connect_model_sources()
        setting_changed.connect(on_setting_changed, dispatch_uid="fkd:setting_changed")

        from django.db.models.signals import post_migrate

        from .outbox import reset as forget_outbox_tables

        # A migrate may have created (or dropped) the outbox table.
        post_migrate.connect(forget_outbox_tables, dispatch_uid="fkd:outbox-tables")

        from . import net

        net.install()

        from django.conf import settings

        if getattr(settings, "FRAGMENTED_KEYS_CELERY", False):
            from .tenancy import celery as _celery

            _celery.install_if_available()
