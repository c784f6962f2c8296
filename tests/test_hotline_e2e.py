"""The hotline end to end: a customer (SIPp on the trunk's IP) calls a
county's unified number; a real Asterisk asks the FastAGI service (in a
thread, on a temp SQLite database) and rings desk phones, the manager's
mobile through the trunk, and the county group, all SIPp."""

from __future__ import annotations

import os
import re
import time

import pytest
from sqlalchemy import select

from khhf import db
from khhf.config import agi_key
from khhf.models import Call, County, Manager, SmsMessage, Task
from khhf.services import handover, hotline
from simkit import factories
from simkit.harness import SIPP, AgiThread, PbxHarness, free_port, wav_stats

pytestmark = pytest.mark.pbx

DESKS = [f"81{i:02d}" for i in range(1, 23)]
RING = {"KHHF_DESK_RING": 3, "KHHF_MOBILE_RING": 3, "KHHF_GROUP_RING": 3, "KHHF_HUNT_RING": 2}


class Hotline:
    def __init__(self, harness: PbxHarness, factory, agi: AgiThread):
        self.h, self.factory, self.agi = harness, factory, agi

    # -- data ---------------------------------------------------------------
    def county(self, code: str, unified: str, strategy: str = "ringall") -> int:
        with db.unit_of_work(self.factory) as s:
            return factories.county(s, code, unified=unified, strategy=strategy).id

    def manager(self, county_id: int, desk: str | None, mobile: str | None = None,
                on_duty: bool = True) -> int:
        with db.unit_of_work(self.factory) as s:
            return factories.manager(s, s.get(County, county_id), f"m{desk or mobile}",
                                     desk=desk, mobile=mobile, on_duty=on_duty).id

    def customer(self, county_id: int, phone: str, manager_id: int | None) -> int:
        with db.unit_of_work(self.factory) as s:
            owner = s.get(Manager, manager_id) if manager_id else None
            return factories.customer(s, s.get(County, county_id), phone, owner).id

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
    harness = PbxHarness(tmp_path_factory.mktemp("hotline"), name=f"hotline{os.getpid()}",
                         desk_extensions=DESKS)
    engine = db.make_engine(harness.settings.database_url)
    db.create_schema(engine)
    agi = AgiThread(db.session_factory(engine), key=agi_key(harness.settings)).start()
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
    # Asterisk's ANSWEREDTIME_MS reached the row: answer -> end is the talk to the millisecond
    span = (call.end_at - call.answer_at).total_seconds()
    assert abs(span - call.talk_seconds) <= 0.5 and span != int(span), span
    path = hp.h.settings.recordings_dir / call.recording_path
    for _ in range(50):
        if path.exists() and path.stat().st_size > 44:
            break
        time.sleep(0.1)
    duration, rms = wav_stats(path)
    assert duration >= 1.5 and rms > 500, (duration, rms)


@pytest.mark.parametrize("desk_state", ["busy", "unregistered"])
def test_desk_busy_or_unregistered_rings_the_mobile_through_the_trunk(hotline_pbx, desk_state):
    hp = hotline_pbx
    n = {"busy": "2", "unregistered": "3"}[desk_state]
    unified, customer_no, mobile = f"1390000000{n}", f"1380000000{n}", f"1370000000{n}"
    desk_ext = "8103" if desk_state == "busy" else "8120"  # 8120: never registered
    county = hp.county(f"c{n}", unified)
    own = hp.manager(county, desk_ext, mobile)
    hp.customer(county, customer_no, own)
    desk = None
    if desk_state == "busy":
        desk = hp.h.desk_phone(desk_ext, "reject.xml", fill={"CODE": 486, "REASON": "Busy Here"})
    mobile_leg = hp.h.trunk("answer_hangup.xml", duration_ms=1500)

    caller = hp.call(unified, customer_no)
    assert caller.wait(30) == 0, caller.trace_summary()
    assert mobile_leg.wait(10) == 0, mobile_leg.trace_summary()
    if desk is not None:
        assert desk.wait(10) == 0 and len(desk.received("INVITE")) == 1
    [invite] = mobile_leg.received("INVITE")
    assert invite.first_line.startswith(f"INVITE sip:{mobile}@")
    # the mobile shows the unified number; the customer's number stays inside
    assert f"sip:{unified}@" in invite.header("From")
    assert f"sip:{unified}@" in invite.header("P-Asserted-Identity")
    assert customer_no not in invite.text
    call = hp.wait_ended(customer_no)
    assert (call.manager_id, call.outcome) == (own, "mobile")


