#!/usr/bin/env python
"""Run ``bench_021.py`` against ``fragmented-keys-django`` 0.2.1 in its own virtualenv.

0.2.1 has the same import name as this repository's package, so it lives in
``benchmarks/.venv-021`` (gitignored), created on first use with
``python3 -m venv`` and ``pip install``. Arguments are passed on to
``bench_021.py`` (``--quick``, ``--out PATH``, ``--db N``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-021"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = [
    "fragmented-keys-django==0.2.1",
    "django-redis",
    "redis",
    "hiredis",
    "Django>=5.2,<5.3",
]


def _has_021() -> bool:
    if not PYTHON.exists():
        return False
    probe = "import importlib.metadata as m, hiredis, django_redis; print(m.version('fragmented-keys-django'))"
    # -I: isolated, so the repository (cwd) and its egg-info are not on sys.path.
    got = subprocess.run(
        [str(PYTHON), "-I", "-c", probe], capture_output=True, text=True, cwd=str(HERE)
    )
    return got.returncode == 0 and got.stdout.strip() == "0.2.1"


def ensure_venv() -> Path:
    """Create ``benchmarks/.venv-021`` with 0.2.1 installed, unless it is there already."""
    if _has_021():
        return PYTHON
    python3 = shutil.which("python3") or sys.executable
    print(f"creating {VENV} ...", file=sys.stderr, flush=True)
    subprocess.run([python3, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
    if not _has_021():
        raise SystemExit(f"{VENV} does not import fragmented-keys-django 0.2.1 after installing it")
    return PYTHON


def main(argv: list[str] | None = None) -> int:
    python = ensure_venv()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")
    }
    cmd = [str(python), "-I", str(HERE / "bench_021.py"), *(sys.argv[1:] if argv is None else argv)]
    return subprocess.run(cmd, env=env, cwd=str(HERE)).returncode


if __name__ == "__main__":
    sys.exit(main())
