"""The hotline end to end: a customer (SIPp on the trunk's IP) calls a
county's unified number; a real Asterisk asks the FastAGI service (in a
thread, on a temp SQLite database) and rings desk phones, the manager's
mobile through the trunk, and the county group, all SIPp."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from khhf import db
from khhf.models import (Call, County, Customer, CustomerAssignment, Manager, SmsMessage, Task,
                         UnifiedNumber, User)
from khhf.services import hotline
from tests.harness import SIPP, AgiThread, PbxHarness, free_port, wav_stats

pytestmark = pytest.mark.pbx

DESKS = [f"81{i:02d}" for i in range(1, 21)]
RING = {"KHHF_DESK_RING": 3, "KHHF_MOBILE_RING": 3, "KHHF_GROUP_RING": 3, "KHHF_HUNT_RING": 2}


class Hotline:
    def __init__(self, harness: PbxHarness, factory, agi: AgiThread):
        self.h, self.factory, self.agi = harness, factory, agi

    # -- data ---------------------------------------------------------------
    def county(self, code: str, unified: str, strategy: str = "ringall") -> int:
        with db.unit_of_work(self.factory) as s:
            county = County(code=code, name=code, fallback_strategy=strategy)
            county.unified_numbers.append(UnifiedNumber(number=unified, is_primary=True))
            s.add(county)
            s.flush()
            return county.id

    def manager(self, county_id: int, desk: str | None, mobile: str | None = None,
                on_duty: bool = False) -> int:
        with db.unit_of_work(self.factory) as s:
            name = f"m{desk or mobile}"
            user = User(username=name, password_hash="x", display_name=name, role="manager",
                        county_id=county_id)
            s.add(user)
            s.flush()
            m = Manager(user_id=user.id, county_id=county_id, employee_no=name,
                        desk_extension=desk, mobile=mobile, on_duty=on_duty)
            s.add(m)
            s.flush()
            return m.id

    def customer(self, county_id: int, phone: str, manager_id: int | None) -> int:
        with db.unit_of_work(self.factory) as s:
            c = Customer(phone=phone, county_id=county_id, manager_id=manager_id, name="")
            s.add(c)
            s.flush()
            if manager_id:
                s.add(CustomerAssignment(customer_id=c.id, manager_id=manager_id))
            return c.id

    def last_call(self, number: str) -> Call:
        with self.factory() as s:
            return s.scalars(select(Call).where(Call.customer_number == number)
                             .order_by(Call.id.desc())).first()

    def wait_ended(self, number: str, timeout: float = 10) -> Call:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            call = self.last_call(number)
            if call is not None and call.state == "ended":
                return call
            time.sleep(0.1)
        raise AssertionError(f"no ended call row for {number}: {self.last_call(number)}")

    # -- parties ------------------------------------------------------------
    def call(self, unified: str, caller: str):
        """A customer calling `unified` from the carrier's address."""
        return self.h.party("hotline_call.xml", local_ip=self.h.settings.trunk_host,
                            port=free_port(self.h.settings.trunk_host), remote=self.h.sip_target,
                            service=unified, keys={"caller": caller}).start()


@pytest.fixture(scope="module")
def hotline_pbx(tmp_path_factory):
    if SIPP is None:
        pytest.fail("sipp is not installed: scripts/install installs Debian's sip-tester.")
    harness = PbxHarness(tmp_path_factory.mktemp("hotline"), name="hotline", desk_extensions=DESKS)
    engine = db.make_engine(harness.settings.database_url)
    db.create_schema(engine)
    agi = AgiThread(db.session_factory(engine)).start()
    harness.settings.agi_port = agi.port  # rendered into KHHF_AGI at up()
    try:
        with harness:
            for name, seconds in RING.items():
                harness.pbx.cli(f"dialplan set global {name} {seconds}")
            yield Hotline(harness, db.session_factory(engine), agi)
    finally:
        agi.stop()
        engine.dispose()


def test_known_customer_reaches_own_managers_desk_phone(hotline_pbx):
    hp = hotline_pbx
    county = hp.county("c1", "13900000001")
    own = hp.manager(county, "8101", "13700000001")
    hp.manager(county, "8102", on_duty=True)  # a colleague on duty: must not ring
    customer = hp.customer(county, "13800000001", own)
    desk = hp.h.desk_phone("8101", "answer_hangup.xml", duration_ms=2000)
    colleague = hp.h.desk_phone("8102", "answer.xml")

    caller = hp.call("13900000001", "+8613800000001")
    assert caller.wait(30) == 0, caller.trace_summary()
    assert desk.wait(10) == 0, desk.trace_summary()
    assert "13800000001" in desk.received("INVITE")[0].header("From")
    colleague.stop()
    assert colleague.received("INVITE") == []

    call = hp.wait_ended("13800000001")
    assert (call.direction, call.customer_id, call.manager_id, call.outcome) == \
        ("inbound", customer, own, "desk")
    assert call.unified_number == "13900000001" and call.talk_seconds >= 1
    path = hp.h.settings.recordings_dir / call.recording_path
    for _ in range(50):
        if path.exists() and path.stat().st_size > 44:
            break
        time.sleep(0.1)
    duration, rms = wav_stats(path)
    assert duration >= 1.5 and rms > 500, (duration, rms)
