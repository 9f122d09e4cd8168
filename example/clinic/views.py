"""Function views. The tenant was chosen by ``TenantMiddleware`` from the Host header."""

from __future__ import annotations

from django.core.cache import caches
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from fragmented_keys_django.views import tagged_cache_page

from . import services
from .models import Hospital, Patient


@require_GET
def hospitals(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"tenant": request.tenant_id, "hospitals": services.list_hospitals()})


@require_GET
def hospital_patients(request: HttpRequest, hospital_id: int) -> JsonResponse:
    return JsonResponse({"tenant": request.tenant_id, **services.hospital_patients(hospital_id)})


@require_GET
@tagged_cache_page(services.TIMEOUT, tags=["Patient:{patient_id}"])
def patient_card(request: HttpRequest, patient_id: int) -> HttpResponse:
    """A whole page cached per tenant; the patient's save (tag ``Patient:<n>``) invalidates it."""
    patient = get_object_or_404(Patient.objects.current(), number=patient_id)
    return HttpResponse(f"<p>patient card</p><h1>{patient.name}</h1><p>{patient.notes}</p>")


@require_GET
def hospital_page(request: HttpRequest, hospital_id: int) -> HttpResponse:
    """An uncached page holding a cached fragment: ``{% tagged_cache %}`` in the template."""
    hospital = get_object_or_404(Hospital.objects.current(), number=hospital_id)
    return render(request, "clinic/hospital.html", {"hospital": hospital})


@csrf_exempt  # demo only: lets curl and the scripted walkthrough post without a token
@require_http_methods(["GET", "POST"])
def patient(request: HttpRequest, patient_id: int) -> HttpResponse:
    if request.method == "GET":
        return HttpResponse(services.patient_page(patient_id))
    name = request.POST.get("name", "").strip()
    notes = request.POST.get("notes")
    if not name and notes is None:
        return JsonResponse({"error": "post 'name' and/or 'notes'"}, status=400)
    if len(name) > 200:
        return JsonResponse({"error": "name is longer than 200 characters"}, status=400)
    with transaction.atomic():
        row = Patient.objects.current().select_for_update().filter(number=patient_id).first()
        if row is None:
            return JsonResponse({"error": f"no patient {patient_id}"}, status=404)
        if name:
            row.name = name
        if notes is not None:
            row.notes = notes
        row.save(update_fields=["name", "notes"])
        # ModelTagManager queued the bumps of Patient:<n>, Patient and
        # HospitalPatients:<hospital>; they run when this block commits.
    return JsonResponse(
        {"tenant": request.tenant_id, "id": row.number, "name": row.name, "notes": row.notes}
    )


@csrf_exempt  # demo only; a real project would require a staff login here
@require_POST
def flush_tenant(request: HttpRequest) -> JsonResponse:
    """Invalidate every cache entry of the current tenant (one write; other tenants untouched)."""
    caches["fragmented"].invalidate_tenant()
    return JsonResponse({"tenant": request.tenant_id, "flushed": True})
