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
    # the file remembers it: a later command without KHHF_HOME finds that database
    env.pop("KHHF_HOME")
    later = subprocess.run([sys.executable, "-m", "khhfcli.main", "db", "current"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert later.returncode == 0, later.stderr
    assert "revision" in later.stdout
    from khhf import config
    assert config.load(conf, environ={}).home == home


def test_init_never_makes_an_existing_database_again(tmp_path):
    """A second `khhf init` keeps the rows; on a database at an older
    revision it changes nothing and says to run `khhf db upgrade`."""
    import sqlite3
    conf, home = tmp_path / "khhf.conf", tmp_path / "state"
    env = dict(os.environ, KHHF_CONFIG=str(conf), KHHF_HOME=str(home))
    env.pop("KHHF_DATABASE_URL", None)

    def init():
        return subprocess.run([sys.executable, "-m", "khhfcli.main", "init"], env=env,
                              capture_output=True, text=True, timeout=120)
    first = init()
    assert first.returncode == 0, first.stderr
    assert "created the database schema (revision" in first.stdout
    with sqlite3.connect(home / "khhf.db") as conn:
        types = conn.execute("SELECT count(*) FROM task_types").fetchone()[0]
    again = init()
    assert again.returncode == 0 and "created the database schema" not in again.stdout
    with sqlite3.connect(home / "khhf.db") as conn:
        assert conn.execute("SELECT count(*) FROM task_types").fetchone()[0] == types
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    older = init()
    assert older.returncode == 1
    from khhf import migrations
    assert older.stderr.strip().endswith("is at revision 0001, this version needs revision "
                                         f"{migrations.head()}: run `khhf db upgrade`."), \
        older.stderr
    with sqlite3.connect(home / "khhf.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)


def test_init_makes_the_first_administrator_and_khhf_users_resets_passwords(tmp_path):
    """A fresh install has somebody who can log in: `khhf init` creates user
    admin with a random password it prints once; a second init does not; root
    can give any user a new password, and create more administrators."""
    import re

    from sqlalchemy import func, select

    from khhf import db
    from khhf.models import AuditLog, User
    from khhf.services import accounts, counties
    conf, home = tmp_path / "khhf.conf", tmp_path / "state"
    env = dict(os.environ, KHHF_CONFIG=str(conf), KHHF_HOME=str(home))
    env.pop("KHHF_DATABASE_URL", None)

    def khhf(*args):
        return subprocess.run([sys.executable, "-m", "khhfcli.main", *args], env=env,
                              capture_output=True, text=True, timeout=120)
    first = khhf("init")
    assert first.returncode == 0, first.stderr
    password = re.search(r"first administrator: user name admin, password (\S+) ",
                         first.stdout).group(1)
    again = khhf("init")
    assert again.returncode == 0 and "first administrator" not in again.stdout
    demo_home = tmp_path / "demo"  # scripts/demo: the demo seeds its own users
    demo = subprocess.run([sys.executable, "-m", "khhfcli.main", "init", "--no-admin"],
                          env=dict(env, KHHF_CONFIG=str(tmp_path / "demo.conf"),
                                   KHHF_HOME=str(demo_home)),
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0 and "first administrator" not in demo.stdout
    demo_factory = db.session_factory(db.make_engine(f"sqlite:///{demo_home / 'khhf.db'}"))
    with demo_factory() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 0
        # a supervisor who took the user name admin: init says what to do instead
        county = counties.create_county(s, None, "", code="anji", name="安吉县",
                                        fallback_strategy="ringall", numbers=["13900000001"],
                                        primary="13900000001")
        accounts.create_user(s, None, "", username="admin", display_name="县区经理",
                             password="x" * 12, role="supervisor", county_id=county.id)
        s.commit()
    taken = subprocess.run([sys.executable, "-m", "khhfcli.main", "init"],
                           env=dict(env, KHHF_CONFIG=str(tmp_path / "demo.conf"),
                                    KHHF_HOME=str(demo_home)),
                           capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr
    assert "khhf init: there is no administrator, and the user name admin is taken" in \
        taken.stdout
    with demo_factory() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1
    factory = db.session_factory(db.make_engine(f"sqlite:///{home / 'khhf.db'}"))

    def logs_in(username, secret):
        with factory() as s:
            try:
                return accounts.log_in(s, username, secret, "127.0.0.1").role
            except accounts.LoginRefused:
                return None
    assert logs_in("admin", password) == "admin"

    reset = khhf("users", "password", "admin")
    assert reset.returncode == 0, reset.stderr
    new = reset.stdout.strip().rsplit(" ", 1)[1]
    assert new != password and logs_in("admin", new) == "admin"
    assert logs_in("admin", password) is None

    more = khhf("users", "admin", "ops", "--name", "运维")
    assert more.returncode == 0, more.stderr
    assert logs_in("ops", more.stdout.strip().rsplit(" ", 1)[1]) == "admin"
    taken = khhf("users", "admin", "ops")
    assert taken.returncode == 1 and taken.stderr.startswith("khhf users admin: ")
    unknown = khhf("users", "password", "nobody")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "khhf users password: there is no user nobody"
    with factory() as s:  # done by "cli", and no password in the log
        actions = [(a.action, a.ip) for a in s.scalars(
            select(AuditLog).where(AuditLog.object_type == "user").order_by(AuditLog.id))]
        assert actions == [("create", "cli"), ("set_password", "cli"), ("create", "cli")]
        assert s.scalar(select(User.display_name).where(User.username == "ops")) == "运维"
        for entry in s.scalars(select(AuditLog)):
            assert password not in (entry.detail or "") and new not in (entry.detail or "")
