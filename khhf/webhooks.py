"""Webhooks: events pushed to the API clients' systems (docs/api.md).

Four events: a result filed (result.filed), a call ended (call.ended), a
missed hotline call (hotline.missed) and an SMS reply received (sms.reply).

The outbox is written in the transaction of the event's cause. `install`
hooks the ORM: when a flush inserts a Feedback or an inbound SmsMessage row,
or moves a Call into a final state, the same flush inserts one
webhook_deliveries row per client of that county that takes webhooks, on
the same connection. So whichever process writes the cause (the web UI,
the AMI bridge, the AGI service, the SMS gateway, the CLI), its commit
writes the event too, and its rollback drops both: nothing is lost, and
no event exists without its cause. (The other way, a daemon deriving events
from the rows past a high-water mark, would miss rows committed out of id
order, and calls are updated, not inserted; a look-back window would have
to guess how late a commit can be.) The event id names the event's kind and
row (`call.ended:42`), and (client, event id) is unique: a call that is
recomputed, or a cause written twice, queues its event once
(INSERT ... ON CONFLICT DO NOTHING, which cannot fail the cause's transaction).

The timed-jobs daemon sends them (`deliver_due`): POST of the JSON body,
signed, until the receiver answers 2xx (at least once; receivers
de-duplicate by X-KHHF-Event-Id). A failure is retried after BASE_DELAY,
doubling up to MAX_DELAY; the client's other due events wait with it, so a
receiver that comes back after an hour gets everything within MAX_DELAY,
oldest first. After GIVE_UP_AFTER an event is `failed` (the admin page and
`khhf api deliveries` show it; retry puts it back to pending).

Signature: X-KHHF-Signature: v1=<hex HMAC-SHA256(key, timestamp + "." + body)>,
key = HMAC-SHA256(token, "khhf-webhook") (khhf.services.api_clients), the
timestamp in X-KHHF-Timestamp (UNIX seconds): receivers refuse old ones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, event, func, inspect, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE

from khhf.calls.states import FINAL_STATES, CallOutcome
from khhf.models import (
    ApiClient,
    ApiOperation,
    Call,
    Customer,
    Feedback,
    Manager,
    ResultCode,
    SmsMessage,
    Task,
    WebhookDelivery,
    WebhookEventKind,
    WebhookStatus,
    utcnow,
)

log = logging.getLogger("khhf.webhooks")

BASE_DELAY = dt.timedelta(seconds=10)
MAX_DELAY = dt.timedelta(minutes=10)
GIVE_UP_AFTER = dt.timedelta(days=3)
TIMEOUT_SECONDS = 10
BATCH = 200
USER_AGENT = "KHHF-Webhook/1"


# -- capture: in the cause's flush ------------------------------------------------

def install() -> None:
    """Hook the ORM so that causes write their events (once per process)."""
    for model, kind, hook in HOOKS:
        if not event.contains(model, kind, hook):
            event.listen(model, kind, hook)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else f"{moment:%Y-%m-%dT%H:%M:%S}Z"


# the hooks' look-ups, built once: they run in every flush that ends a call
# (the AMI bridge's hot path), and building a statement costs more than running it
_EMPLOYEE_NO = select(Manager.employee_no).where(Manager.id == bindparam("manager_id"))
_CLIENTS_KEY = "khhf.webhook_clients"  # conn.info: (the transaction, {county: clients})
_WEBHOOK_CLIENTS = select(ApiClient.id, ApiClient.operations).where(
    ApiClient.county_id == bindparam("county_id"), ApiClient.revoked_at.is_(None),
    ApiClient.webhook_url != "")


def _employee_no(conn: Connection, manager_id: int | None) -> str | None:
    if manager_id is None:
        return None
    return conn.scalar(_EMPLOYEE_NO, {"manager_id": manager_id})


def webhook_clients(conn: Connection, county_id: int) -> list[int]:
    """The clients of the county that take webhooks, looked up once per
    county and transaction (a batch of the AMI bridge ends many calls)."""
    transaction = conn.get_transaction()
    cache: dict[int, list[int]] | None = None
    if transaction is not None:
        known = conn.info.get(_CLIENTS_KEY)
        if known is None or known[0]() is not transaction:
            empty: dict[int, list[int]] = {}
            known = conn.info[_CLIENTS_KEY] = (weakref.ref(transaction), empty)
        cache = known[1]
        if county_id in cache:
            return cache[county_id]
    clients = [cid for cid, ops in conn.execute(_WEBHOOK_CLIENTS, {"county_id": county_id})
               if ApiOperation.WEBHOOKS in ops.split()]
    if cache is not None:
        cache[county_id] = clients
    return clients


def _feedback_inserted(_mapper, conn: Connection, row: Feedback) -> None:
    found = conn.execute(
        select(Customer.county_id, Customer.phone, ResultCode.code, ResultCode.label,
               ResultCode.is_final, Manager.employee_no)
        .select_from(Task).join(Customer, Customer.id == Task.customer_id)
        .join(ResultCode, ResultCode.id == row.result_code_id)
        .join(Manager, Manager.id == row.manager_id)
        .where(Task.id == row.task_id)).first()
    if found is None:
        return
    county_id, phone, code, label, final, employee_no = found
    queue(conn, WebhookEventKind.RESULT_FILED, row.id, county_id, {
        "task_id": row.task_id, "call_id": row.call_id, "customer_number": phone,
        "manager": employee_no, "result_code": code, "result_label": label,
        "final": bool(final), "channel": row.channel, "note": row.note or "",
        "appointment_at": _iso(row.appointment_at), "filed_at": _iso(row.created_at)})


def _sms_inserted(_mapper, conn: Connection, row: SmsMessage) -> None:
    if row.direction != "in" or row.manager_id is None:
        return  # a stranger's SMS belongs to no county
    county_id, employee_no = conn.execute(select(Manager.county_id, Manager.employee_no)
                                          .where(Manager.id == row.manager_id)).one()
    queue(conn, WebhookEventKind.SMS_REPLY, row.id, county_id, {
        "sms_id": row.id, "from": row.peer_number, "manager": employee_no, "text": row.body,
        "received_at": _iso(row.created_at or utcnow())})


def _call_written(_mapper, conn: Connection, call: Call) -> None:
    if call.county_id is None:
        return
    # each attribute's own history: inspect(call).attrs would build a view of
    # every attribute of the call, on every call update
    instance = inspect(call)
    state = instance.get_history("state", PASSIVE_NO_INITIALIZE)
    outcome = instance.get_history("outcome", PASSIVE_NO_INITIALIZE)
    call_changed(conn, call, (state.deleted or (None,))[0] if state.has_changes() else call.state,
                 outcome.has_changes())


def call_changed(conn: Connection, call, state_before: str | None,
                 outcome_changed: bool) -> None:
    """Queue what a written call row says happened: `call` as written (a
    Call, or a row with its columns: the AMI bridge writes its batches
    without the ORM), its state before, and whether its outcome changed."""
    if call.county_id is None:
        return
    # the moment the call ended (a recompute that keeps it ended is not)
    ended = call.state in FINAL_STATES and state_before not in FINAL_STATES
    # a hotline call found missed (also one first closed as lost, then finished)
    missed = call.direction == "inbound" and call.outcome == CallOutcome.MISSED and \
        outcome_changed
    if not (ended or missed):
        return
    clients = webhook_clients(conn, call.county_id)
    if not clients:
        return
    data = call_json(call, _employee_no(conn, call.manager_id))
    if ended:
        queue(conn, WebhookEventKind.CALL_ENDED, call.id, call.county_id, data, clients)
    if missed:
        queue(conn, WebhookEventKind.HOTLINE_MISSED, call.id, call.county_id, data, clients)


HOOKS = ((Feedback, "after_insert", _feedback_inserted),
         (SmsMessage, "after_insert", _sms_inserted),
         (Call, "after_insert", _call_written),
         (Call, "after_update", _call_written))


def call_json(call: Call, manager: str | None) -> dict:
    """A call as the API shows it (GET /calls, call.ended)."""
    return {"id": call.id, "direction": call.direction, "task_id": call.task_id,
            "customer_number": call.customer_number, "manager": manager,
            "state": str(call.state), "outcome": call.outcome and str(call.outcome),
            "requested_at": _iso(call.requested_at), "answered_at": _iso(call.answer_at),
            "ended_at": _iso(call.end_at), "talk_seconds": call.talk_seconds,
            "hangup_by": call.hangup_by,
            "recording": call.recording_path is not None and call.recording_deleted_at is None}


def event_id(kind: str, row_id: int) -> str:
    return f"{kind}:{row_id}"


def queue(conn: Connection, kind: WebhookEventKind, row_id: int, county_id: int,
          data: dict, clients: list[int] | None = None) -> int:
    """Queue the event for every client of the county that takes webhooks
    (`clients`, when the caller looked them up), on the cause's connection;
    returns the clients it was queued for."""
    if clients is None:
        clients = webhook_clients(conn, county_id)
    if not clients:
        return 0
    now = utcnow()
    eid = event_id(kind, row_id)
    body = json.dumps({"id": eid, "type": str(kind), "created_at": _iso(now), "data": data},
                      ensure_ascii=False, sort_keys=True)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(WebhookDelivery.__table__).values([
        {"client_id": cid, "event_id": eid, "kind": str(kind), "payload": body,
         "status": WebhookStatus.PENDING, "attempts": 0, "next_attempt_at": now,
         "created_at": now, "last_error": ""} for cid in clients])
        .on_conflict_do_nothing(index_elements=["client_id", "event_id"]))
    return len(clients)


# -- delivery: the timed-jobs daemon ----------------------------------------------

def signature(key_hex: str, timestamp: str, body: bytes) -> str:
    """The X-KHHF-Signature value of `body` sent at `timestamp`."""
    mac = hmac.new(bytes.fromhex(key_hex), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def backoff(attempts: int) -> dt.timedelta:
    """The wait after the `attempts`-th failed attempt."""
    return min(BASE_DELAY * 2 ** max(attempts - 1, 0), MAX_DELAY)


@dataclasses.dataclass
class Sent:
    delivered: int = 0
    retried: int = 0
    failed: int = 0


@dataclasses.dataclass(frozen=True)
class _Due:
    id: int
    client_id: int
    event_id: str
    kind: str
    payload: str
    attempts: int
    created_at: dt.datetime
    url: str
    key: str
    revoked: bool


def post(url: str, key: str, due_event_id: str, kind: str, body: bytes,
         timeout: float = TIMEOUT_SECONDS) -> str | None:
    """POST one event; None if the receiver answered 2xx, else why not."""
    timestamp = str(int(time.time()))
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT,
        "X-KHHF-Event": kind, "X-KHHF-Event-Id": due_event_id,
        "X-KHHF-Timestamp": timestamp, "X-KHHF-Signature": signature(key, timestamp, body)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only (api_clients.create)
            response.read(1024)
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))[:200]


def any_due(session: Session, now: dt.datetime) -> bool:
    """Whether any event waits to be sent now (one indexed row at most)."""
    return session.scalar(select(WebhookDelivery.id).where(
        WebhookDelivery.status == WebhookStatus.PENDING,
        WebhookDelivery.next_attempt_at <= now).limit(1)) is not None


def deliver_due(reader: sessionmaker[Session], writer: sessionmaker[Session],
                now: dt.datetime | None = None, limit: int = BATCH) -> Sent:
    """Send the due events, oldest first; record each answer. Reads with
    `reader`, sends outside any transaction, writes each outcome in a short
    writing transaction of `writer`."""
    now = now or utcnow()
    with reader() as session:
        due = [_Due(**row._asdict()) for row in session.execute(
            select(WebhookDelivery.id, WebhookDelivery.client_id, WebhookDelivery.event_id,
                   WebhookDelivery.kind, WebhookDelivery.payload, WebhookDelivery.attempts,
                   WebhookDelivery.created_at, ApiClient.webhook_url.label("url"),
                   ApiClient.signing_key.label("key"),
                   ApiClient.revoked_at.is_not(None).label("revoked"))
            .join(ApiClient, ApiClient.id == WebhookDelivery.client_id)
            .where(WebhookDelivery.status == WebhookStatus.PENDING,
                   WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.id).limit(limit))]
    sent = Sent()
    down: set[int] = set()  # clients whose receiver failed in this pass
    for item in due:
        if item.client_id in down:
            continue  # waits with the client's failed event (postpone below)
        error = "the client was revoked" if item.revoked or not item.url else \
            post(item.url, item.key, item.event_id, item.kind, item.payload.encode())
        with writer() as session, session.begin():
            _record(session, item, error, now, sent)
        if error is not None:
            down.add(item.client_id)
            log.warning("webhook %s to client %s not delivered (attempt %s): %s",
                        item.event_id, item.client_id, item.attempts + 1, error)
    if down:
        # the rest of a failed receiver's due events wait as long as its first
        with writer() as session, session.begin():
            for client_id in down:
                wait_until = session.scalar(
                    select(WebhookDelivery.next_attempt_at).where(
                        WebhookDelivery.client_id == client_id,
                        WebhookDelivery.status == WebhookStatus.PENDING)
                    .order_by(WebhookDelivery.next_attempt_at.desc()).limit(1))
                session.execute(update(WebhookDelivery).where(
                    WebhookDelivery.client_id == client_id,
                    WebhookDelivery.status == WebhookStatus.PENDING,
                    WebhookDelivery.next_attempt_at <= now).values(next_attempt_at=wait_until))
    return sent


def _record(session: Session, item: _Due, error: str | None, now: dt.datetime,
            sent: Sent) -> None:
    row = WebhookDelivery.__table__.c
    attempts = item.attempts + 1
    if error is None:
        values = {"status": WebhookStatus.DELIVERED, "delivered_at": now, "last_error": ""}
        sent.delivered += 1
    elif now - item.created_at >= GIVE_UP_AFTER or item.revoked:
        values = {"status": WebhookStatus.FAILED, "last_error": error}
        sent.failed += 1
    else:
        values = {"next_attempt_at": now + backoff(attempts), "last_error": error}
        sent.retried += 1
    session.execute(update(WebhookDelivery.__table__).where(row.id == item.id)
                    .values(attempts=attempts, **values))


def retry(session: Session, delivery_ids: Iterable[int], now: dt.datetime | None = None) -> int:
    """Put failed deliveries back in the queue; returns how many."""
    result = session.execute(update(WebhookDelivery).where(
        WebhookDelivery.id.in_(list(delivery_ids)),
        WebhookDelivery.status == WebhookStatus.FAILED)
        .values(status=WebhookStatus.PENDING, next_attempt_at=now or utcnow(),
                created_at=now or utcnow()))
    return result.rowcount or 0  # type: ignore[attr-defined]


def counts(session: Session, client_id: int | None = None) -> dict[str, int]:
    """{status: deliveries}, of one client or all."""
    query = select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    if client_id is not None:
        query = query.where(WebhookDelivery.client_id == client_id)
    found = dict(session.execute(query).all())
    return {status.value: found.get(status.value, 0) for status in WebhookStatus}
