"""The FastAGI server and the hotline routes, against a fake Asterisk that
speaks the AGI protocol over a real socket, on a temp SQLite database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from agi.routes import ROUTES
from agi.server import FastAgiServer
from khhf import db
from khhf.models import Call, Customer, Manager, SmsMessage, Task
from khhf.services import hotline
from simkit import factories


@pytest.fixture
def factory(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'agi.db'}")
    db.create_schema(engine)
    factory = db.session_factory(engine)
    with db.unit_of_work(factory) as s:
        county = factories.county(s, "anji", "Anji", unified="13900000001", strategy="hunt")
        owner, *_ = [factories.manager(s, county, no, desk=desk, mobile=mobile, on_duty=duty)
                     for no, desk, mobile, duty in (
                         ("m1", "8001", "+86 137 0000 0001", False), ("m2", "8002", None, True),
                         ("m3", "8003", None, True), ("m4", None, "13700000004", True))]
        factories.customer(s, county, "13800000001", owner, name="Wang")
    yield factory
    engine.dispose()


KEY = "k3y" * 11  # the PBX's key (khhf.config.agi_key), as the dialplan renders it


async def agi_request(port, script, args=(), callerid="+8613800000001", uniqueid="1700000000.1",
                      replies=None, key=KEY):
    """Play Asterisk: send the environment, answer every command; return them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    env = [f"agi_network_script: {key}/{script}" if key is not None
           else f"agi_network_script: {script}", f"agi_callerid: {callerid}",
           f"agi_uniqueid: {uniqueid}", "agi_channel: PJSIP/carrier-00000001"]
    env += [f"agi_arg_{i}: {a}" for i, a in enumerate(args, 1)]
    writer.write(("\n".join(env) + "\n\n").encode())
    await writer.drain()
    commands = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            break
        commands.append(line.decode().strip())
        writer.write((replies or {}).get(len(commands), b"200 result=1\n"))
        await writer.drain()
    writer.close()
    return commands


