"""The operator page in the Django admin: a tenant's cache, its tag versions, bumps and flushes.

Registered on ``admin.site`` for the table-less model
:class:`~.models.CacheOperations` ("Tenant cache" on the admin index) when
``django.contrib.admin`` is installed. Staff users with the permission
``fragmented_keys_django.operate_cache`` pick an alias and a tenant and see
its hit ratio, recent bumps and retry backlog (:mod:`.operator`), look up a
tag's version, and bump a tag or flush the tenant after a confirmation page
(a POST with Django's CSRF token). Others get a 403 (anonymous users, the
login page).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.cache import caches
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from . import metrics, operator
from .conf import fragmented_aliases, resolve_alias
from .exceptions import FragmentedKeysError
from .models import CacheOperations
from .tags import normalize_tags
from .tenancy.catalog import tenant_is_known
from .tenancy.context import TenantContext

__all__ = ["PERMISSION", "CacheOperationsAdmin"]

#: The permission the page and its actions require.
PERMISSION = "fragmented_keys_django.operate_cache"

operator.listen()


@admin.register(CacheOperations)
class CacheOperationsAdmin(admin.ModelAdmin):
    """The operator page (the changelist of a model without a table) and its two actions."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(PERMISSION)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("bump/", wrap(self.bump_view), name="{}_{}_bump".format(*info)),
            path("flush/", wrap(self.flush_view), name="{}_{}_flush".format(*info)),
            path("", wrap(self.changelist_view), name="{}_{}_changelist".format(*info)),
        ]

    # -- helpers --------------------------------------------------------------

    def _check(self, request: HttpRequest) -> None:
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied

    def _page_url(self, alias: str, tenant: str) -> str:
        """The page of *tenant* on *alias* (the default alias when *alias* is not one)."""
        url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        alias = alias if alias in fragmented_aliases() else ""
        return f"{url}?{urlencode({'alias': alias, 'tenant': tenant.strip()})}"

    def _target(self, request: HttpRequest, data: Any) -> tuple[str, str]:
        """The alias and tenant a request names; an unknown alias or no tenant is a 403-free error."""
        aliases = fragmented_aliases()
        alias = data.get("alias") or resolve_alias()
        if alias not in aliases:
            raise ValueError(f"alias {alias!r} is not a fragmented alias; choose one of {aliases}")
        tenant = (data.get("tenant") or "").strip()
        if not tenant:
            raise ValueError("choose a tenant")
        if tenant_is_known(tenant, [alias]) is False:
            raise ValueError(
                f"unknown tenant {tenant!r}: no tenant source knows it (the fk_* commands "
                f"refuse it too); check its spelling"
            )
        return alias, tenant

    def _context(self, request: HttpRequest, **more: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "has_view_permission": True,
            **more,
        }

    # -- views ----------------------------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """The page: pick an alias and a tenant; its numbers; forms for a lookup, a bump, a flush."""
        self._check(request)
        aliases = fragmented_aliases()
        alias = request.GET.get("alias") or (resolve_alias() if aliases else "")
        tenant = (request.GET.get("tenant") or "").strip()
        known = _known_tenants(aliases)
        context = self._context(
            request,
            title="Tenant cache",
            aliases=aliases,
            alias=alias,
            tenant=tenant,
            known_tenants=known[0],
            unlisted=known[1],
            bump_url=reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_bump"),
            flush_url=reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_flush"),
            tag=request.GET.get("tag", ""),
            instance=request.GET.get("instance", ""),
        )
        if tenant:
            try:
                alias, tenant = self._target(request, request.GET)
            except ValueError as exc:
                messages.error(request, str(exc))
                return TemplateResponse(request, "fragmented_keys_django/operator.html", context)
            context.update(
                chosen=True,
                hits=operator.hit_ratio(alias, tenant),
                recent=operator.recent_bumps(alias, tenant),
                recent_size=operator.RECENT,
                backlog=_backlog(alias, tenant),
            )
            if context["tag"]:
                context["version"] = self._version(request, alias, tenant, context)
        return TemplateResponse(request, "fragmented_keys_django/operator.html", context)

    def _version(self, request: HttpRequest, alias: str, tenant: str, context: dict) -> Any:
        try:
            with TenantContext.use_tenant(tenant):
                return caches[alias].get_tag_version(context["tag"], context["instance"])
        except (FragmentedKeysError, ValueError, TypeError, *metrics.store_errors()) as exc:
            messages.error(request, f"could not read the version: {exc}")
            return None

    def bump_view(self, request: HttpRequest) -> HttpResponse:
        """GET: confirm the bump of a tag in a tenant; POST: bump it, back to the page."""
        self._check(request)
        data = request.POST if request.method == "POST" else request.GET
        try:
            alias, tenant = self._target(request, data)
            tag, instance = data.get("tag", "").strip(), data.get("instance", "").strip()
            normalize_tags([(tag, instance)])  # InvalidTag (a ValueError) names the problem
        except (FragmentedKeysError, ValueError, TypeError) as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(
                self._page_url(data.get("alias", ""), data.get("tenant", ""))
            )
        what = f"tag {tag}:{instance}" if instance else f"tag {tag}"
        if request.method != "POST":
            return self._confirm(request, "bump", alias, tenant, what, tag=tag, instance=instance)
        try:
            with TenantContext.use_tenant(tenant):
                caches[alias].invalidate_tags([(tag, instance)])
        except (FragmentedKeysError, *metrics.store_errors()) as exc:
            messages.error(request, f"the bump of {what} failed: {exc}")
        else:
            messages.success(request, f"Bumped {what} in tenant {tenant} on alias {alias}.")
        return HttpResponseRedirect(self._page_url(alias, tenant))

    def flush_view(self, request: HttpRequest) -> HttpResponse:
        """GET: confirm the flush of a tenant; POST: flush it (one namespace bump), back to the page."""
        self._check(request)
        data = request.POST if request.method == "POST" else request.GET
        try:
            alias, tenant = self._target(request, data)
        except ValueError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(self._page_url(data.get("alias", ""), ""))
        if request.method != "POST":
            return self._confirm(request, "flush", alias, tenant, "every entry")
        try:
            caches[alias].invalidate_tenant(tenant)
        except (FragmentedKeysError, *metrics.store_errors()) as exc:
            messages.error(request, f"the flush of tenant {tenant} failed: {exc}")
        else:
            messages.success(request, f"Flushed tenant {tenant} on alias {alias}.")
        return HttpResponseRedirect(self._page_url(alias, tenant))

    def _confirm(
        self, request: HttpRequest, action: str, alias: str, tenant: str, what: str, **fields: str
    ) -> HttpResponse:
        context = self._context(
            request,
            title="Are you sure?",
            action=action,
            alias=alias,
            tenant=tenant,
            what=what,
            fields={"alias": alias, "tenant": tenant, **fields},
            back_url=self._page_url(alias, tenant),
        )
        return TemplateResponse(request, "fragmented_keys_django/operator_confirm.html", context)


def _known_tenants(aliases: list[str]) -> tuple[list[str], str]:
    """The tenants the configured sources can list (for the picker), and why not if they cannot."""
    from .tenancy.catalog import CannotListTenants, known_tenants

    try:
        return known_tenants(aliases), ""
    except CannotListTenants as exc:  # shown on the page: type the tenant's id
        return [], str(exc)
    except Exception as exc:  # the database is down: logged, counted, shown
        metrics.record_error("-", None, "known_tenants", exc, what="tenant listing failed")
        return [], f"the tenants could not be listed: {exc}"


def _backlog(alias: str, tenant: str) -> operator.Backlog | None:
    try:
        return operator.retry_backlog(alias, tenant)
    except Exception as exc:  # the database is down: the page still shows the rest
        metrics.record_error(alias, tenant, "outbox_backlog", exc, what="outbox")
        return None
