"""Call recordings (录音): finding them, opening their files safely, and
deleting them when the retention period is over.

A recording is the MixMonitor file of a call that was answered
(calls.recording_path, relative to Settings.recordings_dir, e.g.
'2026/11/28/42.wav', or '2026/11/28/in-<channel uniqueid>.wav' for the hotline). Its row is the call's:
who may hear it is who may see the call (webui.access.scope(Call)).

Files are only ever reached through `open_file`: the path comes from the
database, but it is still resolved and must stay inside the recordings
directory (a symbolic link out of it, or '..', is refused), and the file is
opened without following a final symbolic link.

Behind the SIP edge a recording stays on the node that made it
(calls.pbx_node). When the file is not on this machine, `open_anywhere`
asks that node's AMI bridge for it by its stored name (the bridge's
`recording` command, on the command channel and its token), and the
bridge opens it with the same `open_stored`, so nothing outside its own
recordings directory is ever handed out. Recordings directories that are
one shared volume are found locally first, as on one node.

Retention (`purge`): with `recording_retention_days` = N > 0, a recording
is deleted once its call ended more than N × 24 hours ago (a recording of
exactly N days is kept); the file goes first, then the row is marked
(`recording_deleted_at`), so a crash in between leaves a row that the next
run marks (its file is missing: that is handled). A dry run lists what
would go and writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import stat
from pathlib import Path

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from khhf import audit, bridge_client, db
from khhf.calls.states import FINAL_STATES, RecordingStatus
from khhf.config import ConfigError, Settings
from khhf.models import Call, Customer, Feedback, utcnow
from khhf.phones import mask_phone

from . import nodes

log = logging.getLogger(__name__)

PAGE_SIZE = 50
# MixMonitor writes PCM WAV (asterisk/extensions.d/30-outbound.conf); the
# dialplan and the bridge accept no other suffix
CONTENT_TYPES = {".wav": "audio/wav"}
DIRECTIONS = ("outbound", "inbound")
NO_RESULT = "none"
PURGE_BATCH = 500


class RecordingUnavailable(Exception):
    """The call has no recording file to serve; `reason` says why:
    'none' (not recorded), 'deleted' (retention), 'missing' (no such file),
    'refused' (the path leads outside the recordings directory)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# -- search ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Filters:
    """What a reviewer searches by; every field is optional."""
    county_id: int | None = None
    manager_id: int | None = None
    number: str = ""              # digits: the whole number, or a part of it
    since: dt.datetime | None = None   # naive UTC, inclusive
    until: dt.datetime | None = None   # naive UTC, exclusive
    direction: str = ""           # 'outbound' | 'inbound'
    result: str = ""              # a result code id, or NO_RESULT
    min_seconds: int | None = None
    max_seconds: int | None = None


def recorded() -> ColumnElement:
    """Calls that were recorded and are over (a call on now has a path too)."""
    return and_(Call.recording_path.is_not(None), Call.state.in_(FINAL_STATES))


