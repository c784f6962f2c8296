"""The manager's workspace (工作台): which tasks are in which tab, pages of
them (keyset pagination), the next task progressive dial takes, and the
call-backs that are due or overdue. Read-only queries; result filing is
khhf.services.results.

Tabs partition a manager's tasks (every task is in exactly one):

    todo         未拨打       pending, no appointment, ordinary priority (0)
    callback     待回电/预约  open (pending or not_reached) with an appointment,
                              or a hotline call-back (priority raised)
    connected    已接通待反馈  dialing or connected: a call is on, or its result is due
    not_reached  未接通       not_reached, no appointment, ordinary priority
    done         已完成       done or cancelled

Each tab has one sort key plus the task id as tie-break, so a page is
"the next N after (key, id)" - the same cost on page 1 and page 10,000.
The index ix_tasks_manager_status (manager_id, status, priority,
appointment_at, id) serves them: the todo and not-reached tabs are read in
id order straight from it (no sort, stop after a page), the counts are an
index-only scan of the manager's entries, the other tabs sort only the
manager's rows of that tab (bench/workspace_list.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import ColumnElement, and_, func, or_, select, tuple_
from sqlalchemy.orm import Session, joinedload

from khhf.calls.states import FINAL_STATES
from khhf.config import Settings
from khhf.models import Call, Customer, Manager, Task, TaskStatus, User, utcnow

from . import dial_rules, tasks

TABS = ("todo", "callback", "connected", "not_reached", "done")
PAGE_SIZE = 50
# progressive dial looks at this many tasks of each kind for one the
# dialing rules let ring now
NEXT_SCAN = 50
# a due call-back not dialed within this is overdue (flagged to the supervisor)
OVERDUE_AFTER = dt.timedelta(minutes=30)


def _ordinary():
    # equalities, so the index ix_tasks_manager_status yields the todo tab in id order
    return and_(Task.priority == 0, Task.appointment_at.is_(None))


def tab_filter(tab: str):
    """The WHERE clause of tab `tab`."""
    if tab == "todo":
        return and_(Task.status == TaskStatus.PENDING, _ordinary())
    if tab == "callback":
        return and_(Task.status.in_((TaskStatus.PENDING, TaskStatus.NOT_REACHED)),
                    or_(Task.appointment_at.is_not(None), Task.priority != 0))
    if tab == "connected":
        return Task.status.in_((TaskStatus.DIALING, TaskStatus.CONNECTED))
    if tab == "not_reached":
        return and_(Task.status == TaskStatus.NOT_REACHED, _ordinary())
    if tab == "done":
        return Task.status.in_(tasks.CLOSED)
    raise ValueError(f"unknown tab {tab!r}; one of {TABS}")


def tab_of(task: Task) -> str:
    """The tab `task` is listed in (the Python twin of tab_filter)."""
    return _tab(task.status, task.appointment_at is not None or task.priority != 0)


def _tab(status: str, special: bool) -> str:
    """The tab of a task in `status`; `special`: it has an appointment or priority."""
    if status in tasks.CLOSED:
        return "done"
    if status in (TaskStatus.DIALING, TaskStatus.CONNECTED):
        return "connected"
    if special:
        return "callback"
    return "todo" if status == TaskStatus.PENDING else "not_reached"


# per tab: (sort key, descending?)  callback: when it is due (the appointment,
# else when the missed call came in); done: the most recently closed first
def _sort(tab: str):
    if tab == "callback":
        return func.coalesce(Task.appointment_at, Task.created_at), False
    if tab == "done":
        return Task.updated_at, True
    return Task.id, False


def counts(session: Session, manager_id: int, search: str = "") -> dict[str, int]:
    """{tab: number of the manager's tasks in it}; with `search`, of those
    whose customer matches it (see `page`), so each tab says what it holds."""
    special = or_(Task.appointment_at.is_not(None), Task.priority != 0)
    query = (select(Task.status, special, func.count()).where(Task.manager_id == manager_id)
             .group_by(Task.status, special))
    match = _matching(search)
    if match is not None:
        query = query.join(Customer, Customer.id == Task.customer_id).where(match)
    rows = session.execute(query)
    result = dict.fromkeys(TABS, 0)
    for status, is_special, n in rows:
        result[_tab(status, bool(is_special))] += n
    return result


@dataclasses.dataclass
class Page:
    tasks: list[Task]
    next_cursor: str | None  # pass as `after` for the next page; None: last page


def page(session: Session, manager_id: int, tab: str, search: str = "",
         after: str | None = None, size: int = PAGE_SIZE) -> Page:
    """One page of the manager's tasks in `tab`, optionally only those whose
    customer's name or number contains `search`, after cursor `after`."""
    key, descending = _sort(tab)
    query = (select(Task).where(Task.manager_id == manager_id, tab_filter(tab))
             .options(joinedload(Task.customer), joinedload(Task.task_type)))
    match = _matching(search)
    if match is not None:
        query = query.join(Customer, Customer.id == Task.customer_id).where(match)
    if after is not None:
        last_key, last_id = parse_cursor(after, tab)
        bound = tuple_(key, Task.id)
        query = query.where(bound < tuple_(last_key, last_id) if descending
                            else bound > tuple_(last_key, last_id))
    order = (key.desc(), Task.id.desc()) if descending else (key, Task.id)
    rows = list(session.scalars(query.order_by(*order).limit(size + 1)).unique())
    more = len(rows) > size
    rows = rows[:size]
    cursor = make_cursor(tab, rows[-1]) if more and rows else None
    return Page(rows, cursor)


def _matching(search: str):
    """The WHERE clause of tasks whose customer's name contains `search`, or
    whose number does when it is digits (spaces and dashes allowed); None
    for an empty search."""
    search = (search or "").strip()
    if not search:
        return None
    digits = "".join(ch for ch in search if ch.isdigit())
    match: ColumnElement[bool] = Customer.name.like(f"%{_escape(search)}%", escape="\\")
    if digits and len(digits) == len(search.replace(" ", "").replace("-", "")):
        match = or_(match, Customer.phone.like(f"%{digits}%"))
    return match


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def make_cursor(tab: str, task: Task) -> str:
    if tab == "callback":
        value = task.appointment_at or task.created_at
        return f"{value:%Y%m%d%H%M%S%f}.{task.id}"
    if tab == "done":
        return f"{task.updated_at:%Y%m%d%H%M%S%f}.{task.id}"
    return str(task.id)


class BadCursor(ValueError):
    """A page cursor that this module did not make."""


def parse_cursor(text: str, tab: str) -> tuple[dt.datetime | int, int]:
    """(sort key, id) from a cursor; BadCursor when it is malformed."""
    value: dt.datetime | int
    try:
        if tab in ("callback", "done"):
            stamp, _, id_text = text.partition(".")
            if len(stamp) != 20 or not stamp.isascii():
                raise ValueError(text)
            value, ident = dt.datetime.strptime(stamp, "%Y%m%d%H%M%S%f"), int(id_text)
        else:
            if not (text.isascii() and text.isdigit() and len(text) <= 19):
                raise ValueError(text)
            value = ident = int(text)
    except ValueError:
        raise BadCursor(text) from None
    if not 0 < ident < 2**63:
        raise BadCursor(text)
    return value, ident


def next_due(session: Session, manager_id: int, now: dt.datetime | None = None,
             exclude: tuple[int, ...] = (), settings: Settings | None = None) -> Task | None:
    """The task progressive dial takes next: due call-backs first (oldest
    appointment first), then hotline call-backs (higher priority first),
    then never-called tasks, oldest first. Not-reached tasks without an
    appointment wait for the manager (dialing them straight away would
    ring the same customer again); do-not-call customers and tasks whose
    attempts are used up are skipped. With `settings`, so is every task the
    dialing rules refuse now (khhf.services.dial_rules: a customer called
    too often or too recently, no consent): it stays open and comes back
    once its customer may be called; the first NEXT_SCAN candidates of
    each kind are looked at."""
    now = now or utcnow()
    base = (select(Task).join(Customer, Customer.id == Task.customer_id)
            .where(Task.manager_id == manager_id,
                   Task.status.in_((TaskStatus.PENDING, TaskStatus.NOT_REACHED)),
                   Task.attempts < Task.max_attempts, Customer.do_not_call.is_(False)))
    if exclude:
        base = base.where(Task.id.not_in(exclude))
    for clause, order in (
            (Task.appointment_at <= now, (Task.appointment_at, Task.id)),
            (and_(Task.appointment_at.is_(None), Task.priority > 0),
             (Task.priority.desc(), Task.id)),
            (and_(Task.status == TaskStatus.PENDING, _ordinary()), (Task.id,))):
        query = base.where(clause).order_by(*order).limit(1 if settings is None else NEXT_SCAN)
        for task in list(session.scalars(query)):
            if settings is None or not dial_rules.check(session, settings, task, now):
                return task
    return None


def due_callbacks(session: Session, manager_id: int, now: dt.datetime | None = None,
                  limit: int = 20) -> list[Task]:
    """The manager's open tasks whose call-back time has come, oldest first."""
    now = now or utcnow()
    return list(session.scalars(
        select(Task).options(joinedload(Task.customer))
        .where(Task.manager_id == manager_id, Task.status.in_(tasks.OPEN),
               Task.appointment_at <= now)
        .order_by(Task.appointment_at, Task.id).limit(limit)))


def task_calls(session: Session, task_id: int, limit: int | None = None) -> list[Call]:
    """The task's calls, newest first (at most `limit`)."""
    query = select(Call).where(Call.task_id == task_id).order_by(Call.id.desc())
    return list(session.scalars(query.limit(limit) if limit else query))


def live_call(session: Session, task_id: int) -> Call | None:
    """The task's call that is still on (ringing or connected), if any."""
    return session.scalar(select(Call).where(Call.task_id == task_id,
                                             Call.state.not_in(FINAL_STATES))
                          .order_by(Call.id.desc()).limit(1))


def latest_call_id(session: Session, task_id: int) -> int | None:
    """The task's newest call: the one a result filed from the task page is about."""
    return session.scalar(select(Call.id).where(Call.task_id == task_id)
                          .order_by(Call.id.desc()).limit(1))


def is_overdue(task: Task, now: dt.datetime | None = None) -> bool:
    """A call-back whose time passed more than OVERDUE_AFTER ago, task still open."""
    now = now or utcnow()
    return (task.status in tasks.OPEN and task.appointment_at is not None
            and task.appointment_at < now - OVERDUE_AFTER)


def overdue_by_manager(session: Session, county_id: int, now: dt.datetime | None = None
                       ) -> list[tuple[Manager, int, dt.datetime]]:
    """[(manager, overdue call-backs, the oldest one's time)] in the county,
    most overdue first: the supervisor's list."""
    now = now or utcnow()
    rows = session.execute(
        select(Manager, func.count(Task.id), func.min(Task.appointment_at))
        .join(Task, Task.manager_id == Manager.id)
        .join(User, User.id == Manager.user_id)
        .where(Manager.county_id == county_id, Task.status.in_(tasks.OPEN),
               Task.appointment_at < now - OVERDUE_AFTER)
        .group_by(Manager.id).order_by(func.min(Task.appointment_at))).all()
    return [(m, n, oldest) for m, n, oldest in rows
            if oldest is not None]  # never None: the WHERE compares appointment_at

