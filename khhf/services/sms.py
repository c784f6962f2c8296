"""The SMS outbox and inbox in the database: one home for what the gateway
daemon (smsgw/), the web UI and the `khhf sms` command do with them, and the
only writer of a message's status (a test walks the code base to keep it so).

An inbound message (a manager's reply) is stored with status 'received',
whoever brought it: the SMSC through the gateway, an admin's form in the web
UI or `khhf sms inject` (the offline demo). The reply parser consumes
'received' rows. A status moves only through `move` (and `claim`, the
gateway's race-safe queued -> sending); the allowed moves are `TRANSITIONS`:

    queued ──claim──▶ sending ──submitted──▶ sent
      │  ▲              │ refused: retry later ─▶ queued;  for good ─▶ failed
      │  │              │ refused or link lost after a part went ─▶ unknown
      │  │              │ link lost before anything went ─▶ queued
      │  │              └ interrupted (the gateway stopped mid-submit) ─▶ unknown
      │  └──────requeue (an operator) ── unknown | failed
      └──unsendable (too long for any phone) ─▶ failed
    received ──process (the reply parser) ─▶ processed
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import CursorResult, Row, select
from sqlalchemy.orm import Session

from khhf import audit, i18n, numbering
from khhf.models import Manager, SmsKind, SmsMessage, SmsStatus, User
from khhf.phones import mask_phone

from . import N_

MAX_BODY = 1000

# What an SMS says comes from the catalog (khhf/i18n.py), like every text a
# person reads, in the site's language; every SMS starts with HEAD.
SMS_LOCALE = i18n.DEFAULT_LOCALE
HEAD = N_("[Return visit] ")


def say(message: str, **params) -> str:
    """`message` (a msgid: a text below or a service's refusal) as an SMS says it."""
    return i18n.gettext(message, SMS_LOCALE, **params)


def say_sms(message: str, **params) -> str:
    """A whole SMS: the head, then `message`."""
    return say(HEAD) + say(message, **params)


# (from, event) -> the statuses that event may lead to
TRANSITIONS: dict[tuple[str, str], tuple[str, ...]] = {
    (SmsStatus.QUEUED, "claim"): (SmsStatus.SENDING,),
    (SmsStatus.QUEUED, "unsendable"): (SmsStatus.FAILED,),
    (SmsStatus.SENDING, "submitted"): (SmsStatus.SENT,),
    (SmsStatus.SENDING, "refused"): (SmsStatus.QUEUED, SmsStatus.FAILED, SmsStatus.UNKNOWN),
    (SmsStatus.SENDING, "link_lost"): (SmsStatus.QUEUED, SmsStatus.UNKNOWN),
    (SmsStatus.SENDING, "interrupted"): (SmsStatus.UNKNOWN,),
    (SmsStatus.UNKNOWN, "requeue"): (SmsStatus.QUEUED,),
    (SmsStatus.FAILED, "requeue"): (SmsStatus.QUEUED,),
    (SmsStatus.RECEIVED, "process"): (SmsStatus.PROCESSED,),
}


class SmsError(ValueError):
    """Bad input for an SMS; the message says what to do (in English, for
    logs and the command line). `problem` is the catalog's msgid saying the
    same to a person, with its `params`."""

    def __init__(self, message: str, problem: str | None = None, **params):
        super().__init__(message)
        self.problem, self.params = problem, params


class SmsTransitionError(ValueError):
    """A message may not make this move from its current status (a bug)."""

    def __init__(self, message: SmsMessage, event: str, to: str):
        self.sms_id, self.status, self.event, self.to = message.id, message.status, event, to
        super().__init__(f"SMS {message.id}: {event} may not move it from {message.status} "
                         f"to {to}")


def allowed(status: str, event: str) -> tuple[str, ...]:
    """The statuses `event` may move a message in `status` to (empty: not allowed)."""
    return TRANSITIONS.get((status, event), ())


def move(message: SmsMessage, event: str, to: str) -> None:
    """Move `message` to status `to` on `event`, or raise SmsTransitionError."""
    if to not in allowed(message.status, event):
        raise SmsTransitionError(message, event, to)
    message.status = to


def claim(session: Session, parts: dict[int, int]) -> dict[int, int]:
    """Take queued messages for sending (queued -claim-> sending) as one
    conditional UPDATE: each attempt counted, its client_ref `id.attempt`
    and its number of parts (`parts`: {message id: parts}) written. A second
    gateway on the same database (never the plan, but a slip in deployment)
    cannot take one too: only the rows still queued are taken, and RETURNING
    says which. {message id: attempt} of those taken."""
    if not parts:
        return {}
    assert SmsStatus.SENDING in allowed(SmsStatus.QUEUED, "claim")
    return dict(_driver(session, _CLAIM, list(parts), list(parts.values())).all())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def receive(session: Session, mobile: str, text: str, *, user: User | None = None,
            via: str = "smsc", ip: str = "") -> SmsMessage:
    """Store a message from `mobile` (in any form khhf.numbering reads;
    stored normalised, so a manager's reply is found by their stored mobile)
    as received, and audit it. `via` says who brought it: 'smsc', 'web' or
    'cli'."""
    try:
        # the one form managers' mobiles are stored in, whatever the SMSC delivered
        mobile = numbering.mobile(mobile)
    except numbering.NumberError:
        raise SmsError("the sender is not a mobile number: give 11 digits starting with 1 "
                       "(+86 may precede them), e.g. 13800138000.",
                       N_("Not a mobile number: give 11 digits starting with 1 (+86 may "
                          "precede them), e.g. 13800138000.")) from None
    if not text or not text.strip():
        raise SmsError("the message is empty: give the text the phone sent.",
                       N_("The message is empty: type what the phone sent."))
    if len(text) > MAX_BODY:
        raise SmsError(f"the message is {len(text)} characters long; at most {MAX_BODY}.",
                       N_("The message is too long."))
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
    try:
        to = numbering.mobile(to)  # stored as the gateway submits it: 11 digits
    except numbering.NumberError:
        raise SmsError("the recipient is not a mobile number: give 11 digits starting "
                       "with 1, e.g. 13800138000.") from None
    row = SmsMessage(direction="out", peer_number=to, body=body, status=SmsStatus.QUEUED, kind=kind,
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


def due(session: Session, now: dt.datetime, limit: int) -> list[Row]:
    """The oldest outbound messages due to be sent, at most `limit`: (id,
    body, peer_number) each."""
    return list(_driver(session, _DUE, _timestamp(session, now), limit))


# The gateway's grouped commit (due, claim, submitted, record_receipts) in
# SQL texts the driver runs as they are, so a commit compiles nothing
# whatever its size (SQLAlchemy building and compiling the statements cost
# the gateway more than the database running them). `{}` is a value; `{rows}`
# a batch's rows as `v(columns)`, given as one list per column: PostgreSQL
# unnests typed arrays (one text, which psycopg prepares once), SQLite reads
# one JSON array of rows through json_each. Each: (text, columns, types).
_DUE = (
    "SELECT id, body, peer_number FROM sms_messages WHERE direction = 'out' AND "
    "status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= {}) "
    "ORDER BY id LIMIT {}")
_CLAIM = (
    "UPDATE sms_messages SET status = 'sending', attempts = sms_messages.attempts + 1, "
    "client_ref = CAST(sms_messages.id AS TEXT) || '.' || CAST(sms_messages.attempts + 1 AS TEXT), "
    "parts = v.parts FROM {rows} WHERE sms_messages.id = v.id AND sms_messages.status = 'queued' "
    "RETURNING sms_messages.id, sms_messages.attempts", ("id", "parts"), ("integer", "integer"))
_SUBMITTED = (
    "UPDATE sms_messages SET status = 'sent', sent_at = {}, error = NULL, "
    "smpp_message_id = v.first_id FROM {rows} WHERE sms_messages.id = v.id "
    "AND sms_messages.status = 'sending' AND sms_messages.client_ref = v.client_ref "
    "RETURNING sms_messages.id", ("id", "client_ref", "first_id"), ("integer", "text", "text"))
_PARTS = (
    "INSERT INTO sms_parts (sms_id, part_no, smpp_message_id) "
    "SELECT v.sms_id, v.part_no, v.message_id FROM {rows}",
    ("sms_id", "part_no", "message_id"), ("integer", "integer", "text"))
_PART_RECEIPTS = (
    "UPDATE sms_parts SET receipt_status = v.status, receipt_at = {} FROM {rows} "
    "WHERE sms_parts.smpp_message_id = v.message_id "
    "RETURNING sms_parts.sms_id, sms_parts.smpp_message_id",
    ("message_id", "status"), ("text", "text"))
# a message's receipt once every part has one: DELIVRD only when all are,
# else the first other, by part
_MESSAGE_RECEIPTS = (
    "UPDATE sms_messages SET receipt_at = {}, receipt_status = COALESCE(("
    "SELECT p.receipt_status FROM sms_parts p WHERE p.sms_id = sms_messages.id "
    "AND p.receipt_status <> 'DELIVRD' ORDER BY p.part_no LIMIT 1), 'DELIVRD') "
    "FROM {rows} WHERE sms_messages.id = v.id AND sms_messages.parts = ("
    "SELECT count(p.receipt_status) FROM sms_parts p WHERE p.sms_id = sms_messages.id)",
    ("id",), ("integer",))
_TEXTS: dict[tuple[str, str], str] = {}
_TIMESTAMP: dict[str, Any] = {}


def _timestamp(session: Session, now: dt.datetime) -> Any:
    """`now` as the driver takes a TIMESTAMP (SQLite: SQLAlchemy's text form)."""
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        return now
    process = _TIMESTAMP.get(dialect.name)
    if process is None:
        process = _TIMESTAMP[dialect.name] = SmsMessage.__table__.c.sent_at.type \
            .dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
    return process(now)


def _driver(session: Session, statement: str | tuple[str, tuple[str, ...], tuple[str, ...]],
            *params: Any) -> CursorResult:
    """Run one of the statements above through the driver: its values in
    order, then (for one with {rows}) one list per column of its rows."""
    connection = session.connection()
    dialect = connection.dialect.name
    template, columns, types = (statement, (), ()) if isinstance(statement, str) else statement
    sql = _TEXTS.get((dialect, template))
    if sql is None:
        mark = "%s" if dialect == "postgresql" else "?"
        if not columns:
            rows = ""
        elif dialect == "postgresql":
            rows = (f"unnest({', '.join(f'{mark}::{t}[]' for t in types)}) "
                    f"AS v({', '.join(columns)})")
        else:
            rows = ("(SELECT " + ", ".join(f"value ->> {i} AS {c}" for i, c in enumerate(columns))
                    + f" FROM json_each({mark})) AS v")
        sql = _TEXTS[(dialect, template)] = template.format(*[mark] * template.count("{}"),
                                                            rows=rows)
    if columns and dialect != "postgresql":
        values, arrays = params[:-len(columns)], params[-len(columns):]
        params = (*values, json.dumps(list(zip(*arrays)), ensure_ascii=False))
    return connection.exec_driver_sql(sql, params)


def submitted(session: Session, sent: dict[int, tuple[str, list[str]]],
              now: dt.datetime) -> set[int]:
    """Messages the SMSC took whole, {id: (client_ref, its parts' SMSC
    message ids)}: sending -submitted-> sent, and their parts stored for
    the receipts, in two statements whatever their number: the gateway's
    grouped commit. A message no longer 'sending' under that client_ref
    (written already) is left. The ids moved."""
    assert SmsStatus.SENT in allowed(SmsStatus.SENDING, "submitted")
    if not sent:
        return set()
    moved = {sms_id for sms_id, in _driver(
        session, _SUBMITTED, _timestamp(session, now), list(sent),
        [ref for ref, _ in sent.values()], [ids[0] for _, ids in sent.values()])}
    store_parts(session, {sms_id: sent[sms_id][1] for sms_id in moved})
    return moved


def store_parts(session: Session, parts: dict[int, list[str]]) -> None:
    """The parts the SMSC took, {message id: their SMSC message ids in order}."""
    rows = [(sms_id, n, message_id)
            for sms_id, ids in parts.items() for n, message_id in enumerate(ids, start=1)]
    if rows:
        _driver(session, _PARTS, *map(list, zip(*rows)))


def record_receipts(session: Session, receipts: list[tuple[str, str]],
                    now: dt.datetime) -> set[str]:
    """File delivery receipts, (SMSC message id, status) each, on their
    parts, in two statements whatever their number; a message's receipt
    status is set once every part has one (DELIVRD only when all are). The
    SMSC message ids filed (the others name no stored part, yet)."""
    status_of = {message_id: status[:16] for message_id, status in receipts}
    if not status_of:
        return set()
    at = _timestamp(session, now)
    parts = _driver(session, _PART_RECEIPTS, at, list(status_of), list(status_of.values())).all()
    if parts:
        _driver(session, _MESSAGE_RECEIPTS, at, sorted({sms_id for sms_id, _ in parts}))
    return {message_id for _, message_id in parts}


def requeue(session: Session, sms_id: int, user: User | None = None) -> SmsMessage:
    """Send an 'unknown' or 'failed' message again: an operator's decision,
    after checking with the SMSC that the first attempt did not arrive."""
    message = session.get(SmsMessage, sms_id)
    if message is None or message.direction != "out":
        raise SmsError(f"there is no outbound SMS {sms_id}: see `khhf sms outbox`.")
    if not allowed(message.status, "requeue"):
        raise SmsError(f"SMS {sms_id} is {message.status}: only an unknown or failed "
                       "message can be sent again.")
    old = message.status
    move(message, "requeue", SmsStatus.QUEUED)
    message.next_attempt_at, message.client_ref = None, None
    audit.record(session, user, "update", "sms", message.id,
                 audit.changes({"sms_status": (old, SmsStatus.QUEUED)}),
                 object_name=mask_phone(message.peer_number))
    return message
