"""Call rows from their events: raw events stored once (idempotent), and
each call row computed by folding every event stored for it (facts.reduce),
so nothing depends on memory that a restart would lose. A long-running
writer (the AMI bridge) may keep the folded facts of calls in progress
(`LiveFacts`) and fold only the new events: a shortcut it takes only when
the database holds exactly what it folded, else it reads the events again.

The one place a call's state and outcome are decided: the AMI bridge feeds
AMI and CEL events here; a call that never rang ("not placed": the web UI
when the bridge refused it, the bridge's sweep) or that Asterisk lost is
recorded as an event of KHHF's own (`record`) and folded like the rest, so
whichever writer comes first, the fold gives one answer. The task follows
its call through the task state machine (khhf.services.tasks).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import operator
import wave
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from khhf import db, webhooks
from khhf.models import Call, CallEvent, Task, TaskStatus, utcnow
from khhf.services import outcomes, tasks

from . import events as ev
from .facts import CallFacts, LegEvent, reduce, reduce_all, summarize
from .states import FINAL_STATES, RECORDING_TOLERANCE_S, RecordingStatus

# the call row's columns that its events alone decide (facts.summarize)
DERIVED = ("state", "ring_at", "answer_at", "end_at", "outcome", "hangup_cause", "sip_code",
           "talk_seconds", "hangup_by")
INSERT_CHUNK = 100  # rows per SQLite INSERT: 8 columns each, under its variable limit
# calls whose facts LiveFacts keeps at most (the least recently touched go first)
LIVE_CALLS = 20_000
# the header MixMonitor's WAV files (and Python's) start with: the audio follows it
WAV_HEADER_BYTES = 44


@dataclass(frozen=True)
class RawEvent:
    source: str          # "ami" or "cel"
    dedup_key: str
    name: str
    uniqueid: str | None
    linkedid: str        # the call row's linkedid
    at: dt.datetime
    payload: dict
    legs: tuple[LegEvent, ...] = field(default=(), compare=False)  # what it says, parsed


def raw_from_ami(event: dict) -> RawEvent | None:
    linkedid = event.get("Linkedid") or event.get("Uniqueid")
    if not ev.is_ours(linkedid):
        return None
    legs = ev.from_ami(event)
    if not legs:
        return None
    return RawEvent("ami", ev.ami_dedup_key(event), event.get("Event", ""), event.get("Uniqueid"),
                    linkedid, legs[0].at, event, tuple(legs))


def raw_from_cel(row: dict) -> RawEvent | None:
    linkedid = row.get("linkedid")
    legs = ev.from_cel(row)
    if not ev.is_ours(linkedid) or not legs:
        return None
    return RawEvent("cel", ev.cel_dedup_key(row), row.get("eventtype", ""), row.get("uniqueid"),
                    linkedid, legs[0].at, row, tuple(legs))


@dataclass(frozen=True)
class StoredEvent:
    """A raw event this transaction stored: new, not seen before."""
    raw: RawEvent
    call_id: int
    id: int

    @property
    def order(self) -> tuple[dt.datetime, int]:
        return self.raw.at, self.id  # the fold's order (facts_for)


# an event's stored payload: its headers as JSON, in the order they came
# (one encoder for all; sorting them cost 30 % of the encoding)
_payload = json.JSONEncoder(ensure_ascii=False).encode
# the columns of a stored event, in the order insert_events sends them
_EVENT_COLUMNS = ("dedup_key", "source", "event", "uniqueid", "linkedid", "call_id",
                  "event_at", "payload")
_INSERT_TAIL = "ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key"
# PostgreSQL: the batch's columns as one array each (a short statement,
# whatever the row count, that psycopg prepares and caches once), each
# event's call found by its linkedid in the same statement (an event of no
# outbound call is not stored)
_PG_COLUMNS = tuple(c for c in _EVENT_COLUMNS if c != "call_id")
_PG_INSERT = (
    f"INSERT INTO {CallEvent.__tablename__} ({', '.join(_EVENT_COLUMNS)}) "
    f"SELECT {', '.join('c.id' if c == 'call_id' else f'v.{c}' for c in _EVENT_COLUMNS)} "
    "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
    f"%b::timestamp[], %b::text[]) AS v({', '.join(_PG_COLUMNS)}) "
    f"JOIN {Call.__tablename__} c ON c.linkedid = v.linkedid AND c.direction = 'outbound' "
    f"{_INSERT_TAIL}, call_id")
_SQLITE_INSERTS: dict[int, str] = {}


def _sqlite_insert(rows: int) -> str:
    """SQLite: one INSERT of `rows` rows of values (text built once per count)."""
    sql = _SQLITE_INSERTS.get(rows)
    if sql is None:
        row = "(" + ", ".join("?" * len(_EVENT_COLUMNS)) + ")"
        sql = _SQLITE_INSERTS[rows] = (
            f"INSERT INTO {CallEvent.__tablename__} ({', '.join(_EVENT_COLUMNS)}) "
            f"VALUES {', '.join([row] * rows)} {_INSERT_TAIL}")
    return sql


def _insert_rows(session: Session, rows: list[tuple]) -> list[tuple[int, str]]:
    """SQLite: insert call events given as tuples of _EVENT_COLUMNS,
    skipping any whose dedup_key is stored (whoever stored it); (id,
    dedup_key) of each new one. The rows go to the driver in one statement
    per page, with no per-row work in SQLAlchemy: a batch of the AMI stream
    costs the bridge as much as parsing it, so every microsecond per row
    counts."""
    connection = session.connection()
    dialect = connection.dialect
    # the event time as the model's column type writes it (SQLite: its text form)
    stamp = CallEvent.__table__.c.event_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert stamp is not None
    at = _EVENT_COLUMNS.index("event_at")
    stored: list[tuple[int, str]] = []
    for start in range(0, len(rows), INSERT_CHUNK):
        page = rows[start:start + INSERT_CHUNK]
        params = [v for row in page for v in row]
        params[at::len(_EVENT_COLUMNS)] = map(stamp, params[at::len(_EVENT_COLUMNS)])
        stored += connection.exec_driver_sql(_sqlite_insert(len(page)), tuple(params)).all()
    return stored


def insert_events(session: Session, raws: Iterable[RawEvent]) -> list[StoredEvent]:
    """Insert raw events of outbound calls, skipping ones already stored (the
    unique dedup_key decides, whoever stored it); return the new ones."""
    fresh: dict[str, RawEvent] = {}
    for r in raws:
        fresh.setdefault(r.dedup_key, r)  # the same event twice in a batch: once
    if not fresh:
        return []
    if session.get_bind().dialect.name == "postgresql":
        # one statement: the calls are found as the events are inserted;
        # all() fetches the RETURNING rows at once (iterating, row by row)
        stored = session.connection().exec_driver_sql(_PG_INSERT, tuple(map(list, zip(*(
            (r.dedup_key, r.source, r.name, r.uniqueid, r.linkedid, r.at, _payload(r.payload))
            for r in fresh.values()))))).all()
        return [StoredEvent(fresh[key], call_id, event_id) for event_id, key, call_id in stored]
    calls = dict(session.execute(select(Call.linkedid, Call.id).where(
        Call.direction == "outbound", Call.linkedid.in_({r.linkedid for r in fresh.values()}))
        ).all())
    rows = [(r.dedup_key, r.source, r.name, r.uniqueid, r.linkedid, calls[r.linkedid], r.at,
             _payload(r.payload))
            for r in fresh.values() if r.linkedid in calls]
    if not rows:
        return []
    return [StoredEvent(fresh[key], calls[fresh[key].linkedid], event_id)
            for event_id, key in _insert_rows(session, rows)]


def store_events(session: Session, raws: Iterable[RawEvent]) -> set[int]:
    """Insert raw events, skipping ones already stored; return the ids of
    the outbound calls that got new events."""
    return {e.call_id for e in insert_events(session, raws)}


@dataclass(frozen=True)
class Folded:
    """A call's facts and what they were folded from: `events` stored
    events, the last of them at `last` in the fold's order."""
    facts: CallFacts
    events: int = 0
    last: tuple[dt.datetime, int] | None = None

    def fold(self, new: list[StoredEvent]) -> Folded:
        facts = reduce_all(self.facts, (leg for e in new for leg in e.raw.legs))
        return Folded(facts, self.events + len(new), new[-1].order if new else self.last)


