"""The outbox loop and the inbox, over any `Transport`.

Never twice: before a message's first part is submitted, its row becomes
'sending' with a client reference (id.attempt) and the attempt counted, in
a committed transaction. Then:

- the SMSC accepts every part: 'sent' (each part's message id in sms_parts,
  for the receipts);
- the SMSC refuses the first part: back to 'queued' with next_attempt_at
  (exponential backoff), or 'failed' after sms_max_attempts or a permanent
  refusal;
- the link is lost before the first part left: back to 'queued' as it was;
- the link is lost after a part may have reached the SMSC, or a later part
  is refused: 'unknown'. SMPP cannot tell whether an unanswered submit was
  taken (query_sm needs the message id the lost answer carried), and
  resending risks a second SMS on the manager's phone. So an unknown message
  is never resent by the gateway: it is listed (`khhf sms outbox`, the web
  UI) for an operator, who can check with the SMSC and `khhf sms requeue`.
- on start, a row still 'sending' (the daemon died mid-submit) is 'unknown'
  for the same reason.

A database that goes away unbinds the link (nothing can be filed); the
gateway waits for it (DATABASE_RETRY_SECONDS between tries) instead of
exiting, runs recover() again (a message whose outcome could not be
written is still 'sending': it becomes 'unknown') and binds again.

Throttling: submits (parts, not messages) are spaced 1/sms_rate_per_second
apart. Bind failures and lost links are retried with backoff (0.5 s doubling
to 30 s).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from khhf.config import Settings
from khhf.db import unit_of_work
from khhf.models import SmsMessage, SmsPart, SmsStatus
from khhf.phones import mask_phone
from khhf.services import sms, sms_feedback
from smsgw import encoding
from smsgw.transport import Delivery, LinkLost, Receipt, SubmitRefused, Transport

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 5
RETRY_MAX_SECONDS = 600
BIND_BACKOFF_MAX = 30.0
IDLE_POLL_SECONDS = 0.5
DATABASE_RETRY_SECONDS = 2.0
# receipts whose part is not stored yet: how many, and for how long, are kept
EARLY_RECEIPTS_KEPT = 1000
EARLY_RECEIPT_SECONDS = 60
UNKNOWN_NOTE = ("the link to the SMSC was lost before it answered: not resent "
                "automatically; check with the SMSC, then `khhf sms requeue {id}`")


class Throttle:
    """At most `rate` submits a second, as evenly spaced slots."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_slot = 0.0

    def wait(self) -> None:
        """Block until the next slot is free, and take it."""
        now = self.clock()
        if self.next_slot > now:
            self.sleep(self.next_slot - now)
            now = self.next_slot
        self.next_slot = now + self.interval


