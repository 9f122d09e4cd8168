"""``fk_check``: check that every tenant's store is reachable (set/get/delete of a probe key)."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import CommandError

from ...tenancy.catalog import CannotListTenants, known_tenants, store_info
from ._base import FragmentedCommand, label


def probe(store: Any) -> None:
    """Write, read back and delete a probe key; raise on any failure."""
    key = f"fk:probe:{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    store.set(key, token, timeout=30)
    got = store.get(key)
    store.delete(key)
    if got != token:
        raise RuntimeError(
            "probe key written but not read back (the store drops writes or errors are ignored)"
        )


class Command(FragmentedCommand):
    help = (
        "Ping every tenant's store (and the shared store) with a probe key; exit 1 listing the "
        "tenants whose store fails. Default: the shared store and every listable tenant."
    )
    tenants_required = False

    def handle(self, *args: Any, **options: Any) -> None:
        backend = self.backend(options)
        targets = self.targets(options, backend)
        if not targets:
            targets = [None]
            try:
                targets += known_tenants([backend.alias])
            except CannotListTenants as exc:
                self.stderr.write(f"warning: only the shared store is checked. {exc}")
        results: dict[int, tuple[str | None, Exception | None]] = {}
        failed = []
        ok = 0
        for tenant in targets:
            try:
                store = backend.store_for(tenant)
                info = store_info(backend, tenant)
            except Exception as exc:  # a broken tenant config
                failed.append(f"{label(tenant)}: {exc}")
                self.stdout.write(f"FAIL  {label(tenant)}: {exc}")
                continue
            key = id(store)
            if key not in results:
                try:
                    probe(store)
                    results[key] = (info.alias, None)
                except Exception as exc:
                    results[key] = (info.alias, exc)
            _, error = results[key]
            where = f"store {info.alias} ({info.backend} {info.location})"
            if error is None:
                ok += 1
                self.stdout.write(f"OK    {label(tenant)}: {where}")
            else:
                failed.append(f"{label(tenant)}: {where}: {error}")
                self.stdout.write(f"FAIL  {label(tenant)}: {where}: {error}")
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(targets)} tenant store(s) failed:\n  " + "\n  ".join(failed)
            )
        self.stdout.write(f"all {ok} tenant store(s) reachable")