def test_an_off_duty_owner_is_rung_on_the_mobile_not_at_the_desk(hotline_pbx):
    """离岗 means away from the desk: the desk phone stays silent, the
    mobile rings (through the trunk), then the group."""
    hp = hotline_pbx
    county = hp.county("c16", "13900000016")
    own = hp.manager(county, "8116", "13700000016", on_duty=False)
    hp.manager(county, "8117", on_duty=True)
    hp.customer(county, "13800000016", own)
    desk = hp.h.desk_phone("8116", "answer.xml")  # registered and idle, but its owner is away
    group = hp.h.desk_phone("8117", "answer.xml")
    mobile_leg = hp.h.trunk("answer_hangup.xml", duration_ms=1000)

    caller = hp.call("13900000016", "13800000016")
    assert caller.wait(30) == 0, caller.trace_summary()
    assert mobile_leg.wait(10) == 0, mobile_leg.trace_summary()
    [invite] = mobile_leg.received("INVITE")
    assert invite.first_line.startswith("INVITE sip:13700000016@")
    desk.stop()
    group.stop()
    assert desk.received("INVITE") == []
    assert group.received("INVITE") == []  # the mobile answered: the group never rang
    call = hp.wait_ended("13800000016")
    assert (call.manager_id, call.outcome) == (own, "mobile")


def test_nobody_answers_group_then_message_callback_task_and_sms(hotline_pbx):
    hp = hotline_pbx
    county = hp.county("c4", "13900000004")
    own = hp.manager(county, "8104", "13700000004", on_duty=True)
    colleague = hp.manager(county, "8105", "13700000005", on_duty=True)
    customer = hp.customer(county, "13800000004", own)
    desk = hp.h.desk_phone("8104", "ring_forever.xml")
    group = hp.h.desk_phone("8105", "ring_forever.xml")
    mobile_leg = hp.h.trunk("ring_forever.xml")

    caller = hp.call("13900000004", "008613800000004")
    assert caller.wait(40) == 0, caller.trace_summary()  # answered by the message, then BYE
    for party in (desk, mobile_leg, group):
        assert party.wait(10) == 0, party.trace_summary()
    # in order: own desk, own mobile, the group (the owner is not rung twice)
    assert len(desk.received("INVITE")) == len(mobile_leg.received("INVITE")) == 1
    assert len(group.received("INVITE")) == 1
    assert caller.received(200), "the message was not played"

    call = hp.wait_ended("13800000004")
    assert (call.outcome, call.customer_id, call.manager_id) == ("missed", customer, own)
    with hp.factory() as s:
        task = s.get(Task, call.task_id)
        assert (task.customer_id, task.manager_id, task.status, task.priority) == \
            (customer, own, "pending", hotline.CALLBACK_PRIORITY)
        assert task.task_type.code == "callback"
        [sms] = s.scalars(select(SmsMessage).where(SmsMessage.task_id == task.id)).all()
        assert (sms.direction, sms.status, sms.peer_number, sms.manager_id) == \
            ("out", "queued", "13700000004", own)
        assert "138****0004" in sms.body and "13800000004" not in sms.body
    assert colleague


def test_unknown_caller_hunts_the_county_group(hotline_pbx):
    hp = hotline_pbx
    county = hp.county("c6", "13900000006", strategy="hunt")
    hp.manager(county, "8106", on_duty=True)
    hp.manager(county, "8107", on_duty=True)
    hp.manager(county, "8108", on_duty=False)  # off duty: never rung
    first = hp.h.desk_phone("8106", "ring_forever.xml")
    second = hp.h.desk_phone("8107", "answer_hangup.xml", duration_ms=1000)
    off_duty = hp.h.desk_phone("8108", "answer.xml")

    caller = hp.call("13900000006", "+8613999990006")
    assert caller.wait(30) == 0, caller.trace_summary()
    assert first.wait(10) == 0 and second.wait(10) == 0
    assert len(first.received("INVITE")) == len(second.received("INVITE")) == 1
    off_duty.stop()
    assert off_duty.received("INVITE") == []
    call = hp.wait_ended("13999990006")
    assert (call.customer_id, call.manager_id, call.outcome) == (None, None, "group:8107")


