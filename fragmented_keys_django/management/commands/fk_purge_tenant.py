"""``fk_purge_tenant``: delete every key of a tenant from its store(s) (offboarding)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...exceptions import FragmentedKeysError
from ...purge import PurgeProgress, purge_tenants
from ...tenancy.catalog import CannotListTenants, known_tenants
from ._base import FragmentedCommand


class Command(FragmentedCommand):
    help = (
        "Erase a tenant's cache: bump its namespace, then delete every key it has in its "
        "store, the alias's shared store and the --store(s) it left, BATCH keys at a time "
        "(Redis SCAN + UNLINK, database cache DELETE; memcached/locmem/file cannot list keys: "
        "bump only). Stop the tenant's traffic first, or run it again after: "
        "fk_purge_tenant acme [globex ...] [--alias A] [--batch 1000] [--dry-run] [--store ALIAS]."
    )
    tenant_args = False

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "tenant",
            nargs="+",
            help="The tenant id(s) to erase (several: each store is walked once for all).",
        )
        parser.add_argument(
            "--batch",
            type=int,
            default=1000,
            help="Keys per round trip (SCAN COUNT, UNLINK, rows per DELETE); default 1000.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count the tenant's keys in each store; bump and delete nothing.",
        )
        parser.add_argument(
            "--store",
            action="append",
            default=[],
            metavar="ALIAS",
            help="A CACHES alias the tenant kept keys in before (a store it left); repeatable.",
        )
        parser.add_argument(
            "--store-config",
            action="append",
            default=[],
            metavar="JSON",
            help="A cache config the tenant used before, as its TENANT_STORES source gave it "
            '(e.g. \'{"LOCATION": "redis://old-host:6379/2"}\'); repeatable.',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = self.backend(options)
        tenants = options["tenant"]
        if options["batch"] < 1:
            raise CommandError(f"--batch must be at least 1 key, got {options['batch']}")
        stores: list[Any] = list(options["store"])
        for text in options["store_config"]:
            try:
                config = json.loads(text)
            except ValueError as exc:
                raise CommandError(f"--store-config {text!r} is not JSON: {exc}") from exc
            if not isinstance(config, dict):
                raise CommandError(f"--store-config must be a JSON object, got {text!r}")
            stores.append(config)
        self._note_unknown(tenants, backend)
        dry = options["dry_run"]

        def progress(step: PurgeProgress) -> None:
            verb = "found" if dry else "deleted"
            count = step.matched if dry else step.deleted
            end = ", done" if step.done else ""
            self.stdout.write(f"  store {step.store}: {count} key(s) {verb}{end}")

        try:
            reports = purge_tenants(
                tenants,
                backend.alias,
                batch=options["batch"],
                stores=stores,
                dry_run=dry,
                progress=progress,
            )
        except (FragmentedKeysError, ValueError) as exc:
            shown = ", ".join(map(repr, tenants))
            raise CommandError(f"purge of tenant(s) {shown} failed: {exc}") from exc
        for report in reports:
            self._report(report, dry)

    def _report(self, report: Any, dry: bool) -> None:
        tenant = report.tenant
        for part in report.stores:
            if not part.listable:
                self.stdout.write(
                    f"{tenant}: store {part.store} ({part.kind}) cannot list keys: nothing "
                    f"deleted; the namespace bump makes the tenant's entries unreachable, they "
                    f"leave by TTL or eviction"
                )
            elif dry:
                self.stdout.write(
                    f"{tenant}: store {part.store} ({part.kind}): {part.matched} key(s) found"
                )
            else:
                self.stdout.write(
                    f"{tenant}: store {part.store} ({part.kind}): {part.deleted} key(s) deleted"
                )
        if dry:
            self.stdout.write(
                f"dry run: tenant {tenant} has {report.matched} key(s) on alias {report.alias} "
                f"and {report.outbox_rows} outbox row(s); nothing bumped or deleted"
            )
        else:
            self.stdout.write(
                f"purged tenant {tenant} (alias {report.alias}): {report.deleted} key(s) deleted, "
                f"{report.outbox_rows} outbox row(s)"
            )

    def _note_unknown(self, tenants: list[str], backend: Any) -> None:
        """Say on stderr which *tenants* no tenant source knows (removed already, or a typo)."""
        try:
            known = set(known_tenants([backend.alias]))
        except CannotListTenants:
            return
        unknown = [t for t in tenants if t not in known]
        if unknown:
            self.stderr.write(
                f"note: no tenant source knows tenant(s) {', '.join(map(repr, unknown))} "
                f"(removed already, or a typo?): purging their keys anyway"
            )
