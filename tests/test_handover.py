"""Manager departure: customers, history and open tasks hand over in one unit
of work, on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import func, select

from khhf import db
from khhf.models import AuditLog, Customer, CustomerAssignment, Manager, Task, User
from khhf.services import ValidationError
from khhf.services.handover import depart_manager
from simkit import factories


def seed(factory):
    with db.unit_of_work(factory) as s:
        a, b = factories.county(s, "a", "A"), factories.county(s, "b", "B")
        managers = {no: factories.manager(s, county, no) for no, county in
                    (("m1", a), ("m2", a), ("m3", a), ("m4", a), ("x1", b))}
        ids = {no: m.id for no, m in managers.items()}
        ids["admin"] = factories.user(s, "admin", "admin").id
        # m1 owns 9 customers, m3 already owns 4, m4 none
        for i in range(13):
            owner = managers["m1"] if i < 9 else managers["m3"]
            c = factories.customer(s, a, f"1380000{i:04d}", owner)
            if i < 3:
                factories.task(s, c, owner, status=("pending", "done", "not_reached")[i])
    return ids


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request, tmp_path):
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("handover")
    db.create_schema(engine)
    yield db.session_factory(engine)
    engine.dispose()


def test_departure_to_a_successor_moves_customers_history_and_open_tasks(factory):
    ids = seed(factory)
    with db.unit_of_work(factory) as s:
        result = depart_manager(s, ids["m1"], successor_id=ids["m2"],
                                by_user=s.get(User, ids["admin"]), ip="10.0.0.1")
    assert result.customers == {ids["m2"]: 9} and result.tasks == {ids["m2"]: 2}
    with factory() as s:
        m1 = s.get(Manager, ids["m1"])
        assert (m1.status, m1.successor_id, m1.on_duty, m1.user.is_active) == \
            ("departed", ids["m2"], False, False)
        assert m1.departed_at is not None
        assert s.scalar(select(func.count()).where(Customer.manager_id == ids["m1"])) == 0
        # history: 9 closed rows for m1, 9 open rows for m2, one open row per customer
        closed = s.scalars(select(CustomerAssignment).where(
            CustomerAssignment.manager_id == ids["m1"])).all()
        assert len(closed) == 9 and all(r.ended_at is not None for r in closed)
        opened = s.scalars(select(CustomerAssignment).where(
            CustomerAssignment.manager_id == ids["m2"])).all()
        assert len(opened) == 9 and {r.reason for r in opened} == {"departure"}
        assert {r.assigned_by for r in opened} == {ids["admin"]}
        # the done task stays with m1: it is history
        assert sorted(t.status for t in s.scalars(select(Task).where(
            Task.manager_id == ids["m1"]))) == ["done"]
        entry = s.scalars(select(AuditLog).where(AuditLog.object_type == "manager")).one()
        assert entry.object_id == str(ids["m1"]) and "departed" in entry.detail
        assert entry.ip == "10.0.0.1"


def test_departure_spread_evens_out_the_county(factory):
    ids = seed(factory)
    with db.unit_of_work(factory) as s:
        result = depart_manager(s, ids["m1"])
    # m3 had 4: the 9 go so that m2, m3, m4 end with 4, 5, 4 (or a permutation)
    with factory() as s:
        loads = sorted(s.scalar(select(func.count()).where(Customer.manager_id == ids[m]))
                       for m in ("m2", "m3", "m4"))
    assert loads == [4, 4, 5] and result.customer_count == 9
    assert ids["x1"] not in result.customers  # never across counties


@pytest.mark.parametrize("case, message", [
    ("self", "their own successor"),
    ("other_county", "another county"),
    ("departed_successor", "has departed"),
    ("unknown", "no manager"),
    ("again", "already departed"),
])
def test_departure_refuses_and_changes_nothing(factory, case, message):
    ids = seed(factory)
    if case in ("departed_successor", "again"):
        with db.unit_of_work(factory) as s:
            depart_manager(s, ids["m3"] if case == "departed_successor" else ids["m1"],
                           successor_id=ids["m2"])
    args = {"self": (ids["m1"], ids["m1"]), "other_county": (ids["m1"], ids["x1"]),
            "departed_successor": (ids["m1"], ids["m3"]), "unknown": (9999, None),
            "again": (ids["m1"], ids["m2"])}[case]
    with factory() as s:
        before = s.scalar(select(func.count()).select_from(CustomerAssignment))
    with pytest.raises(ValidationError, match=message):
        with db.unit_of_work(factory) as s:
            depart_manager(s, args[0], successor_id=args[1])
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(CustomerAssignment)) == before


def test_last_active_manager_cannot_depart_without_successor(factory):
    ids = seed(factory)
    with pytest.raises(ValidationError, match="last active manager"):
        with db.unit_of_work(factory) as s:
            depart_manager(s, ids["x1"])
