"""URLs of the clinic example. Every URL is served per tenant (chosen by the Host header)."""

from django.urls import path

from clinic import views

urlpatterns = [
    path("hospitals/", views.hospitals, name="hospitals"),
    path(
        "hospitals/<int:hospital_id>/patients/", views.hospital_patients, name="hospital-patients"
    ),
    path("hospitals/<int:hospital_id>/", views.hospital_page, name="hospital"),
    path("patients/<int:patient_id>/", views.patient, name="patient"),
    path("patients/<int:patient_id>/card/", views.patient_card, name="patient-card"),
    path("admin-ops/flush/", views.flush_tenant, name="flush-tenant"),
]
