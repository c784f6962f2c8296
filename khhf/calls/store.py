"""Call rows from their events: raw events stored once (idempotent), and
each call row recomputed from every event stored for it, so nothing
depends on memory that a restart would lose.

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
import wave
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from khhf.models import Call, CallEvent, Task, utcnow
from khhf.services import outcomes, tasks

from . import events as ev
from .facts import CallFacts, LegEvent, reduce, summarize
from .states import FINAL_STATES, RECORDING_TOLERANCE_S, RecordingStatus

# the call row's columns that its events alone decide (facts.summarize)
DERIVED = ("state", "ring_at", "answer_at", "end_at", "outcome", "hangup_cause", "sip_code",
           "talk_seconds", "hangup_by")
INSERT_CHUNK = 100  # rows per INSERT: 8 columns each, under SQLite's variable limit
# the header MixMonitor's WAV files (and Python's) start with: the audio follows it
WAV_HEADER_BYTES = 44


@dataclass(frozen=True)
class RawEvent:
    source: str          # "ami" or "cel"
    dedup_key: str
    name: str
    uniqueid: str | None
    linkedid: str        # the call row's linkedid
    at: object           # datetime
    payload: dict


def raw_from_ami(event: dict) -> RawEvent | None:
    linkedid = event.get("Linkedid") or event.get("Uniqueid")
    legs = ev.from_ami(event)
    if not ev.is_ours(linkedid) or not legs:
        return None
    return RawEvent("ami", ev.ami_dedup_key(event), event.get("Event", ""), event.get("Uniqueid"),
                    linkedid, legs[0].at, event)


def raw_from_cel(row: dict) -> RawEvent | None:
    linkedid = row.get("linkedid")
    legs = ev.from_cel(row)
    if not ev.is_ours(linkedid) or not legs:
        return None
    return RawEvent("cel", ev.cel_dedup_key(row), row.get("eventtype", ""), row.get("uniqueid"),
                    linkedid, legs[0].at, row)


def store_events(session: Session, raws: Iterable[RawEvent]) -> set[int]:
    """Insert raw events, skipping ones already stored; return the ids of
    the outbound calls that got new events."""
    raws = list(raws)
    if not raws:
        return set()
    calls = dict(session.execute(select(Call.linkedid, Call.id).where(
        Call.direction == "outbound", Call.linkedid.in_({r.linkedid for r in raws}))).all())
    rows = [dict(dedup_key=r.dedup_key, source=r.source, event=r.name, uniqueid=r.uniqueid,
                 linkedid=r.linkedid, call_id=calls[r.linkedid], event_at=r.at,
                 payload=json.dumps(r.payload, ensure_ascii=False, sort_keys=True))
            for r in raws if r.linkedid in calls]
    if not rows:
        return set()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    changed: set[int] = set()
    for start in range(0, len(rows), INSERT_CHUNK):
        # one statement per chunk; RETURNING names the rows that were new
        stmt = (insert(CallEvent).values(rows[start:start + INSERT_CHUNK])
                .on_conflict_do_nothing(index_elements=["dedup_key"])
                .returning(CallEvent.call_id))
        changed.update(session.scalars(stmt))
    return changed


def facts_for(session: Session, call_id: int) -> CallFacts:
    """Fold every stored event of the call, AMI and CEL alike, in time order."""
    facts = CallFacts()
    rows = session.execute(
        select(CallEvent.source, CallEvent.payload).where(CallEvent.call_id == call_id)
        .order_by(CallEvent.event_at, CallEvent.id)).all()
    for source, payload in rows:
        data = json.loads(payload)
        for leg_event in _PARSERS[source](data):
            facts = reduce(facts, leg_event)
    return facts


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
    call = session.get(Call, call_id)
    if call is None:
        raise LookupError(f"there is no call {call_id} to recompute")
    summary = summarize(facts_for(session, call_id), call.manager_device)
    for key in DERIVED:
        # every column the events decide, cleared where they say nothing now
        setattr(call, key, summary.get(key))
    if call.state in FINAL_STATES and call.answer_at is None:
        call.recording_path = None  # nobody talked: nothing was recorded
    if call.task_id is not None:
        update_task(session, call)
    return call


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


def update_task(session: Session, call: Call) -> None:
    """The task follows its latest call, unless a result already closed it;
    a call that ended unreached gets its automatic outcome (khhf.services.
    outcomes) in the same unit of work as its final row."""
    task = session.get(Task, call.task_id)
    if task is not None:
        tasks.follow_call(session, task, call)
        if call.state in FINAL_STATES:
            outcomes.file_automatic(session, task, call)