def search(session: Session, where: ColumnElement, filters: Filters, *,
           after: int | None = None, limit: int = PAGE_SIZE) -> list[Call]:
    """Recorded calls in `where` (the viewer's scope) matching `filters`,
    newest first, `limit` of them after the call `after` (keyset pagination
    on (requested_at, id): page 1,000 costs what page 1 does; the scope's
    (county_id, requested_at) or (manager_id, requested_at) index, or
    ix_calls_recorded for administrators, yields the rows in order)."""
    query = select(Call).where(recorded(), where)
    f = filters
    if f.county_id:
        query = query.where(Call.county_id == f.county_id)
    if f.manager_id:
        query = query.where(Call.manager_id == f.manager_id)
    if f.number:
        # a whole number is one equality; a part is matched anywhere in it
        query = query.where(Call.customer_number == f.number if len(f.number) >= 11
                            else Call.customer_number.like(f"%{f.number}%"))
    if f.since:
        query = query.where(Call.requested_at >= f.since)
    if f.until:
        query = query.where(Call.requested_at < f.until)
    if f.direction in DIRECTIONS:
        query = query.where(Call.direction == f.direction)
    if f.result == NO_RESULT:
        query = query.where(~exists().where(Feedback.call_id == Call.id))
    elif f.result:
        query = query.where(exists().where(Feedback.call_id == Call.id,
                                           Feedback.result_code_id == int(f.result)))
    if f.min_seconds is not None:
        query = query.where(Call.recording_seconds >= f.min_seconds)
    if f.max_seconds is not None:
        query = query.where(Call.recording_seconds <= f.max_seconds)
    if after:
        at = select(Call.requested_at).where(Call.id == after).scalar_subquery()
        query = query.where(or_(Call.requested_at < at,
                                and_(Call.requested_at == at, Call.id < after)))
    return list(session.scalars(query.order_by(Call.requested_at.desc(), Call.id.desc())
                                .limit(limit)))


def number_digits(text: str) -> str | None:
    """The digits of a searched number ('138 1234-5678' -> '13812345678'),
    '' for nothing, None if it holds anything but digits, spaces and dashes."""
    text = (text or "").strip()
    digits = "".join(ch for ch in text if ch in "0123456789")
    if len(digits) != len(text.replace(" ", "").replace("-", "")):
        return None
    return digits


def latest_results(session: Session, call_ids) -> dict[int, Feedback]:
    """call id -> the latest result filed on that call."""
    out: dict[int, Feedback] = {}
    if call_ids:
        for fb in session.scalars(select(Feedback).where(Feedback.call_id.in_(list(call_ids)))
                                  .order_by(Feedback.id)):
            if fb.call_id is not None:  # the query asks for call ids: always
                out[fb.call_id] = fb
    return out


def audit_name(session: Session, call: Call) -> str:
    """How the operation log names a call: the customer and the masked number."""
    customer = session.get(Customer, call.customer_id) if call.customer_id else None
    name = customer.name if customer else ""
    return " ".join(filter(None, (name, mask_phone(call.customer_number or ""))))


def record_play(session: Session, user, ip: str, call: Call, *, download: bool = False) -> None:
    """The operation log's entry for one play (or download) of a call's recording."""
    audit.record(session, user, "play_recording", "call", call.id,
                 {"mode": "download" if download else "play"}, ip,
                 object_name=audit_name(session, call))


# -- the file ------------------------------------------------------------------------

def state(call: Call) -> str:
    """'ready', or why the call has no recording to serve: 'none', 'deleted',
    'not_recorded' (the bridge found no audio for it: a full disk)."""
    if not call.recording_path or call.state not in FINAL_STATES:
        return "none"
    if call.recording_deleted_at is not None:
        return "deleted"
    if call.recording_status == RecordingStatus.MISSING:
        return "not_recorded"
    return "ready"


def resolve(root: Path, relative: str) -> Path:
    """The recording's real path, which must be a regular file inside `root`.
    Raises RecordingUnavailable('refused') for a path that leads out of it
    (absolute, '..', or a symbolic link anywhere on the way), 'missing' when
    there is no such file."""
    root = Path(root).resolve()
    candidate = root / relative
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise RecordingUnavailable("refused")
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise RecordingUnavailable("missing") from None
    except (OSError, RuntimeError):  # a symbolic-link loop, a name too long
        raise RecordingUnavailable("refused") from None
    if not real.is_relative_to(root) or real != candidate:
        # `real != candidate`: a symbolic link on the way, even one that
        # stays inside, is not something MixMonitor writes
        raise RecordingUnavailable("refused")
    if real.suffix not in CONTENT_TYPES:
        raise RecordingUnavailable("refused")
    return real