def run_server(factory, coro_fn, routes=ROUTES, deadline=1.5):
    async def main():
        server = FastAgiServer(routes, factory, key=KEY, deadline=deadline)
        srv = await server.start("127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            return await coro_fn(port)
        finally:
            await server.aclose()  # once the writes after the answers are done
    return asyncio.run(main())


def call_of(factory, uniqueid: str) -> Call:
    with factory() as s:
        return s.scalars(select(Call).where(Call.uniqueid == uniqueid)).one()


def variables(commands):
    """name -> value of every variable the route set, in order."""
    out = {}
    for c in commands:
        if c.startswith("SET VARIABLE "):
            name, value = c[len("SET VARIABLE "):].split(" ", 1)
            out[name] = value.strip('"')
        elif c.startswith("EXEC MSet "):
            for pair in c[len("EXEC MSet "):].split(","):
                name, _, value = pair.partition("=")
                out[name] = value
    return out


def test_hotline_route_sets_the_ring_order_and_route_last(factory):
    commands = run_server(factory, lambda port: agi_request(
        port, "hotline", ["13900000001", "1700000000.1"]))
    # one round trip, the route last
    assert len(commands) == 1 and commands[0].endswith(",KHHF_ROUTE=manager")
    v = variables(commands)
    # m1 is off duty (离岗): away from the desk, so the mobile rings first
    assert v["KHHF_DESK"] == "" and v["KHHF_MOBILE"] == "13700000001"
    # hunt order by manager id; the owner is not in their own fallback group
    assert v["KHHF_GROUP"] == "PJSIP/8002&PJSIP/8003"
    assert v["KHHF_COUNTY_DESKS"] == "PJSIP/8002&PJSIP/8003"
    assert v["KHHF_GROUP_STRATEGY"] == "hunt"
    # answered from the directory: the row is written after the answer, so
    # it has no id yet; the recording is named by the channel's uniqueid
    assert v["KHHF_CALL_ID"] == "" and v["KHHF_REC_FILE"].endswith("/in-1700000000.1.wav")
    # whom it routed for: the AMI bridge's facts should this service die now
    assert (v["KHHF_CUSTOMER_ID"], v["KHHF_MANAGER_ID"]) == ("1", "1")
    call = call_of(factory, "1700000000.1")
    assert (call.direction, call.customer_id, call.manager_id, call.county_id,
            call.customer_number, call.unified_number, call.linkedid, call.state) == \
        ("inbound", 1, 1, 1, "13800000001", "13900000001", "1700000000.1", "requested")


def test_an_on_duty_owner_is_rung_at_the_desk_first(factory):
    with db.unit_of_work(factory) as s:
        s.get(Manager, 1).on_duty = True
    v = variables(run_server(factory, lambda port: agi_request(
        port, "hotline", ["13900000001", "1700000000.9"], uniqueid="1700000000.9")))
    assert (v["KHHF_ROUTE"], v["KHHF_DESK"], v["KHHF_MOBILE"]) == \
        ("manager", "8001", "13700000001")
    # on duty, the owner is in the county's group, but never rung twice
    assert v["KHHF_GROUP"] == "PJSIP/8002&PJSIP/8003"
    assert v["KHHF_COUNTY_DESKS"] == "PJSIP/8001&PJSIP/8002&PJSIP/8003"


def test_unknown_caller_and_departed_manager_route_to_the_group(factory):
    with db.unit_of_work(factory) as s:
        m1 = s.get(Manager, 1)
        m1.status, m1.departed_at = "departed", m1.user.created_at  # data left behind
    for caller, uid in (("13912345678", "u.1"), ("+8613800000001", "u.2"), ("anonymous", "u.3")):
        commands = run_server(factory, lambda port: agi_request(
            port, "hotline", ["13900000001"], callerid=caller, uniqueid=uid))
        v = variables(commands)
        assert (v["KHHF_ROUTE"], v["KHHF_DESK"], v["KHHF_MOBILE"]) == ("group", "", ""), caller


def test_hang_up_route_answered_call(factory):
    async def both(port):
        first = await agi_request(port, "hotline", ["13900000001"])
        # at once: the row written after the answer may come before or after this
        await agi_request(port, "hotline-end", [variables(first)["KHHF_CALL_ID"], "mobile",
                                                "ANSWER", "42", "13700000001@carrier",
                                                "13900000001", "2026/11/27/in-1.wav"])
    run_server(factory, both)
    call = call_of(factory, "1700000000.1")
    assert (call.state, call.outcome, call.talk_seconds, call.recording_path, call.task_id,
            call.manager_id) == ("ended", "mobile", 42, "2026/11/27/in-1.wav", None, 1)


def test_repeated_missed_calls_add_to_one_callback_task_with_one_sms(factory):
    async def two_missed(port):
        for uid in ("m.1", "m.2"):
            first = await agi_request(port, "hotline", ["13900000001"], uniqueid=uid)
            await agi_request(port, "hotline-end", [variables(first)["KHHF_CALL_ID"], "message",
                                                    "NOANSWER", "", "", "13900000001", ""],
                              uniqueid=uid)
            # the hang-up route is idempotent: a second run changes nothing
            await agi_request(port, "hotline-end", ["", "message", "NOANSWER", "", "",
                                                    "13900000001", ""], uniqueid=uid)
    run_server(factory, two_missed)
    with factory() as s:
        [task] = s.scalars(select(Task)).all()
        # the second missed call raised the open call-back's priority, and sent no SMS
        assert (task.manager_id, task.customer_id, task.priority, task.status) == \
            (1, 1, hotline.CALLBACK_PRIORITY + hotline.REPEAT_PRIORITY_STEP, "pending")
        [sms] = s.scalars(select(SmsMessage)).all()
        # stored as the gateway submits it: the mobile normalised where it entered
        assert sms.peer_number == "13700000001" and "Wang 138****0001" in sms.body
        # both calls are linked to it: the task shows how often the customer tried
        assert [c.task_id for c in s.scalars(select(Call))] == [task.id, task.id]


def test_missed_unknown_caller_becomes_a_customer_with_a_task_for_the_fallback_owner(factory):
    async def missed(port):
        await agi_request(port, "hotline-end", ["", "group", "NOANSWER", "", "", "13900000001",
                                                ""], callerid="0086 13912345678", uniqueid="x.1")
    run_server(factory, missed)  # the routing AGI never ran (degraded mode)
    with factory() as s:
        call = s.scalars(select(Call)).one()
        customer = s.get(Customer, call.customer_id)
        assert (customer.phone, customer.manager_id) == ("13912345678", None)
        task = s.get(Task, call.task_id)
        # on-duty first, then the lowest id: m2
        assert task.manager_id == 2 and call.outcome == "missed"
        assert s.scalars(select(SmsMessage)).all() == []  # m2 has no mobile: logged


def test_a_failing_or_slow_route_sets_nothing_and_closes(factory):
    async def boom(session, args):
        raise RuntimeError("bug")

    async def slow(session, args):
        await session.set_variable("KHHF_DESK", "8001")
        await asyncio.sleep(5)
        await session.set_variable("KHHF_ROUTE", "manager")

    async def twice(session, args):
        await session.unit_of_work(lambda db: None)
        await session.unit_of_work(lambda db: None)
        await session.set_variable("KHHF_ROUTE", "manager")

    routes = {"boom": boom, "slow": slow, "twice": twice}
    for name in routes:
        commands = run_server(factory, lambda port: agi_request(port, name), routes=routes,
                              deadline=0.3)
        assert "KHHF_ROUTE" not in variables(commands), name
    assert run_server(factory, lambda port: agi_request(port, "nosuch"), routes=routes) == []


def test_hangup_lines_and_refusals_from_asterisk(factory):
    seen = {}

    async def route(session, args):
        seen["value"] = await session.get_variable("KHHF_X")
        await session.set_variable("KHHF_ROUTE", 'a "quoted" \\ value')

    replies = {1: b"HANGUP\n200 result=1 (hello world)\n"}
    commands = run_server(factory, lambda port: agi_request(port, "r", replies=replies),
                          routes={"r": route})
    assert seen["value"] == "hello world"
    assert commands[-1] == r'SET VARIABLE KHHF_ROUTE "a \"quoted\" \\ value"'

    async def refused(session, args):
        await session.set_variable("KHHF_A", "1")
        await session.set_variable("KHHF_ROUTE", "manager")
    replies = {1: b"520-Invalid command syntax.  Proper usage follows:\nusage\n520 End of proper usage.\n"}
    commands = run_server(factory, lambda port: agi_request(port, "r", replies=replies),
                          routes={"r": refused})
    assert commands == ['SET VARIABLE KHHF_A "1"']


def test_connection_dropped_mid_environment_is_harmless(factory):
    async def drop(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"agi_network_script: hotline\n")
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.2)
        return await agi_request(port, "hotline", ["13900000001"])
    assert variables(run_server(factory, drop))["KHHF_ROUTE"] == "manager"


