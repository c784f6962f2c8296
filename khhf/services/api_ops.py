"""The integration API's operations (webui/api is their HTTP door).

Every function takes the authenticated ApiClient and sees only its county:
an object of another county is "not found", exactly like one that does
not exist (no probing). Writes follow the file import's row rules and
reasons (khhf.services.imports.run_records), in the caller's transaction:
the caller commits all accepted rows or nothing. Reads page by an opaque
cursor over ascending ids, so a page never shifts under a client.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, joinedload

from khhf import i18n, webhooks
from khhf.bridge_client import LiveCalls
from khhf.config import Settings
from khhf.models import (
    ApiClient,
    ApiIdempotency,
    Call,
    Campaign,
    Customer,
    Manager,
    Task,
    User,
)

from . import N_, Problem, Problems, ValidationError, dialing, imports
from .trunk import TrunkStatus

MAX_BATCH = 10_000
MAX_PAGE = 500
DEFAULT_PAGE = 100
CUSTOMER_FIELDS = ("phone", "name", "manager", "note")
MANAGER_FIELDS = ("employee_no", "display_name", "username", "desk_extension", "mobile")
TASK_STATUSES_READ = ("pending", "dialing", "connected", "not_reached", "done", "cancelled")


class NotFound(LookupError):
    """The object is not there for this client (absent, or another county's)."""


class Rejected(ValidationError):
    """A batch sent with atomic=true had rejects: nothing was written."""

    def __init__(self, report: imports.Report, body: dict):
        super().__init__([Problem("rows", N_("%(count)d rows were rejected, so nothing was "
                                             "written: correct them and send the batch "
                                             "again."), {"count": report.rejected})])
        self.body = body   # the batch's report, rejects and all


def code_of(message: str) -> str:
    """A machine code for a message: its first clause as snake_case
    ("Not a phone number: ..." -> "not_a_phone_number")."""
    first = re.sub(r"%\(\w+\)[sd]", "x", message)
    first = re.split(r"[:;,.(]", first, maxsplit=1)[0]
    return "_".join(re.findall(r"[a-z0-9]+", first.lower()))[:48] or "invalid"


def problem_json(problem: Problem, locale: str | None) -> dict:
    return {"field": problem.field, "code": code_of(problem.message),
            "message": i18n.problem_text(problem, locale)}


# -- cursors ------------------------------------------------------------------------

def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The id after which the page starts; ValidationError for a cursor we did not give."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, last = text.split(":")
        if version != "v1" or not last.isdigit():
            raise ValueError(text)
        return int(last)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError([Problem("cursor", N_(
            "This cursor is not one the API gave: pass next_cursor from the previous page "
            "as it was, or leave it out for the first page."))]) from None


@dataclasses.dataclass
class Page:
    items: list[dict]
    next_cursor: str | None

    def to_json(self) -> dict:
        return {"items": self.items, "next_cursor": self.next_cursor}


def _page(session: Session, query, model, cursor: str | None, limit: int,
          shape: Callable[[Any], dict]) -> Page:
    rows = session.scalars(query.where(model.id > decode_cursor(cursor))
                           .order_by(model.id).limit(limit + 1)).unique().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([shape(r) for r in rows], encode_cursor(rows[-1].id) if more else None)


# -- writes: customers, managers, tasks ------------------------------------------------

def _rows(rows: object, fields: tuple[str, ...]) -> list[dict]:
    problems = Problems()
    if not isinstance(rows, list) or not rows:
        problems.refuse("rows", N_("rows must be a list of 1 to %(max)d objects."), max=MAX_BATCH)
    if len(rows) > MAX_BATCH:
        problems.refuse("rows", N_("A batch holds at most %(max)d rows: split it, each batch "
                                   "with its own key."), max=MAX_BATCH)
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or any(not isinstance(v, (str, int, type(None)))
                                            or isinstance(v, bool) for v in row.values()):
            problems.refuse(f"rows[{i}]", N_("Each row must be an object of text values."))
        unknown = sorted(set(row) - set(fields))
        if unknown:
            problems.refuse(f"rows[{i}].{unknown[0]}", N_(
                "Unknown field %(value)s; the fields are: %(known)s."),
                value=unknown[0], known=", ".join(fields))
        out.append({k: "" if v is None else str(v) for k, v in row.items()})
    return out


def _report_json(report: imports.Report, locale: str | None) -> dict:
    rejects = [{"index": r.row - 1, "problems": [
        {"field": field, "code": code_of(message),
         "message": i18n.gettext(message, locale, **params)}
        for field, _value, message, params in r.problems]} for r in report.rejects]
    return {"received": report.rows, "accepted": report.accepted,
            "created": report.accepted - report.updated, "updated": report.updated,
            "rejected": report.rejected, "rejects": rejects}


def _options(session: Session, client: ApiClient, **extra) -> imports.Options:
    county = client.county
    return imports.Options(county_code=county.code, only_county_id=county.id, **extra)


def _run(session: Session, client: ApiClient, kind: str, rows: list[dict], ip: str,
         atomic: bool, locale: str | None, **options) -> dict:
    try:
        report = imports.run_records(session, kind, rows, _options(session, client, **options),
                                     commit=True, ip=ip, source=f"api:{client.name}")
    except imports.FileError as error:  # the batch's own options (campaign, county)
        raise ValidationError([Problem("batch", error.message, error.params)]) from None
    if atomic and report.rejects:
        raise Rejected(report, _report_json(report, locale))
    return _report_json(report, locale)


def upsert_customers(session: Session, client: ApiClient, rows: object, ip: str = "", *,
                     atomic: bool = False, locale: str | None = None) -> dict:
    """Customers of the client's county by phone number: new ones added,
    existing ones updated; rejects say which row, field and why."""
    return _run(session, client, "customers", _rows(rows, CUSTOMER_FIELDS), ip, atomic,
                locale, update_existing=True)


def upsert_managers(session: Session, client: ApiClient, rows: object, ip: str = "", *,
                    atomic: bool = False, locale: str | None = None) -> dict:
    """Customer managers of the client's county by employee number. A new
    one gets a random password: an administrator sets it (managers page)."""
    return _run(session, client, "managers", _rows(rows, MANAGER_FIELDS), ip, atomic,
                locale, update_existing=True)


def create_tasks(session: Session, client: ApiClient, campaign_id: int, numbers: object,
                 ip: str = "", *, atomic: bool = False, locale: str | None = None) -> dict:
    """Tasks of a campaign of the client's county, one per customer number
    (the task list import's rules: the customer must exist, no second open task)."""
    campaign_in_county(session, client, campaign_id)
    if not isinstance(numbers, list) or not numbers or len(numbers) > MAX_BATCH or \
            not all(isinstance(n, str) for n in numbers):
        raise ValidationError([Problem("numbers", N_(
            "numbers must be a list of 1 to %(max)d customer numbers as text."),
            {"max": MAX_BATCH})])
    return _run(session, client, "tasks", [{"phone": n} for n in numbers], ip, atomic,
                locale, campaign_id=campaign_id)


def campaign_in_county(session: Session, client: ApiClient, campaign_id: int) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.id == campaign_id,
                                                     Campaign.county_id == client.county_id))
    if campaign is None:
        raise NotFound("campaign")
    return campaign


