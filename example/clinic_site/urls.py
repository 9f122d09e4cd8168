"""URLs of the clinic example. Every URL is served per tenant (chosen by the Host header)."""

from django.urls import path

from clinic import views

urlpatterns = [
    path("hospitals/", views.hospitals, name="hospitals"),
    path(
        "hospitals/<int:hospital_id>/patients/", views.hospital_patients, name="hospital-patients"
    ),
    path("patients/<int:patient_id>/", views.patient, name="patient"),
    path("admin-ops/flush/", views.flush_tenant, name="flush-tenant"),
]
