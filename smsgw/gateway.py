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

Grouped, not dropped: the durable writes are the same, but many messages
share each commit. One transaction records the outcomes the SMSC gave
since the last (sent, refused, lost), files the receipts that came, and
claims the next messages; up to `window` submits are in flight meanwhile,
matched to their answers by sequence number, and the commit runs in a
committer thread while the link is served. At most `hold` messages are
claimed and not yet recorded at any time (about 0.1 s of the contracted
rate, at least 1, at most HOLD_MAX): what a killed gateway leaves 'unknown'
is bounded by it. The next claim starts while half of that is still ready
to send (at least a window), so the link is kept busy while it commits. A
long message's parts go one after another (the next once the SMSC took the
previous), so a refused part stops the rest.
Receipts are acknowledged only once committed (an SMSC whose receipt was
not acknowledged delivers it again); replies are stored one by one, each
committed before its acknowledgement, as before.

A database that goes away unbinds the link (nothing can be filed); the
gateway keeps what the SMSC answered in memory, waits for the database
(DATABASE_RETRY_SECONDS between tries) instead of exiting, records it, runs
recover() again (a message whose outcome it does not know is still
'sending': it becomes 'unknown') and binds again.

Throttling: submits (parts, not messages) are spaced 1/sms_rate_per_second
apart. Bind failures and lost links are retried with backoff (0.5 s doubling
to 30 s).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from khhf.config import Settings
from khhf.db import unit_of_work
from khhf.models import SmsMessage, SmsStatus
from khhf.phones import mask_phone
from khhf.services import sms, sms_feedback
from smsgw import encoding
from smsgw.transport import Answer, Delivery, LinkLost, Receipt, Submit, SubmitRefused, Transport

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 5
RETRY_MAX_SECONDS = 600
BIND_BACKOFF_MAX = 30.0
IDLE_POLL_SECONDS = 0.5
DATABASE_RETRY_SECONDS = 2.0
# submits in flight, unanswered, when the site sets no window
WINDOW = 10
# claimed, not yet recorded: about this many seconds of the rate, at most HOLD_MAX
HOLD_SECONDS = 0.1
HOLD_MAX = 512
# an outcome or a receipt waits at most this long for its commit
FLUSH_SECONDS = 0.1
# how often the link loop looks whether the committer is done
COMMIT_POLL_SECONDS = 0.002
# how long the SMSC may take to answer one submit before its fate is unknown
SUBMIT_ANSWER_SECONDS = 10.0
# receipts whose part is not stored yet: how many, and for how long, are kept
EARLY_RECEIPTS_KEPT = 1000
EARLY_RECEIPT_SECONDS = 60
UNKNOWN_NOTE = ("the link to the SMSC was lost before it answered: not resent "
                "automatically; check with the SMSC, then `khhf sms requeue {id}`")


class Throttle:
    """At most `rate` submits a second, as evenly spaced slots."""

    # a slot this close is free: at high rates a burst fills the window
    # (slots are microseconds apart), at low ones it changes nothing
    SLACK = 0.001

    def __init__(self, rate: float, clock=time.monotonic):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock = clock
        self.next_slot = 0.0

    def delay(self) -> float:
        """Seconds until the next slot is free (0: now)."""
        wait = self.next_slot - self.clock()
        return wait if wait > self.SLACK else 0.0

    def take(self) -> None:
        """Take the next slot (free now: delay() was 0)."""
        self.next_slot = max(self.next_slot, self.clock()) + self.interval


@dataclass
class Outgoing:
    """A claimed message on its way: its parts and what the SMSC said of them."""
    sms_id: int
    attempts: int
    destination: str
    data_coding: int
    esm_class: int
    parts: list[bytes]
    message_ids: list[str] = field(default_factory=list)  # accepted parts, in order
    sent_parts: int = 0  # parts handed to the link (answered or in flight)
    # once decided: "sent", "refused" (with `refusal`) or "lost" (with `maybe_sent`)
    outcome: str | None = None
    refusal: SubmitRefused | None = None
    maybe_sent: bool = False

    @property
    def client_ref(self) -> str:
        return f"{self.sms_id}.{self.attempts}"