# -- idempotency ----------------------------------------------------------------------

def remembered(session: Session, client: ApiClient, key: str) -> ApiIdempotency | None:
    return session.scalar(select(ApiIdempotency).where(ApiIdempotency.client_id == client.id,
                                                       ApiIdempotency.key == key))


def remember(session: Session, client: ApiClient, key: str, operation: str, status: int,
             body: dict) -> None:
    session.add(ApiIdempotency(client_id=client.id, key=key, operation=operation,
                               status_code=status, response=json.dumps(body, ensure_ascii=False)))
    session.flush()  # the same key sent twice at once: the second fails here, not at commit


# -- reads --------------------------------------------------------------------------

def _tasks_of(client: ApiClient) -> ColumnElement:
    return Task.customer_id.in_(select(Customer.id).where(Customer.county_id == client.county_id))


def task_json(task: Task) -> dict:
    code = task.result_code
    return {"id": task.id, "campaign_id": task.campaign_id,
            "customer_number": task.customer.phone,
            "manager": task.manager.employee_no if task.manager else None,
            "task_type": task.task_type.code, "status": task.status,
            "attempts": task.attempts, "max_attempts": task.max_attempts,
            "result_code": code.code if code else None,
            "result_label": code.label if code else None,
            "appointment_at": webhooks._iso(task.appointment_at),
            "last_call_at": webhooks._iso(task.last_call_at),
            "created_at": webhooks._iso(task.created_at),
            "updated_at": webhooks._iso(task.updated_at)}