def open_file(settings: Settings, call: Call):
    """(an open binary file, its os.stat_result, its content type) of the
    call's recording; raises RecordingUnavailable. The caller closes the file."""
    why = state(call)
    if why != "ready":
        raise RecordingUnavailable(why)
    if call.recording_path is None:  # "ready" says there is one
        raise RecordingUnavailable("none")
    return open_stored(settings.recordings_dir, call.recording_path)


def open_stored(root: Path, relative: str):
    """(an open binary file, its os.stat_result, its content type) of the
    recording stored as `relative` under `root`; raises RecordingUnavailable
    ('refused' for a name leading out of `root`, 'missing')."""
    path = resolve(root, relative)
    try:
        # O_NOFOLLOW: the last component cannot have become a link since
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RecordingUnavailable("missing") from None
    except OSError:
        raise RecordingUnavailable("refused") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RecordingUnavailable("refused")
    return os.fdopen(fd, "rb"), info, CONTENT_TYPES[path.suffix]


def on_another_node(settings: Settings, call: Call) -> bool:
    """Whether the call was recorded by another PBX node than this machine's
    (behind the SIP edge): its file is on that node's disk, unless the
    recordings directories are one shared volume."""
    return nodes.in_cluster(settings) and call.pbx_node != settings.pbx_name


def _from_node(session: Session, settings: Settings, call: Call, body: bool):
    """The recording from the bridge of the node that made it (the bridge's
    `recording` command: by its stored name, inside that node's recordings
    directory only); raises RecordingUnavailable, 'unreachable' when the node
    cannot be asked."""
    target = nodes.node_target(session, settings, call.pbx_node)
    if target is None:
        raise RecordingUnavailable("unreachable")
    try:
        return bridge_client.recording(target, call.recording_path or "", body=body)
    except bridge_client.RecordingRefused as exc:
        raise RecordingUnavailable(exc.reason if exc.reason in ("missing", "refused")
                                   else "refused") from None
    except (bridge_client.BridgeUnavailable, ConfigError) as exc:
        log.warning("the recording of call %s cannot be had from PBX node %s: %s",
                    call.id, call.pbx_node, exc)
        raise RecordingUnavailable("unreachable") from None


def open_anywhere(session: Session, settings: Settings, call: Call):
    """`open_file`, and when the file is not on this machine but another
    node recorded it, the file from that node (an anonymous temporary copy,
    gone once closed). Raises RecordingUnavailable: also 'unreachable'."""
    try:
        return open_file(settings, call)
    except RecordingUnavailable as exc:
        if exc.reason != "missing" or not on_another_node(settings, call):
            raise
    info, fh = _from_node(session, settings, call, body=True)
    return fh, info, CONTENT_TYPES[Path(call.recording_path or "").suffix]


def locate(session: Session, settings: Settings, call: Call) -> str:
    """What the recording's page can offer: 'ready', or why not ('none',
    'deleted', 'not_recorded', 'missing', 'refused', 'unreachable'). A file
    another node keeps is asked of that node (its size only)."""
    status = state(call)
    if status != "ready":
        return status
    try:
        resolve(settings.recordings_dir, call.recording_path or "")
        return "ready"
    except RecordingUnavailable as exc:
        if exc.reason != "missing" or not on_another_node(settings, call):
            return exc.reason
    try:
        _from_node(session, settings, call, body=False)
    except RecordingUnavailable as exc:
        return exc.reason
    return "ready"


def download_name(settings: Settings, call: Call) -> str:
    """'recording-42-20261128-100501.wav': the call id and its local time,
    never the customer's number."""
    when = settings.local(call.answer_at or call.requested_at)
    return f"recording-{call.id}-{when:%Y%m%d-%H%M%S}{Path(call.recording_path or '').suffix}"


# -- retention ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Expired:
    """A recording the retention period is over for."""
    call_id: int
    path: str
    ended_at: dt.datetime      # naive UTC
    size: int | None           # bytes, from the row
    outcome: str = ""          # after a real run: 'deleted', 'missing' or 'refused'


