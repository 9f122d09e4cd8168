"""Collect this suite only under its own settings (tests.settings_admin).

The main suite runs it in a subprocess (tests/test_operator_page.py); collected
under tests.settings it is ignored.
"""

import os

if os.environ.get("DJANGO_SETTINGS_MODULE") != "tests.settings_admin":
    collect_ignore_glob = ["test_*.py"]