def folded_for(session: Session, call_id: int) -> Folded:
    """Fold every stored event of the call, AMI and CEL alike, in time order."""
    return folded_for_many(session, [call_id])[call_id]


def folded_for_many(session: Session, call_ids: Iterable[int]) -> dict[int, Folded]:
    """folded_for of each of the calls, their events read in one query (the
    reconciler recomputes every call of a CEL chunk)."""
    ids = sorted(set(call_ids))
    out = {call_id: Folded(CallFacts()) for call_id in ids}
    if not ids:
        return out
    rows = session.execute(
        select(CallEvent.call_id, CallEvent.source, CallEvent.payload, CallEvent.event_at,
               CallEvent.id)
        .where(CallEvent.call_id.in_(ids))
        .order_by(CallEvent.call_id, CallEvent.event_at, CallEvent.id)).all()
    current, facts, last, count = None, CallFacts(), None, 0
    for call_id, source, payload, event_at, event_id in rows:
        if call_id != current:
            if current is not None:
                out[current] = Folded(facts, count, last)
            current, facts, last, count = call_id, CallFacts(), None, 0
        for leg_event in _PARSERS[source](json.loads(payload)):
            facts = reduce(facts, leg_event)
        last, count = (event_at, event_id), count + 1
    if current is not None:
        out[current] = Folded(facts, count, last)
    return out