# -- only the PBX drives the routes (issue 9) ---------------------------------

def _rows(factory):
    with factory() as s:
        return [s.scalars(select(m.id)).all() for m in (Call, Customer, Task, SmsMessage)]


@pytest.mark.parametrize("key", [None, "", "wrong" * 7, KEY[:-1], KEY + "x", KEY.upper()])
def test_a_request_without_the_pbx_key_runs_nothing_and_writes_nothing(factory, key):
    before = _rows(factory)

    async def forge(port):
        routed = await agi_request(port, "hotline", ["13900000001", "x"], key=key,
                                   callerid="13912345678", uniqueid="forged.1")
        ended = await agi_request(port, "hotline-end", ["", "message", "NOANSWER", "", "",
                                                        "13900000001", ""], key=key,
                                  callerid="13912345670", uniqueid="forged.2")
        return routed + ended
    # no command at all: neither the manager's desk nor mobile is revealed
    assert run_server(factory, forge) == []
    assert _rows(factory) == before


def test_the_key_is_required_to_be_a_secret():
    with pytest.raises(ValueError, match="generated secret"):
        FastAgiServer(ROUTES, None, key="")


def test_junk_connection_warnings_are_rate_limited(caplog):
    import logging

    from agi.server import RateLimitedLog
    now = [100.0]
    junk = RateLimitedLog(logging.getLogger("agi.test"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="agi.test"):
        for _ in range(500):
            junk.warning("junk from %s", "127.0.0.1")
            now[0] += 0.01
        now[0] += 10
        junk.warning("junk from %s", "127.0.0.1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["junk from 127.0.0.1",
                     "junk from 127.0.0.1 (499 similar suppressed in the last 15 s)"]


def test_a_flood_of_junk_connections_logs_one_line(factory, caplog):
    import logging

    async def flood(port):
        for i in range(30):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.0\n\n" if i % 2 else b"agi_network_script: x/hotline\n\n")
            await writer.drain()
            await reader.read()
            writer.close()
        return await agi_request(port, "hotline", ["13900000001"])
    with caplog.at_level(logging.WARNING, logger="agi.server"):
        commands = run_server(factory, flood)
    assert variables(commands)["KHHF_ROUTE"] == "manager"  # the PBX still gets through
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


# -- caller ids as carriers deliver them, and garbage (issue 9) -----------------

def test_a_known_number_with_junk_appended_is_an_unknown_caller_and_the_row_closes(factory):
    """`13800000001'--` once failed hotline-end twice with a UNIQUE error: the
    row stayed open for good and the missed call had no call-back."""
    async def missed(port):
        first = await agi_request(port, "hotline", ["13900000001", "j.1"],
                                  callerid="13800000001'--", uniqueid="j.1")
        await agi_request(port, "hotline-end", [variables(first)["KHHF_CALL_ID"], "message",
                                                "NOANSWER", "", "", "13900000001", ""],
                          callerid="13800000001'--", uniqueid="j.1")
        # the degraded path: no routing row, hang-up only
        await agi_request(port, "hotline-end", ["", "group", "NOANSWER", "", "", "13900000001",
                                                ""], callerid="13800000001'--", uniqueid="j.2")
        return first
    first = run_server(factory, missed)
    assert variables(first)["KHHF_ROUTE"] == "group"   # unknown: not routed to Wang's manager
    with factory() as s:
        calls = s.scalars(select(Call)).all()
        assert [(c.state, c.outcome, c.customer_number, c.customer_id, c.task_id)
                for c in calls] == [("ended", "missed", "", None, None)] * 2
        assert [c.phone for c in s.scalars(select(Customer))] == ["13800000001"]
        assert s.scalars(select(Task)).all() == [] and s.scalars(select(SmsMessage)).all() == []


@pytest.mark.parametrize("callerid", ["013800000001", "+86 138-0000-0001",
                                      "tel:+86-138-0000-0001;phone-context=+86",
                                      "sip:8613800000001@10.0.0.1;user=phone"])
def test_carrier_forms_of_a_known_number_reach_its_manager(factory, callerid):
    commands = run_server(factory, lambda port: agi_request(
        port, "hotline", ["13900000001"], callerid=callerid))
    v = variables(commands)
    # the owner (m1) is off duty: their mobile, not their desk
    assert (v["KHHF_ROUTE"], v["KHHF_DESK"], v["KHHF_MOBILE"]) == ("manager", "", "13700000001")
    with factory() as s:
        assert [c.phone for c in s.scalars(select(Customer))] == ["13800000001"]


def test_a_missed_call_in_a_zero_prefixed_form_finds_the_customer_and_their_task(factory):
    async def missed(port):
        for uid, caller in (("z.1", "013800000001"), ("z.2", "+8613800000001")):
            await agi_request(port, "hotline-end", ["", "group", "NOANSWER", "", "",
                                                    "13900000001", ""],
                              callerid=caller, uniqueid=uid)
    run_server(factory, missed)
    with factory() as s:
        assert [c.phone for c in s.scalars(select(Customer))] == ["13800000001"]
        [task] = s.scalars(select(Task)).all()
        assert task.customer_id == 1 and len(s.scalars(select(SmsMessage)).all()) == 1


def test_stale_inbound_rows_are_swept_and_a_late_hang_up_completes_them(factory):
    import datetime as dt

    from khhf.models import utcnow
    with db.unit_of_work(factory) as s:
        old = hotline.start_call(s, caller="13800000001", unified_number="13900000001",
                                 uniqueid="old.1", now=utcnow() - dt.timedelta(hours=3))
        fresh = hotline.start_call(s, caller="13800000001", unified_number="13900000001",
                                   uniqueid="new.1")
    with db.unit_of_work(factory) as s:
        assert hotline.close_stale_calls(s) == 1
    with factory() as s:
        assert (s.get(Call, old.call_id).state, s.get(Call, old.call_id).outcome) == \
            ("ended", "lost")
        assert s.get(Call, fresh.call_id).state == "requested"
    with db.unit_of_work(factory) as s:
        hotline.finish_call(s, uniqueid="old.1", call_id=old.call_id, hangup=hotline.Hangup(
            stage="desk", dial_status="ANSWER", answered_seconds=30))
    with factory() as s:
        assert (s.get(Call, old.call_id).outcome, s.get(Call, old.call_id).talk_seconds) == \
            ("desk", 30)


@pytest.mark.parametrize("call_id, answered", [("99999999999999999999999", "1" * 40), ("²", "³"),
                                                ("-1", "-5")])
def test_hang_up_arguments_out_of_range_still_close_the_call(factory, call_id, answered):
    async def ended(port):
        first = await agi_request(port, "hotline", ["13900000001"], uniqueid="r.1")
        await agi_request(port, "hotline-end", [call_id, "desk", "ANSWER", answered, "8001",
                                                "13900000001", ""], uniqueid="r.1")
        return first
    run_server(factory, ended)
    call = call_of(factory, "r.1")
    assert (call.state, call.outcome, call.talk_seconds) == ("ended", "desk", 0)


def test_a_hang_up_waits_out_a_held_write_lock_and_closes_the_row(factory, monkeypatch, tmp_path):
    """A hang-up arriving while another process holds SQLite's write lock
    for many busy timeouts still closes its row once the lock is gone (a
    soak lost three hotline rows when two tries in a row were refused)."""
    import sqlite3
    import threading

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    factory.kw["bind"].dispose()   # new connections take the short busy timeout
    holder = sqlite3.connect(tmp_path / "agi.db", isolation_level=None, check_same_thread=False)

    async def locked_hang_up(port):
        await agi_request(port, "hotline", ["13900000001"], uniqueid="lk.1")
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(2.5, holder.execute, ("COMMIT",))
        release.start()
        await agi_request(port, "hotline-end", ["", "desk", "ANSWER", "12", "8001",
                                                "13900000001", ""], uniqueid="lk.1")
        release.join()
        for _ in range(100):   # the unit of work outlives the route's deadline
            with factory() as s:
                call = s.scalars(select(Call).where(Call.uniqueid == "lk.1")).one_or_none()
                if call is not None and call.state == "ended":
                    return call
            await asyncio.sleep(0.1)
        return call
    try:
        call = run_server(factory, locked_hang_up)
    finally:
        holder.close()
    assert (call.state, call.outcome, call.talk_seconds) == ("ended", "desk", 12)


def test_a_hang_up_with_the_routes_facts_writes_the_row_its_route_never_wrote(factory):
    """The routing write never happened (the service died after its answer,
    and is back by the hang-up): the hang-up route writes the row with the
    customer and manager the route chose (the dialplan's KHHF_END), as the
    AMI bridge would, though the customer was handed over meanwhile."""
    import datetime as dt
    with db.unit_of_work(factory) as s:
        s.get(Customer, 1).manager_id = 2
    rec = "2023/11/14/in-f.1.wav"
    facts = f"desk/ANSWER/9400/8001/13900000001/1/1/1700000000/manager/8613800000001/{rec}"
    run_server(factory, lambda port: agi_request(
        port, "hotline-end", ["", "desk", "ANSWER", "9", "8001", "13900000001", rec, facts],
        uniqueid="f.1"))
    call = call_of(factory, "f.1")
    assert (call.state, call.outcome, call.talk_seconds, call.recording_path) == \
        ("ended", "desk", 9, rec)
    assert (call.customer_id, call.manager_id, call.customer_number, call.requested_at) == \
        (1, 1, "13800000001", dt.datetime(2023, 11, 14, 22, 13, 20))
    # the talk in milliseconds (ANSWEREDTIME_MS): answer -> end spans it exactly
    assert (call.end_at - call.answer_at).total_seconds() == 9.4