class Gateway:
    """Sends due outbound rows through `transport` and files its arrivals."""

    def __init__(self, factory: sessionmaker[Session], transport: Transport, *,
                 source_addr: str, rate_per_second: float, max_attempts: int = 5,
                 retry_base_seconds: float = RETRY_BASE_SECONDS,
                 settings: Settings | None = None):
        self.factory, self.transport = factory, transport
        # the site's rules a reply is filed under (time zone, calling window)
        self.settings = settings or Settings()
        self.retry_base_seconds = retry_base_seconds
        self.source_addr, self.max_attempts = source_addr, max_attempts
        self.throttle = Throttle(rate_per_second)
        self.stop = threading.Event()
        self.early_receipts: dict[str, tuple[str, float]] = {}
        # the link, as the heartbeat tells khhf.health: "bound", "not bound" or
        # "database down", since when
        self.link: tuple[str, dt.datetime] = ("not bound", sms.utcnow())

    def _link(self, state: str) -> None:
        if self.link[0] != state:
            self.link = (state, sms.utcnow())

    # the daemon's loop

    def run(self) -> None:
        """Bind, send and receive until `stop` is set; rebind when the link drops."""
        self.recover()
        backoff = 0.5
        while not self.stop.is_set():
            try:
                if self.link[0] == "database down":
                    self.recover()
                self.transport.bind(self.store)
            except LinkLost as exc:
                log.warning("%s; retrying in %.1f s", exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BIND_BACKOFF_MAX)
                continue
            except OperationalError as exc:
                self._database_down(exc)
                continue
            log.info("bound to the SMSC")
            self._link("bound")
            backoff = 0.5
            try:
                while not self.stop.is_set():
                    if not self.send_one():
                        self._file_early_receipts()
                        self.transport.poll(IDLE_POLL_SECONDS)
            except LinkLost as exc:
                log.warning("%s; rebinding", exc)
            except OperationalError as exc:
                self._database_down(exc)
                continue
            finally:
                if self.link[0] == "bound":
                    self._link("not bound")
                self.transport.close()

    def _database_down(self, exc: OperationalError) -> None:
        """The database went away (a restart, a network cut): wait for it
        rather than exit, so systemd's restart limit is not spent on it."""
        log.warning("database unavailable (%s); trying again in %.0f s",
                    type(exc.orig).__name__, DATABASE_RETRY_SECONDS)
        self._link("database down")
        self.stop.wait(DATABASE_RETRY_SECONDS)

    def recover(self) -> None:
        """Rows left 'sending' by a previous run: their outcome is unknown."""
        with unit_of_work(self.factory) as db:
            rows = db.scalars(select(SmsMessage).where(SmsMessage.direction == "out",
                                                       SmsMessage.status == SmsStatus.SENDING)).all()
            for row in rows:
                sms.move(row, "interrupted", SmsStatus.UNKNOWN)
                row.error = UNKNOWN_NOTE.format(id=row.id)
                log.warning("SMS %s to %s was being submitted when the gateway stopped: "
                            "marked unknown, not resent", row.id, mask_phone(row.peer_number))

    def send_one(self) -> bool:
        """Submit the next due message, if any; True if there was one."""
        now = sms.utcnow()
        with unit_of_work(self.factory) as db:
            row = sms.next_due(db, now)
            if row is None:
                return False
            try:
                data_coding, esm_class, parts = encoding.split(row.body, row.id)
            except ValueError as exc:  # longer than 255 parts: no phone can show it
                sms.move(row, "unsendable", SmsStatus.FAILED)
                row.error = str(exc)
                return True
            sms_id, attempts, destination = row.id, row.attempts + 1, row.peer_number
            if not sms.claim(db, sms_id, attempts=attempts, client_ref=f"{sms_id}.{attempts}",
                             parts=len(parts)):
                return True
        # committed: from here a crash leaves 'sending', which recover() makes 'unknown'
        message_ids: list[str] = []
        try:
            for n, part in enumerate(parts, start=1):
                self.throttle.wait()
                message_id = self.transport.submit(destination, self.source_addr, part,
                                                   data_coding, esm_class)
                message_ids.append(message_id)
                if n < len(parts):
                    # committed now: its receipt may arrive while the next part goes
                    with unit_of_work(self.factory) as db:
                        db.add(SmsPart(sms_id=sms_id, part_no=n, smpp_message_id=message_id))
        except SubmitRefused as exc:
            self._refused(sms_id, attempts, exc, first=not message_ids)
            return True
        except LinkLost as exc:
            self._lost(sms_id, exc, first=not message_ids)
            raise
        with unit_of_work(self.factory) as db:
            # the last part with the status: one commit for a one-part message
            db.add(SmsPart(sms_id=sms_id, part_no=len(parts), smpp_message_id=message_ids[-1]))
            row = db.get(SmsMessage, sms_id)
            sms.move(row, "submitted", SmsStatus.SENT)
            row.sent_at, row.error = sms.utcnow(), None
            row.smpp_message_id = message_ids[0]
        log.info("SMS %s sent to %s in %d part(s)", sms_id, mask_phone(destination),
                 len(parts))
        self._file_early_receipts()
        return True

    def _refused(self, sms_id: int, attempts: int, exc: SubmitRefused, first: bool) -> None:
        with unit_of_work(self.factory) as db:
            row = db.get(SmsMessage, sms_id)
            row.error = str(exc)
            if not first:
                # part of a long message is on the phone already: resending repeats it
                sms.move(row, "refused", SmsStatus.UNKNOWN)
            elif exc.temporary and attempts < self.max_attempts:
                delay = min(self.retry_base_seconds * 2 ** (attempts - 1), RETRY_MAX_SECONDS)
                sms.move(row, "refused", SmsStatus.QUEUED)
                row.next_attempt_at = sms.utcnow() + dt.timedelta(seconds=delay)
            else:
                sms.move(row, "refused", SmsStatus.FAILED)
        log.warning("SMS %s: %s", sms_id, exc)

    def _lost(self, sms_id: int, exc: LinkLost, first: bool) -> None:
        with unit_of_work(self.factory) as db:
            row = db.get(SmsMessage, sms_id)
            if first and not exc.sent:
                # nothing reached the SMSC: as if never tried
                sms.move(row, "link_lost", SmsStatus.QUEUED)
                row.attempts, row.client_ref = row.attempts - 1, None
            else:
                sms.move(row, "link_lost", SmsStatus.UNKNOWN)
                row.error = UNKNOWN_NOTE.format(id=sms_id)
                log.warning("SMS %s: outcome unknown (%s): not resent", sms_id, exc)

    def _file_early_receipts(self) -> None:
        """File the receipts that came before their part was stored; drop
        those older than EARLY_RECEIPT_SECONDS (for no message of ours)."""
        if not self.early_receipts:
            return
        now = time.monotonic()
        with unit_of_work(self.factory) as db:
            for message_id, (status, at) in list(self.early_receipts.items()):
                if sms.record_receipt(db, message_id, status, sms.utcnow()) is not None:
                    del self.early_receipts[message_id]
                elif now - at > EARLY_RECEIPT_SECONDS:
                    del self.early_receipts[message_id]
                    log.info("receipt for unknown message id %s ignored", message_id)

    # what the SMSC delivers

    def store(self, event: Delivery | Receipt) -> bool:
        """File a delivery or receipt; True once committed."""
        with unit_of_work(self.factory) as db:
            if isinstance(event, Receipt):
                if sms.record_receipt(db, event.message_id, event.status, sms.utcnow()) is None:
                    # an SMSC may send a receipt before the submit's answer
                    # reached us: keep it a while, file it once the part is
                    self.early_receipts[event.message_id] = (event.status, time.monotonic())
                    while len(self.early_receipts) > EARLY_RECEIPTS_KEPT:
                        self.early_receipts.pop(next(iter(self.early_receipts)))
            else:
                try:
                    # stored and handled as a reply (sms_feedback), as the
                    # web form and `khhf sms inject` do
                    row = sms_feedback.receive(db, event.source, event.text, via="smsc",
                                               settings=self.settings)
                except sms.SmsError as exc:
                    # no use refusing it: the SMSC would deliver the same again
                    log.warning("delivery from %s dropped: %s", mask_phone(event.source), exc)
                    return True
                log.info("SMS %s received from %s", row.id, mask_phone(event.source))
        return True

