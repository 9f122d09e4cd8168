from django.contrib import admin
from django.core.cache import caches
from django.http import HttpResponse
from django.urls import path

from .clinics.models import Clinic


def profile(request):
    """A fragment cached per tenant, depending on the user's tag."""
    user = request.user
    text = caches["fragmented"].get_or_set_with_tags(
        "profile", lambda: f"{user.username}:{user.first_name}", [("User", str(user.pk))]
    )
    return HttpResponse(text)


def clinics(request):
    text = caches["fragmented"].get_or_set_with_tags(
        "clinics",
        lambda: ",".join(c.name for c in Clinic.objects.filter(tenant=request.tenant_id)),
        [("Clinic", "")],
    )
    return HttpResponse(text)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("profile/", profile),
    path("clinics/", clinics),
]