_TASK_LOADS = (joinedload(Task.customer), joinedload(Task.manager), joinedload(Task.task_type),
               joinedload(Task.result_code))


def tasks_page(session: Session, client: ApiClient, *, cursor: str | None, limit: int,
               campaign_id: int | None = None, status: str | None = None) -> Page:
    query = select(Task).where(_tasks_of(client)).options(*_TASK_LOADS)
    if campaign_id is not None:
        query = query.where(Task.campaign_id == campaign_id)
    if status:
        if status not in TASK_STATUSES_READ:
            raise ValidationError([Problem("status", N_("status must be one of: %(known)s."),
                                           {"known": ", ".join(TASK_STATUSES_READ)})])
        query = query.where(Task.status == status)
    return _page(session, query, Task, cursor, limit, task_json)


def task(session: Session, client: ApiClient, task_id: int) -> dict:
    found = session.scalar(select(Task).where(Task.id == task_id, _tasks_of(client))
                           .options(*_TASK_LOADS))
    if found is None:
        raise NotFound("task")
    return task_json(found)


def _call_json(call: Call) -> dict:
    return webhooks.call_json(call, call.manager.employee_no if call.manager else None)


def calls_page(session: Session, client: ApiClient, *, cursor: str | None, limit: int,
               task_id: int | None = None) -> Page:
    query = select(Call).where(Call.county_id == client.county_id) \
        .options(joinedload(Call.manager))
    if task_id is not None:
        query = query.where(Call.task_id == task_id)
    return _page(session, query, Call, cursor, limit, _call_json)


def call_in_county(session: Session, client: ApiClient, call_id: int) -> Call:
    call = session.scalar(select(Call).where(Call.id == call_id,
                                             Call.county_id == client.county_id)
                          .options(joinedload(Call.manager)))
    if call is None:
        raise NotFound("call")
    return call


def call(session: Session, client: ApiClient, call_id: int) -> dict:
    return _call_json(call_in_county(session, client, call_id))


# -- click-to-dial --------------------------------------------------------------------

def dial(session: Session, settings: Settings, client: ApiClient, task_id: int,
         employee_no: str, ip: str = "", live: LiveCalls | None = None,
         device: str | None = None, trunk: TrunkStatus | None = None) -> Call:
    """A call for a task, on behalf of its manager (named by employee
    number, as the CRM knows them): the web's dial (khhf.services.dialing
    .request_call) decides, with every rule it has; the caller then asks the
    bridge to place it."""
    found = session.scalar(select(Task.id).where(Task.id == task_id, _tasks_of(client)))
    if found is None:
        raise NotFound("task")
    user = session.scalar(select(User).join(Manager, Manager.user_id == User.id).where(
        Manager.employee_no == (employee_no or ""), Manager.county_id == client.county_id))
    if user is None:
        raise ValidationError([Problem("manager", N_(
            "There is no manager %(value)s in this county: give the employee number of "
            "the task's manager."), {"value": employee_no or ""})])
    return dialing.request_call(session, settings, user, task_id, ip=ip, live=live,
                                device=device, trunk=trunk)

