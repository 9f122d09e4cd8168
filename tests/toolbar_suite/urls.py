"""Views of the toolbar suite: a cached page and a cached fragment of one patient, and an edit."""

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from fragmented_keys_django.views import tagged_cache_page
from tests.testapp.models import Patient


@tagged_cache_page(600, tags=["Patient:{pk}"])
def page(request, pk):
    name = Patient.objects.get(pk=pk).name
    return HttpResponse(f"<!doctype html><html><body><h1>{name}</h1></body></html>")


def card(request, pk):
    return render(request, "templates/card.html", {"patient": Patient.objects.get(pk=pk)})


@csrf_exempt
def edit(request, pk):
    row = Patient.objects.get(pk=pk)
    row.name = request.POST["name"]
    row.save()  # ModelTagManager: bumps ("Patient", pk) and ("Patient", "")
    return HttpResponse("<!doctype html><html><body>saved</body></html>")


urlpatterns = [
    path("page/<int:pk>/", page),
    path("card/<int:pk>/", card),
    path("edit/<int:pk>/", edit),
    path("__debug__/", include("debug_toolbar.urls")),
]
