"""Cached reads. None of them names the tenant: the cache scopes every key to it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.http import Http404
from django.template.loader import render_to_string

from fragmented_keys_django import TenantContext, tagged_cache

from .models import Hospital, Patient

TIMEOUT = 300


@tagged_cache(timeout=TIMEOUT, tags=["Hospital"])
def list_hospitals() -> list[dict[str, Any]]:
    """Every hospital of the tenant. Tag ``("Hospital", "")``: bumped by any hospital save."""
    return [{"id": h.number, "name": h.name} for h in Hospital.objects.current().order_by("number")]


def hospital_patients(hospital_id: int) -> dict[str, Any]:
    """A hospital and its patients, through the backend's tag API (no decorator)."""

    def load() -> dict[str, Any]:
        hospital = Hospital.objects.current().filter(number=hospital_id).first()
        if hospital is None:
            raise Http404(f"no hospital {hospital_id}")  # raised, so nothing is cached
        patients = Patient.objects.current().filter(hospital=hospital).order_by("number")
        return {
            "hospital": {"id": hospital.number, "name": hospital.name},
            "patients": [{"id": p.number, "name": p.name} for p in patients],
        }

    return caches["fragmented"].get_or_set_with_tags(
        "hospital_patients",
        load,
        [("Hospital", hospital_id), ("HospitalPatients", hospital_id)],
        timeout=TIMEOUT,
        group_id=f"hospital:{hospital_id}",
    )


@tagged_cache(timeout=TIMEOUT, tags=["Patient:{patient_id}"], vary_on=["patient_id"])
def patient_page(patient_id: int) -> str:
    """The patient's HTML page. Cache the rendered string (no per-request data in it)."""
    patient = Patient.objects.current().select_related("hospital").filter(number=patient_id).first()
    if patient is None:
        raise Http404(f"no patient {patient_id}")
    tenant_id = TenantContext.get_tenant_id()
    return render_to_string(
        "clinic/patient.html",
        {"patient": patient, "tenant_name": settings.TENANTS[tenant_id]["name"]},
    )
