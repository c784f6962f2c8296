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
writes it set-based: each move is (task, new manager, manager when
planned), and one UPDATE ... FROM moves the tasks still movable and still
with that manager (one being called, or reassigned by hand meanwhile, is
left alone). PostgreSQL takes the moves as arrays (unnest); SQLite through
a temporary table filled from one JSON parameter.

Up to `chunk_rows` moves (PostgreSQL: CHUNK_ROWS; SQLite: any number) are
written in the caller's transaction: all or none. A larger plan becomes a
run (distribution_runs): the commit stores its moves, packed, and the
audit entry; the caller commits, then `finish` writes CHUNK_ROWS moves per
transaction, recording its progress in the run with each. So no
transaction holds a million rows' locks for the whole write (the bridge's
updates of a task and the task list never wait on one long lock), and a
run that stopped (a killed process, a lost connection) is finished from
where it stopped by the next `finish` (the jobs daemon calls `resume`
every minute), each move written exactly once (the run's row is locked
while a chunk is written). While a run is unfinished the campaign shows it
in progress and refuses another distribution. On SQLite a move of a large
share of the tasks in one transaction drops the index on manager_id and
builds it again afterwards (_sqlite_manager_index_set_aside); PostgreSQL
never does (it would lock the table). Manual reassignment of chosen tasks
goes through khhf.services.tasks.reassign. Distribution changes who works a
task, never its status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import heapq
import json
import zlib
from array import array
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, defer

from khhf import audit, db
from khhf.models import (
    Campaign,
    Customer,
    DistributionRun,
    Manager,
    Task,
    TaskStatus,
    User,
    sql_list,
    utcnow,
)
from khhf.services import N_, Problems, parse_int, tasks, validated

MODES = ("average", "auto")
MOVABLE = (TaskStatus.PENDING, TaskStatus.NOT_REACHED)
# a PostgreSQL distribution moving more tasks than this is a run, written
# this many per transaction (about a second each on a 2-core host)
CHUNK_ROWS = 50_000
# an unfinished run untouched this long is taken over by `resume`
STALE_AFTER = dt.timedelta(minutes=2)


@dataclasses.dataclass
class Plan:
    mode: str
    moves: list[tuple[int, int, int | None]]  # (task, new manager, current), real changes
    before: dict                         # {manager_id or None: movable tasks now}
    counts: dict                         # {manager_id or None: movable tasks after}
    total: int                           # movable tasks
    managers: list[Manager]              # the managers the preview shows
    run_id: int | None = None            # a run still to `finish` (commit only)

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
    moves = [(t, m, current) for t, m, current in target if m is not None and m != current]
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
           manager_ids=None, chunk_rows: int | None = None) -> Plan:
    """Compute the plan again and write it; audited. Up to `chunk_rows`
    moves (default: CHUNK_ROWS on PostgreSQL, any number on SQLite) are
    written here and the caller commits: all moves or none. More become a
    run (plan.run_id): the caller commits it, then calls `finish`."""
    problems = Problems()
    if campaign.status == "closed":
        problems.add("campaign", N_("The campaign is closed: its tasks can no longer be "
                                    "distributed."))
    running = unfinished(session, campaign.id)
    if running is not None:
        problems.add("campaign", N_("The previous distribution of this campaign is still being "
                                    "written (%(applied)s of %(total)s tasks): distribute again "
                                    "when it has finished."),
                     applied=running.applied, total=running.total)
    problems.raise_if_any()
    result = plan(session, campaign, mode, manager_ids)
    def split(counts):
        return ", ".join(f"{m.employee_no} {counts.get(m.id, 0)}" for m in result.managers
                         if counts.get(m.id)) or None
    # the audit's split is made before the move: apply_moves expires every
    # loaded object, and reading the managers' numbers afterwards cost one
    # query per manager
    changes = {"tasks_by_manager": [split(result.before), split(result.counts)]}
    details = {"changes": changes, "distribution": mode, "moved": result.moved,
               "total": result.total}
    if chunk_rows is None:
        chunk_rows = CHUNK_ROWS if session.get_bind().dialect.name == "postgresql" else 0
    if chunk_rows and result.moved > chunk_rows:
        run = DistributionRun(campaign_id=campaign.id, mode=mode, total=result.moved,
                              moves=_pack(result.moves), created_by=by.id if by else None)
        session.add(run)
        session.flush()
        result.run_id = details["run"] = run.id
    else:
        apply_moves(session, result.moves)
    audit.record(session, by, "update", "campaign", campaign.id, details, ip,
                 object_name=campaign.name)
    return result


def unfinished(session: Session, campaign_id: int) -> DistributionRun | None:
    """The campaign's distribution run still being written, if any."""
    return session.scalar(select(DistributionRun).where(
        DistributionRun.campaign_id == campaign_id, DistributionRun.finished_at.is_(None)))


def _pack(moves) -> bytes:
    flat = array("i")
    for task_id, manager_id, current in sorted(moves):
        flat.extend((task_id, manager_id, current or 0))
    return zlib.compress(flat.tobytes(), 1)


def _unpack(blob: bytes) -> array:
    flat = array("i")
    flat.frombytes(zlib.decompress(blob))
    return flat


