"""Manager departure (人事变动): nobody's customers are lost with the person.

`depart_manager` marks a manager departed and hands their customers and
open tasks over, either to one named successor or spread evenly over the
county's other active managers; assignment history is kept in
customer_assignments. Everything happens in the caller's unit of work, with
one audit entry; the caller commits. The hotline reads customers.manager_id
afresh on every call, so the very next call reaches the new manager.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from khhf import audit
from khhf.models import Customer, CustomerAssignment, Manager, Task, TaskStatus, User, utcnow
from khhf.services import N_, Problems, tasks

# tasks not yet in a call: they follow the customer to the new manager
HANDED_OVER_TASK_STATUSES = (TaskStatus.PENDING, TaskStatus.NOT_REACHED)
REASON = "departure"


@dataclasses.dataclass(frozen=True)
class Handover:
    """What a departure moved: customers and tasks per receiving manager id."""
    manager_id: int
    customers: dict[int, int]
    tasks: dict[int, int]

    @property
    def customer_count(self) -> int:
        return sum(self.customers.values())

    @property
    def task_count(self) -> int:
        return sum(self.tasks.values())


def depart_manager(session: Session, manager_id: int, *, successor_id: int | None = None,
                   by_user: User | None = None, ip: str = "",
                   now: dt.datetime | None = None) -> Handover:
    """Mark manager `manager_id` departed and hand over their customers and tasks.

    With `successor_id`, everything goes to that manager (active, same
    county); without, customers are spread evenly over the county's other
    active managers (those with fewer customers get more). Raises
    ValidationError, before changing anything, when the manager is unknown or
    already departed, or nobody can receive the customers.
    """
    now = now or utcnow()
    problems = Problems()
    manager = session.get(Manager, manager_id)
    if manager is None:
        problems.refuse("manager", N_("There is no manager %(id)s."), id=manager_id)
    if manager.status != "active":
        problems.add("manager", N_("Manager %(no)s has already departed."),
                     no=manager.employee_no)
    receivers: list[Manager] = []
    if successor_id is not None:
        successor = session.get(Manager, successor_id)
        if successor is None:
            problems.add("successor", N_("There is no manager %(id)s to take over."),
                         id=successor_id)
        elif successor.id == manager.id:
            problems.add("successor", N_("A manager cannot be their own successor."))
        elif successor.status != "active":
            problems.add("successor", N_("Successor %(no)s has departed; choose an active "
                                         "manager."), no=successor.employee_no)
        elif successor.county_id != manager.county_id:
            problems.add("successor", N_("Successor %(no)s works in another county; choose a "
                                         "manager of the same county."),
                         no=successor.employee_no)
        else:
            receivers = [successor]
    else:
        receivers = list(session.scalars(select(Manager).where(
            Manager.county_id == manager.county_id, Manager.status == "active",
            Manager.id != manager.id).order_by(Manager.id)))
        if not receivers:
            problems.add("successor", N_("Manager %(no)s is the county's last active manager: "
                                         "add a manager before this one departs."),
                         no=manager.employee_no)
    problems.raise_if_any()

    customer_ids = list(session.scalars(select(Customer.id).where(
        Customer.manager_id == manager.id).order_by(Customer.id)))
    new_owner = _spread(session, customer_ids, receivers)

    # history: close the open assignment rows, open one per customer
    for chunk in _chunks(customer_ids):
        session.execute(update(CustomerAssignment).where(
            CustomerAssignment.customer_id.in_(chunk), CustomerAssignment.ended_at.is_(None))
            .values(ended_at=now).execution_options(synchronize_session=False))
    by_id = by_user.id if by_user is not None else None
    session.add_all(CustomerAssignment(customer_id=cid, manager_id=mid, assigned_at=now,
                                       reason=REASON, assigned_by=by_id)
                    for cid, mid in new_owner.items())
    for receiver in receivers:
        ids = [cid for cid, mid in new_owner.items() if mid == receiver.id]
        for chunk in _chunks(ids):
            session.execute(update(Customer).where(Customer.id.in_(chunk))
                            .values(manager_id=receiver.id, updated_at=now)
                            .execution_options(synchronize_session=False))

    # open tasks follow their customer; a task for a customer the manager did
    # not own (a call-back for the county) goes to the first receiver
    tasks_moved: dict[int, int] = {}
    for task in session.scalars(select(Task).where(
            Task.manager_id == manager.id, Task.status.in_(HANDED_OVER_TASK_STATUSES))):
        receiver_id = new_owner.get(task.customer_id, receivers[0].id)
        tasks.reassign(task, receiver_id, now)
        tasks_moved[receiver_id] = tasks_moved.get(receiver_id, 0) + 1

    manager.status, manager.departed_at, manager.on_duty = "departed", now, False
    manager.successor_id = successor_id
    # a person who has left must not log in to customer data any more
    manager.user.is_active = False
    customers_moved: dict[int, int] = {}
    for mid in new_owner.values():
        customers_moved[mid] = customers_moved.get(mid, 0) + 1
    names = {r.id: r.user.display_name for r in receivers}
    audit.record(session, by_user, "update", "manager", manager.id,
                 {"reason": "departed", "customers": _describe(customers_moved, names),
                  "tasks": _describe(tasks_moved, names)}, ip,
                 object_name=manager.user.display_name)
    session.flush()
    return Handover(manager.id, customers_moved, tasks_moved)


def _spread(session: Session, customer_ids: list[int], receivers: list[Manager]) -> dict[int, int]:
    """customer id -> receiving manager id, evening out the receivers' loads."""
    if len(receivers) == 1:
        return {cid: receivers[0].id for cid in customer_ids}
    loads = dict(session.execute(select(Customer.manager_id, func.count()).where(
        Customer.manager_id.in_([r.id for r in receivers])).group_by(Customer.manager_id)).all())
    heap = [(loads.get(r.id, 0), r.id) for r in receivers]
    heapq.heapify(heap)
    out = {}
    for cid in customer_ids:
        load, mid = heapq.heappop(heap)
        out[cid] = mid
        heapq.heappush(heap, (load + 1, mid))
    return out


def _chunks(ids: list[int], size: int = 500):
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def _describe(moved: dict[int, int], names: dict[int, str]) -> list[list]:
    """[[receiver's name, how many], ...] for the audit entry."""
    return [[names[mid], n] for mid, n in sorted(moved.items())]
