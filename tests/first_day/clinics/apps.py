from django.apps import AppConfig


class ClinicsConfig(AppConfig):
    name = "tests.first_day.clinics"
    label = "clinics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from fragmented_keys_django import ModelTagManager

        from .models import Clinic

        # A shared table whose rows name their tenant (docs: tenancy, tenant_field).
        ModelTagManager.register_model(Clinic, tenant_field="tenant")