def test_after_departure_the_same_customer_reaches_the_successor(hotline_pbx):
    hp = hotline_pbx
    county = hp.county("c9", "13900000009")
    a = hp.manager(county, "8109")
    b = hp.manager(county, "8110")
    customer = hp.customer(county, "13800000009", a)

    desk_a = hp.h.desk_phone("8109", "answer_hangup.xml", duration_ms=500)
    caller = hp.call("13900000009", "13800000009")
    assert caller.wait(30) == 0 and desk_a.wait(10) == 0
    assert hp.wait_ended("13800000009").manager_id == a

    with db.unit_of_work(hp.factory) as s:
        handover.depart_manager(s, a, successor_id=b)
    desk_a = hp.h.desk_phone("8109", "answer.xml")  # A's phone is still plugged in
    desk_b = hp.h.desk_phone("8110", "answer_hangup.xml", duration_ms=500)
    caller = hp.call("13900000009", "13800000009")
    assert caller.wait(30) == 0, caller.trace_summary()
    assert desk_b.wait(10) == 0 and len(desk_b.received("INVITE")) == 1
    desk_a.stop()
    assert desk_a.received("INVITE") == []
    call = hp.wait_ended("13800000009")
    assert (call.customer_id, call.manager_id, call.outcome) == (customer, b, "desk")


def test_changes_in_the_web_ui_and_the_cli_reach_the_very_next_call(hotline_pbx):
    """The AGI service routes from memory (agi/directory.py): a reassignment
    and a duty change made in the web UI, and a hand-over made with the CLI
    in a process of its own, each reach the very next call."""
    import subprocess
    import sys

    from simkit.web import csrf_token, log_in_as
    from webui import create_app
    hp = hotline_pbx
    number = "13800000020"
    county = hp.county("c20", "13900000020")
    a = hp.manager(county, "8121", on_duty=True)
    b = hp.manager(county, "8122", on_duty=True)
    customer = hp.customer(county, number, a)
    with db.unit_of_work(hp.factory) as s:
        factories.user(s, "sup20", "supervisor", s.get(County, county))
    web = create_app(hp.h.settings, {"TESTING": True})

    def post(username, page, action, data):
        client = web.test_client()
        log_in_as(client, web, username)
        answer = client.post(action, data={**data, "csrf_token": csrf_token(client, page)})
        assert answer.status_code == 302, answer.get_data(as_text=True)[:300]

    calls = []

    def next_call_reaches(desk: str, silent: str) -> Call:
        answering = hp.h.desk_phone(desk, "answer_hangup.xml", duration_ms=300)
        other = hp.h.desk_phone(silent, "answer.xml")
        caller = hp.call("13900000020", number)
        assert caller.wait(30) == 0, caller.trace_summary()
        assert answering.wait(10) == 0, answering.trace_summary()
        other.stop()
        assert other.received("INVITE") == []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # this call's row, ended
            with hp.factory() as s:
                rows = s.scalars(select(Call).where(Call.customer_number == number)
                                 .order_by(Call.id)).all()
            if len(rows) == len(calls) + 1 and rows[-1].state == "ended":
                calls.append(rows[-1])
                return rows[-1]
            time.sleep(0.1)
        raise AssertionError(f"call {len(calls) + 1} of {number} has no ended row")

    assert (next_call_reaches("8121", "8122").manager_id, calls[-1].outcome) == (a, "desk")
    directory = hp.agi.server.directory  # answered from memory, not the fallback
    loads = directory.loads
    post("sup20", f"/customers/{customer}", f"/customers/{customer}/manager", {"manager_id": b})
    assert (next_call_reaches("8122", "8121").manager_id, calls[-1].outcome) == (b, "desk")
    post("m8122", f"/manager/{b}", f"/manager/{b}/duty", {"on_duty": "0"})
    # B is away (no mobile): the county's group, A only
    assert (next_call_reaches("8121", "8122").manager_id, calls[-1].outcome) == \
        (b, "group:8121")
    depart = subprocess.run(
        [sys.executable, "-m", "khhfcli.main", "hotline", "depart", "m8122", "--successor",
         "m8121"], env={**os.environ, "KHHF_CONFIG": str(hp.h.workdir / "khhf.conf")},
        capture_output=True, text=True, timeout=60)
    assert depart.returncode == 0, depart.stderr
    assert (next_call_reaches("8121", "8122").manager_id, calls[-1].outcome) == (a, "desk")
    # the reassignment was read with the customer; the duty change and the
    # departure each loaded the directory again
    assert directory.loads == loads + 2


