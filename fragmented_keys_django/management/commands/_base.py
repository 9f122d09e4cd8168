"""Shared plumbing of the ``fk_*`` commands: alias, tenant selection, tag parsing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import BACKEND_PATHS, resolve_alias
from ...exceptions import ConfigurationError, InvalidTag, InvalidTenant
from ...invalidation import is_suspect
from ...tags import format_tag, parse_tag
from ...tenancy.catalog import CannotListTenants, known_tenants, tenant_is_known
from ...tenancy.context import tenant_id_of

PUBLIC = "(public)"


def label(tenant: str | None) -> str:
    """How a tenant is shown in output."""
    return PUBLIC if tenant is None else tenant


class FragmentedCommand(BaseCommand):
    """Base: ``--alias``; subclasses with ``tenant_args`` also get ``--tenant/--all-tenants/--public``."""

    tenant_args = True
    tenants_required = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--alias",
            help="Fragmented cache alias (default: the project's fragmented alias).",
        )
        if self.tenant_args:
            parser.add_argument(
                "--tenant", action="append", default=[], metavar="T", help="Tenant id (repeatable)."
            )
            parser.add_argument(
                "--all-tenants",
                action="store_true",
                help="Every tenant the tenant sources can list.",
            )
            parser.add_argument(
                "--public", action="store_true", help="The public namespace (no tenant)."
            )

    def backend(self, options: dict[str, Any]) -> Any:
        from django.conf import settings

        from ...conf import get_cache

        try:
            alias = resolve_alias(options.get("alias"))
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        if settings.CACHES.get(alias, {}).get("BACKEND") not in BACKEND_PATHS:
            raise CommandError(f"Cache alias {alias!r} is not a FragmentedKeysCacheBackend.")
        return get_cache(alias)

    def targets(self, options: dict[str, Any], backend: Any) -> list[str | None]:
        """Return the tenants selected by ``--tenant``/``--all-tenants``/``--public``."""
        given = options.get("tenant") or []
        if given and options.get("all_tenants"):
            raise CommandError("Give either --tenant or --all-tenants, not both.")
        out: list[str | None] = []
        for t in given:
            try:
                out.append(tenant_id_of(t))
            except InvalidTenant as exc:
                raise CommandError(str(exc)) from exc
        self.check_known([t for t in out if t is not None], backend)
        if options.get("all_tenants"):
            try:
                out.extend(known_tenants([backend.alias]))
            except CannotListTenants as exc:
                raise CommandError(str(exc)) from exc
        if options.get("public"):
            out.append(None)
        if not out and self.tenants_required:
            raise CommandError(
                "Say which tenants: --tenant T (repeatable), --all-tenants, or --public."
            )
        return list(dict.fromkeys(out))

    def check_known(self, tenants: list[str], backend: Any) -> None:
        """Raise ``CommandError`` for a ``--tenant`` no tenant source knows (a typo bumps nothing).

        When no source can list or check tenants, say so on stderr and go on.
        """
        if not tenants:
            return
        try:
            known = set(known_tenants([backend.alias]))
            unknown = [t for t in tenants if t not in known]
        except CannotListTenants as exc:
            verdicts = {t: tenant_is_known(t, [backend.alias]) for t in tenants}
            unknown = [t for t, ok in verdicts.items() if ok is False]
            unsure = [t for t, ok in verdicts.items() if ok is None]
            if unsure:
                self.stderr.write(
                    f"warning: cannot check that tenant(s) {', '.join(map(repr, unsure))} exist: {exc}"
                )
            known = set()
        if unknown:
            shown = f" Known tenants: {', '.join(sorted(known))}." if known else ""
            raise CommandError(
                f"Unknown tenant(s) {', '.join(map(repr, unknown))}: no tenant source knows "
                f"them, so nothing was done.{shown}"
            )

    def bump_each(
        self,
        options: dict[str, Any],
        backend: Any,
        bump: Callable[[str | None], str],
        what: str,
    ) -> None:
        """Run *bump* for every selected tenant and print the line it returns.

        A tenant whose bump raised (``BumpFailed`` in strict mode, a bad tenant
        configuration) or did not reach the store (queued for retry) is listed
        in one ``CommandError`` at the end; the other tenants are still bumped.
        """
        failed = []
        for tenant in self.targets(options, backend):
            try:
                done = bump(tenant)
            except Exception as exc:  # reported below, with the other tenants' failures
                failed.append(f"{label(tenant)}: {exc}")
                continue
            if is_suspect(backend.alias, tenant):
                failed.append(
                    f"{label(tenant)}: the store did not take the bump (it will be retried)"
                )
                continue
            self.stdout.write(done)
        if failed:
            raise CommandError(f"{what} failed for:\n  " + "\n  ".join(failed))


def parse_tags(values: list[str]) -> list[tuple[str, str]]:
    """Parse ``--tag`` values with :func:`~fragmented_keys_django.tags.parse_tag` (docs: concepts)."""
    if not values:
        raise CommandError(
            "Give at least one --tag Name:instance (e.g. --tag User:42, or --tag User)."
        )
    try:
        return [parse_tag(value) for value in values]
    except InvalidTag as exc:
        raise CommandError(str(exc)) from exc


def tag_label(tag: tuple[str, str]) -> str:
    """Return *tag* in the text form ``--tag`` reads (:func:`~fragmented_keys_django.tags.format_tag`)."""
    return format_tag(*tag)


def add_tag_argument(parser: Any, verb: str) -> None:
    """Add the repeatable ``--tag Name:instance`` option ("Name" alone: the model-wide tag)."""
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="Name:instance",
        help=(
            f"Tag to {verb} (repeatable): the name ends at the first colon, the rest is the "
            f"instance ('Review:org:42' is ('Review', 'org:42')); 'Name' alone is the model-wide "
            f"tag; write a colon inside a name as \\: ('Review\\:org:42')."
        ),
    )
