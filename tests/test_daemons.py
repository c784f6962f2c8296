"""The daemons start one way: --config, one line on stderr naming
what to do, and the exit codes of khhf.daemon (2: restarting will not help)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from khhf import config

ROOT = Path(__file__).resolve().parent.parent


def run(module, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KHHF_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("module", ["agi", "ami_bridge", "webui", "smsgw"])
def test_a_bad_setting_is_exit_2_with_one_line(module, tmp_path):
    conf = tmp_path / "khhf.conf"
    conf.write_text("[khhf]\nagi_port = lots\n")
    proc = run(module, "--config", str(conf))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"{module}: agi_port must be a whole number, not 'lots'."


@pytest.mark.parametrize("module,missing", [("ami_bridge", "ami_secret"), ("webui", "secret_key")])
def test_a_missing_secret_names_khhf_init(module, missing, tmp_path):
    conf = tmp_path / "khhf.conf"
    conf.write_text(f"[khhf]\nhome = {tmp_path}\n")
    proc = run(module, "--config", str(conf))
    assert proc.returncode == 2
    assert f"{missing} is not set: run `khhf init`" in proc.stderr


# a daemon without its database: tests/test_no_database.py


def _create_database(settings, revision=None):
    """The settings' database made at head, then (revision) stamped back."""
    from khhf import db
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    if revision:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{revision}'")
    engine.dispose()


@pytest.mark.parametrize("module", ["agi", "ami_bridge", "webui", "smsgw", "jobs"])
def test_a_database_not_at_head_is_exit_2_saying_khhf_db_upgrade(module, tmp_path):
    from khhf import migrations
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    _create_database(settings, revision=migrations.BASELINE)
    proc = run(module, "--config", str(settings.config_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"{module}: the database {settings.database_url} is at revision {migrations.BASELINE}, "
        f"this version needs revision {migrations.head()}: run `khhf db upgrade`.")


def test_the_sms_gateway_refuses_a_rate_below_one(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path, smsc_host="127.0.0.1",
                                sms_rate_per_second=0)
    _create_database(settings)
    proc = run("smsgw", "--config", str(settings.config_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "smsgw: sms_rate_per_second must be at least 1."


def test_a_taken_port_is_exit_1(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path, agi_port=port)
        _create_database(settings)
        proc = run("agi", "--config", str(settings.config_path))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("agi: ")