def apply_chunk(session: Session, run_id: int, chunk_rows: int = CHUNK_ROWS,
                cache: dict | None = None) -> bool:
    """Write the run's next `chunk_rows` moves and record them in the run
    (finished: its moves dropped, finished_at set), in the caller's
    transaction; the caller commits. The run's row is locked first, so two
    processes finishing one run take turns and never write a move twice.
    True when the run is finished (it was already, or is now)."""
    run = session.scalar(select(DistributionRun).where(DistributionRun.id == run_id)
                         .options(defer(DistributionRun.moves)).with_for_update()
                         .execution_options(populate_existing=True))
    if run is None or run.finished_at is not None:
        return True
    # the moves are read once per process (a few MB), not once per chunk
    cache = cache if cache is not None else {}
    if cache.get("run") != run_id:
        blob = session.scalar(select(DistributionRun.moves).where(DistributionRun.id == run_id))
        cache.update(run=run_id, moves=_unpack(blob or b""))
    flat = cache["moves"]
    part = flat[3 * run.applied:3 * min(run.total, run.applied + chunk_rows)]
    moves = [(part[i], part[i + 1], part[i + 2] or None) for i in range(0, len(part), 3)]
    moved = apply_moves(session, moves)
    run.applied += len(moves)
    run.moved += moved
    run.updated_at = utcnow()
    if run.applied >= run.total:
        run.finished_at = run.updated_at
        run.moves = None
    session.flush()
    return run.finished_at is not None


def finish(session: Session, run_id: int, chunk_rows: int = CHUNK_ROWS) -> DistributionRun:
    """Write a run to its end, one transaction per chunk (this commits)."""
    cache: dict = {}
    session.rollback()
    while True:
        db.begin_write(session)
        done = apply_chunk(session, run_id, chunk_rows, cache)
        session.commit()
        if done:
            return session.get_one(DistributionRun, run_id)


def resume(session: Session, stale_after: dt.timedelta = STALE_AFTER) -> list[int]:
    """Finish every run nobody has advanced for `stale_after` (its process
    stopped); returns their ids. The jobs daemon calls it every minute."""
    session.rollback()
    ids = session.scalars(select(DistributionRun.id).where(
        DistributionRun.finished_at.is_(None),
        DistributionRun.updated_at < utcnow() - stale_after)).all()
    session.rollback()
    for run_id in ids:
        finish(session, run_id)
    return list(ids)


def assign_unassigned(session: Session, campaign: Campaign, cycle_id: int) -> int:
    """Give a new round's tasks without a manager out as auto would
    (the customer has no active manager): the least-loaded active manager."""
    pool = _county_managers(session, campaign.county_id)
    where = [*_movable(campaign.id, cycle_id), Task.manager_id.is_(None)]
    moves = [(t, m, c) for t, m, c in _auto_targets(session, campaign, where, pool)
             if m is not None]
    apply_moves(session, moves)
    return len(moves)


def apply_moves(session: Session, moves: list[tuple[int, int, int | None]]) -> int:
    """Set tasks' managers set-based, in one UPDATE ... FROM; returns the tasks
    moved. A move is (task, new manager, manager it had when planned): only
    tasks still movable and still with that manager move (one being called,
    or reassigned meanwhile, is left alone)."""
    if not moves:
        return 0
    session.flush()
    conn = session.connection()
    moved = 0
    if conn.dialect.name == "postgresql":
        # three arrays, one element per move: no temporary table to fill,
        # analyse and drop. The moves' range of task ids lets the planner read
        # only those tasks (without it, it hashed the whole table per chunk)
        update = text(
            "UPDATE tasks SET manager_id = v.manager_id, updated_at = :now "
            "FROM unnest(CAST(:tasks AS INTEGER[]), CAST(:managers AS INTEGER[]), "
            "CAST(:befores AS INTEGER[])) AS v(task_id, manager_id, before) "
            "WHERE tasks.id = v.task_id AND tasks.id BETWEEN :first AND :last "
            f"AND tasks.status IN ({sql_list(MOVABLE)}) "
            "AND tasks.manager_id IS NOT DISTINCT FROM v.before")
        ids = [m[0] for m in moves]
        moved = conn.execute(update, {"now": utcnow(), "tasks": ids,
                                      "managers": [m[1] for m in moves],
                                      "befores": [m[2] for m in moves],
                                      "first": min(ids), "last": max(ids)}).rowcount
    else:  # SQLite
        conn.exec_driver_sql("DROP TABLE IF EXISTS khhf_moves")
        conn.exec_driver_sql("CREATE TEMPORARY TABLE khhf_moves (task_id INTEGER PRIMARY KEY, "
                             "manager_id INTEGER NOT NULL, before INTEGER)")
        # one JSON text parsed inside SQLite: a third less CPU than binding
        # a million parameter triples through executemany; in task order, so
        # each row is an append to the temporary table's B-tree
        conn.exec_driver_sql(
            "INSERT INTO khhf_moves (task_id, manager_id, before) "
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
            "json_extract(value, '$[2]') FROM json_each(?)",
            (json.dumps(sorted(moves), separators=(",", ":")),))
        update = text(
            "UPDATE tasks SET manager_id = khhf_moves.manager_id, updated_at = :now "
            "FROM khhf_moves WHERE tasks.id = khhf_moves.task_id "
            f"AND tasks.status IN ({sql_list(MOVABLE)}) AND tasks.manager_id IS khhf_moves.before")
        with _sqlite_manager_index_set_aside(conn, len(moves)):
            moved = conn.execute(update, {"now": utcnow()}).rowcount
        conn.exec_driver_sql("DROP TABLE khhf_moves")
    session.expire_all()  # loaded tasks now have other managers
    return moved


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
