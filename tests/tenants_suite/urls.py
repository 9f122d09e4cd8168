"""Views of the django-tenants suite: they read and write caches["fragmented"] in the request's schema."""

from django.core.cache import caches
from django.db import connection
from django.http import JsonResponse
from django.urls import path

from fragmented_keys_django.tenancy.context import current_tenant_id


def set_value(request):
    caches["fragmented"].set("greeting", request.GET["v"])
    return JsonResponse({"tenant": current_tenant_id(), "schema": connection.schema_name})


def get_value(request):
    return JsonResponse(
        {
            "tenant": current_tenant_id(),
            "schema": connection.schema_name,
            "value": caches["fragmented"].get("greeting"),
        }
    )


urlpatterns = [path("set/", set_value), path("get/", get_value)]