def sync_groups(hp) -> None:
    from khhfcli.hotline import sync_groups as sync
    sync(hp.h.settings)


@pytest.mark.parametrize("failure", ["down", "slow"])
def test_without_the_agi_service_the_county_group_still_answers(hotline_pbx, failure):
    hp = hotline_pbx
    n = {"down": "11", "slow": "12"}[failure]
    unified, customer_no = f"139000000{n}", f"138000000{n}"
    county = hp.county(f"c{n}", unified)
    own = hp.manager(county, f"81{n}", on_duty=False)
    hp.manager(county, f"81{int(n) + 2}", on_duty=True)
    hp.customer(county, customer_no, own)
    sync_groups(hp)  # what Asterisk rings without the database
    on_duty = hp.h.desk_phone(f"81{int(n) + 2}", "answer_hangup.xml", duration_ms=1000)

    if failure == "down":
        hp.agi.stop()
        lock = None
    else:
        # the database is locked for writing by someone else: the route reads
        # (the directory, WAL) and rings the group at once; the call row waits
        # for the lock (the write after the answer, or the hang-up route's)
        import sqlite3
        lock = sqlite3.connect(hp.h.settings.database_url.split("///", 1)[1], timeout=5)
        lock.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        caller = hp.call(unified, customer_no)
        assert caller.wait(30) == 0, caller.trace_summary()
        assert on_duty.wait(10) == 0, on_duty.trace_summary()
        assert len(on_duty.received("INVITE")) == 1
        assert time.monotonic() - started < 15
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
        else:
            hp.agi.start()
    if failure == "slow":
        # the hang-up route writes the call row once the database is free
        call = hp.wait_ended(customer_no)
        assert call.outcome == "group" or call.outcome.startswith("group")


def test_a_hung_agi_service_releases_its_calls_when_it_is_killed(hotline_pbx):
    """res_agi has no read timeout: a service that accepts and never answers
    holds the call in ringback; once the process dies (the systemd watchdog
    kills it) the kernel resets the connection and the call takes the fallback."""
    import socket
    hp = hotline_pbx
    county = hp.county("c15", "13900000015")
    hp.manager(county, "8115", on_duty=True)
    sync_groups(hp)
    desk = hp.h.desk_phone("8115", "answer_hangup.xml", duration_ms=500)
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # the kernel completes connections; nobody ever reads them
    hp.h.pbx.cli(f"dialplan set global KHHF_AGI agi://127.0.0.1:{hung.getsockname()[1]}")
    try:
        caller = hp.call("13900000015", "13800000015")
        time.sleep(3)
        assert caller.proc.poll() is None and desk.received("INVITE") == []
        hung.close()  # the hung process is killed
        assert caller.wait(20) == 0, caller.trace_summary()
        assert desk.wait(10) == 0 and len(desk.received("INVITE")) == 1
    finally:
        hung.close()
        hp.h.pbx.cli(f"dialplan set global KHHF_AGI agi://127.0.0.1:{hp.agi.port}/{hp.agi.key}")


# -- nobody but the carrier is the carrier (issue 9) ----------------------------

SPOOFER = "127.0.0.3"   # a second loopback address: not the trunk's 127.0.0.2


def spoof(hp, service: str, caller: str, pai: str, auth_user: str | None = None):
    """An INVITE from SPOOFER claiming the trunk: From user, P-Asserted-
    Identity and Remote-Party-ID, and a digest answer as `auth_user`."""
    return hp.h.party("spoof_invite.xml", local_ip=SPOOFER, port=free_port(SPOOFER),
                      remote=hp.h.sip_target, service=service,
                      keys={"caller": caller, "pai": pai, "trunk": hp.h.settings.trunk_host},
                      auth=(auth_user or caller, "guessed-password")).start()


def final_responses(party) -> list:
    return [m for m in party.messages() if m.direction == "received" and (m.status or 0) >= 300]