def facts_for(session: Session, call_id: int) -> CallFacts:
    """The call's facts from every event stored for it (folded_for)."""
    return folded_for(session, call_id).facts


class LiveFacts:
    """The folded facts of calls in progress, kept by one writer (the AMI
    bridge) between its transactions, so that a new event is folded into
    them instead of every event of its call being read again.

    Only a shortcut, never the truth: a call's entry is used only when the
    database holds exactly the events it folded plus this transaction's new
    ones (a count per call, one query for all) and the new ones come after
    them in the fold's order (event time, then id); a call whose every
    stored event is new is folded from nothing. Otherwise (an event
    another writer stored, a late event stamped earlier, a call not seen
    since the start) the call's events are read again (folded_for), so the
    row is the one a full recompute gives. A call is forgotten once final;
    at most `limit` calls are kept, the least recently touched go first.
    """

    def __init__(self, limit: int = LIVE_CALLS):
        self.limit = limit
        self._calls: OrderedDict[int, Folded] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._calls)

    def fold(self, session: Session, new: list[StoredEvent],
             stored: Mapping[int, int] | None = None) -> dict[int, Folded]:
        """The facts of every call with `new` events, inside the transaction
        that stored them. Nothing is kept until `keep` (after the commit).
        `stored`: how many events each of those calls has stored now, when
        the caller read them (load_calls); else they are counted here."""
        by_call: dict[int, list[StoredEvent]] = {}
        for e in new:
            by_call.setdefault(e.call_id, []).append(e)
        if not by_call:
            return {}
        counts = stored if stored is not None else dict(session.execute(
            select(CallEvent.call_id, func.count()).where(CallEvent.call_id.in_(by_call))
            .group_by(CallEvent.call_id)).all())
        out = {}
        for call_id, events in by_call.items():
            events.sort(key=lambda e: e.order)
            before = counts.get(call_id, 0) - len(events)  # stored before this transaction
            kept = self._calls.get(call_id) if before else Folded(CallFacts())
            if kept is not None and kept.events == before and \
                    (kept.last is None or events[0].order > kept.last):
                out[call_id] = kept.fold(events)
                self.hits += 1
            else:
                out[call_id] = folded_for(session, call_id)
                self.misses += 1
        return out

    def keep(self, folded: Mapping[int, Folded], final: set[int]) -> None:
        """After the commit: keep the calls still open, forget the final ones."""
        for call_id, entry in folded.items():
            if call_id in final:
                self._calls.pop(call_id, None)
            else:
                self._calls[call_id] = entry
                self._calls.move_to_end(call_id)
        while len(self._calls) > self.limit:
            self._calls.popitem(last=False)


_PARSERS: dict[str, Callable[[Mapping], list[LegEvent]]] = {
    "ami": ev.from_ami, "cel": ev.from_cel, "khhf": ev.from_khhf}


def record(session: Session, call: Call, name: str, at: dt.datetime | None = None) -> Call:
    """Record what KHHF knows of a call itself (events.NOT_PLACED, events.LOST)
    as one of its events, and recompute the row. Recording it twice is harmless."""
    at = at or utcnow()
    payload = ev.khhf_event(name, at)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(CallEvent).values(
        dedup_key=f"khhf:{name}:{call.id}", source="khhf", event=name, uniqueid=call.uniqueid,
        linkedid=call.linkedid or "", call_id=call.id, event_at=at,
        payload=json.dumps(payload, sort_keys=True)).on_conflict_do_nothing(
            index_elements=["dedup_key"]))
    return recompute(session, call.id)


