from django.contrib import admin

from .models import Clinic

admin.site.register(Clinic)
