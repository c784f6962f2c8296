"""Task distribution (任务分配): who calls which task of a campaign.

    plan = distribution.plan(session, campaign, "average", manager_ids=[...])
    plan.counts          # {manager_id: tasks after}: the preview
    distribution.commit(session, user, ip, campaign, "average", manager_ids=[...])

The tasks a distribution moves are the campaign's tasks nobody is working
on: pending or not reached (not being called, not waiting for a result).

- average (平均分配): equal counts over the chosen managers (default: every
  active manager of the county; managers by employee number, the first
  n mod k get one more), moving as few tasks as possible: a task stays with
  its manager while that manager is under quota, the others fill the
  remaining quotas in order (tasks by id). The same input gives the same
  split.
- auto (自动分配): each task to its customer's own manager if that manager
  is active; the others to the least-loaded active manager of the
  customer's county (load: open tasks, counting those given out so far;
  ties by employee number). Departed managers never get a task.

A preview computes the plan and writes nothing. A commit computes it again
inside its own transaction (so it never applies a stale preview) and
writes it in bulk: the moves go into a temporary table (COPY on
PostgreSQL, one JSON parameter on SQLite) and one UPDATE ... FROM moves
them; a task that started being called meanwhile is left alone. On SQLite a
move of a large share of the tasks drops the index on manager_id and builds
it again afterwards, in the same transaction (_sqlite_manager_index_set_aside). Manual
reassignment of chosen tasks goes through khhf.services.tasks.reassign.
Distribution changes who works a task, never its status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from khhf import audit
from khhf.models import Campaign, Customer, Manager, Task, TaskStatus, User, sql_list, utcnow
from khhf.services import N_, Problems, parse_int, tasks, validated

MODES = ("average", "auto")
MOVABLE = (TaskStatus.PENDING, TaskStatus.NOT_REACHED)


@dataclasses.dataclass
class Plan:
    mode: str
    moves: list[tuple[int, int]]        # (task id, new manager id), only real changes
    before: dict                         # {manager_id or None: movable tasks now}
    counts: dict                         # {manager_id or None: movable tasks after}
    total: int                           # movable tasks
    managers: list[Manager]              # the managers the preview shows

    @property
    def moved(self) -> int:
        return len(self.moves)


def _movable(campaign_id: int, cycle_id: int | None = None):
    where = [Task.campaign_id == campaign_id, Task.status.in_(MOVABLE)]
    if cycle_id is not None:
        where.append(Task.cycle_id == cycle_id)
    return where


def _county_managers(session, county_id) -> list[Manager]:
    return session.scalars(select(Manager).where(
        Manager.county_id == county_id, Manager.status == "active")
        .order_by(Manager.employee_no, Manager.id)).all()


def plan(session: Session, campaign: Campaign, mode: str, manager_ids=None,
         cycle_id: int | None = None) -> Plan:
    """The split `mode` would make of the campaign's movable tasks; writes nothing.
    Raises ValidationError for an unknown mode or managers who may not get tasks."""
    problems = Problems()
    if mode not in MODES:
        problems.add("mode", N_("Choose how to distribute: average or automatic."))
    pool = _county_managers(session, campaign.county_id)
    if manager_ids:
        if mode == "auto":
            problems.add("manager_ids", N_("Automatic distribution gives each task to its "
                                           "customer's manager: choose managers only for an "
                                           "average distribution."))
        wanted = {parse_int(i) for i in manager_ids}
        chosen = [m for m in pool if m.id in wanted]
        if len(chosen) != len(wanted):
            problems.add("manager_ids", N_("Choose active customer managers of the campaign's "
                                           "county only."))
        pool = chosen
    if mode == "average" and not pool:
        problems.add("manager_ids", N_("The county has no active customer manager to give "
                                       "tasks to."))
    problems.raise_if_any()
    where = _movable(campaign.id, cycle_id)
    target: Sequence[tuple[int, int | None, int | None]]  # (task, new manager, current)
    if mode == "average":
        rows = _fetch(session, select(Task.id, Task.manager_id).where(*where).order_by(Task.id))
        target = _average_targets(rows, [m.id for m in pool])
    else:
        target = _auto_targets(session, campaign, where, pool)
    before = Counter(map(itemgetter(2), target))
    counts = Counter(map(itemgetter(1), target))
    moves = [(t, m) for t, m, current in target if m is not None and m != current]
    shown = list(pool)
    extra = {m for m in list(before) + list(counts) if m is not None} - {m.id for m in shown}
    if extra:
        shown += session.scalars(select(Manager).where(Manager.id.in_(extra))
                                 .order_by(Manager.employee_no)).all()
    return Plan(mode=mode, moves=moves, before=dict(before), counts=dict(counts),
                total=len(target), managers=shown)


def _fetch(session, statement) -> list[tuple]:
    """All rows of `statement` as plain tuples, through the driver's own
    cursor: a million rows would spend seconds in SQLAlchemy's row objects.
    The statement's values are ids and status codes made here, never user
    text, so they are rendered inline."""
    session.flush()
    conn = session.connection()
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        cursor.close()


def _average_targets(rows, ids) -> list[tuple[int, int, int | None]]:
    """Equal counts (the first n mod k managers one more), moving as few
    tasks as possible: a task stays with its manager while that manager is
    under quota; the rest fill the others' quotas in manager order."""
    n, k = len(rows), len(ids)
    quota = {m: n // k + (1 if i < n % k else 0) for i, m in enumerate(ids)}
    kept: Counter[int] = Counter()
    target, rest = [], []
    for task_id, current in rows:
        if current in quota and kept[current] < quota[current]:
            kept[current] += 1
            target.append((task_id, current, current))
        else:
            rest.append((task_id, current))
    free = iter([m for m in ids for _ in range(quota[m] - kept[m])])
    target += [(task_id, next(free), current) for task_id, current in rest]
    return target


def _auto_targets(session, campaign, where, pool) -> list[tuple[int, int | None, int | None]]:
    active = {m.id: m for m in pool}
    rows = _fetch(session, select(Task.id, Task.manager_id, Customer.manager_id)
                  .join(Customer, Customer.id == Task.customer_id).where(*where)
                  .order_by(Task.id))
    # load: open tasks of each active manager that this plan does not move
    load = Counter(dict(session.execute(
        select(Task.manager_id, func.count()).where(
            Task.manager_id.in_(list(active)), Task.status.in_(tasks.OPEN))
        .group_by(Task.manager_id)).all()))
    for _task_id, current, _own in rows:
        if current in active:
            load[current] -= 1
    target, rest = [], []
    for task_id, current, own in rows:
        if own in active:
            target.append((task_id, own, current))
            load[own] += 1
        else:
            rest.append((task_id, current))
    heap = [(load[m.id], m.employee_no, m.id) for m in pool]
    heapq.heapify(heap)
    for task_id, current in rest:
        if not heap:
            target.append((task_id, None if current not in active else current, current))
            continue
        n, employee_no, manager_id = heapq.heappop(heap)
        target.append((task_id, manager_id, current))
        heapq.heappush(heap, (n + 1, employee_no, manager_id))
    return target


def commit(session: Session, by: User | None, ip: str, campaign: Campaign, mode: str,
           manager_ids=None) -> Plan:
    """Compute the plan again and write it (one bulk UPDATE); audited. The
    caller commits: all moves or none."""
    if campaign.status == "closed":
        problems = Problems()
        problems.add("campaign", N_("The campaign is closed: its tasks can no longer be "
                                    "distributed."))
        problems.raise_if_any()
    result = plan(session, campaign, mode, manager_ids)
    def split(counts):
        return ", ".join(f"{m.employee_no} {counts.get(m.id, 0)}" for m in result.managers
                         if counts.get(m.id)) or None
    # the audit's split is made before the move: apply_moves expires every
    # loaded object, and reading the managers' numbers afterwards cost one
    # query per manager
    changes = {"tasks_by_manager": [split(result.before), split(result.counts)]}
    apply_moves(session, result.moves)
    audit.record(session, by, "update", "campaign", campaign.id,
                 {"changes": changes, "distribution": mode, "moved": result.moved,
                  "total": result.total}, ip, object_name=campaign.name)
    return result


def assign_unassigned(session: Session, campaign: Campaign, cycle_id: int) -> int:
    """Give a new round's tasks without a manager out as auto would
    (the customer has no active manager): the least-loaded active manager."""
    pool = _county_managers(session, campaign.county_id)
    where = [*_movable(campaign.id, cycle_id), Task.manager_id.is_(None)]
    moves = [(t, m) for t, m, _c in _auto_targets(session, campaign, where, pool)
             if m is not None]
    apply_moves(session, moves)
    return len(moves)


def apply_moves(session: Session, moves: list[tuple[int, int]]) -> None:
    """Set tasks' managers in bulk: a temporary table, then one UPDATE ... FROM.
    Only movable tasks move (one being called meanwhile is left alone)."""
    if not moves:
        return
    session.flush()
    conn = session.connection()
    dialect = conn.dialect.name
    conn.exec_driver_sql("DROP TABLE IF EXISTS khhf_moves")
    conn.exec_driver_sql("CREATE TEMPORARY TABLE khhf_moves "
                         "(task_id INTEGER PRIMARY KEY, manager_id INTEGER NOT NULL)")
    raw = conn.connection.dbapi_connection
    if raw is None:  # only after the connection was invalidated
        raise RuntimeError("the database connection was lost before the tasks moved")
    cursor = raw.cursor()
    # in task order: the temporary table's key is the task id, so each row is
    # an append to its B-tree, not an insert in the middle
    moves = sorted(moves)
    try:
        if dialect == "postgresql":
            with cursor.copy("COPY khhf_moves (task_id, manager_id) FROM STDIN") as copy:
                for row in moves:
                    copy.write_row(row)
        else:  # SQLite
            # one JSON text parsed inside SQLite: a third less CPU than binding
            # a million parameter pairs through executemany
            cursor.execute("INSERT INTO khhf_moves (task_id, manager_id) "
                           "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
                           "FROM json_each(?)", (json.dumps(moves, separators=(",", ":")),))
    finally:
        cursor.close()
    update = text(
        "UPDATE tasks SET manager_id = khhf_moves.manager_id, updated_at = :now "
        "FROM khhf_moves WHERE tasks.id = khhf_moves.task_id "
        f"AND tasks.status IN ({sql_list(MOVABLE)})")
    if dialect == "postgresql":
        # a temporary table has no statistics until analysed: without them the
        # planner may join it row by row
        conn.exec_driver_sql("ANALYZE khhf_moves")
        conn.execute(update, {"now": utcnow()})
    else:  # SQLite
        with _sqlite_manager_index_set_aside(conn, len(moves)):
            conn.execute(update, {"now": utcnow()})
    conn.exec_driver_sql("DROP TABLE khhf_moves")
    session.expire_all()  # loaded tasks now have other managers


# ix_tasks_manager_status is the only index on tasks with manager_id in it
MANAGER_INDEX = "ix_tasks_manager_status"
# SQLite sets that index aside for a move of at least this many tasks that is
# also at least a quarter of all tasks (rebuilding costs a pass over them all)
SET_ASIDE_MIN_MOVES = 50_000


@contextlib.contextmanager
def _sqlite_manager_index_set_aside(conn, moved: int):
    """On SQLite, a move that touches a large share of the tasks drops the
    index on manager_id and builds it again after the UPDATE, in the same
    transaction. Each moved task leaves one place of that index for another,
    and auto distribution sends consecutive tasks to different managers:
    with SQLite's 2 MB page cache those B-tree pages were read and written
    back over and over (auto, 1,000,000 tasks: 8.5 s of CPU for the UPDATE,
    against 5 s with the index built once, from sorted keys, afterwards).
    The index is made again from its own stored definition (schema.sql's).
    Readers are not disturbed: in WAL mode they keep the snapshot they began
    with until this transaction commits, index and all."""
    total = conn.exec_driver_sql("SELECT max(id) FROM tasks").scalar() or 0
    if moved < SET_ASIDE_MIN_MOVES or moved * 4 < total:
        yield
        return
    definition = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
        (MANAGER_INDEX,)).scalar()
    if definition is None:
        yield
        return
    conn.exec_driver_sql(f"DROP INDEX {MANAGER_INDEX}")
    yield
    conn.exec_driver_sql(definition)


