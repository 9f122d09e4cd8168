from django.apps import AppConfig


class TenantsAppConfig(AppConfig):
    name = "tests.tenants_app"
    label = "tenants_app"
    default_auto_field = "django.db.models.AutoField"