def retention_days(settings: Settings) -> int:
    """The retention period in days (0: forever); a negative one is an error."""
    days = settings.recording_retention_days
    if days < 0:
        raise ConfigError(f"recording_retention_days must be 0 (keep forever) or more, "
                          f"not {days}.")
    return days


def cutoff(settings: Settings, now: dt.datetime) -> dt.datetime | None:
    """Recordings of calls that ended before this moment are due; None: keep all."""
    days = retention_days(settings)
    return now - dt.timedelta(days=days) if days else None


def expired(session: Session, before: dt.datetime, limit: int | None = None,
            skip: frozenset[int] = frozenset(), node: str | None = None) -> list[Expired]:
    """Kept recordings of calls that ended before `before`, oldest first
    (but the calls in `skip`; with `node`, only that PBX node's calls)."""
    ended = func.coalesce(Call.end_at, Call.requested_at)
    query = (select(Call.id, Call.recording_path, ended, Call.recording_bytes)
             .where(recorded(), Call.recording_deleted_at.is_(None),
                    # end >= request: this bound lets ix_calls_recordings_kept do the work
                    Call.requested_at < before, ended < before)
             .order_by(Call.requested_at, Call.id))
    if skip:
        query = query.where(Call.id.not_in(sorted(skip)))
    if node is not None:
        query = query.where(Call.pbx_node == node)
    if limit:
        query = query.limit(limit)
    return [Expired(call_id, path, ended_at, size)
            for call_id, path, ended_at, size in session.execute(query)
            if path is not None]  # recorded(): always


def purge(sessions: sessionmaker[Session], settings: Settings, *, dry_run: bool = True,
          now: dt.datetime | None = None) -> list[Expired]:
    """Delete the recordings older than the retention period and mark their
    rows; with `dry_run` only list them. Returns what went (or would go),
    each with its outcome. Nothing happens when retention is 0 (forever).
    A node behind a SIP edge (edge_host set; docs/cluster.md) keeps its
    recordings on its own disk, so it handles its own calls' only."""
    now = now or utcnow()
    before = cutoff(settings, now)
    if before is None:
        return []
    node = settings.pbx_name if settings.edge_host else None
    if dry_run:
        with sessions() as session:
            return expired(session, before, node=node)
    done: list[Expired] = []
    refused: set[int] = set()
    while True:
        with sessions() as session:
            batch = expired(session, before, PURGE_BATCH, frozenset(refused), node)
        if not batch:
            break
        # the files first, outside any transaction (no write lock held on disk I/O)
        results = [dataclasses.replace(item, outcome=_delete_file(settings, item.path))
                   for item in batch]
        with db.unit_of_work(sessions) as session:
            ids = [r.call_id for r in results if r.outcome != "refused"]
            if ids:
                # checked again: only a row still due and still kept is marked
                session.execute(update(Call).where(
                    Call.id.in_(ids), Call.recording_deleted_at.is_(None),
                    func.coalesce(Call.end_at, Call.requested_at) < before)
                    .values(recording_deleted_at=now))
        done += results
        # a refused one stays for an operator to look at; not asked for again
        refused |= {r.call_id for r in results if r.outcome == "refused"}
    if done:
        with db.unit_of_work(sessions) as session:
            audit.record(session, None, "purge_recordings", "", "", {
                "days": retention_days(settings),
                "deleted": sum(r.outcome == "deleted" for r in done),
                "missing": sum(r.outcome == "missing" for r in done),
                "refused": sum(r.outcome == "refused" for r in done)})
    return done


def _delete_file(settings: Settings, relative: str) -> str:
    """Delete one recording file: 'deleted', 'missing' (already gone), or
    'refused' (its path leads outside the recordings directory: left alone)."""
    try:
        path = resolve(settings.recordings_dir, relative)
    except RecordingUnavailable as exc:
        return exc.reason
    try:
        path.unlink()
    except FileNotFoundError:
        return "missing"
    return "deleted"
