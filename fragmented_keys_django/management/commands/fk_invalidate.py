"""``fk_invalidate``: bump tags in one tenant, several, or all."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...invalidation import is_suspect
from ...tenancy.context import TenantContext
from ._base import FragmentedCommand, add_tag_argument, label, parse_tags, tag_label


class Command(FragmentedCommand):
    help = (
        "Invalidate tags (bump their versions) in a tenant: "
        "fk_invalidate --tenant acme --tag User:42 --tag Org:7 (or --all-tenants, --public)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        add_tag_argument(parser, "bump")

    def handle(self, *args: Any, **options: Any) -> None:
        tags = parse_tags(options["tag"])
        backend = self.backend(options)
        failed = []
        for tenant in self.targets(options, backend):
            try:
                with TenantContext.use_tenant(tenant):
                    count = backend.invalidate_tags(tags)
            except Exception as exc:  # BumpFailed (STRICT) or a bad tenant config
                failed.append(f"{label(tenant)}: {exc}")
                continue
            if is_suspect(backend.alias, tenant):
                failed.append(
                    f"{label(tenant)}: the store did not take the bump (it will be retried)"
                )
                continue
            names = ", ".join(tag_label(t) for t in tags)
            self.stdout.write(
                f"invalidated {count} tag(s) in tenant {label(tenant)} (alias {backend.alias}): {names}"
            )
        if failed:
            raise CommandError("invalidation failed for:\n  " + "\n  ".join(failed))