def reassign(session: Session, by: User | None, ip: str, campaign: Campaign, task_ids,
             manager_id) -> int:
    """Give chosen open tasks of the campaign to one active manager of its county."""
    problems = Problems()
    manager_id = parse_int(manager_id)
    manager = session.get(Manager, manager_id) if manager_id is not None else None
    if manager is None or manager.status != "active" or manager.county_id != campaign.county_id:
        problems.add("manager_id", N_("Choose an active customer manager of the campaign's "
                                      "county."))
    ids = sorted({i for i in map(parse_int, task_ids or ()) if i is not None})
    if not ids:
        problems.add("task_ids", N_("Select the tasks to reassign."))
    rows = session.scalars(select(Task).where(Task.id.in_(ids),
                                              Task.campaign_id == campaign.id)).all()
    if len(rows) != len(ids):
        problems.add("task_ids", N_("Some selected tasks are not tasks of this campaign."))
    closed = [t.id for t in rows if t.status not in tasks.OPEN]
    if closed:
        problems.add("task_ids", N_("Tasks %(ids)s are finished or cancelled and cannot be "
                                    "reassigned."), ids=", ".join(map(str, closed[:10])))
    problems.raise_if_any()
    manager = validated(manager, "the manager")
    now = utcnow()
    before = sorted({t.manager.employee_no for t in rows if t.manager is not None})
    for task in rows:
        tasks.reassign(task, manager.id, now)
    session.flush()
    audit.record(session, by, "update", "campaign", campaign.id,
                 {"changes": {"manager": [", ".join(before) or None, manager.employee_no]},
                  "tasks": ids[:100]}, ip, object_name=campaign.name)
    return len(rows)