def recompute(session: Session, call_id: int) -> Call:
    """Bring the call row (and its task) in line with the stored events."""
    return recompute_many(session, {call_id: None})[0]


def recompute_many(session: Session, facts: Mapping[int, CallFacts | None]) -> list[Call]:
    """Bring call rows (and their tasks) in line with their events: `facts`
    maps each call id to its folded facts, or None to fold its stored
    events now (recompute_batch writes them); the calls as ORM objects,
    read again."""
    calls = []
    for row in recompute_batch(session, facts):
        call = session.get(Call, row.id)
        assert call is not None  # read a moment ago in this transaction
        calls.append(call)
    return calls


# the columns of a call the batch writer reads: what the fold's row, the
# task machine, the call.ended webhook and the recording's path need
ROW_COLUMNS = ("id", "direction", "task_id", "customer_id", "manager_id", "county_id",
               "customer_number", "requested_at", "manager_device", "recording_path",
               "recording_deleted_at", *DERIVED)
# what recompute_batch may change: the derived columns and the recording's path
WRITTEN = (*DERIVED, "recording_path")


class CallRow:
    """A call's ROW_COLUMNS as plain attributes (no ORM state): what
    recompute_batch reads, moves and writes."""
    __slots__ = ROW_COLUMNS
    id: int
    direction: str
    task_id: int | None
    customer_id: int | None
    manager_id: int | None
    county_id: int | None
    customer_number: str
    requested_at: dt.datetime
    manager_device: str
    recording_path: str | None
    recording_deleted_at: dt.datetime | None
    state: str
    ring_at: dt.datetime | None
    answer_at: dt.datetime | None
    end_at: dt.datetime | None
    outcome: str | None
    hangup_cause: int | None
    sip_code: int | None
    talk_seconds: int | None
    hangup_by: str | None

    def __init__(self, values: Iterable[object]):
        for name, value in zip(ROW_COLUMNS, values):
            setattr(self, name, value)


# a CallRow's WRITTEN values, as a tuple
_written = operator.attrgetter(*WRITTEN)
# the calls' ROW_COLUMNS, by id (built once: building a statement costs more than running it)
_CALL_ROWS = select(*(getattr(Call, c) for c in ROW_COLUMNS)).where(
    Call.id.in_(bindparam("ids", expanding=True)))
# the same and how many events each has stored (what LiveFacts checks)
_COUNTED_ROWS = _CALL_ROWS.add_columns(
    select(func.count()).where(CallEvent.call_id == Call.id).correlate(Call).scalar_subquery())


def load_calls(session: Session, ids: Iterable[int]) -> dict[int, tuple[CallRow, int]]:
    """{call id: (its CallRow, how many events it has stored)} in one
    query: what the AMI bridge's batch reads of its calls (LiveFacts.fold
    checks the counts, recompute_batch writes the rows)."""
    ids = list(ids)
    if not ids:
        return {}
    return {row[0]: (CallRow(row), row[-1]) for row in session.connection().execute(
        _COUNTED_ROWS, {"ids": ids})}


