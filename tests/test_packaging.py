"""Installable as a package: ``python -m build`` gives a wheel and an sdist; the demo runs from the wheel.

The wheel is installed into a fresh virtualenv (no access to this checkout's
package), the example project is copied next to it, and ``manage.py demo``
runs there with the installed package: every expectation of the demo must hold.
Marked ``slow`` (about a minute: it installs Django into the new virtualenv);
``make test`` and CI run it all the same (no marker is deselected).
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from fragmented_keys_django import __version__

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out[-6000:]}"
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The wheel and sdist built from this checkout (sdist first, the wheel built from it)."""
    out = tmp_path_factory.mktemp("dist")
    # A copy of the sources: setuptools writes *.egg-info into the tree it builds from.
    src = out / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", "site", "build", "dist", "*.egg-info", ".data"
        ),
    )
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src, cwd=out)
    return out


def test_the_wheel_and_the_sdist(dist):
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"fragmented_keys_django-{__version__}-py3-none-any.whl"
    assert tuple(int(p) for p in __version__.split(".")) > (
        0,
        2,
        1,
    )  # above the release it replaces
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "fragmented_keys_django/py.typed",
        "fragmented_keys_django/migrations/0001_initial.py",
        "fragmented_keys_django/templatetags/fragmented_keys.py",
        "fragmented_keys_django/templates/fragmented_keys_django/panel.html",
        "fragmented_keys_django/views.py",
        "fragmented_keys_django/panels.py",
        "fragmented_keys_django/tenancy/middleware.py",
        "fragmented_keys_django/management/commands/fk_outbox.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.split("/")[0] in ("tests", "example", "benchmarks")]
    meta_name = f"fragmented_keys_django-{__version__}.dist-info/METADATA"
    meta = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
    assert meta["Name"] == "fragmented-keys-django" and meta["Version"] == __version__
    assert "debug-toolbar" in meta.get_all("Provides-Extra")
    assert not any("debug-toolbar" in r and "extra" not in r for r in meta.get_all("Requires-Dist"))
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    top = f"fragmented_keys_django-{__version__}"
    if not any(m.startswith(top) for m in members):
        top = f"fragmented-keys-django-{__version__}"
    for needed in ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "docs/install.md"):
        assert f"{top}/{needed}" in members, needed


def test_a_clean_virtualenv_installs_the_wheel_and_runs_the_demo(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    env.pop("VIRTUAL_ENV", None)
    run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path, env=env)
    where = run(
        python,
        "-c",
        "import fragmented_keys_django as m; print(m.__version__, m.__file__)",
        cwd=tmp_path,
        env=env,
    )
    version, path = where.split()[:2]
    assert version == __version__
    assert Path(path).is_relative_to(venv), path  # the installed copy, not this checkout
    example = tmp_path / "example"
    shutil.copytree(
        ROOT / "example", example, ignore=shutil.ignore_patterns(".data", "__pycache__")
    )
    env["CLINIC_DATA_DIR"] = str(tmp_path / "data")
    out = run(python, example / "manage.py", "demo", cwd=tmp_path, env=env, timeout=300)
    assert "OK: all" in out, out[-3000:]
    assert "10. a cached page" in out, out[-3000:]
