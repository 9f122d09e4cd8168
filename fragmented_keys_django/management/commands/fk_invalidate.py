"""``fk_invalidate``: bump tags in one tenant, several, or all."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

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
        names = ", ".join(tag_label(t) for t in tags)

        def invalidate(tenant: str | None) -> str:
            with TenantContext.use_tenant(tenant):
                count = backend.invalidate_tags(tags)
            return f"invalidated {count} tag(s) in tenant {label(tenant)} (alias {backend.alias}): {names}"

        self.bump_each(options, backend, invalidate, "invalidation")
