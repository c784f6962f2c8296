"""The pbx and postgres markers are kept (tests/conftest.py): given by the
fixtures a test uses, and a test that starts Asterisk without the marker
fails, so `-m "not pbx"` never starts one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

INNER = '''
import shutil, subprocess
import pytest

def _asterisk(tmp_path):
    # a process named asterisk, started by the test as Pbx.up would be
    exe = tmp_path / "asterisk"
    shutil.copy("/bin/sleep", exe)
    subprocess.run([str(exe), "1"], check=True)

def test_unmarked(tmp_path):
    _asterisk(tmp_path)

@pytest.mark.pbx
def test_marked(tmp_path):
    _asterisk(tmp_path)

def test_quiet():
    pass
'''


def _inner_run(tmp_path, *args):
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    pbx: Asterisk\n    postgres: PostgreSQL\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rA", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_a_test_that_starts_asterisk_without_the_marker_fails(tmp_path):
    proc = _inner_run(tmp_path)
    assert "1 passed" not in proc.stdout
    assert "ERROR test_inner.py::test_unmarked" in proc.stdout, proc.stdout
    assert "started Asterisk" in proc.stdout and "without the pbx marker" in proc.stdout
    assert "PASSED test_inner.py::test_marked" in proc.stdout
    assert "PASSED test_inner.py::test_quiet" in proc.stdout


def test_the_fixtures_bring_their_marker(tmp_path):
    """A test using pbx_harness (or a fixture built on PbxHarness) is pbx, one
    using pg_database is postgres, without writing the marker."""
    (tmp_path / "test_fixtures.py").write_text(
        "import pytest\n"
        "from simkit.harness import PbxHarness\n"
        "@pytest.fixture\n"
        "def own_pbx(tmp_path):\n"
        "    with PbxHarness(tmp_path) as h:\n"
        "        yield h\n"
        "def test_uses_pbx(pbx_harness): pass\n"
        "def test_uses_own_pbx(own_pbx): pass\n"
        "def test_uses_pg(pg_database): pass\n"
        "def test_plain(): pass\n")
    proc = _inner_run(tmp_path, "--collect-only", "test_fixtures.py", "-m",
                      "not pbx and not postgres")
    assert "test_fixtures.py::test_plain" in proc.stdout, proc.stdout
    assert "1/4 tests collected (3 deselected)" in proc.stdout, proc.stdout
    proc = _inner_run(tmp_path, "--collect-only", "test_fixtures.py", "-m", "postgres")
    assert "test_fixtures.py::test_uses_pg" in proc.stdout, proc.stdout
    assert "1/4 tests collected" in proc.stdout, proc.stdout
