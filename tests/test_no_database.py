"""Only `khhf init` creates a database: every other command and every daemon,
run before it (no config, or a config whose database is not there), says so
in one sentence and leaves no file behind (khhf.db.open_database)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from khhf import config, db

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = [
    ["import", "customers", "customers.csv", "--county", "anji"],
    ["tasks", "distribute", "1", "--mode", "average"],
    ["reports", "refresh"],
    ["sms", "outbox"],
    ["users", "admin"],
    ["recordings", "purge"],
    ["hotline", "depart", "E1"],
    ["demo", "seed"],
    ["customers", "export", "customers.xlsx"],
    ["tasks", "export", "1", "tasks.csv"],
    ["db", "upgrade"],
    ["db", "check"],
]
DAEMONS = ["agi", "ami_bridge", "webui", "smsgw", "jobs"]


def _run(argv, tmp_path, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KHHF_")}
    # a retention, so that `recordings purge` gets as far as the database
    environ.update({"KHHF_RECORDING_RETENTION_DAYS": "30", **(env or {})})
    return subprocess.run([sys.executable, *argv], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=60)


def _one_line(proc, prog) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{prog}: ") and lines[0].endswith("."), lines[0]
    return lines[0]


def _files(tmp_path) -> set[Path]:
    return set(tmp_path.rglob("*"))


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "customers.csv").write_text("客户名称,联系电话\n张三,13800000001\n",
                                            encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_command_without_a_configuration_names_khhf_init(command, workdir):
    """No config file, state directory in the test's: nothing is created."""
    conf = workdir / "etc" / "khhf.conf"
    before = _files(workdir)
    proc = _run(["-m", "khhfcli.main", "--config", str(conf), *command], workdir,
                env={"KHHF_HOME": str(workdir / "state")})
    assert proc.returncode == 1, proc.stderr
    line = _one_line(proc, "khhf")
    assert line == (f"khhf: there is no database at {workdir / 'state' / 'khhf.db'} "
                    f"({conf} does not exist): run `khhf init` first."), line
    assert _files(workdir) == before


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_command_with_a_configuration_but_no_database_names_it(command, workdir):
    settings = config.write_new(workdir / "khhf.conf", home=workdir / "state")
    before = _files(workdir)
    proc = _run(["-m", "khhfcli.main", "--config", str(settings.config_path), *command], workdir)
    assert proc.returncode == 1, proc.stderr
    line = _one_line(proc, "khhf")
    assert f"there is no database at {workdir / 'state' / 'khhf.db'}" in line
    assert f"(database_url of {settings.config_path})" in line and "`khhf init`" in line
    assert _files(workdir) == before


@pytest.mark.parametrize("module", DAEMONS)
def test_a_daemon_without_a_database_exits_2_and_creates_nothing(module, workdir):
    settings = config.write_new(workdir / "khhf.conf", home=workdir / "state")
    before = _files(workdir)
    proc = _run(["-m", module, "--config", str(settings.config_path)], workdir)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc, module)
    assert f"there is no database at {workdir / 'state' / 'khhf.db'}" in line, line
    assert _files(workdir) == before


def test_an_empty_file_left_by_an_older_version_is_no_database(workdir):
    """The file an older `khhf import` created by connecting: no tables."""
    settings = config.write_new(workdir / "khhf.conf", home=workdir)
    (workdir / "khhf.db").touch()
    proc = _run(["-m", "khhfcli.main", "--config", str(settings.config_path),
                 "reports", "refresh"], workdir)
    assert proc.returncode == 1
    line = _one_line(proc, "khhf")
    assert line.endswith("has no tables (database_url of "
                         f"{settings.config_path}): run `khhf init` first."), line


@pytest.mark.postgres
def test_postgresql_without_tables_or_unreachable(pg_database, workdir):
    """A PostgreSQL database without KHHF's tables: exit 2 (restarting will
    not help); a server that does not answer: exit 1 (it may come back)."""
    engine = pg_database("notables")
    url = engine.url.render_as_string(hide_password=False)
    settings = config.write_new(workdir / "khhf.conf", home=workdir, database_url=url)
    proc = _run(["-m", "jobs", "--config", str(settings.config_path)], workdir)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc, "jobs")
    assert "has no tables" in line and "`khhf init`" in line
    assert engine.url.password not in proc.stderr
    missing = engine.url.set(database="khhf_no_such_database")
    config.write_new(settings.config_path,
                     database_url=missing.render_as_string(hide_password=False))
    proc = _run(["-m", "khhfcli.main", "--config", str(settings.config_path), "sms", "outbox"],
                workdir)
    assert proc.returncode == 1
    line = _one_line(proc, "khhf")
    assert 'refuses the connection (database "khhf_no_such_database" does not exist' in line
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]   # bound, not listening: connections are refused
        config.write_new(settings.config_path, database_url=engine.url.set(
            host="127.0.0.1", port=port).render_as_string(hide_password=False))
        proc = _run(["-m", "smsgw", "--config", str(settings.config_path)], workdir)
        assert proc.returncode == 1, proc.stderr
        line = _one_line(proc, "smsgw")
        assert "cannot reach the database" in line and "Connection refused" in line
        # nor can `khhf init` make a database there: it says so the same way
        proc = _run(["-m", "khhfcli.main", "--config", str(settings.config_path), "init"],
                    workdir)
    assert proc.returncode == 1
    line = _one_line(proc, "khhf")
    assert "cannot reach the database" in line and "Connection refused" in line


def test_open_database_opens_what_khhf_init_made(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    engine.dispose()
    engine = db.open_database(settings)
    try:
        assert db.has_schema(engine)
    finally:
        engine.dispose()
