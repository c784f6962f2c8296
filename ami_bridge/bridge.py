"""The AMI bridge daemon: call events from Asterisk into the database.

- One AMI connection (amiclient, over panoramisk), re-established with
  back-off; Asterisk sends only the events we ask for (manager.conf
  eventfilter).
- Callbacks only queue events; one consumer takes them in order, in
  batches, and writes each batch in one unit of work: raw events first
  (de-duplicated), then each touched call row recomputed from its events
  (store.recompute_batch, rows written without the ORM, one statement per
  set of changed columns): the facts of calls in progress are kept in memory
  (store.LiveFacts) and only the new events folded into them; a call not
  kept, or whose stored events are not exactly those folded, is folded again
  from all its stored events. The unit of work runs in a writer process of
  the bridge's own (writer.py), so parsing and writing use two cores; a
  batch stays held until the writer says it is committed.
- A reconciler reads the CEL file Asterisk writes itself, on every
  (re)connect and every `reconcile_seconds` (APScheduler): calls whose AMI
  events were missed while the bridge was down are completed from it.
- A local command channel (commands.py) takes click-to-dial requests.

It records calls; it does not provision phones (`khhf pbx sync`, run by the
PBX's owner, adds new managers' desk phones).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import math
import time

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import bindparam, func, select, update

from amiclient import AmiAuthError, AmiClient, AmiError, shutting_down
from khhf import db
from khhf.calls import events, inbound, store
from khhf.calls.states import FINAL_STATES, CallState, RecordingStatus
from khhf.channel_vars import TRUNK_ENDPOINT
from khhf.config import Settings
from khhf.models import Call, CallEvent, utcnow
from khhf.services import accounts, dialing, nodes

from .backlog import Backlog
from .cel_reader import CelReader
from .writer import Applier, WriterFailed, WriterProcess, WriterUnavailable

log = logging.getLogger(__name__)
# the trunk qualify result the bridge reads besides the call events (manager.conf)
TRUNK_STATUS_EVENT = "ContactStatus"
# events written in one unit of work at most: a batch fills only when events
# wait (a burst, a backlog), and then per-batch work is shared by more events
BATCH = 2000
APPLY_ATTEMPTS = 5  # a batch that fails for another reason than the database's absence
# while the database cannot take events, try again this often
DOWN_RETRY_SECONDS = 1.0
# CEL rows stored in one unit of work by the reconciler
RECONCILE_CHUNK = 100
# a call still 'requested' this long after the manager's ring time was never placed
NOT_PLACED_GRACE = dt.timedelta(seconds=30)
# an open call with no channel and no event for this long has vanished
VANISHED_AFTER = dt.timedelta(seconds=15)
# a recording short of its talk time is judged partial (or missing) only this
# long after its call ended: until then MixMonitor may still be closing it
RECORDING_SETTLE = dt.timedelta(seconds=5)


class Bridge:
    def __init__(self, settings: Settings, engine=None, state_dir=None,
                 writer_process: bool = True):
        self.settings = settings
        self.engine = engine or db.open_database(settings)
        self.sessions = db.session_factory(self.engine)
        # the batches' unit of work; run() hands the batches to a writer
        # process running the same (ami_bridge/writer.py) unless told not to
        self.applier = Applier(settings, db.session_factory(self.engine, urgent=True))
        self.writer = WriterProcess(
            settings, self.engine.url.render_as_string(hide_password=False)) \
            if writer_process else None
        self.client: AmiClient | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        state_dir = state_dir or settings.home / "bridge"
        self.cel = CelReader(settings.pbx_dir / "log" / "cel-custom" / "khhf-cel.csv",
                             state_dir / f"cel-offset-{settings.pbx_name}.json")
        # events the database could not take yet (ami_bridge/backlog.py)
        self.backlog = Backlog(state_dir / f"held-events-{settings.pbx_name}.jsonl")
        self.database_down = asyncio.Event()
        self._down_logged = 0.0
        self.connected = asyncio.Event()
        self.events_applied = 0
        # for khhf.health: when the batch being stored began at Asterisk (None:
        # nothing waits), and when the newest stored event happened
        self._applying_since: float | None = None
        self.last_event_at: float | None = None
        # what the lag is made of, since the last heartbeat: how late events
        # came from Asterisk (its Timestamp to our socket: Asterisk's and the
        # host's part), and the longest batch write (ours and the database's)
        self._ami_delay = 0.0
        self._batch_seconds = 0.0
        # the lag itself, since the last heartbeat: each stored event's time
        # from Asterisk (its Timestamp) to its batch committed, counted in
        # steps of 0.1 s (rounded up)
        self._commit_lags: collections.Counter[float] = collections.Counter()
        self._reconcile_lock = asyncio.Lock()
        # behind the edge: since when the node's beats have been written without a break
        self._writing_since: dt.datetime | None = None
        # Asterisk answered "shutting down" (`core restart|stop gracefully`): it
        # refuses new calls until it is back; the calls in progress go on
        self.pbx_shutting_down = False
        # the trunk's contact status from the PBX's qualify (ContactStatus
        # events: Reachable, Unreachable, ...); None until one came on this
        # connection: unknown is not "down" (the first qualify of a freshly
        # started PBX comes at a random moment within its interval)
        self.trunk_contact: str | None = None
        # after a (re)connect, live events wait until the reconciler has stored
        # what the CEL record says happened while the bridge was away: applied
        # first, a live hang-up would end (for a moment) a call whose answer
        # only CEL knows, and move its task as if nobody had answered
        self.caught_up = asyncio.Event()
        self.caught_up.set()

    # -- the AMI connection ----------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set: writer, connection, consumer, reconciler."""
        # the writer starts beside the AMI log-in; the first batch waits for it
        starting = asyncio.create_task(self._start_writer())
        consumer = asyncio.create_task(self._consume())
        # a pass still running when the next is due is skipped (max_instances=1):
        # that is the design, not a warning for the log
        logging.getLogger("apscheduler.executors.default").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        scheduler = AsyncIOScheduler()
        scheduler.add_job(self.reconcile, "interval", seconds=self.settings.reconcile_seconds,
                          max_instances=1, coalesce=True)
        scheduler.start()
        # behind the SIP edge: the node's row in the registry, and the lost nodes' calls
        beating = asyncio.create_task(self._keep_node()) if nodes.in_cluster(self.settings) \
            else None
        backoff = 0.5
        try:
            while not stop.is_set():
                s = self.settings
                client = AmiClient(s.ami_host, s.ami_port, s.ami_user, s.require("ami_secret"),
                                   event_mask="on")
                try:
                    await client.connect()
                except AmiAuthError as exc:
                    log.error("%s", exc)
                    backoff = 30.0
                except AmiError as exc:
                    log.warning("AMI not reachable, retrying in %.1f s: %s", backoff, exc)
                else:
                    backoff = 0.5
                    self.pbx_shutting_down = False  # a login succeeds only when it is not
                    self.client = client
                    self.trunk_contact = None
                    self.connected.set()
                    log.info("AMI connected to %s:%s", s.ami_host, s.ami_port)
                    self.caught_up.clear()
                    forward = asyncio.create_task(self._forward(client))
                    try:
                        await self.reconcile()  # whatever happened while we were away
                    finally:
                        self.caught_up.set()
                    await _first(client.lost.wait(), stop.wait())
                    forward.cancel()
                    self.connected.clear()
                    self.client = None
                    client.close()
                    if not stop.is_set():
                        log.warning("AMI connection lost; reconnecting")
                    continue
                await _first(asyncio.sleep(backoff), stop.wait())
                backoff = min(backoff * 2, 30.0)
        finally:
            if beating is not None:
                beating.cancel()
            scheduler.shutdown(wait=False)
            await self.queue.join()
            while self.backlog and not self.database_down.is_set():
                await asyncio.sleep(0.05)  # store what is held, unless the database is away
            consumer.cancel()
            # what the database could not take yet waits in the file for the next start
            self.backlog.spill()
            await starting
            if self.writer is not None:
                await asyncio.to_thread(self.writer.stop)

    async def _start_writer(self) -> None:
        if self.writer is None:
            return
        try:
            await asyncio.to_thread(self.writer.start)
        except (OSError, WriterFailed) as exc:
            log.warning("no writer process (%s): call events are written in the bridge's "
                        "own process", exc)
            self.writer = None

    async def _forward(self, client: AmiClient) -> None:
        while True:
            event = dict((await client.events.get()).items())
            if event.get("Event") == TRUNK_STATUS_EVENT and event.get("AOR") == TRUNK_ENDPOINT:
                # the trunk's qualify result: kept for the heartbeat, not a call's event
                self.trunk_contact = event.get("ContactStatus")
                continue
            self._ami_delay = max(self._ami_delay, time.time() - _timestamp(event))
            self.queue.put_nowait(event)

    # -- the one consumer ----------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            if not self.backlog:
                self._hold([await self.queue.get()])
            # after a (re)connect, nothing is stored before the CEL catch-up
            await self.caught_up.wait()
            self._hold([])
            batch = self.backlog.peek(BATCH)
            stamps = [_timestamp(event) for event in batch]
            self._applying_since = min(stamps)
            began = time.monotonic()
            stored = await self._store(batch)
            took = time.monotonic() - began
            self._batch_seconds = max(self._batch_seconds, took)
            if stored:
                committed = time.time()
                self._commit_lags.update(math.ceil((committed - t) * 10) / 10 for t in stamps)
                log.debug("stored %d events in %.3f s; the oldest %.3f s after Asterisk sent "
                          "it, %d waiting", len(batch), took, committed - min(stamps),
                          len(self.backlog) - len(batch))
                self.backlog.drop()
                self.last_event_at = max(stamps)
                if not self.backlog:
                    self._applying_since = None
                    self.database_down.clear()
            else:
                await asyncio.sleep(DOWN_RETRY_SECONDS)

    def _hold(self, events: list[dict]) -> None:
        """Move `events` and every queued event into the backlog, in order."""
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        self.backlog.add(events)
        for _ in events:
            self.queue.task_done()

    async def _store(self, batch: list[dict]) -> bool:
        """Write `batch`; False when the database cannot take it now (the
        events stay held and are tried again). A batch that fails for any
        other reason is retried a few times, then dropped: the CEL
        reconciler completes those calls."""
        for attempt in range(APPLY_ATTEMPTS):
            try:
                await asyncio.to_thread(self._apply, batch)
            except Exception as exc:
                if isinstance(exc, WriterUnavailable) or db.is_unavailable(exc):
                    self._database_unavailable(exc)
                    return False
                if attempt == APPLY_ATTEMPTS - 1:
                    log.exception("dropped %d AMI events after %d attempts", len(batch),
                                  APPLY_ATTEMPTS)
                    return True
                log.warning("applying %d AMI events failed; retrying", len(batch), exc_info=True)
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            if self.database_down.is_set() and len(self.backlog) <= len(batch):
                log.info("the database is back: the held AMI events are stored")
            return True
        raise AssertionError("not reached")

    def _database_unavailable(self, exc: Exception) -> None:
        """Say once (then every minute) that events are being held."""
        now = time.monotonic()
        if not self.database_down.is_set() or now - self._down_logged > 60:
            self._down_logged = now
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0:1]
            log.warning("the database is unavailable (%s): call events are held until it is "
                        "back (%d now, %d of them in %s)", reason[0] if reason else "?",
                        len(self.backlog), self.backlog.spilled, self.backlog.path)
        self.database_down.set()

    def apply_ami(self, events: list[dict]) -> set[int]:
        """Store a batch of AMI events in this process (writer.Applier)."""
        changed = self.applier.apply_ami(events)
        self.events_applied += len(events)
        return changed

    def _apply(self, batch: list[dict]) -> None:
        """Store a batch through the writer process, else in this process."""
        if self.writer is None:
            self.apply_ami(batch)
            return
        self.writer.apply(batch)
        self.events_applied += len(batch)

    @property
    def live(self) -> store.LiveFacts:
        """The facts kept of calls in progress by this process's Applier
        (the writer process keeps its own)."""
        return self.applier.live

    # -- the node's beat in the cluster (khhf.services.nodes) ---------------------------
    async def _keep_node(self) -> None:
        """Every nodes.BEAT_SECONDS: the node's beat while the bridge is logged
        in to its Asterisk (its live calls: the load click-to-dial weighs), and
        the sweep of nodes lost meanwhile. A database that is away skips a beat."""
        while True:
            live = await self.live_linkedids() if self.client is not None else None
            try:
                await asyncio.to_thread(self.beat_node, live)
            except Exception as exc:
                self._writing_since = None
                if not db.is_unavailable(exc):
                    log.exception("the node's beat failed")
            await asyncio.sleep(nodes.BEAT_SECONDS)

    def beat_node(self, live: set[str] | None, now: dt.datetime | None = None) -> dict[str, int]:
        """One beat (`live`: the linkedids the PBX has now; None: it is not
        up, so no beat), then the sweep; {lost node: calls closed}. The
        sweep waits until this bridge has written for nodes.LOST_AFTER
        without a break: just started, or back from a database outage, the
        other nodes' bridges may not have had their chance to beat either.
        Both in one unit of work (a failed commit is a failed beat: the
        caller starts the wait again)."""
        now = now or utcnow()
        with db.unit_of_work(self.sessions) as session:
            if live is not None:
                nodes.beat(session, self.settings, len(live), not self.pbx_shutting_down, now)
            self._writing_since = self._writing_since or now
            if now - self._writing_since < nodes.LOST_AFTER:
                return {}
            return nodes.sweep_lost(session, self.settings.pbx_name, now)

    # -- what khhf.health reads (its heartbeat) -----------------------------------------
    async def health_state(self) -> dict:
        """The bridge's heartbeat state: logged in to the AMI, whether Asterisk
        is shutting down, how far behind Asterisk the stored events are, the
        desk phones registered, the trunk's contact status."""
        since = self._applying_since
        parts = {"ami_delay_seconds": round(self._ami_delay, 3),
                 "batch_seconds": round(self._batch_seconds, 3),
                 # {seconds, rounded up to 0.1: events stored that long after Asterisk}
                 "stored_after": {f"{lag:.1f}": n for lag, n in sorted(self._commit_lags.items())}}
        self._ami_delay = self._batch_seconds = 0.0
        self._commit_lags.clear()
        return {"ami": self.client is not None,
                "pbx_shutting_down": self.pbx_shutting_down,
                "lag_seconds": 0.0 if since is None else max(0.0, time.time() - since),
                # since the last beat, the two parts of the lag (see __init__)
                **parts,
                "queued": self.queue.qsize() + len(self.backlog),
                "held_on_disk": self.backlog.spilled,
                "last_event_at": None if self.last_event_at is None else
                _iso(self.last_event_at),
                "desk_phones": await self.desk_phones(),
                "trunk": self.trunk_contact if self.client is not None else None}

    async def desk_phones(self) -> list[int] | None:
        """[registered, rendered] desk phones: Asterisk's device state of each
        active desk extension (AMI Getvar DEVICE_STATE, which the bridge's
        read-only AMI user may ask; PJSIPShowContacts needs 'system'), or
        None when the PBX or the database cannot say."""
        client = self.client
        if client is None:
            return None
        try:
            extensions = await asyncio.to_thread(self._desk_extensions)
            answers = await asyncio.gather(*(
                client.action({"Action": "Getvar", "Variable": f"DEVICE_STATE(PJSIP/{ext})"},
                              timeout=5) for ext in extensions))
        except Exception:  # the PBX or the database went away: no number, no noise
            return None
        registered = sum(1 for a in answers if not isinstance(a, list)
                         and a.get("Value") not in (None, "", "UNAVAILABLE", "UNKNOWN",
                                                    "INVALID"))
        return [registered, len(extensions)]

    def _desk_extensions(self) -> list[str]:
        with self.sessions() as session:
            return accounts.active_desk_extensions(session)

    # -- the reconciler --------------------------------------------------------------
    async def reconcile(self) -> set[int]:
        async with self._reconcile_lock:
            live = await self.live_linkedids()
            try:
                changed = await asyncio.to_thread(self.reconcile_once, None, live)
            except Exception as exc:
                if not db.is_unavailable(exc):
                    raise
                # the CEL offset was not moved: the next pass reads those rows again
                self._database_unavailable(exc)
                return set()
            if not self.backlog:
                self.database_down.clear()
            return changed

    async def channel_snapshot(self) -> list[dict] | None:
        """The channels Asterisk has right now (a CoreShowChannels snapshot),
        each {channel, endpoint, linkedid, state, seconds, application}, or
        None when the AMI is not there. No application data: it holds
        customers' numbers."""
        client = self.client
        if client is None:
            return None
        try:
            answer = await client.action({"Action": "CoreShowChannels"}, timeout=5)
        except (asyncio.TimeoutError, ConnectionError):
            return None
        self.note_shutdown(answer)
        messages = answer if isinstance(answer, list) else [answer]
        if not messages or not messages[0].success:
            return None
        return [{"channel": m.get("Channel", ""),
                 "endpoint": events.endpoint_of(m.get("Channel", "")),
                 "linkedid": m.get("Linkedid"), "state": m.get("ChannelStateDesc", ""),
                 "seconds": _seconds(m.get("Duration", "")),
                 "application": m.get("Application", "")}
                for m in messages if m.get("Event") == "CoreShowChannel"]

    def note_shutdown(self, answer) -> bool:
        """Note from an action's answer whether Asterisk is shutting down
        (any action answers so then; any other answer means it is not)."""
        self.pbx_shutting_down = shutting_down(answer)
        return self.pbx_shutting_down

    async def live_channels(self) -> tuple[set[str], set[str]] | None:
        """(linkedids, PJSIP endpoints) of the channels Asterisk has right now
        (a CoreShowChannels snapshot), or None when the AMI is not there."""
        channels = await self.channel_snapshot()
        if channels is None:
            return None
        return ({c["linkedid"] for c in channels}, {c["endpoint"] for c in channels} - {None})

    async def live_linkedids(self) -> set[str] | None:
        """The linkedids of the calls Asterisk has channels for right now."""
        snapshot = await self.live_channels()
        return None if snapshot is None else snapshot[0]

    def reconcile_once(self, now: dt.datetime | None = None,
                       live: set[str] | None = None) -> set[int]:
        """Complete call rows from the CEL record; finish recordings; close
        calls that were never placed, and (given a channel snapshot `live`)
        calls whose channels are gone with no record of their end."""
        now = now or utcnow()
        rows, commit = self.cel.read_new()
        changed: set[int] = set()
        # in short units of work, so the live batches (which go first at
        # SQLite's lock) wait for one chunk, not for the pass; a pass cut
        # short leaves the offset, and the next stores only what is missing
        for chunk in _by_call(rows, RECONCILE_CHUNK):
            raws = [r for r in map(store.raw_from_cel, chunk) if r is not None]
            with db.unit_of_work(self.sessions) as session:
                stored = store.store_events(session, raws)
                self.applier.recompute(session, dict.fromkeys(stored))
                self.applier.complete_inbound(
                    session, [e for e in map(inbound.from_cel, chunk) if e])
            changed |= stored
        with db.unit_of_work(self.sessions) as session:
            horizon = now - dt.timedelta(seconds=self.settings.manager_ring_seconds) - NOT_PLACED_GRACE
            for call in session.scalars(select(Call).where(
                    Call.direction == "outbound", Call.state == CallState.REQUESTED,
                    Call.pbx_node == self.settings.pbx_name,
                    Call.requested_at < horizon)):
                if not store.facts_for(session, call.id).started:
                    dialing.mark_not_placed(session, call, now)
                    changed.add(call.id)
            if live is not None:
                changed |= self._close_vanished(session, live, now)
            pending = self._unjudged_recordings(session)
        commit()
        changed |= self.fill_recordings(pending=pending)
        return changed

    def fill_recordings(self, now: dt.datetime | None = None,
                        pending: list | None = None) -> set[int]:
        """Judge finished calls' recordings from their files: size, length,
        checksum, and complete, partial or missing (never a silent half
        file: a disk that filled mid-call leaves a short file, and the row
        says so). A file that is not yet whole is judged again later, until
        RECORDING_SETTLE after the call ended. The files are read outside
        any transaction, so hashing hundreds of them never holds the
        database's write lock. `pending`: _unjudged_recordings, when the
        caller read them (the reconciler, in its unit of work)."""
        now = now or utcnow()
        if pending is None:
            with self.sessions() as session:
                pending = self._unjudged_recordings(session)
        judged = {}
        for call_id, path, talk_seconds, end_at in pending:
            stats = store.recording_stats(self.settings.recordings_dir / path)
            status = store.recording_status(talk_seconds, stats)
            if status == RecordingStatus.COMPLETE or end_at is None \
                    or now - end_at >= RECORDING_SETTLE:
                judged[call_id] = (status, stats)
        if judged:
            # one statement for them all (the driver's executemany), each
            # row only while it still has a recording not yet judged
            with db.unit_of_work(self.sessions) as session:
                session.connection().execute(_JUDGE_RECORDING, [
                    {"call_id": call_id, "status": status, "seconds": stats and stats[0],
                     "size": stats and stats[1], "sha256": stats and stats[2]}
                    for call_id, (status, stats) in judged.items()])
            talked = {call_id: talk for call_id, _, talk, _ in pending}
            for call_id, (status, stats) in judged.items():
                if status != RecordingStatus.COMPLETE:
                    log.warning("call %s: recording %s (%s s of %s s talk): is the "
                                "recordings disk full?", call_id, status,
                                stats[0] if stats else 0, talked[call_id])
        return set(judged)

    def _unjudged_recordings(self, session) -> list:
        """(id, recording path, talk seconds, end) of the finished calls whose
        recordings are not judged yet. Behind the edge, only this node's: a
        recording stays on the node that recorded it, and another node's
        bridge would find no file and call it missing."""
        mine = [Call.pbx_node == self.settings.pbx_name] if nodes.in_cluster(self.settings) \
            else []
        return list(session.execute(select(
            Call.id, Call.recording_path, Call.talk_seconds, Call.end_at).where(
            Call.state.in_(FINAL_STATES), Call.recording_path.is_not(None),
            Call.recording_status.is_(None), Call.recording_deleted_at.is_(None),
            *mine)).all())

    def _close_vanished(self, session, live: set[str], now: dt.datetime) -> set[int]:
        """Open calls with no live channel and no event for a while: Asterisk
        lost them (a crash or restart) before writing their end. Close them
        as 'lost' at their last known moment, so no manager stays "on a call"."""
        quiet = now - VANISHED_AFTER
        closed = set()
        for call in session.scalars(select(Call).where(
                Call.direction == "outbound", Call.pbx_node == self.settings.pbx_name,
                Call.state.not_in(FINAL_STATES | {CallState.REQUESTED}),
                Call.requested_at < quiet)):
            if call.linkedid in live:
                continue
            last = session.scalar(select(func.max(CallEvent.event_at))
                                  .where(CallEvent.call_id == call.id)) or call.requested_at
            if last >= quiet:
                continue
            store.record(session, call, events.LOST, last)
            log.warning("call %s vanished from Asterisk without a recorded end; closed as lost",
                        call.id)
            closed.add(call.id)
        return closed


