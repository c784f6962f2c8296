"""Exports (导出): a county's customers, with their manager and latest
result, and a campaign's tasks, with status and result, for the county's
own systems; and the XLSX and CSV writers every export uses (the reports'
too).

Rows are read in batches by id (keyset: bounded memory however many
rows, the same on SQLite and PostgreSQL) and written as they come.
Customer numbers are exported whole: a county loads them into its CRM.
Who may export is the web's rule (webui.access: administrators, and
supervisors for their own county); every export is in the operation log
(`record`): who, what, the format and how many rows, never a number.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
from collections.abc import Iterable, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from khhf import audit
from khhf.models import Campaign, County, Customer, Feedback, Manager, ResultCode, Task, User
from khhf.services import N_

# rows fetched per round trip while an export streams
BATCH = 2000
FORMATS = ("xlsx", "csv")


@dataclasses.dataclass
class Table:
    """One sheet: its title, column headers, rows (any iterable, read once)
    and each column's kind: count | rate | decimal | text."""
    title: str
    headers: list[str]
    rows: Iterable[list]
    kinds: list[str]


# -- the writers ---------------------------------------------------------------------

def write_csv(tables: Iterable[Table], path, *, titles: bool = True) -> int:
    """CSV, UTF-8 with a BOM (so Excel reads the Chinese), row by row; with
    `titles` each table starts with its title (several tables in one file),
    without it the headers are the first line (for loading elsewhere).
    Returns the number of rows written, headers not counted."""
    written = 0
    with open(path, "w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        for n, table in enumerate(tables):
            if n:
                writer.writerow([])
            if titles:
                writer.writerow([table.title])
            writer.writerow(table.headers)
            for row in table.rows:
                writer.writerow(["" if v is None else v for v in row])
                written += 1
    return written


def write_xlsx(tables: Iterable[Table], path) -> int:
    """XLSX in openpyxl's write-only mode (rows go to a temporary file as
    they are written, so memory stays bounded), one sheet per table.
    Returns the number of rows written, headers not counted."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    workbook = Workbook(write_only=True)
    bold = Font(bold=True)
    # counts need no format of their own (General shows whole numbers)
    formats = {"rate": "0.0%", "decimal": "0.0"}
    written = 0
    for table in tables:
        sheet = workbook.create_sheet(table.title[:31])
        for i, (head, kind) in enumerate(zip(table.headers, table.kinds), start=1):
            width = max(10, min(40, 2 * len(head) + 4)) if kind != "text" else 20
            sheet.column_dimensions[get_column_letter(i)].width = width
        sheet.freeze_panes = "A2"
        head_cells = []
        for head in table.headers:
            cell = WriteOnlyCell(sheet, value=head)
            cell.font = bold
            head_cells.append(cell)
        sheet.append(head_cells)
        for row in table.rows:
            cells = []
            for value, kind in zip(row, table.kinds):
                if kind in formats and isinstance(value, (int, float)):
                    cell = WriteOnlyCell(sheet, value=value)
                    cell.number_format = formats[kind]
                    cells.append(cell)
                else:
                    cells.append(value)
            sheet.append(cells)
            written += 1
    workbook.save(path)
    return written


def write(fmt: str, tables: Iterable[Table], path, *, titles: bool = True) -> int:
    """`tables` to `path` as `fmt` (xlsx or csv); returns the rows written."""
    if fmt == "csv":
        return write_csv(tables, path, titles=titles)
    return write_xlsx(tables, path)


# -- what is exported ----------------------------------------------------------------

@dataclasses.dataclass
class CustomerRow:
    id: int
    name: str
    phone: str
    county: str
    manager: str | None
    employee_no: str | None
    do_not_call: bool
    last_result: str | None
    last_result_at: dt.datetime | None
    note: str
    created_at: dt.datetime


@dataclasses.dataclass
class TaskRow:
    id: int
    customer: str
    phone: str
    manager: str | None
    employee_no: str | None
    status: str
    result: str | None
    result_at: dt.datetime | None
    attempts: int
    appointment_at: dt.datetime | None
    last_call_at: dt.datetime | None


def customers(session: Session, county_id: int | None, size: int = BATCH
              ) -> Iterator[list[CustomerRow]]:
    """Batches of the customers of `county_id` (None: every county), by id,
    each with their manager and the latest result filed on any of their
    tasks."""
    query = (select(Customer.id, Customer.name, Customer.phone, County.name,
                    User.display_name, Manager.employee_no, Customer.do_not_call,
                    Customer.note, Customer.created_at)
             .join(County, County.id == Customer.county_id)
             .outerjoin(Manager, Manager.id == Customer.manager_id)
             .outerjoin(User, User.id == Manager.user_id))
    if county_id is not None:
        query = query.where(Customer.county_id == county_id)
    for rows in _batches(session, query, Customer.id, size):
        latest = _latest_results(session, Task.customer_id, [r[0] for r in rows])
        # positional throughout: after *r[:7] (of no length a type checker
        # knows) a keyword could name a field already filled
        yield [CustomerRow(*r[:7], *latest.get(r[0], (None, None)), *r[7:9]) for r in rows]


def campaign_tasks(session: Session, campaign: Campaign, size: int = BATCH
                   ) -> Iterator[list[TaskRow]]:
    """Batches of `campaign`'s tasks, by id, each with its customer, manager,
    status, result and when that result was filed."""
    query = (select(Task.id, Customer.name, Customer.phone, User.display_name,
                    Manager.employee_no, Task.status, ResultCode.label, Task.attempts,
                    Task.appointment_at, Task.last_call_at)
             .join(Customer, Customer.id == Task.customer_id)
             .outerjoin(Manager, Manager.id == Task.manager_id)
             .outerjoin(User, User.id == Manager.user_id)
             .outerjoin(ResultCode, ResultCode.id == Task.result_code_id)
             .where(Task.campaign_id == campaign.id))
    for rows in _batches(session, query, Task.id, size):
        latest = _latest_results(session, Task.id, [r[0] for r in rows])
        # of the latest result's (label, filed at) only the time: the label is r[6]
        yield [TaskRow(*r[:7], *latest.get(r[0], (None, None))[1:], *r[7:10]) for r in rows]


def _batches(session: Session, query, key, size: int):
    after = 0
    while True:
        rows = session.execute(query.where(key > after).order_by(key).limit(size)).all()
        if rows:
            yield rows
        if len(rows) < size:
            return
        after = rows[-1][0]


def _latest_results(session: Session, key, ids: list[int]) -> dict:
    """key value (a task's or customer's id) -> (result label, filed at) of
    the latest result on it. Results are only ever added, so the latest
    is the highest id."""
    if not ids:
        return {}
    newest = (select(func.max(Feedback.id)).join(Task, Task.id == Feedback.task_id)
              .where(key.in_(ids)).group_by(key))
    rows = session.execute(
        select(key, ResultCode.label, Feedback.created_at)
        .select_from(Feedback).join(Task, Task.id == Feedback.task_id)
        .join(ResultCode, ResultCode.id == Feedback.result_code_id)
        .where(Feedback.id.in_(newest)))
    return {k: (label, at) for k, label, at in rows}


def customer_table(session: Session, county: County | None, tr, local) -> Table:
    """The customers of `county` (None: every county) as an export's table;
    `tr` translates a message of the catalog, `local` writes a UTC time in
    the site's zone (the web: the viewer's language; the command line:
    Chinese)."""
    yes, no = tr("yes"), tr("no")

    def rows():
        for batch in customers(session, county.id if county else None):
            for c in batch:
                yield [c.id, c.name, c.phone, c.county, c.manager or "", c.employee_no or "",
                       yes if c.do_not_call else no, c.last_result or "",
                       local(c.last_result_at), c.note, local(c.created_at)]
    headers = [N_("Customer ID"), N_("Customer name"), N_("Phone"), N_("County"),
               N_("Customer manager"), N_("Employee number"), N_("Do not call"),
               N_("Last result"), N_("Last result time"), N_("Note"), N_("Created")]
    return Table(tr(N_("Customer list")), [tr(h) for h in headers], rows(),
                 ["count"] + ["text"] * 10)


def task_table(session: Session, campaign: Campaign, tr, local, status) -> Table:
    """`campaign`'s tasks as an export's table; `status` names a task
    status in the same language as `tr` (see customer_table)."""
    named = functools.cache(status)  # each status named once, not once a row

    def rows():
        for batch in campaign_tasks(session, campaign):
            for t in batch:
                yield [t.id, t.customer, t.phone, t.manager or "", t.employee_no or "",
                       named(t.status), t.result or "", local(t.result_at), t.attempts,
                       local(t.appointment_at), local(t.last_call_at)]
    headers = [N_("Task ID"), N_("Customer name"), N_("Phone"), N_("Customer manager"),
               N_("Employee number"), N_("Status"), N_("Result"), N_("Result time"),
               N_("Attempts"), N_("Call-back time"), N_("Last call")]
    return Table(tr(N_("Tasks")), [tr(h) for h in headers], rows(),
                 ["count"] + ["text"] * 7 + ["count"] + ["text"] * 2)


def local_time(settings):
    """A function: naive UTC time (or None) -> 'YYYY-MM-DD HH:MM:SS' in the
    site's time zone ('' for None), as every export writes times."""
    def local(at):
        return f"{settings.local(at):%Y-%m-%d %H:%M:%S}" if at else ""
    return local


def record(session: Session, user, ip: str, *, kind: str, fmt: str, rows: int,
           county: County | None = None, campaign: Campaign | None = None) -> None:
    """The operation log's entry for one export: what (customers of a county
    or of every county, or a campaign's tasks), the format and how many
    rows; never a number. The caller commits."""
    detail = {"kind": kind, "format": fmt, "rows": rows}
    if campaign is not None:
        audit.record(session, user, "export", "campaign", campaign.id, detail, ip,
                     object_name=campaign.name)
    elif county is not None:
        audit.record(session, user, "export", "county", county.id, detail, ip,
                     object_name=county.name)
    else:
        audit.record(session, user, "export", "", "", detail, ip)
