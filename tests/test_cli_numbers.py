"""`khhf numbers list|add|rest|reactivate|retire|caps`: the pool from the
command line, through the same service as the admin's page, audited as cli."""

import pytest
from sqlalchemy import select

from khhf import config, db
from khhf.models import AuditLog, UnifiedNumber
from khhfcli import main as cli
from simkit import factories


@pytest.fixture
def site(tmp_path):
    url = f"sqlite:///{tmp_path / 'numbers.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    factory = db.session_factory(engine)
    with db.unit_of_work(factory) as s:
        factories.county(s, "anji", "安吉县", unified="13900000000")
        factories.user(s, "admin", "admin")
    config.write_new(tmp_path / "khhf.conf", home=tmp_path, database_url=url)
    yield str(tmp_path / "khhf.conf"), factory
    engine.dispose()


def khhf(conf, *args):
    return cli.main(["--config", conf, "numbers", *args])


def test_numbers_are_added_rested_retired_and_listed(site, capsys):
    conf, factory = site
    assert khhf(conf, "add", "139 0000 0001", "--county", "anji", "--daily", "150",
                "--by", "admin") == 0
    assert capsys.readouterr().out.strip() == "added 13900000001 to anji"
    assert khhf(conf, "rest", "13900000001") == 0
    assert khhf(conf, "caps", "13900000001", "--concurrent", "1") == 0
    assert capsys.readouterr().out.splitlines() == [
        "13900000001 is now resting", "13900000001: daily 150, hourly 40, at once 1"]
    assert khhf(conf, "list", "--county", "anji") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["13900000000", "yes", "active"]
    assert out[2].split() == ["13900000001", "resting", "150", "40", "1", "0", "0", "0",
                              "no:", "resting"]
    assert khhf(conf, "reactivate", "13900000001") == 0
    assert khhf(conf, "retire", "13900000001") == 0
    with factory() as s:
        assert s.scalar(select(UnifiedNumber.state).where(
            UnifiedNumber.number == "13900000001")) == "retired"
        entries = s.scalars(select(AuditLog).order_by(AuditLog.id)).all()
        assert [(e.username, e.action, e.ip) for e in entries] == \
            [("admin", "create", "cli")] + [("system", "update", "cli")] * 4


def test_bad_requests_say_what_is_wrong_and_write_nothing(site, capsys):
    conf, factory = site
    assert khhf(conf, "add", "13900000000", "--county", "anji") == 1
    assert "already a unified number of 安吉县" in capsys.readouterr().err
    assert khhf(conf, "add", "13900000005", "--county", "nowhere") == 1
    assert "no county with the code 'nowhere'" in capsys.readouterr().err
    assert khhf(conf, "retire", "13900000009") == 1
    assert "no county's unified number" in capsys.readouterr().err
    assert khhf(conf, "caps", "13900000000", "--hourly", "many") == 1
    assert "whole number from 0" in capsys.readouterr().err
    with factory() as s:
        assert s.scalars(select(AuditLog)).all() == []