# fill_recordings' write of one call's recording judged from its file
_JUDGE_RECORDING = update(Call).where(
    Call.id == bindparam("call_id"), Call.recording_path.is_not(None),
    Call.recording_status.is_(None)).values(
    recording_status=bindparam("status"), recording_seconds=bindparam("seconds"),
    recording_bytes=bindparam("size"), recording_sha256=bindparam("sha256"))


def _by_call(rows: list[dict], size: int) -> list[list[dict]]:
    """CEL `rows` in chunks of about `size`, each call's rows (by linkedid,
    in their order) all in one chunk: a chunk stored alone never shows a
    call half-ended."""
    calls: dict[str, list[dict]] = {}
    for row in rows:
        calls.setdefault(row.get("linkedid") or "", []).append(row)
    chunks: list[list[dict]] = [[]]
    for call_rows in calls.values():
        if chunks[-1] and len(chunks[-1]) + len(call_rows) > size:
            chunks.append([])
        chunks[-1].extend(call_rows)
    return [c for c in chunks if c]


def _timestamp(event: dict) -> float:
    """When Asterisk sent `event` (manager.conf timestampevents), else now."""
    try:
        return float(event.get("Timestamp"))
    except (TypeError, ValueError):
        return time.time()


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(duration: str) -> int:
    """CoreShowChannel's Duration 'HH:MM:SS' -> seconds (0 if unreadable)."""
    try:
        hours, minutes, seconds = (int(part) for part in duration.split(":"))
    except ValueError:
        return 0
    return hours * 3600 + minutes * 60 + seconds


async def _first(*aws) -> None:
    """Wait until the first of `aws` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
