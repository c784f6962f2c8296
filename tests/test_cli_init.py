"""`khhf init` creates the database where every other command will look."""

import os
import subprocess
import sys


def test_init_honours_the_environment_like_every_other_command(tmp_path):
    conf, home = tmp_path / "khhf.conf", tmp_path / "state"
    env = dict(os.environ, KHHF_CONFIG=str(conf), KHHF_HOME=str(home))
    env.pop("KHHF_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "khhfcli.main", "init"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (home / "khhf.db").is_file(), done.stdout
    assert str(home / "khhf.db") in done.stdout
    assert oct(conf.stat().st_mode & 0o777) == "0o600"


def test_init_again_adds_the_tables_a_newer_version_brought(tmp_path):
    """A database made by an older version (here: without the task type
    report tables) gets them, with their indexes, from a second `khhf init`;
    its rows stay."""
    import sqlite3
    conf, home = tmp_path / "khhf.conf", tmp_path / "state"
    env = dict(os.environ, KHHF_CONFIG=str(conf), KHHF_HOME=str(home))
    env.pop("KHHF_DATABASE_URL", None)

    def init():
        done = subprocess.run([sys.executable, "-m", "khhfcli.main", "init"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout
    init()
    with sqlite3.connect(home / "khhf.db") as conn:
        conn.execute("DROP TABLE report_type_daily")
        conn.execute("DROP TABLE report_type_results")
        types = conn.execute("SELECT count(*) FROM task_types").fetchone()[0]
    assert types > 0
    out = init()
    assert "report_type_daily" in out and "report_type_results" in out
    with sqlite3.connect(home / "khhf.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"report_type_daily", "report_type_results"} <= tables
        assert conn.execute("SELECT count(*) FROM task_types").fetchone()[0] == types
    assert "added the tables" not in init()  # nothing more to add
