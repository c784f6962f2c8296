"""A clone other users cannot read (e.g. under /root, mode 0700 on Debian),
installed as scripts/install does it (`pip install -e` into a virtual
environment outside the clone): the test suite passes there, and `khhf`
run by a user who cannot read the clone answers in one sentence."""

import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.test_service import NOBODY
from tests.test_wheel import IGNORED, REPO, _pip


@pytest.fixture(scope="module")
def private_install():
    """(clone, venv): a copy of this checkout in a mode-0700 directory, and
    a readable virtual environment with it installed editable. The
    dependencies come from this test environment (a path in a .pth file:
    the packages, not the editable install of this checkout); the build
    needs PyPI, as scripts/install does."""
    private = Path(tempfile.mkdtemp(prefix="khhf-private-"))   # mode 0700
    public = Path(tempfile.mkdtemp(prefix="khhf-venv-"))
    public.chmod(0o755)
    try:
        clone = private / "khhf"
        shutil.copytree(REPO, clone, ignore=IGNORED)
        venv = public / "venv"
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        purelib = Path(subprocess.run(
            [venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True).stdout.strip())
        (purelib / "khhf-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        _pip(venv / "bin/pip", "install", "--no-deps", "-e", str(clone))
        yield clone, venv
    finally:
        shutil.rmtree(private)
        shutil.rmtree(public)


def _env():
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("KHHF_")}


def test_khhf_answers_a_user_who_cannot_read_it(private_install):
    clone, venv = private_install
    proc = subprocess.run([*NOBODY, venv / "bin/khhf", "service", "install"], cwd="/",
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == (f"khhf: this user may not read KHHF's installation "
                           f"({clone / 'khhfcli' / '__init__.py'}): run khhf as root, or "
                           "install KHHF where every user may read it.\n"), proc.stderr
    # root, who can read it, has the whole command
    proc = subprocess.run([venv / "bin/khhf", "--help"], cwd="/", env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage: khhf" in proc.stdout and "init" in proc.stdout, proc.stderr


def test_the_suite_passes_in_a_private_clone(private_install):
    """The test that runs `khhf` as nobody, run from the private clone on
    its own installation, as scripts/test runs the suite there."""
    clone, venv = private_install
    proc = subprocess.run([venv / "bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_service.py::test_clear_errors"],
                          cwd=clone, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