def recompute_batch(session: Session, facts: Mapping[int, CallFacts | None],
                    recording_file: Callable[[CallRow], str] | None = None,
                    rows: Mapping[int, CallRow] | None = None) -> list[CallRow]:
    """recompute_many for the AMI bridge's batches, the same rows written
    without the ORM: the calls and their tasks read as plain rows (one
    query each, the tasks with their call counts; the tasks only of calls
    whose rows changed), each row decided by the same fold (summarize) and
    the same task machine (tasks.follow_call on a TaskRow), and what
    changed written in one statement per set of columns (db.update_rows),
    the calls first so the task machine's queries see them. The call.ended webhook is queued as the ORM's hook would
    (webhooks.call_changed). A call whose automatic outcome may be due
    (outcomes.file_automatic) is handed to the ORM, its task's row read
    back after. `recording_file`: the path a call's recording is given
    when its events show an answer and it has none (one given up as not
    placed lost it). `rows`: the calls' rows as this transaction read them
    already (load_calls), with nothing written to them since."""
    ids = sorted(facts)
    session.flush()  # the ORM's pending changes first: the rows are read from the database
    connection = session.connection()
    loaded = dict(rows) if rows is not None else \
        {row[0]: CallRow(row) for row in connection.execute(_CALL_ROWS, {"ids": ids})}
    # the calls without facts folded from their stored events, in one query
    stored = folded_for_many(session, (i for i in ids if facts[i] is None and i in loaded))
    calls, changes, before = [], [], {}
    for call_id in ids:
        call = loaded.get(call_id)
        if call is None:
            raise LookupError(f"there is no call {call_id} to recompute")
        old = _written(call)
        folded = facts[call_id]
        summary = summarize(stored[call_id].facts if folded is None else folded,
                            call.manager_device)
        for key in DERIVED:
            setattr(call, key, summary.get(key))
        if call.state in FINAL_STATES and call.answer_at is None and call.recording_path:
            call.recording_path = None  # nobody talked: nothing was recorded
        if recording_file and call.answer_at is not None and call.recording_path is None:
            call.recording_path = recording_file(call)
        new = _written(call)
        if new != old:
            changes.append((call_id, {c: v for c, v, o in zip(WRITTEN, new, old) if v != o}))
            before[call_id] = old
        calls.append(call)
    db.update_rows(connection, Call.__table__, changes)
    calls_by_id = {c.id: c for c in calls}
    state = WRITTEN.index("state")
    for call_id, changed in changes:
        webhooks.call_changed(connection, loaded[call_id], before[call_id][state],
                              "outcome" in changed)
    # the tasks follow the calls whose rows changed: a row as it was is one
    # its task followed already (every writer of a call row moves its task
    # in the same transaction), so reading the task again would move nothing
    moved = [calls_by_id[call_id] for call_id, _ in changes]
    task_ids = {c.task_id for c in moved if c.task_id is not None}
    if task_ids:
        _follow_calls(session, moved, task_ids)
    _expire(session, Call, ids)
    _expire(session, Task, task_ids)
    return calls


def _follow_calls(session: Session, calls: list[CallRow], task_ids: set[int]) -> None:
    """The tasks of `calls` follow them (update_task's moves on TaskRows)."""
    rows, counts = tasks.load_rows(session, task_ids)
    for call in calls:
        task = rows.get(call.task_id) if call.task_id is not None else None
        if task is None:
            continue
        tasks.follow_call(session, task, call, counts=counts.get(task.id))
        # file_automatic's own first test: only then is the ORM needed
        if call.state in FINAL_STATES and task.status == TaskStatus.NOT_REACHED \
                and call.manager_id is not None:
            tasks.write_rows(session, rows.values())
            orm_task = session.get(Task, task.id, populate_existing=True)
            orm_call = session.get(Call, call.id, populate_existing=True)
            assert orm_task is not None and orm_call is not None
            outcomes.file_automatic(session, orm_task, orm_call)
            # the task as the filing left it (flushed), for its later calls
            rows[task.id] = tasks.TaskRow(*(getattr(orm_task, c) for c in ("id", *tasks.FOLLOWED)))
    tasks.write_rows(session, rows.values())


def _expire(session: Session, model, ids: Iterable[int]) -> None:
    """Objects of the session that the Core writes left behind read again on use."""
    if not session.identity_map:
        return  # the bridge's sessions hold none
    for row_id in ids:
        obj = session.identity_map.get(identity_key(model, row_id))
        if obj is not None:
            session.expire(obj)


def recording_stats(path: Path) -> tuple[float, int, str] | None:
    """(seconds, bytes, SHA-256) of a finished WAV recording, or None while
    it is missing or unreadable. The seconds are what the file holds: never
    more than the audio on disk, whatever its header claims (a write that
    failed on a full disk can leave a header longer than the data). Reads
    the file: call it outside any database transaction."""
    try:
        with wave.open(str(path)) as w:
            frame_bytes = w.getsampwidth() * w.getnchannels()
            size = path.stat().st_size
            frames = min(w.getnframes(), max(0, size - WAV_HEADER_BYTES) // frame_bytes)
            seconds = frames / w.getframerate()
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return round(seconds, 3), size, digest.hexdigest()
    except (OSError, EOFError, wave.Error, ZeroDivisionError):
        return None


def recording_status(talk_seconds: int | None,
                     stats: tuple[float, int, str] | None) -> RecordingStatus:
    """A finished call's recording judged from its file's `stats`
    (recording_stats): complete when it holds the talk time within
    RECORDING_TOLERANCE_S, partial when it holds less, missing when there
    is no readable file or no audio in it."""
    if stats is None:
        return RecordingStatus.MISSING
    seconds = stats[0]
    if seconds >= (talk_seconds or 0) - RECORDING_TOLERANCE_S:
        return RecordingStatus.COMPLETE
    return RecordingStatus.PARTIAL if seconds > 0 else RecordingStatus.MISSING
