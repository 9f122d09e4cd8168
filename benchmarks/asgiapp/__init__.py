"""A minimal Django project served by uvicorn for ``benchmarks/asgi_load.py``."""
