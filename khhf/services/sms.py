"""The SMS outbox and inbox in the database: one home for what the gateway
daemon (smsgw/), the web UI and the `khhf sms` command do with them.

An inbound message (a manager's reply) is stored with status 'received',
whoever brought it: the SMSC through the gateway, an admin's form in the web
UI or `khhf sms inject` (the offline demo). The reply parser consumes
'received' rows.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from khhf import audit
from khhf.models import Manager, SmsKind, SmsMessage, SmsPart, SmsStatus, User
from khhf.phones import mask_phone

MOBILE = re.compile(r"^\+?[0-9]{5,20}$")
MAX_BODY = 1000


class SmsError(ValueError):
    """Bad input for an SMS; the message says what to do."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def receive(session: Session, mobile: str, text: str, *, user: User | None = None,
            via: str = "smsc", ip: str = "") -> SmsMessage:
    """Store a message from `mobile` as received (and audit it). `via` says
    who brought it: 'smsc', 'web' or 'cli'."""
    mobile = (mobile or "").strip().replace(" ", "")
    if not MOBILE.match(mobile):
        raise SmsError(f"{mobile!r} is not a mobile number: give 5 to 20 digits, "
                       "e.g. 13800138000.")
    if not text or not text.strip():
        raise SmsError("the message is empty: give the text the phone sent.")
    if len(text) > MAX_BODY:
        raise SmsError(f"the message is {len(text)} characters long; at most {MAX_BODY}.")
    manager = session.scalar(select(Manager).where(Manager.mobile == mobile))
    row = SmsMessage(direction="in", peer_number=mobile, body=text, status=SmsStatus.RECEIVED,
                     manager_id=manager.id if manager else None)
    session.add(row)
    session.flush()
    audit.record(session, user, "create", "sms", row.id,
                 {"fields": {"from": mask_phone(mobile), "via": via}},
                 ip, object_name=mask_phone(mobile))
    return row


def queue(session: Session, manager: Manager | None, body: str, *, mobile: str | None = None,
          kind: SmsKind | None = None, task_id: int | None = None, call_id: int | None = None,
          ref: str | None = None, reply_to_id: int | None = None, user: User | None = None,
          now: dt.datetime | None = None) -> SmsMessage:
    """Queue `body` for the gateway to send to `manager`'s mobile (or to
    `mobile`), and audit it. `kind` (SmsKind) says what it is; the other
    fields tie it to what it is about."""
    to = mobile or (manager.mobile if manager is not None else None)
    if not to:
        raise SmsError("no mobile number to send the SMS to.")
    row = SmsMessage(direction="out", peer_number=to, body=body, status=SmsStatus.QUEUED,
                     kind=kind,
                     manager_id=manager.id if manager is not None else None, task_id=task_id,
                     call_id=call_id, ref=ref, reply_to_id=reply_to_id,
                     created_at=now or utcnow())
    session.add(row)
    session.flush()
    audit.record(session, user, "create", "sms", row.id,
                 {"fields": {"to": mask_phone(to), "sms_kind": kind}},
                 object_name=mask_phone(to))
    return row


def listing(session: Session, direction: str | None = None, limit: int = 200) -> list[SmsMessage]:
    """The latest messages, newest first (both directions unless given)."""
    query = select(SmsMessage).order_by(SmsMessage.id.desc()).limit(limit)
    if direction:
        query = query.where(SmsMessage.direction == direction)
    return list(session.scalars(query))


def next_due(session: Session, now: dt.datetime) -> SmsMessage | None:
    """The oldest outbound message due to be sent."""
    return session.scalar(
        select(SmsMessage)
        .where(SmsMessage.direction == "out", SmsMessage.status == SmsStatus.QUEUED,
               or_(SmsMessage.next_attempt_at.is_(None), SmsMessage.next_attempt_at <= now))
        .order_by(SmsMessage.id).limit(1))


def record_receipt(session: Session, message_id: str, status: str,
                   now: dt.datetime) -> SmsMessage | None:
    """File a delivery receipt on its part; the message's receipt status is
    set once every part has one (DELIVRD only when all are)."""
    part = session.scalar(select(SmsPart).where(SmsPart.smpp_message_id == message_id))
    if part is None:
        return None
    part.receipt_status, part.receipt_at = status[:16], now
    message = session.get(SmsMessage, part.sms_id)
    parts = list(session.scalars(select(SmsPart).where(SmsPart.sms_id == message.id)))
    if len(parts) == message.parts and all(p.receipt_status for p in parts):
        failed = [p.receipt_status for p in parts if p.receipt_status != "DELIVRD"]
        message.receipt_status = failed[0] if failed else "DELIVRD"
        message.receipt_at = now
    return message


def requeue(session: Session, sms_id: int, user: User | None = None) -> SmsMessage:
    """Send an 'unknown' or 'failed' message again: an operator's decision,
    after checking with the SMSC that the first attempt did not arrive."""
    message = session.get(SmsMessage, sms_id)
    if message is None or message.direction != "out":
        raise SmsError(f"there is no outbound SMS {sms_id}: see `khhf sms outbox`.")
    if message.status not in (SmsStatus.UNKNOWN, SmsStatus.FAILED):
        raise SmsError(f"SMS {sms_id} is {message.status}: only an unknown or failed "
                       "message can be sent again.")
    old = message.status
    message.status, message.next_attempt_at, message.client_ref = SmsStatus.QUEUED, None, None
    audit.record(session, user, "update", "sms", message.id,
                 audit.changes({"sms_status": (old, SmsStatus.QUEUED)}),
                 object_name=mask_phone(message.peer_number))
    return message
