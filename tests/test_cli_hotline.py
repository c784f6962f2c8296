"""`khhf hotline depart`: HR batch departures, all or nothing."""

from sqlalchemy import select

from khhf import config, db
from khhf.models import AuditLog, Customer, Manager
from khhfcli import main as cli
from tests.test_handover import seed


def make(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    factory = db.session_factory(engine)
    seed(factory)
    return str(tmp_path / "khhf.conf"), factory, engine


def status(factory):
    with factory() as s:
        return {m.employee_no: m.status for m in s.scalars(select(Manager))}


def test_batch_file_departs_everyone_in_one_go(tmp_path, capsys):
    conf, factory, engine = make(tmp_path)
    batch = tmp_path / "hr.csv"
    batch.write_text("# employee_no,successor\nm1,m2\nm3\n", encoding="utf-8")
    assert cli.main(["--config", conf, "hotline", "depart", "--file", str(batch),
                     "--by", "admin"]) == 0
    out = capsys.readouterr().out
    assert "m1: departed; 9 customers and 2 open tasks handed over" in out
    assert status(factory) == {"m1": "departed", "m2": "active", "m3": "departed",
                               "m4": "active", "x1": "active"}
    with factory() as s:
        owners = set(s.scalars(select(Customer.manager_id)))
        assert len(s.scalars(select(AuditLog).where(AuditLog.username == "admin")).all()) == 2
    assert owners <= {m.id for m in factory().scalars(select(Manager)).all()
                      if m.employee_no in ("m2", "m4")}
    engine.dispose()


def test_batch_with_a_bad_line_changes_nothing(tmp_path, capsys):
    conf, factory, engine = make(tmp_path)
    batch = tmp_path / "hr.csv"
    batch.write_text("m1,m2\nm3,x1\nnobody\n", encoding="utf-8")
    assert cli.main(["--config", conf, "hotline", "depart", "--file", str(batch)]) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "another county" in err
    assert "line 3: no manager with employee number nobody" in err
    assert "nothing was changed" in err
    assert set(status(factory).values()) == {"active"}
    engine.dispose()
