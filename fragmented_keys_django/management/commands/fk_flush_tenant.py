"""``fk_flush_tenant``: invalidate every entry of a tenant with one bump."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from ...invalidation import is_suspect
from ...tenancy.catalog import store_info
from ._base import FragmentedCommand, label


class Command(FragmentedCommand):
    help = (
        "Flush a tenant's cache namespace (every entry stops being served; one bump): "
        "fk_flush_tenant --tenant acme (or --all-tenants, --public)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = self.backend(options)
        failed = []
        for tenant in self.targets(options, backend):
            try:
                backend.invalidate_tenant(tenant)
            except Exception as exc:  # BumpFailed (STRICT) or a config error for this tenant
                failed.append(f"{label(tenant)}: {exc}")
                continue
            if is_suspect(backend.alias, tenant):
                failed.append(
                    f"{label(tenant)}: the store did not take the bump (it will be retried)"
                )
                continue
            info = store_info(backend, tenant)
            self.stdout.write(
                f"flushed tenant {label(tenant)} (alias {backend.alias}, store {info.alias})"
            )
        if failed:
            raise CommandError("flush failed for:\n  " + "\n  ".join(failed))
