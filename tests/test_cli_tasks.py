"""`khhf tasks distribute`: preview by default, --commit writes; refusals name the problem."""

import datetime as dt

from sqlalchemy import func, select

from khhf import config, db
from khhf.models import AuditLog, Campaign, Task
from khhf.services import campaigns
from khhfcli import main as cli
from tests.test_campaigns import TODAY, new_campaign, seed


def make(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    factory = db.session_factory(engine)
    ids = seed(factory)
    cid = new_campaign(factory, ids, cycle="once", starts_on=TODAY, ends_on=TODAY)
    with db.unit_of_work(factory) as s:
        campaigns.activate(s, None, "", s.get(Campaign, cid), today=TODAY)
    return str(tmp_path / "khhf.conf"), factory, engine, ids, cid


def counts(factory, cid):
    with factory() as s:
        return dict(s.execute(select(Task.manager_id, func.count()).where(
            Task.campaign_id == cid).group_by(Task.manager_id)).all())


def test_preview_changes_nothing_and_commit_writes(tmp_path, capsys):
    conf, factory, engine, ids, cid = make(tmp_path)
    before = counts(factory, cid)
    assert cli.main(["--config", conf, "tasks", "distribute", str(cid), "--mode", "average",
                     "--managers", "a2,a3"]) == 0
    out = capsys.readouterr().out
    assert "average: 5 of 11 tasks would move (preview" in out
    assert [line.split()[-1] for line in out.splitlines() if line.startswith(("a2 ", "a3 "))] \
        == ["6", "5"]
    assert counts(factory, cid) == before
    assert cli.main(["--config", conf, "tasks", "distribute", str(cid), "--mode", "average",
                     "--managers", "a2,a3", "--commit", "--by", "admin"]) == 0
    assert "average: 5 of 11 tasks moved" in capsys.readouterr().out
    assert counts(factory, cid) == {ids["a2"]: 6, ids["a3"]: 5}
    with factory() as s:
        entry = s.scalars(select(AuditLog).where(AuditLog.detail.like("%tasks_by_manager%"))).one()
        assert (entry.username, entry.ip) == ("admin", "cli")
    engine.dispose()


def test_auto_commit_then_refusals(tmp_path, capsys):
    conf, factory, engine, ids, cid = make(tmp_path)
    assert cli.main(["--config", conf, "tasks", "distribute", str(cid), "--mode", "auto",
                     "--commit"]) == 0
    assert ids["ax"] not in counts(factory, cid)
    capsys.readouterr()
    assert cli.main(["--config", conf, "tasks", "distribute", "999", "--mode", "auto"]) == 1
    assert "there is no campaign '999'" in capsys.readouterr().err
    assert cli.main(["--config", conf, "tasks", "distribute", str(cid), "--mode", "average",
                     "--managers", "a2,zz", "--commit"]) == 1
    assert "no manager with employee number zz" in capsys.readouterr().err
    assert cli.main(["--config", conf, "tasks", "distribute", str(cid), "--mode", "average",
                     "--managers", "a2,ax", "--commit"]) == 1
    assert "active customer managers of the campaign's county only" in capsys.readouterr().err
    engine.dispose()
