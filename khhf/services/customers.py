"""Customers (客户管理): search, edit, do-not-call, consent, reassignment, history.

Writes validate first and raise ValidationError before changing anything;
each records its audit entry (numbers masked); the caller commits.

Reassigning a customer ends the open customer_assignments row and opens a
new one; the hotline reads customers.manager_id afresh on every call, so
the customer's next call rings the new manager. Open tasks not yet in a
call follow the customer, as in a departure hand-over.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.orm import Session

from khhf import audit, numbering
from khhf.models import Call, Customer, CustomerAssignment, Manager, Task, TaskStatus, User, utcnow
from khhf.phones import mask_phone
from khhf.services import N_, Problems, tasks, validated

PAGE_SIZE = 50
REASON_MAX = 200
# tasks not yet in a call follow their customer to the new manager
FOLLOWING_TASK_STATUSES = (TaskStatus.PENDING, TaskStatus.NOT_REACHED)


def search(session: Session, where: ColumnElement = true(), q: str = "", *,
           after: int | None = None, limit: int = PAGE_SIZE) -> list[Customer]:
    """Customers matching `q` (part of the name, or of the number), newest
    first, `limit` after the id `after` (keyset pagination: as fast on the
    last page as on the first)."""
    query = select(Customer).where(where)
    q = (q or "").strip()
    if q:
        digits = "".join(ch for ch in q if ch.isdigit())
        like = f"%{q}%"
        if digits and len(digits) == len(q.replace(" ", "").replace("-", "")):
            query = query.where(or_(Customer.phone.like(f"%{digits}%"), Customer.name.like(like)))
        else:
            query = query.where(Customer.name.like(like))
    if after:
        query = query.where(Customer.id < after)
    return list(session.scalars(query.order_by(Customer.id.desc()).limit(limit)))


def update(session: Session, by: User | None, ip: str, customer: Customer, *, name: str,
           phone: str, note: str) -> Customer:
    """Edit a customer's name, number and note."""
    problems = Problems()
    name = (name or "").strip()
    if len(name) > 64:
        problems.add("name", N_("The name is longer than 64 characters."))
    try:
        phone = numbering.normalise(phone)
    except numbering.NumberError:
        problems.add("phone", N_("Not a phone number: 11-digit mobile (e.g. 13812345678) or "
                                 "fixed line with area code (e.g. 057112345678)."))
    else:
        other = session.scalar(select(Customer.id).where(Customer.phone == phone,
                                                         Customer.id != customer.id))
        if other is not None:
            problems.add("phone", N_("Customer %(value)s already exists; edit it on the "
                                     "customers page."), value=mask_phone(phone))
    problems.raise_if_any()
    changes = {"customer_name": (customer.name, name),
               "phone": (mask_phone(customer.phone), mask_phone(phone)),
               "note": (customer.note or "", note or "")}
    customer.name, customer.phone, customer.note = name, phone, note or ""
    customer.updated_at = utcnow()
    audit.record(session, by, "update", "customer", customer.id, audit.changes(changes), ip,
                 object_name=audit_name(customer))
    return customer


CONSENT_SOURCE_MAX = 64


def set_consent(session: Session, by: User | None, ip: str, customer: Customer,
                consent: bool, source: str, now: dt.datetime | None = None) -> Customer:
    """Record (or withdraw) the customer's consent to marketing calls, with
    where it was given (营业厅签字, 电话录音 11-28, ...); task types that
    require consent ring only customers who gave it. Audited."""
    problems = Problems()
    source = (source or "").strip()
    if not source:
        problems.add("source", N_("Say where the consent was given or withdrawn (e.g. signed "
                                  "at the service hall on 11-28)."))
    elif len(source) > CONSENT_SOURCE_MAX:
        problems.add("source", N_("The source is longer than %(count)d characters."),
                     count=CONSENT_SOURCE_MAX)
    problems.raise_if_any()
    now = now or utcnow()
    changes = {"consent": (bool(customer.consent), consent),
               "consent_source": (customer.consent_source, source)}
    customer.consent, customer.consent_source = consent, source
    customer.consent_at = now
    customer.updated_at = now
    audit.record(session, by, "update", "customer", customer.id, audit.changes(changes), ip,
                 object_name=audit_name(customer))
    return customer


def reassign(session: Session, by: User | None, ip: str, customer: Customer,
             manager_id: int | None, *, reason: str = "reassign") -> Customer:
    """Give the customer to another active manager of their county."""
    problems = Problems()
    manager = session.get(Manager, manager_id) if manager_id else None
    if manager is None:
        problems.add("manager_id", N_("Choose the manager who takes the customer over."))
    elif manager.status != "active":
        problems.add("manager_id", N_("Manager %(value)s has departed; name an active "
                                      "manager."), value=manager.employee_no)
    elif manager.county_id != customer.county_id:
        problems.add("manager_id", N_("Manager %(value)s works in another county."),
                     value=manager.employee_no)
    elif manager.id == customer.manager_id:
        problems.add("manager_id", N_("The customer already belongs to this manager."))
    problems.raise_if_any()
    manager = validated(manager, "the manager")
    now = utcnow()
    old = customer.manager_id
    for row in session.scalars(select(CustomerAssignment).where(
            CustomerAssignment.customer_id == customer.id,
            CustomerAssignment.ended_at.is_(None))):
        row.ended_at = now
    session.flush()  # the unique open-assignment index sees the old one closed first
    session.add(CustomerAssignment(customer_id=customer.id, manager_id=manager.id,
                                   assigned_at=now, reason=reason[:32],
                                   assigned_by=by.id if by else None))
    customer.manager_id, customer.updated_at = manager.id, now
    moved = 0
    for task in session.scalars(select(Task).where(
            Task.customer_id == customer.id, Task.status.in_(FOLLOWING_TASK_STATUSES),
            or_(Task.manager_id == old, Task.manager_id.is_(None)))):
        tasks.reassign(task, manager.id, now)
        moved += 1
    before = session.get(Manager, old) if old else None
    audit.record(session, by, "reassign_customer", "customer", customer.id,
                 {"changes": {"manager": [_manager_name(before), _manager_name(manager)]},
                  "tasks": moved}, ip, object_name=audit_name(customer))
    return customer


def audit_name(customer: Customer) -> str:
    """How the operation log names a customer: name and masked number."""
    return " ".join(filter(None, (customer.name, mask_phone(customer.phone))))


def _manager_name(manager: Manager | None) -> str | None:
    return f"{manager.user.display_name} ({manager.employee_no})" if manager else None


def history(session: Session, customer: Customer) -> list[CustomerAssignment]:
    """Who owned the customer when, newest first."""
    return list(session.scalars(select(CustomerAssignment).where(
        CustomerAssignment.customer_id == customer.id)
        .order_by(CustomerAssignment.assigned_at.desc(), CustomerAssignment.id.desc())))


def tasks_of(session: Session, customer: Customer, where: ColumnElement = true(),
             limit: int = 100) -> list[Task]:
    return list(session.scalars(select(Task).where(Task.customer_id == customer.id, where)
                                .order_by(Task.id.desc()).limit(limit)))


def calls_of(session: Session, customer: Customer, where: ColumnElement = true(),
             limit: int = 100) -> list[Call]:
    return list(session.scalars(select(Call).where(Call.customer_id == customer.id, where)
                                .order_by(Call.id.desc()).limit(limit)))