@dataclass
class Batch:
    """What one commit writes: outcomes, receipts, and room to claim."""
    decided: list[Outgoing]
    receipts: list[Receipt]
    early: list[tuple[str, tuple[str, float]]]
    room: int


class Gateway:
    """Sends due outbound rows through `transport` and files its arrivals."""

    def __init__(self, factory: sessionmaker[Session], transport: Transport, *,
                 source_addr: str, rate_per_second: float, max_attempts: int = 5,
                 retry_base_seconds: float = RETRY_BASE_SECONDS, window: int = WINDOW,
                 settings: Settings | None = None):
        self.factory, self.transport = factory, transport
        # the site's rules a reply is filed under (time zone, calling window)
        self.settings = settings or Settings()
        self.retry_base_seconds = retry_base_seconds
        self.source_addr, self.max_attempts = source_addr, max_attempts
        self.throttle = Throttle(rate_per_second)
        self.window = max(1, window)
        self.hold = max(1, min(HOLD_MAX, int(rate_per_second * HOLD_SECONDS)))
        # the next claim starts while this many are still ready to send, so
        # the link is not idle while it commits (half the hold, at least a
        # window: at low rates, a window as before)
        self.low_water = max(self.window, self.hold // 2)
        self.stop = threading.Event()
        self.early_receipts: dict[str, tuple[str, float]] = {}
        # claimed and not decided, by id (claim order); those with a part to send next
        self.open: dict[int, Outgoing] = {}
        self.ready: deque[Outgoing] = deque()
        self.in_flight: dict[int, tuple[Outgoing, float]] = {}  # sequence -> (message, sent at)
        # decided, or arrived, and not yet committed
        self.decided: list[Outgoing] = []
        self.receipts: list[Receipt] = []
        self.unfiled_since: float | None = None
        # the commit under way in the committer thread, while the link is
        # served: (its batch, its future); one at a time
        self.committer: ThreadPoolExecutor | None = None
        self.committing: tuple[Batch, Future] | None = None
        self.claim_after = 0.0  # monotonic: no claim before (the outbox was empty)
        # the link, as the heartbeat tells khhf.health: "bound", "not bound" or
        # "database down", since when
        self.link: tuple[str, dt.datetime] = ("not bound", sms.utcnow())

    def _link(self, state: str) -> None:
        if self.link[0] != state:
            self.link = (state, sms.utcnow())

    # the daemon's loop

    def run(self) -> None:
        """Bind, send and receive until `stop` is set; rebind when the link drops."""
        self.committer = ThreadPoolExecutor(1, thread_name_prefix="smsgw-commit")
        try:
            self._run()
        finally:
            self.committer.shutdown()
            self.committer = None

    def _run(self) -> None:
        self.recover()
        backoff = 0.5
        while not self.stop.is_set():
            try:
                if self.link[0] == "database down":
                    self.flush()  # what the SMSC answered before the database went
                    self.recover()
                self.transport.bind()
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
                    self.step()
                self._drain()
            except LinkLost as exc:
                log.warning("%s; rebinding", exc)
                self._unbound()
            except OperationalError as exc:
                self._unbound()
                self._database_down(exc)
                continue
            finally:
                if self.link[0] == "bound":
                    self._link("not bound")
                self.transport.close()
            try:
                self.flush()
            except OperationalError as exc:
                self._database_down(exc)

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

    def step(self) -> None:
        """One turn while bound: commit (and claim) when due, send what the
        window and the throttle allow, read what the SMSC sent."""
        self._settle(wait=False)
        if self.committing is None and (self._needs_more(time.monotonic())
                                        or self._flush_due(time.monotonic())):
            self._begin(claim=True)
        self._send()
        self._take(self.transport.read(self._wait(time.monotonic())))
        if self.in_flight:
            # the first in flight is the oldest (sent in order, dicts keep it)
            _, oldest = next(iter(self.in_flight.values()))
            if time.monotonic() - oldest > SUBMIT_ANSWER_SECONDS:
                raise LinkLost("the SMSC did not answer a submit")

    def _needs_more(self, now: float) -> bool:
        """Fewer ready to send than `low_water`, room to claim, and the
        outbox not found empty just now."""
        return (len(self.ready) < self.low_water and len(self.open) < self.hold
                and now >= self.claim_after)

    def _flush_due(self, now: float) -> bool:
        return self.unfiled_since is not None and now - self.unfiled_since >= FLUSH_SECONDS

    def _wait(self, now: float) -> float:
        """How long the next read may wait for the SMSC: until something is
        due (a claim, a flush, a throttle slot, the commit under way looked
        at), never 0 for what cannot be done yet (a link thread that spins
        takes the interpreter from the committer)."""
        if self.committing is None and (self._needs_more(now) or self._flush_due(now)):
            return 0.0
        waits = [IDLE_POLL_SECONDS]
        if self.claim_after > now:
            waits.append(self.claim_after - now)
        if self.ready and len(self.in_flight) < self.window:
            waits.append(self.throttle.delay())
        if self.committing is not None:
            waits.append(COMMIT_POLL_SECONDS)
        elif self.unfiled_since is not None:
            waits.append(max(0.0, self.unfiled_since + FLUSH_SECONDS - now))
        return min(waits)

    def _drain(self) -> None:
        """Stopping: send nothing more, wait for the answers in flight, and
        put back what was claimed and not sent."""
        self.ready.clear()
        deadline = time.monotonic() + SUBMIT_ANSWER_SECONDS
        while self.in_flight and time.monotonic() < deadline:
            self._take(self.transport.read(0.1))
        self._unbound()

    def _send(self) -> None:
        """Hand the ready parts to the link, as many as the window and the
        throttle allow, in one write."""
        batch: list[Outgoing] = []
        while self.ready and len(self.in_flight) + len(batch) < self.window \
                and self.throttle.delay() == 0.0:
            self.throttle.take()
            batch.append(self.ready.popleft())
        if not batch:
            return
        try:
            sequences = self.transport.send([
                Submit(o.destination, self.source_addr, o.parts[o.sent_parts], o.data_coding,
                       o.esm_class) for o in batch])
        except LinkLost as exc:
            if exc.sent:
                for o in batch:
                    o.sent_parts += 1
            raise
        now = time.monotonic()
        for o, sequence in zip(batch, sequences):
            o.sent_parts += 1
            self.in_flight[sequence] = (o, now)

    def _take(self, arrivals: list[Answer | Delivery | Receipt]) -> None:
        """Act on what the SMSC sent: answers decide, receipts wait for the
        next commit, replies are stored now."""
        for arrival in arrivals:
            if isinstance(arrival, Answer):
                got = self.in_flight.pop(arrival.sequence, None)
                if got is None:
                    log.warning("answer to no submit of ours (sequence %s) ignored",
                                arrival.sequence)
                    continue
                o = got[0]
                if arrival.status != 0:
                    self._decide(o, "refused", refusal=SubmitRefused(arrival.status))
                else:
                    o.message_ids.append(arrival.message_id)
                    if len(o.message_ids) == len(o.parts):
                        self._decide(o, "sent")
                    else:
                        self.ready.appendleft(o)  # its next part, before newer messages
            elif isinstance(arrival, Receipt):
                self.receipts.append(arrival)
                if self.unfiled_since is None:
                    self.unfiled_since = time.monotonic()
            else:
                self.transport.acknowledge([arrival.token], self.store(arrival))

    def _decide(self, o: Outgoing, outcome: str, refusal: SubmitRefused | None = None,
                maybe_sent: bool = False) -> None:
        o.outcome, o.refusal, o.maybe_sent = outcome, refusal, maybe_sent
        del self.open[o.sms_id]
        self.decided.append(o)
        if self.unfiled_since is None:
            self.unfiled_since = time.monotonic()

    def _unbound(self) -> None:
        """The link is gone (or going): what was claimed and not decided is
        decided now. Nothing of it left: back to the queue; else its fate
        is unknown. Receipts not yet acknowledged are filed all the same
        (the SMSC may deliver them again: filing one twice is harmless)."""
        try:
            self._settle(wait=True)
        except OperationalError:
            pass  # its batch is back in decided: recorded when the database is
        self.ready.clear()
        self.in_flight.clear()
        for o in list(self.open.values()):
            self._decide(o, "lost", maybe_sent=o.sent_parts > 0)
        now = time.monotonic()
        for r in self.receipts:
            self.early_receipts[r.message_id] = (r.status, now)
        self.receipts = []

    # the grouped commit

    def flush(self, claim: bool = False) -> None:
        """Commit what is decided and arrived (and claim, if `claim`), now."""
        self._settle(wait=True)
        self._begin(claim)
        self._settle(wait=True)

    def _begin(self, claim: bool) -> None:
        """Hand what is decided and arrived to the committer thread (and
        room to claim, if `claim`); the link is served meanwhile."""
        batch = Batch(self.decided, self.receipts, list(self.early_receipts.items()),
                      self.hold - len(self.open) if claim and time.monotonic() >= self.claim_after
                      else 0)
        self.decided, self.receipts, self.unfiled_since = [], [], None
        if self.committer is None:
            future: Future = Future()
            try:
                future.set_result(self._commit(batch))
            except Exception as exc:
                future.set_exception(exc)
        else:
            future = self.committer.submit(self._commit, batch)
        self.committing = (batch, future)

    def _commit(self, batch: Batch) -> tuple[list[Outgoing], int, set[str]]:
        """One transaction: record the decided outcomes, file the receipts
        that came (and those that came early), and claim up to `room` next
        messages. The claimed, how many were due, the receipts filed."""
        claimed: list[Outgoing] = []
        got = 0
        now = sms.utcnow()
        with unit_of_work(self.factory) as db:
            if batch.decided:
                self._record(db, batch.decided, now)
            filed: set[str] = set()
            if batch.receipts or batch.early:
                filed = sms.record_receipts(
                    db, [(r.message_id, r.status) for r in batch.receipts]
                    + [(message_id, status) for message_id, (status, _) in batch.early], now)
            if batch.room > 0:
                claimed, got = self._claim(db, batch.room, now)
        return claimed, got, filed

    def _settle(self, wait: bool) -> None:
        """Take the committer's result (waiting for it if `wait`): the claimed
        join the queue, receipts are acknowledged. Not committed: its batch
        is kept for the next commit, and the error raised."""
        if self.committing is None:
            return
        batch, future = self.committing
        if not wait and not future.done():
            return
        self.committing = None
        try:
            claimed, got, filed = future.result()
        except BaseException:
            self.decided = batch.decided + self.decided
            self.receipts = batch.receipts + self.receipts
            if self.decided or self.receipts:
                self.unfiled_since = time.monotonic()
            raise
        if batch.room > 0 and got < batch.room:
            # fewer than asked for: the outbox is empty for now
            self.claim_after = time.monotonic() + IDLE_POLL_SECONDS
        for o in claimed:
            self.open[o.sms_id] = o
            self.ready.append(o)
        self._keep_early(batch.receipts, batch.early, filed)
        if batch.receipts:
            try:
                self.transport.acknowledge([r.token for r in batch.receipts], True)
            except LinkLost:
                pass  # filed all the same; the SMSC may deliver them again, harmlessly
        for o in batch.decided:
            if o.outcome == "sent":
                log.info("SMS %s sent to %s in %d part(s)", o.sms_id,
                         mask_phone(o.destination), len(o.parts))

    def _claim(self, db: Session, room: int, now: dt.datetime) -> tuple[list[Outgoing], int]:
        """Claim up to `room` due messages: the claimed, and how many were due."""
        due = sms.due(db, now, room)
        encoded = {}
        for sms_id, body, peer_number in due:
            try:
                encoded[sms_id] = (peer_number, encoding.split(body, sms_id))
            except ValueError as exc:  # longer than 255 parts: no phone can show it
                row = db.get_one(SmsMessage, sms_id)
                sms.move(row, "unsendable", SmsStatus.FAILED)
                row.error = str(exc)
        taken = sms.claim(db, {sms_id: len(parts) for sms_id, (_, (_, _, parts))
                               in encoded.items()})
        return [Outgoing(sms_id, attempt, peer_number, data_coding, esm_class, parts)
                for sms_id, (peer_number, (data_coding, esm_class, parts)) in encoded.items()
                if (attempt := taken.get(sms_id)) is not None], len(due)

    def _record(self, db: Session, decided: list[Outgoing], now: dt.datetime) -> None:
        """Write the outcomes of `decided`, the common one (sent) in a few
        statements for all. A row no longer 'sending' under this attempt
        (written already, by a commit whose answer was lost) is left."""
        sms.submitted(db, {o.sms_id: (o.client_ref, o.message_ids) for o in decided
                           if o.outcome == "sent"}, now)
        others = [o for o in decided if o.outcome != "sent"]
        rows = {r.id: r for r in db.scalars(
            select(SmsMessage).where(SmsMessage.id.in_([o.sms_id for o in others]),
                                     SmsMessage.status == SmsStatus.SENDING))} if others else {}
        others = [o for o in others if o.sms_id in rows
                  and rows[o.sms_id].client_ref == o.client_ref]
        sms.store_parts(db, {o.sms_id: o.message_ids for o in others})
        for o in others:
            row = rows[o.sms_id]
            if o.message_ids:
                row.smpp_message_id = o.message_ids[0]
            if o.outcome == "refused":
                assert o.refusal is not None
                self._refused(row, o, o.refusal, now)
            elif not o.maybe_sent:
                # nothing reached the SMSC: as if never tried
                sms.move(row, "link_lost", SmsStatus.QUEUED)
                row.attempts, row.client_ref = row.attempts - 1, None
            else:
                sms.move(row, "link_lost", SmsStatus.UNKNOWN)
                row.error = UNKNOWN_NOTE.format(id=o.sms_id)
                log.warning("SMS %s: outcome unknown: not resent", o.sms_id)

    def _refused(self, row: SmsMessage, o: Outgoing, exc: SubmitRefused,
                 now: dt.datetime) -> None:
        row.error = str(exc)
        if o.message_ids:
            # part of a long message is on the phone already: resending repeats it
            sms.move(row, "refused", SmsStatus.UNKNOWN)
        elif exc.temporary and o.attempts < self.max_attempts:
            delay = min(self.retry_base_seconds * 2 ** (o.attempts - 1), RETRY_MAX_SECONDS)
            sms.move(row, "refused", SmsStatus.QUEUED)
            row.next_attempt_at = now + dt.timedelta(seconds=delay)
        else:
            sms.move(row, "refused", SmsStatus.FAILED)
        log.warning("SMS %s: %s", o.sms_id, exc)

    def _keep_early(self, receipts: list[Receipt], early: list[tuple[str, tuple[str, float]]],
                    filed: set[str]) -> None:
        """Receipts that came before their part was stored (an SMSC may send
        one before the submit's answer) are kept a while and filed once it
        is; those older than EARLY_RECEIPT_SECONDS are dropped (for no
        message of ours)."""
        now = time.monotonic()
        for message_id, (_, at) in early:
            if message_id in filed or now - at > EARLY_RECEIPT_SECONDS:
                if message_id not in filed:
                    log.info("receipt for unknown message id %s ignored", message_id)
                self.early_receipts.pop(message_id, None)
        for r in receipts:
            if r.message_id not in filed:
                self.early_receipts[r.message_id] = (r.status, now)
        while len(self.early_receipts) > EARLY_RECEIPTS_KEPT:
            self.early_receipts.pop(next(iter(self.early_receipts)))

    # what the SMSC delivers

    def store(self, event: Delivery) -> bool:
        """File a reply (a mobile's message); True once committed (then the
        SMSC gets its acknowledgement)."""
        try:
            with unit_of_work(self.factory) as db:
                try:
                    # stored and handled as a reply (sms_feedback), as the
                    # web form and `khhf sms inject` do
                    row = sms_feedback.receive(db, event.source, event.text, via="smsc",
                                               settings=self.settings)
                except sms.SmsError as exc:
                    # no use refusing it: the SMSC would deliver the same again
                    log.warning("delivery from %s dropped: %s", mask_phone(event.source), exc)
                    return True
        except OperationalError:
            raise
        except Exception:
            log.exception("could not store what the SMSC delivered; it will deliver again")
            return False
        log.info("SMS %s received from %s", row.id, mask_phone(event.source))
        return True
