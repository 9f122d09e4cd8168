"""A tiny django-tenants app for tests/tenants_suite (tenant, domain, and a per-schema model)."""
