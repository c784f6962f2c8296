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
from typing import Any

from sqlalchemy import Row, String, Table, bindparam, case, cast, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from khhf import audit, i18n, numbering
from khhf.models import Manager, SmsKind, SmsMessage, SmsPart, SmsStatus, User
from khhf.phones import mask_phone

from . import N_

MAX_BODY = 1000
# ids in one IN list (SQLite allows 32,766 parameters; PostgreSQL 65,535)
IN_CHUNK = 500

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
    attempts = SmsMessage.attempts + 1  # SET reads the row as it was
    longer = {sms_id: n for sms_id, n in parts.items() if n != 1}
    return {sms_id: attempt for sms_id, attempt in session.execute(
        update(SmsMessage)
        .where(SmsMessage.id.in_(list(parts)), SmsMessage.status == SmsStatus.QUEUED)
        .values(status=SmsStatus.SENDING, attempts=attempts,
                client_ref=cast(SmsMessage.id, String) + "." + cast(attempts, String),
                parts=case(longer, value=SmsMessage.id, else_=1) if longer else 1)
        .returning(SmsMessage.id, SmsMessage.attempts)
        .execution_options(synchronize_session=False))}


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
    return list(session.execute(
        select(SmsMessage.id, SmsMessage.body, SmsMessage.peer_number)
        .where(SmsMessage.direction == "out", SmsMessage.status == SmsStatus.QUEUED,
               or_(SmsMessage.next_attempt_at.is_(None), SmsMessage.next_attempt_at <= now))
        .order_by(SmsMessage.id).limit(limit)))


def _chunks(items: list, size: int = IN_CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _update_each(session: Session, table: Table, key: str, values: dict[Any, dict[str, Any]],
                 *where, **fixed) -> None:
    """UPDATE `table` SET the `fixed` values and each row's own `values[k]`
    ({column: value}) WHERE its `key` column is k (and `where`), for many
    rows at once: one executemany on SQLite (its C loop is quick), one
    statement over unnest()ed arrays on PostgreSQL (where a statement a row
    costs the server a statement a row)."""
    if not values:
        return
    columns = list(next(iter(values.values())))
    if session.get_bind().dialect.name == "postgresql":
        rows = func.unnest(
            literal(list(values), ARRAY(table.c[key].type)),
            *(literal([row[c] for row in values.values()], ARRAY(table.c[c].type))
              for c in columns)).table_valued(f"v_{key}", *(f"v_{c}" for c in columns))
        rows = rows.render_derived()
        session.execute(update(table).where(table.c[key] == rows.c[f"v_{key}"], *where)
                        .values(**fixed, **{c: rows.c[f"v_{c}"] for c in columns}))
        return
    session.execute(
        update(table).where(table.c[key] == bindparam(f"v_{key}"), *where)
        .values(**fixed, **{c: bindparam(f"v_{c}") for c in columns}),
        [{f"v_{key}": k, **{f"v_{c}": row[c] for c in columns}} for k, row in values.items()])


def submitted(session: Session, sent: dict[int, tuple[str, list[str]]],
              now: dt.datetime) -> set[int]:
    """Messages the SMSC took whole, {id: (client_ref, its parts' SMSC
    message ids)}: sending -submitted-> sent, and their parts stored for
    the receipts, in three statements (a SELECT, an executemany UPDATE, a
    multi-row INSERT) whatever their number: the gateway's grouped commit.
    A message no longer 'sending' under that client_ref (written already)
    is left. The ids moved."""
    assert SmsStatus.SENT in allowed(SmsStatus.SENDING, "submitted")
    moved: set[int] = set()
    for some in _chunks(list(sent)):
        moved.update(sms_id for sms_id, client_ref in session.execute(
            select(SmsMessage.id, SmsMessage.client_ref)
            .where(SmsMessage.id.in_(some), SmsMessage.status == SmsStatus.SENDING))
            if client_ref == sent[sms_id][0])
    table = SmsMessage.__table__
    _update_each(session, table, "id",
                 {sms_id: {"smpp_message_id": sent[sms_id][1][0]} for sms_id in moved},
                 table.c.status == SmsStatus.SENDING,
                 status=SmsStatus.SENT, sent_at=now, error=None)
    store_parts(session, {sms_id: sent[sms_id][1] for sms_id in moved})
    return moved


def store_parts(session: Session, parts: dict[int, list[str]]) -> None:
    """The parts the SMSC took, {message id: their SMSC message ids in order}."""
    rows = [{"sms_id": sms_id, "part_no": n, "smpp_message_id": message_id}
            for sms_id, ids in parts.items() for n, message_id in enumerate(ids, start=1)]
    for some in _chunks(rows):  # one INSERT with many VALUES, not a statement a row
        session.execute(insert(SmsPart.__table__).values(some))


def record_receipts(session: Session, receipts: list[tuple[str, str]],
                    now: dt.datetime) -> set[str]:
    """File delivery receipts, (SMSC message id, status) each, on their
    parts, in four statements a chunk whatever their number; a message's
    receipt status is set once every part has one (DELIVRD only when all
    are). The SMSC message ids filed (the others name no stored part, yet)."""
    status_of = {message_id: status[:16] for message_id, status in receipts}
    filed: set[str] = set()
    for some in _chunks(list(status_of)):
        parts = session.execute(
            select(SmsPart.id, SmsPart.sms_id, SmsPart.smpp_message_id)
            .where(SmsPart.smpp_message_id.in_(some))).all()
        if not parts:
            continue
        _update_each(session, SmsPart.__table__, "id",
                     {p.id: {"receipt_status": status_of[p.smpp_message_id]} for p in parts},
                     receipt_at=now)
        filed.update(p.smpp_message_id for p in parts)
        got: dict[int, tuple[int, list[str | None]]] = {}
        for sms_id, count, part_status in session.execute(
                select(SmsPart.sms_id, SmsMessage.parts, SmsPart.receipt_status)
                .join(SmsMessage, SmsMessage.id == SmsPart.sms_id)
                .where(SmsPart.sms_id.in_({p.sms_id for p in parts}))
                .order_by(SmsPart.sms_id, SmsPart.part_no)):
            got.setdefault(sms_id, (count, []))[1].append(part_status)
        done = {}
        for sms_id, (count, statuses) in got.items():
            if len(statuses) == count and all(statuses):
                failed = [s for s in statuses if s != "DELIVRD"]
                done[sms_id] = {"receipt_status": failed[0] if failed else "DELIVRD"}
        _update_each(session, SmsMessage.__table__, "id", done, receipt_at=now)
    return filed


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
