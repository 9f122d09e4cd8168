"""``fk_versions``: show tag version tokens in a tenant."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...tenancy.context import TenantContext
from ._base import FragmentedCommand, add_tag_argument, label, parse_tags, tag_label


class Command(FragmentedCommand):
    help = (
        "Print the current version token of tags in a tenant (0 = never bumped / expired): "
        "fk_versions --tenant acme --tag User:42 --tag User."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        add_tag_argument(parser, "show")

    def handle(self, *args: Any, **options: Any) -> None:
        tags = parse_tags(options["tag"])
        backend = self.backend(options)
        failed = []
        for tenant in self.targets(options, backend):
            for tag in tags:
                try:
                    with TenantContext.use_tenant(tenant):
                        version = backend.get_tag_version(*tag)
                except Exception as exc:  # the store is unreachable
                    failed.append(f"{label(tenant)} {tag_label(tag)}: {exc}")
                    continue
                shown = f"{version}" if version else "0 (never bumped)"
                self.stdout.write(f"{label(tenant)}\t{tag_label(tag)}\t{shown}")
        if failed:
            raise CommandError("could not read versions:\n  " + "\n  ".join(failed))
