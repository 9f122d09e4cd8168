"""``fk_tenants``: list known tenants and the store each is bound to."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from ...conf import fragmented_aliases
from ...tenancy.catalog import CannotListTenants, known_tenants, store_info
from ._base import FragmentedCommand, label


class Command(FragmentedCommand):
    help = "List the tenants every tenant source knows, with the store each is bound to on --alias."
    tenant_args = False

    def handle(self, *args: Any, **options: Any) -> None:
        backend = self.backend(options)
        try:
            tenants = known_tenants(fragmented_aliases())
        except CannotListTenants as exc:
            raise CommandError(str(exc)) from exc
        rows = [("TENANT", "STORE", "BACKEND", "LOCATION")]
        failed = []
        for tenant in [None, *tenants]:
            try:
                info = store_info(backend, tenant)
            except Exception as exc:  # a broken tenant config
                failed.append(f"{label(tenant)}: {exc}")
                rows.append((label(tenant), "?", "?", f"error: {exc}"))
                continue
            store = f"{info.alias} (own)" if info.own else info.alias
            rows.append((label(tenant), store, info.backend, info.location))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        self.stdout.write(
            f"alias {backend.alias}: {len(tenants)} tenant(s), and the public namespace"
        )
        for row in rows:
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
            )
        if failed:
            raise CommandError("bad tenant store config:\n  " + "\n  ".join(failed))
