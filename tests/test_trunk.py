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
    assert status(sessions, "NOT_INUSE").state == "up"
    assert status(sessions, None).state == "up"
    found = status(sessions, trunk.PBX_UNAVAILABLE)
    assert (found.state, found.pbx_says_down) == ("unreachable", True)
