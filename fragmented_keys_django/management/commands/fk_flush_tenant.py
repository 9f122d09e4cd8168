"""``fk_flush_tenant``: invalidate every entry of a tenant with one bump."""

from __future__ import annotations

from typing import Any

from ...tenancy.catalog import store_info
from ._base import FragmentedCommand, label


class Command(FragmentedCommand):
    help = (
        "Flush a tenant's cache namespace (every entry stops being served; one bump): "
        "fk_flush_tenant --tenant acme (or --all-tenants, --public)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = self.backend(options)

        def flush(tenant: str | None) -> str:
            backend.invalidate_tenant(tenant)
            info = store_info(backend, tenant)
            return f"flushed tenant {label(tenant)} (alias {backend.alias}, store {info.alias})"

        self.bump_each(options, backend, flush, "flush")
