"""The task state machine: the only writer of a task's status.

A task is one customer to be called by one manager. Its status moves only
through the functions below, each of which names the event that moves it;
the allowed moves are the table `TRANSITIONS`, and a move that is not in it
raises `TransitionError` (a bug, or a request that lost a race: the caller
refuses it). Dialing, the AMI bridge, the hotline, hand-overs and result
filing all come here; a test walks the code base to keep it so.

    pending ──dial──▶ dialing ──call_progress──▶ dialing | connected
       ▲                 │
       │     call_ended: answered ─────────────▶ connected (a result is due)
       │                 not reached (busy, …) ─▶ not_reached (try again)
       └──────────────── not placed / desk side ─▶ back where it was
    {pending, dialing, connected, not_reached} ──file_result──▶ done | not_reached | pending
    done (by the system) ──correct_result──▶ done | not_reached | pending
    open ──cancel──▶ cancelled;   done | cancelled ──reopen──▶ pending

`connected` means "the customer answered": after the call it is the task
waiting for its result. Call-back appointments are a time on the task, not
a status: a booked task is `pending` with `appointment_at` set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session

from khhf import db
from khhf.calls.states import (
    CARRIER_OUTCOMES,
    DESK_SIDE_OUTCOMES,
    FINAL_STATES,
    CallOutcome,
    CallState,
)
from khhf.models import Call, Feedback, ResultCode, Task, TaskStatus, utcnow

# short names for the table below (elsewhere: TaskStatus.PENDING, ...)
PENDING, DIALING, CONNECTED, NOT_REACHED, DONE, CANCELLED = (
    TaskStatus.PENDING, TaskStatus.DIALING, TaskStatus.CONNECTED, TaskStatus.NOT_REACHED,
    TaskStatus.DONE, TaskStatus.CANCELLED)
OPEN = frozenset({PENDING, DIALING, CONNECTED, NOT_REACHED})
CLOSED = frozenset({DONE, CANCELLED})
# tasks a manager may dial now (a connected task may be dialed again: the
# line dropped before the result was clear)
DIALABLE = frozenset({PENDING, NOT_REACHED, CONNECTED})

# (from, event) -> the statuses that event may lead to
TRANSITIONS: dict[tuple[str, str], tuple[TaskStatus, ...]] = {
    **{(s, "dial"): (DIALING,) for s in DIALABLE},
    (DIALING, "call_progress"): (DIALING, CONNECTED),
    (CONNECTED, "call_progress"): (CONNECTED,),
    # a call given up as "not placed" that the PBX took after all
    **{(s, "call_progress"): (DIALING, CONNECTED) for s in (PENDING, NOT_REACHED)},
    # the call ended: answered, not reached, or never rang the customer (the
    # task returns to what the calls before it made it)
    **{(s, "call_ended"): (CONNECTED, NOT_REACHED, PENDING) for s in (DIALING, CONNECTED)},
    **{(s, "file_result"): (DONE, NOT_REACHED, PENDING) for s in OPEN},
    # the manager corrects the result the system filed (an automatic outcome)
    (DONE, "correct_result"): (DONE, NOT_REACHED, PENDING),
    **{(s, "cancel"): (CANCELLED,) for s in OPEN},
    **{(s, "reopen"): (PENDING,) for s in CLOSED},
}

# call states in which the customer's phone was rung: an attempt (a call
# with a DESK_SIDE_OUTCOME never rang it and ended 'failed')
ATTEMPT_STATES = frozenset({CallState.CUSTOMER_RINGING, CallState.CONNECTED, CallState.ENDED})


class FollowedCall(Protocol):
    """What the machine reads of a call it follows: a Call, or the AMI
    bridge's row of one (khhf.calls.store.CallRow)."""

    @property
    def id(self) -> int: ...
    @property
    def requested_at(self) -> dt.datetime: ...
    @property
    def state(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def answer_at(self) -> dt.datetime | None: ...


# the columns of a task that following its calls moves (follow_call)
FOLLOWED = ("status", "attempts", "last_call_at", "updated_at")


@dataclass(eq=False)
class TaskRow:
    """A task's columns that following its calls reads and moves, without
    the ORM: the AMI bridge follows hundreds of calls per batch and writes
    the tasks they moved in one statement (write_rows). The same moves as
    a Task's, through the same functions."""
    id: int
    status: str
    attempts: int
    last_call_at: dt.datetime | None
    updated_at: dt.datetime
    written: tuple = field(default=(), repr=False)  # FOLLOWED as last read or written

    def __post_init__(self) -> None:
        self.written = self.values()

    def values(self) -> tuple:
        return (self.status, self.attempts, self.last_call_at, self.updated_at)


def _outbound_calls(*columns):
    """A scalar subquery over the outbound calls of the task of the row."""
    return select(*columns).where(Call.task_id == Task.id, Call.direction == "outbound") \
        .correlate(Task).scalar_subquery()


# each task's FOLLOWED columns and its call_counts, in one query (built once)
_TASK_ROWS = select(
    Task.id, *(getattr(Task, c) for c in FOLLOWED), _outbound_calls(func.max(Call.id)),
    _outbound_calls(func.sum(case((Call.state.in_(ATTEMPT_STATES), 1), else_=0)))).where(
    Task.id.in_(bindparam("ids", expanding=True)))


def load_rows(session: Session, task_ids: Iterable[int]
              ) -> tuple[dict[int, TaskRow], dict[int, tuple[int, int]]]:
    """TaskRows of the tasks and their call_counts, in one query (the AMI
    bridge reads both for every batch that moves a task)."""
    rows, counts = {}, {}
    for row in session.connection().execute(_TASK_ROWS, {"ids": list(set(task_ids))}):
        rows[row[0]] = TaskRow(*row[:5])
        counts[row[0]] = (row[5] or 0, int(row[6] or 0))  # no call: none is latest
    return rows, counts


def write_rows(session: Session, rows: Iterable[TaskRow]) -> None:
    """Write the TaskRows that moved, one statement per set of columns
    (db.update_rows); updated_at as its column's onupdate sets it when no
    move set it (the ORM's flush did the same)."""
    now = utcnow()
    changes = []
    for row in rows:
        values = row.values()
        if values == row.written:
            continue
        changed = {c: v for c, v, old in zip(FOLLOWED, values, row.written) if v != old}
        changed.setdefault("updated_at", now)
        changes.append((row.id, changed))
        row.updated_at = changed["updated_at"]
        row.written = row.values()
    db.update_rows(session.connection(), Task.__table__, changes)


class TransitionError(ValueError):
    """A task may not make this move from its current status."""

    def __init__(self, task: Task | TaskRow, event: str, to: str):
        self.task_id, self.status, self.event, self.to = task.id, task.status, event, to
        super().__init__(f"task {task.id}: {event} may not move it from {task.status} to {to}")


def allowed(status: str, event: str) -> tuple[str, ...]:
    """The statuses `event` may move a task in `status` to (empty: not allowed)."""
    return TRANSITIONS.get((status, event), ())


def _move(task: Task | TaskRow, event: str, to: str, now: dt.datetime | None = None) -> None:
    if to not in allowed(task.status, event):
        raise TransitionError(task, event, to)
    if task.status != to:
        task.status = to
    task.updated_at = now or utcnow()


def new_task(session: Session, *, task_type_id: int, customer_id: int, manager_id: int | None,
             max_attempts: int = 3, priority: int = 0, campaign_id: int | None = None,
             cycle_id: int | None = None, appointment_at: dt.datetime | None = None,
             task_id: int | None = None, flush: bool = True) -> Task:
    """A new task, pending; added to the session and (unless `flush` is
    false, for bulk inserts) flushed, so it has an id."""
    task = Task(id=task_id, task_type_id=task_type_id, customer_id=customer_id, manager_id=manager_id,
                status=PENDING, max_attempts=max_attempts, priority=priority,
                campaign_id=campaign_id, cycle_id=cycle_id, appointment_at=appointment_at)
    session.add(task)
    if flush:
        session.flush()
    return task


def is_open(task: Task) -> bool:
    return task.status in OPEN


def dial(task: Task, now: dt.datetime | None = None) -> None:
    """A call to the task's customer was requested."""
    _move(task, "dial", DIALING, now)


def _status_after(call: FollowedCall) -> TaskStatus | None:
    """What a finished call makes of its task (None: it leaves it as it was)."""
    if call.outcome == CallOutcome.ANSWERED or (call.outcome == CallOutcome.LOST
                                                 and call.answer_at):
        return CONNECTED
    # the customer never rang (our side, or the carrier's): not an attempt
    if call.outcome in DESK_SIDE_OUTCOMES or call.outcome in CARRIER_OUTCOMES \
            or call.outcome == CallOutcome.LOST:
        return None
    return NOT_REACHED


def call_counts(session: Session, task_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(latest outbound call id, attempts) of each of the tasks, in one query."""
    ids = set(task_ids)
    if not ids:
        return {}
    attempt = case((Call.state.in_(ATTEMPT_STATES), 1), else_=0)
    rows = session.execute(select(Call.task_id, func.max(Call.id), func.sum(attempt)).where(
        Call.task_id.in_(ids), Call.direction == "outbound").group_by(Call.task_id))
    return {task_id: (latest, int(attempts or 0)) for task_id, latest, attempts in rows}


def follow_call(session: Session, task: Task | TaskRow, call: FollowedCall,
                now: dt.datetime | None = None,
                counts: tuple[int, int] | None = None) -> None:
    """The task follows its latest outbound call (the AMI bridge's events, a
    sweep). A closed task, or a call that is not the latest, changes nothing.
    `counts`: the task's call_counts, when the caller read them already."""
    if task.status in CLOSED:
        return
    if counts is None:
        counts = call_counts(session, [task.id]).get(task.id, (0, 0))  # no call: none is latest
    latest, attempts = counts
    if latest != call.id:
        return
    task.attempts = attempts
    task.last_call_at = call.requested_at
    if call.state not in FINAL_STATES:
        to = CONNECTED if call.state == CallState.CONNECTED else \
            (DIALING if task.status != CONNECTED else CONNECTED)
        if task.status != to:
            _move(task, "call_progress", to, now)
        return
    ended = _status_after(call)
    if ended is None:
        ended = _status_before(session, task, call)
    if task.status not in (DIALING, CONNECTED):
        if task.status == ended or _result_since(session, task, call):
            return  # already there, or a result filed during or after the call decides
        # the call's story changed after the task followed it to its end: a
        # call given up as not placed rang after all, or a restarted bridge
        # saw the hang-ups before the CEL record told it of the answer
        _move(task, "call_progress", DIALING, now)
    _move(task, "call_ended", ended, now)


def _result_since(session: Session, task: Task | TaskRow, call: FollowedCall) -> bool:
    """Whether a result was filed for the task since `call` was requested."""
    return session.scalar(select(Feedback.id).where(
        Feedback.task_id == task.id, Feedback.created_at >= call.requested_at).limit(1)) is not None


def _status_before(session: Session, task: Task | TaskRow, call: FollowedCall) -> TaskStatus:
    """The status the calls before `call` left the task in."""
    earlier = session.scalars(select(Call).where(
        Call.task_id == task.id, Call.direction == "outbound", Call.id < call.id,
        Call.state.in_(FINAL_STATES)).order_by(Call.id.desc()))
    for previous in earlier:
        to = _status_after(previous)
        if to is not None:
            return to
    return PENDING


def file_result(task: Task, code: ResultCode, appointment_at: dt.datetime | None = None,
                now: dt.datetime | None = None, correcting: bool = False) -> None:
    """A result was filed. A final code closes the task; a "try again" code
    leaves it open (pending with the appointment if one is booked, else
    not_reached), unless its attempts are used up. `correcting`: the manager
    replaces the result the system filed, which may have closed the task."""
    if code.is_final or (appointment_at is None and task.attempts >= task.max_attempts):
        to = DONE
    else:
        to = PENDING if appointment_at is not None else NOT_REACHED
    _move(task, "correct_result" if correcting and task.status == DONE else "file_result",
          to, now)
    task.result_code_id = code.id
    task.appointment_at = appointment_at if to != DONE else None


def cancel(task: Task, now: dt.datetime | None = None) -> None:
    _move(task, "cancel", CANCELLED, now)


def reopen(task: Task, now: dt.datetime | None = None) -> None:
    _move(task, "reopen", PENDING, now)
    task.result_code_id = None


def reassign(task: Task, manager_id: int, now: dt.datetime | None = None) -> None:
    """Give an open task to another manager (hand-over, manual reassignment);
    its status does not change."""
    if task.status not in OPEN:
        raise TransitionError(task, "reassign", task.status)
    task.manager_id = manager_id
    task.updated_at = now or utcnow()


def raise_priority(task: Task, priority: int, now: dt.datetime | None = None) -> None:
    """Make an open task more urgent (a repeated missed hotline call)."""
    task.priority = max(task.priority, priority)
    task.updated_at = now or utcnow()
