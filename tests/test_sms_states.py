"""The SMS outbox's state machine (khhf.services.sms): its table, its one
mover, and the gateway's race-safe claim (that nothing else writes a
message's status: test_single_writer.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from khhf import config, db
from khhf.models import SmsMessage, SmsStatus
from khhf.services import sms


@pytest.mark.parametrize("status,event,to", [
    ("queued", "claim", "sending"), ("queued", "unsendable", "failed"),
    ("sending", "submitted", "sent"), ("sending", "refused", "queued"),
    ("sending", "refused", "failed"), ("sending", "refused", "unknown"),
    ("sending", "link_lost", "queued"), ("sending", "link_lost", "unknown"),
    ("sending", "interrupted", "unknown"), ("unknown", "requeue", "queued"),
    ("failed", "requeue", "queued"), ("received", "process", "processed"),
])
def test_allowed_moves(status, event, to):
    message = SmsMessage(id=1, status=status)
    sms.move(message, event, to)
    assert message.status == to


@pytest.mark.parametrize("status,event,to", [
    ("sent", "requeue", "queued"),        # delivered: sending again repeats it
    ("queued", "submitted", "sent"),      # never claimed
    ("sending", "interrupted", "queued"),  # its outcome is unknown: never resent by itself
    ("processed", "process", "processed"), ("received", "claim", "sending"),
    ("sent", "refused", "failed"), ("queued", "requeue", "queued"),
])
def test_refused_moves(status, event, to):
    message = SmsMessage(id=7, status=status)
    with pytest.raises(sms.SmsTransitionError,
                       match=f"SMS 7: {event} may not move it from {status} to {to}"):
        sms.move(message, event, to)
    assert message.status == status


def test_every_outbound_status_can_be_reached_and_only_sent_and_processed_are_final():
    reached = {to for targets in sms.TRANSITIONS.values() for to in targets}
    assert reached == set(SmsStatus) - {SmsStatus.RECEIVED}   # received: stored, not reached
    left = {frm for frm, _ in sms.TRANSITIONS}
    assert set(SmsStatus) - left == {SmsStatus.SENT, SmsStatus.PROCESSED}


def test_a_claim_takes_queued_messages_once(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    factory = db.session_factory(engine, writer=True)
    try:
        with db.unit_of_work(factory) as s:
            one, long = (sms.queue(s, None, "您好", mobile="13900000001").id,
                         sms.queue(s, None, "长" * 200, mobile="13900000002").id)
        with db.unit_of_work(factory) as s:
            assert sms.claim(s, {one: 1, long: 3}) == {one: 1, long: 1}
        with db.unit_of_work(factory) as s:   # a second gateway loses the race
            assert sms.claim(s, {one: 1, long: 3}) == {}
        with factory() as s:
            got = {r.id: (r.status, r.attempts, r.client_ref, r.parts)
                   for r in s.scalars(select(SmsMessage))}
            assert got == {one: ("sending", 1, f"{one}.1", 1),
                           long: ("sending", 1, f"{long}.1", 3)}
        with db.unit_of_work(factory) as s:   # an operator may not requeue a message in flight
            with pytest.raises(sms.SmsError, match="only an unknown or failed"):
                sms.requeue(s, one)
    finally:
        engine.dispose()


def test_the_grouped_commit_records_sent_parts_and_receipts(each_schema):
    """The gateway's driver statements on either database: a message
    written already (another attempt's client_ref) is left; a message's
    receipt waits for every part and is the first that is not DELIVRD."""
    factory = db.session_factory(each_schema, writer=True)
    with db.unit_of_work(factory) as s:
        one, long, other = (sms.queue(s, None, text, mobile="13900000001").id
                            for text in ("您好", "长" * 200, "再见"))
    now = sms.utcnow()
    with db.unit_of_work(factory) as s:
        assert [r[0] for r in sms.due(s, now, 10)] == [one, long, other]
        assert sms.claim(s, {one: 1, long: 3, other: 1}) == {one: 1, long: 1, other: 1}
        assert sms.submitted(s, {one: (f"{one}.1", ["m1"]), long: (f"{long}.1", ["m2", "m3", "m4"]),
                                 other: (f"{other}.2", ["m5"])}, now) == {one, long}
        assert sms.record_receipts(s, [("m1", "DELIVRD"), ("m2", "DELIVRD"), ("m3", "UNDELIV"),
                                       ("nobody", "DELIVRD")], now) == {"m1", "m2", "m3"}
    with factory() as s:
        got = {r.id: (r.status, r.smpp_message_id, r.sent_at, r.receipt_status)
               for r in s.scalars(select(SmsMessage))}
        assert got == {one: ("sent", "m1", now, "DELIVRD"), long: ("sent", "m2", now, None),
                       other: ("sending", None, None, None)}
    with db.unit_of_work(factory) as s:
        assert sms.record_receipts(s, [("m4", "DELIVRD")], now) == {"m4"}
    with factory() as s:
        assert s.get_one(SmsMessage, long).receipt_status == "UNDELIV"
