"""The hotline's in-memory directory (agi/directory.py) on real SQLite and
PostgreSQL: the triggers raise routing_generation in the writing
transaction, so a change from another connection (or process) reaches the
very next routed call; a database without the triggers is routed the old
way, from a unit of work."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from agi.routes import ROUTES
from agi.server import FastAgiServer
from khhf import db
from khhf.models import Call, County, Customer, Manager, UnifiedNumber, routing_trigger_names
from khhf.services import handover
from simkit import factories
from tests.test_agi import KEY, agi_request, variables


@pytest.fixture
def engine(each_schema):
    engine = each_schema
    with db.unit_of_work(db.session_factory(engine)) as s:
        county = factories.county(s, "anji", "Anji", unified="13900000001")
        a, b = (factories.manager(s, county, no, desk=desk, on_duty=True)
                for no, desk in (("a", "8001"), ("b", "8002")))
        factories.customer(s, county, "13800000001", a)
    return engine


def generation(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(text("SELECT generation FROM routing_generation"))


def test_what_routing_reads_raises_the_generation_and_nothing_else(engine):
    factory = db.session_factory(engine)
    seen = [generation(engine)]

    def change(fn):
        with db.unit_of_work(factory) as s:
            fn(s)
        seen.append(generation(engine))

    change(lambda s: setattr(s.get(Manager, 1), "on_duty", False))
    change(lambda s: setattr(s.get(Manager, 2), "desk_extension", "8009"))
    change(lambda s: setattr(s.get(County, 1), "fallback_strategy", "hunt"))
    change(lambda s: factories.manager(s, s.get(County, 1), "c", desk="8003"))
    assert seen == sorted(set(seen)), seen  # each of them raised it
    before = seen[-1]
    # what routing does not read from memory: customers (read per call), a
    # unified number's pool counters, a manager's employee number
    change(lambda s: setattr(s.get(Customer, 1), "manager_id", 2))
    change(lambda s: setattr(s.scalars(select(UnifiedNumber)).one(), "daily_cap", 5))
    change(lambda s: setattr(s.get(Manager, 1), "employee_no", "a-1"))
    assert seen[-3:] == [before] * 3


def route_calls(engine, changes):
    """Route one call per entry of `changes` through a real FastAGI server,
    each change made first through another engine (its own connections);
    returns each call's variables and the directory's loads."""
    other = db.session_factory(db.make_engine(engine.url.render_as_string(hide_password=False)))

    async def main():
        server = FastAgiServer(ROUTES, db.session_factory(engine), key=KEY)
        port = (await server.start("127.0.0.1", 0)).sockets[0].getsockname()[1]
        out = []
        try:
            for i, change in enumerate(changes):
                if change is not None:
                    with db.unit_of_work(other) as s:
                        change(s)
                v = variables(await agi_request(port, "hotline", ["13900000001", f"c.{i}"],
                                                uniqueid=f"c.{i}"))
                out.append((v["KHHF_ROUTE"], v["KHHF_DESK"], v["KHHF_GROUP"]))
        finally:
            loads = server.directory.loads if server.directory else None
            await server.aclose()
        return out, loads
    try:
        return asyncio.run(main())
    finally:
        other.kw["bind"].dispose()


def test_the_next_call_follows_a_reassignment_a_duty_change_and_a_departure(engine):
    def off_duty(s):
        s.get(Manager, 2).on_duty = False

    calls, loads = route_calls(engine, [
        None, None,                                                      # cached
        lambda s: setattr(s.get(Customer, 1), "manager_id", 2),          # reassigned
        off_duty,                                                        # b off duty
        lambda s: handover.depart_manager(s, 2, successor_id=1),         # b leaves
    ])
    assert calls == [("manager", "8001", "PJSIP/8002"), ("manager", "8001", "PJSIP/8002"),
                     ("manager", "8002", "PJSIP/8001"), ("manager", "", "PJSIP/8001"),
                     ("manager", "8001", "")]
    # a reassignment is read with the customer: only the duty change and the
    # departure loaded the directory again
    assert loads == 3
    with db.session_factory(engine)() as s:
        # written after each answer, in the thread pool: in any order
        rows = s.execute(select(Call.uniqueid, Call.manager_id, Call.state)
                         .order_by(Call.uniqueid)).all()
    assert rows == [("c.0", 1, "requested"), ("c.1", 1, "requested"), ("c.2", 2, "requested"),
                    ("c.3", 2, "requested"), ("c.4", 1, "requested")]


def test_a_manager_left_in_the_data_after_departure_is_never_rung(engine):
    def left(s):  # departed, but the customer still points at them (bad data)
        m = s.get(Manager, 1)
        m.status, m.departed_at, m.on_duty = "departed", m.user.created_at, False
    calls, _ = route_calls(engine, [None, left])
    assert calls == [("manager", "8001", "PJSIP/8002"), ("group", "", "PJSIP/8002")]


def test_without_its_triggers_the_directory_stands_aside(engine, caplog):
    with engine.begin() as conn:
        for name in routing_trigger_names(engine.dialect.name):
            table = name.split("_")[1]  # tr_<table>_routing...
            conn.exec_driver_sql(f"DROP TRIGGER {name}" + (
                f" ON {table}" if engine.dialect.name == "postgresql" else ""))
    calls, loads = route_calls(engine, [None, lambda s: setattr(s.get(Manager, 1), "on_duty",
                                                                False)])
    # still right, read from the database: the owner off duty rings no desk
    assert calls == [("manager", "8001", "PJSIP/8002"), ("manager", "", "PJSIP/8002")]
    assert loads == 0 and "routing_generation" not in caplog.text
    assert "run `khhf db upgrade`" in caplog.text
