"""django-omnitenant suite: run only by tests/test_integrations.py, in its own pytest process."""
