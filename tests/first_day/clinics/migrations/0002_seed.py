"""A data migration, as a new project writes them: rows written outside any tenant."""

from django.db import migrations


def seed(apps, schema_editor):
    Clinic = apps.get_model("clinics", "Clinic")
    Clinic.objects.create(name="Main St", tenant="acme")
    Clinic.objects.create(name="Harbour", tenant="globex")


class Migration(migrations.Migration):
    dependencies = [("clinics", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
