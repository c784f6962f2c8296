"""The pick lists and name maps pages share (khhf.services.lookups), on a
real SQLite database."""

import pytest

from khhf import db
from khhf.models import County, Manager, utcnow
from khhf.services import accounts, campaigns, counties, lookups


@pytest.fixture
def session(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'lookups.db'}")
    db.create_schema(engine)
    with db.session_factory(engine)() as session:
        yield session
    engine.dispose()


def _county(session, code, name, number):
    return counties.create_county(session, None, "", code=code, name=name,
                                  fallback_strategy="hunt", numbers=[number], primary="")


def _manager(session, county, n, name, status="active"):
    manager = accounts.create_manager(
        session, None, "", username=f"manager{n}", display_name=name, password="secret-pass",
        county_id=county.id, employee_no=f"E{n:03d}", desk_extension=f"80{n:02d}", mobile="")
    if status == "departed":
        manager.status, manager.departed_at = status, utcnow()
    return manager


def test_counties_by_pinyin_within_the_scope(session):
    for code, name, number in (("dq", "德清", "13900000003"), ("cx", "长兴", "13900000002"),
                               ("aj", "安吉", "13900000001")):
        _county(session, code, name, number)
    assert [c.name for c in lookups.counties(session)] == ["安吉", "长兴", "德清"]
    assert [c.name for c in lookups.counties(session, County.code == "cx")] == ["长兴"]


def test_managers_active_first_by_pinyin_and_narrowed(session):
    home = _county(session, "aj", "安吉", "13900000001")
    other = _county(session, "cx", "长兴", "13900000002")
    zhang = _manager(session, home, 1, "张伟")
    wang = _manager(session, home, 2, "王芳")
    li = _manager(session, home, 3, "李娜", status="departed")
    _manager(session, other, 4, "陈静")
    session.flush()

    def names(managers):
        return [m.user.display_name for m in managers]
    assert names(lookups.managers(session, county_id=home.id)) == ["王芳", "张伟", "李娜"]
    assert names(lookups.managers(session, county_id=home.id, active_only=True,
                                  except_id=wang.id)) == ["张伟"]
    assert names(lookups.managers(session, Manager.county_id == other.id)) == ["陈静"]
    assert lookups.manager_names(session, [zhang.id, None, li.id]) == {
        zhang.id: "张伟", li.id: "李娜"}
    assert lookups.manager_names(session, [None]) == {}


def test_task_types_oldest_first(session):
    campaigns.ensure_standard_types(session)
    types = lookups.task_types(session)
    assert [t.id for t in types] == sorted(t.id for t in types)
    assert {"revisit", "marketing", "survey"} <= {t.code for t in types}
