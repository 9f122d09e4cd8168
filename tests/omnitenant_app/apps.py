from django.apps import AppConfig


class OmnitenantAppConfig(AppConfig):
    name = "tests.omnitenant_app"
    label = "omnitenant_app"
    default_auto_field = "django.db.models.AutoField"
