from django.apps import AppConfig


class ClinicConfig(AppConfig):
    name = "clinic"
    verbose_name = "Clinic (fragmented_keys_django example)"

    def ready(self) -> None:
        from fragmented_keys_django import ModelTagManager

        from . import middleware
        from .models import Hospital, Patient
        from .tags import hospital_tags, patient_tags

        # Saves and deletes of these models bump their tags after the commit,
        # in the tenant current when the row was written.
        ModelTagManager.register_model(
            Hospital, on_create=hospital_tags, on_update=hospital_tags, on_delete=hospital_tags
        )
        ModelTagManager.register_model(
            Patient, on_create=patient_tags, on_update=patient_tags, on_delete=patient_tags
        )
        middleware.connect_cache_signals()