def test_invites_claiming_to_be_the_trunk_from_elsewhere_never_get_in(hotline_pbx):
    """Toll fraud and caller-id spoofing: every claim to the trunk's identity
    from another address is challenged or refused; no call row is written,
    and the carrier (the trunk's address) receives nothing."""
    from khhf.channel_vars import TRUNK_ENDPOINT
    hp = hotline_pbx
    county = hp.county("c18", "13900000018")
    # a manager whose desk phone is not registered: a call that got in would
    # ring the mobile through the trunk (a paid call)
    own = hp.manager(county, "8118", "13700000018")
    hp.customer(county, "13800000018", own)
    carrier = hp.h.trunk("answer.xml")
    attempts = [
        # (dialled number, From user, PAI/RPID user, digest user name)
        ("13900000018", TRUNK_ENDPOINT, "13800000018", TRUNK_ENDPOINT),
        ("13900000018", TRUNK_ENDPOINT, TRUNK_ENDPOINT, None),
        ("13900000018", "13800000018", "13800000018", TRUNK_ENDPOINT),
        ("13900000018", "anonymous", "13800000018", "8118"),
        ("13700000018", TRUNK_ENDPOINT, "13900000018", TRUNK_ENDPOINT),  # straight out
        (f"13700000018@{hp.h.settings.trunk_host}", TRUNK_ENDPOINT, "13800000018", None),
        ("8118", TRUNK_ENDPOINT, "13800000018", TRUNK_ENDPOINT),
    ]
    for service, caller, pai, auth_user in attempts:
        party = spoof(hp, service.split("@")[0], caller, pai, auth_user)
        assert party.wait(20) == 0, (service, caller, party.trace_summary())
        statuses = [m.status for m in final_responses(party)]
        assert statuses and all(code in (401, 403, 404, 407) for code in statuses), statuses
        assert 200 not in [m.status for m in party.messages() if m.direction == "received"]
    time.sleep(1)
    carrier.stop()
    assert carrier.received("INVITE") == [], carrier.trace_summary()
    with hp.factory() as s:
        assert s.scalars(select(Call).where(Call.unified_number == "13900000018")).all() == []
        assert s.scalars(select(Call).where(Call.customer_number == "13800000018")).all() == []
    # and Asterisk's own record (CEL) has no channel for any of them: nothing
    # entered khhf-from-trunk, the desk phone or the trunk
    cel_file = hp.h.settings.pbx_dir / "log" / "cel-custom" / "khhf-cel.csv"
    cel = cel_file.read_text() if cel_file.exists() else ""  # no channel yet at all
    for number in ("13900000018", "13700000018", "8118"):
        assert f'"{number}"' not in cel and f"PJSIP/{number}-" not in cel, number


def test_the_trunk_name_gets_the_same_challenge_as_any_unknown_name(hotline_pbx):
    """Nothing in a response tells whether the From user named an endpoint."""
    from khhf.channel_vars import TRUNK_ENDPOINT
    hp = hotline_pbx

    def challenge(caller):
        party = spoof(hp, "13900000016", caller, caller)
        assert party.wait(20) == 0, party.trace_summary()
        first = final_responses(party)[0]
        assert TRUNK_ENDPOINT not in first.text.replace(f"sip:{TRUNK_ENDPOINT}@", "")
        headers = sorted(line.partition(":")[0] for line in first.text.split("\n")[1:]
                         if ":" in line)
        realm = re.search(r'realm="([^"]*)"', first.header("WWW-Authenticate") or "")
        return first.status, headers, realm and realm.group(1)
    assert challenge(TRUNK_ENDPOINT) == challenge("zq81x0v") == challenge("8116")


def test_missed_call_message_is_the_shipped_chinese_prompt(hotline_pbx):
    """Nobody to ring: the caller hears KHHF's own Chinese message (the
    shipped G.711 file, byte for byte: played without transcoding)."""
    from khhf.shipped import shipped
    from simkit.rtp import RtpPhone

    hp = hotline_pbx
    hp.county("c99", "13900000099")   # no manager, no group
    phone = RtpPhone()
    try:
        host = hp.h.settings.trunk_host
        caller = hp.h.party("hotline_listen.xml", local_ip=host, port=free_port(host),
                            remote=hp.h.sip_target, service="13900000099",
                            keys={"caller": "13800000099", "ear_ip": phone.host,
                                  "ear_port": phone.port}).start()
        assert caller.wait(40) == 0, caller.trace_summary()
        assert phone.heard(shipped("asterisk") / "sounds" / "zh" / "hotline-missed.ulaw"), \
            f"{len(phone.audio())} bytes heard"
    finally:
        phone.close()
    assert hp.wait_ended("13800000099").outcome == "missed"
