"""When is the carrier trunk down (khhf.services.trunk)? The rule on stored
call rows and the PBX's qualify, without a PBX: a streak of carrier
failures (fresh), or the PBX saying the trunk does not answer OPTIONS; a
call that gets through, or time, clears the streak."""

import datetime as dt

from khhf import db
from khhf.config import Settings
from khhf.models import Call, utcnow
from khhf.services import trunk
from simkit import factories

NOW = utcnow()


def make_calls(tmp_path, outcomes):
    """Finished outbound calls with `outcomes` (oldest first, one a minute ago each)."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 't.db'}")
    db.create_schema(engine)
    sessions = db.session_factory(engine)
    with db.unit_of_work(sessions) as s:
        county = factories.county(s)
        manager = factories.manager(s, county, "m1")
        for n, (outcome, code) in enumerate(outcomes):
            at = NOW - dt.timedelta(seconds=10 * (len(outcomes) - n))
            s.add(Call(direction="outbound", manager_id=manager.id, customer_number=f"1380000{n:04d}",
                       state="ended" if outcome in ("answered", "busy") else "failed",
                       outcome=outcome, sip_code=code, requested_at=at, end_at=at))
    return sessions


def status(sessions, pbx_state=None, now=NOW):
    with sessions() as s:
        return trunk.status(s, Settings(), pbx_state, now=now)


# the notice (templates/manager/_trunk.html), not a call's outcome in a list
NOTICE = 'id="trunk-down"'
REJECTED, SILENT = ("carrier_rejected", 503), ("carrier_unreachable", 408)


def test_a_fresh_streak_of_carrier_failures_is_down(tmp_path):
    sessions = make_calls(tmp_path, [("answered", 200), REJECTED, REJECTED, REJECTED])
    found = status(sessions)
    assert (found.state, found.down, found.failures, found.sip_code) == \
        ("rejecting", True, 3, 503)
    assert found.since is not None and not found.pbx_says_down
    # the latest failure decides which way it is down
    assert status(make_calls(tmp_path / "b", [REJECTED, REJECTED, SILENT])).state == "unreachable"


def test_two_failures_a_call_through_or_time_and_the_line_is_up(tmp_path):
    assert not status(make_calls(tmp_path, [("answered", 200), REJECTED, REJECTED])).down
    assert not status(make_calls(tmp_path / "b", [REJECTED, REJECTED, REJECTED,
                                                  ("busy", 486)])).down
    sessions = make_calls(tmp_path / "c", [REJECTED, REJECTED, REJECTED])
    assert not status(sessions, now=NOW + trunk.HOLD + dt.timedelta(seconds=1)).down
    # desk-side failures say nothing about the trunk
    assert status(make_calls(tmp_path / "d", [REJECTED, REJECTED, REJECTED,
                                              ("manager_no_answer", None)])).down


def test_the_pbx_qualify_alone_says_unreachable(tmp_path):
    sessions = make_calls(tmp_path, [])
    assert status(sessions, "Reachable").state == "up"
    assert status(sessions, None).state == "up"
    found = status(sessions, trunk.PBX_UNAVAILABLE)
    assert (found.state, found.pbx_says_down) == ("unreachable", True)


def test_the_manager_and_the_operator_are_told_and_progressive_dial_waits(tmp_path):
    """The web side of a streak, without a PBX: the manager's desk and phone
    pages say 中继线路故障, progressive dial's /next pauses (it asks again
    later), the trunk check (/healthz, `khhf status`, the staff banner) is
    red; one call through clears them all."""
    from khhf import health
    from simkit.web import log_in_as, make_app, session_for
    app, seeded = make_app(tmp_path, {"calling_window": "00:00-24:00"})
    settings = app.extensions["khhf_settings"]
    engine = health.health_engine(settings)
    username = next(iter(seeded["managers"]))
    manager_id = seeded["managers"][username]["id"]
    client = app.test_client()
    log_in_as(client, app, username)

    def add(outcome, code):
        with session_for(app) as s:
            s.add(Call(direction="outbound", manager_id=manager_id, customer_number="13800009999",
                       state="failed" if outcome.startswith("carrier") else "ended",
                       outcome=outcome, sip_code=code, requested_at=utcnow(), end_at=utcnow()))
            s.commit()

    def told():
        return (NOTICE in client.get("/manager/").get_data(as_text=True),
                NOTICE in client.get("/m/").get_data(as_text=True),
                client.get("/manager/next").get_json()["reason"] == "trunk",
                not health.check_trunk(settings, engine).ok)

    assert told() == (False, False, False, False)
    for _ in range(trunk.FAILURE_STREAK):
        add(*REJECTED)
    assert told() == (True, True, True, True)
    assert "中继线路故障" in client.get("/m/").get_data(as_text=True)
    answer = client.get("/manager/next").get_json()
    assert answer["task"] is None and answer["retry_seconds"] == trunk.PAUSE_POLL_SECONDS
    assert "SIP 503" in answer["message"] and "自动连拨已暂停" in answer["message"]
    add("answered", 200)
    assert told() == (False, False, False, False)
    engine.dispose()
