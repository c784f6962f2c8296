"""The do-not-call register (免打扰名单): numbers no outbound call may ring.

Entries come from a file (`import_file`: `khhf dnc import`, the admin
page), from a result code flagged 不再联系 filed for a customer
(khhf.services.results), or one at a time (`add`: the admin page, the
customer page's 请勿呼叫). Each says when it was listed, its source (where
the request came from), who added it and why; every addition and removal
is audited. Numbers are normalised at the door (khhf.numbering: a mobile
as numbering.mobile gives it, or a fixed line with its area code).

The customer row's do_not_call flag mirrors the register for that number
(set and cleared here, and by the customer import), so the pages and
queries that read the flag agree with the register; the dialing rules
(khhf.services.dial_rules) read both.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
import unicodedata
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from khhf import audit, numbering
from khhf.models import Customer, DncChannel, DncEntry, User, utcnow
from khhf.phones import mask_phone

from . import N_, Problems, customers, imports

KIND = "dnc"
REASON_MAX = 200
SOURCE_MAX = 64
PAGE_SIZE = 100


def normalised(number: str) -> str:
    """The number as the register keeps it; NumberError if it is none."""
    return imports.phone_number(number or "")


def find(session: Session, number: str) -> DncEntry | None:
    return session.scalar(select(DncEntry).where(DncEntry.number == number))


def _check(problems: Problems, number: str, source: str, reason: str,
           listed_on: dt.date | None, today: dt.date) -> str | None:
    try:
        phone = normalised(number)
    except numbering.NumberError:
        phone = None
        problems.add("number", N_("Not a phone number: 11-digit mobile (e.g. 13812345678) or "
                                  "fixed line with area code (e.g. 057112345678)."))
    if len(source) > SOURCE_MAX:
        problems.add("source", N_("The source is longer than %(count)d characters."),
                     count=SOURCE_MAX)
    if len(reason) > REASON_MAX:
        problems.add("reason", N_("The reason is longer than %(count)d characters."),
                     count=REASON_MAX)
    if listed_on is not None and listed_on > today:
        problems.add("listed_on", N_("The date listed is in the future: give the day the "
                                     "customer asked, today at the latest."))
    return phone


def add(session: Session, by: User | None, ip: str, number: str, *, channel: DncChannel,
        reason: str, source: str = "", listed_on: dt.date | None = None,
        now: dt.datetime | None = None, exists_ok: bool = False,
        record: bool = True) -> DncEntry:
    """Put `number` on the register (and flag its customer); audited
    (`record` False: the caller records the change its own way). An
    already listed number raises ValidationError, or with `exists_ok`
    returns its entry unchanged."""
    now = now or utcnow()
    problems = Problems()
    source, reason = (source or "").strip(), (reason or "").strip()
    if not reason and channel == DncChannel.MANUAL:
        problems.add("reason", N_("Say why (e.g. the customer asked on the phone on 11-28)."))
    phone = _check(problems, number, source, reason, listed_on, now.date())
    entry = find(session, phone) if phone else None
    if entry is not None and not exists_ok:
        problems.add("number", N_("%(value)s is on the do-not-call list already (since "
                                  "%(day)s)."), value=mask_phone(entry.number),
                     day=entry.listed_on.isoformat())
    problems.raise_if_any()
    if entry is not None:
        return entry
    assert phone is not None
    entry = DncEntry(number=phone, listed_on=listed_on or now.date(), source=source,
                     channel=channel, reason=reason, added_by=by.id if by else None,
                     created_at=now)
    session.add(entry)
    session.flush()
    _flag_customer(session, phone, True, now)
    if record:
        audit.record(session, by, "create", "dnc_entry", entry.id, {"fields": _fields(entry)},
                     ip, object_name=mask_phone(phone))
    return entry


def remove(session: Session, by: User | None, ip: str, entry: DncEntry, reason: str,
           now: dt.datetime | None = None, record: bool = True) -> None:
    """Take the entry off the register (and clear its customer's flag),
    saying why; audited (`record` False: by the caller)."""
    problems = Problems()
    reason = (reason or "").strip()
    if not reason:
        problems.add("reason", N_("Say why (e.g. the customer asked on the phone on 11-28)."))
    elif len(reason) > REASON_MAX:
        problems.add("reason", N_("The reason is longer than %(count)d characters."),
                     count=REASON_MAX)
    problems.raise_if_any()
    if record:
        audit.record(session, by, "delete", "dnc_entry", entry.id,
                     {"fields": _fields(entry), "why": reason}, ip,
                     object_name=mask_phone(entry.number))
    _flag_customer(session, entry.number, False, now or utcnow())
    session.delete(entry)
    session.flush()


def _flag_customer(session: Session, number: str, listed: bool, now: dt.datetime) -> None:
    session.execute(update(Customer).where(Customer.phone == number,
                                           Customer.do_not_call.is_not(listed))
                    .values(do_not_call=listed, updated_at=now)
                    .execution_options(synchronize_session="fetch"))


def _fields(entry: DncEntry) -> dict:
    return {"phone": mask_phone(entry.number), "listed_on": entry.listed_on.isoformat(),
            "dnc_source": entry.source, "dnc_channel": entry.channel, "note": entry.reason}


def page(session: Session, q: str = "", after: int | None = None,
         size: int = PAGE_SIZE) -> list[DncEntry]:
    """Entries, newest first, whose number contains the digits of `q`."""
    query = select(DncEntry)
    digits = "".join(ch for ch in q or "" if ch.isdigit())
    if digits:
        query = query.where(DncEntry.number.like(f"%{digits}%"))
    if after:
        query = query.where(DncEntry.id < after)
    return list(session.scalars(query.order_by(DncEntry.id.desc()).limit(size)))


# -- import -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RowProblem:
    row: int          # as the spreadsheet numbers it (1 = first row)
    column: str       # the template's header of the cell at fault ("" for the row)
    value: str
    message: str      # msgid
    params: dict


class Refused(ValueError):
    """The file was refused as a whole: nothing is written (the caller
    rolls back); `problems` says which rows and why."""

    def __init__(self, problems: list[RowProblem]):
        self.problems = problems
        super().__init__("; ".join(f"row {p.row}: {p.message % p.params}" for p in problems))


@dataclasses.dataclass
class Imported:
    added: int = 0
    already: int = 0      # numbers on the register before: left as they were


_DATE = re.compile(r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T].*)?")


def parse_day(text: str) -> dt.date:
    """2026-11-28, 2026/11/28, 2026年11月28日, 20261128 (an Excel date cell
    arrives as 2026-11-28 00:00:00); ValueError otherwise."""
    text = unicodedata.normalize("NFKC", text).strip()
    if re.fullmatch(r"\d{8}", text):
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    m = _DATE.fullmatch(text)
    if not m:
        raise ValueError(text)
    return dt.date(*map(int, m.groups()))


def import_file(session: Session, by: User | None, ip: str, path: str | Path,
                now: dt.datetime | None = None) -> Imported:
    """Every row of the file onto the register, in the caller's transaction
    (the caller commits, or rolls back for a dry run). Columns: 号码
    (required), 登记日期, 来源, 原因. Raises imports.FileError for a file
    that cannot be read or has no number column, Refused for any row's
    problem: all or nothing."""
    now = now or utcnow()
    rows, _estimate = imports.open_table(path)
    _header_row, headers, buffered = imports.find_header(rows, KIND, {})
    columns, _unmapped = imports.map_columns(KIND, headers, {})
    labels = {f.name: f.label for f in imports.FIELDS[KIND]}
    if "number" not in columns:
        raise imports.FileError(N_("No column for %(column)s: name a column %(column)s."),
                                column=labels["number"])
    problems: list[RowProblem] = []
    wanted: dict[str, tuple[int, dt.date, str, str]] = {}
    for row_no, row in itertools.chain(buffered, rows):
        cells = [imports.cell_text(c) for c in row]
        if not any(cells):
            continue
        values = {name: cells[i] if i < len(cells) else "" for name, i in columns.items()}
        day = now.date()
        if values.get("listed_on"):
            try:
                day = parse_day(values["listed_on"])
            except ValueError:
                problems.append(RowProblem(row_no, labels["listed_on"], values["listed_on"], N_(
                    "Not a date: write it as 2026-11-28."), {}))
        check = Problems()
        phone = _check(check, values["number"], values.get("source", ""),
                       values.get("reason", ""), day, now.date())
        problems += [RowProblem(row_no, labels.get(p.field, ""), values.get(p.field, ""),
                                p.message, p.params) for p in check.items]
        if phone is None:
            continue
        if phone in wanted:
            problems.append(RowProblem(row_no, labels["number"], values["number"], N_(
                "Duplicate of row %(row)d in this file."), {"row": wanted[phone][0]}))
            continue
        wanted[phone] = (row_no, day, values.get("source", ""), values.get("reason", ""))
    if not wanted and not problems:
        raise imports.FileError(N_("The file has a header but no rows to import."))
    if problems:
        raise Refused(problems)
    result = Imported()
    listed = set(session.scalars(select(DncEntry.number).where(DncEntry.number.in_(wanted))))
    name = Path(path).name
    for phone, (_row, day, source, reason) in wanted.items():
        if phone in listed:
            result.already += 1
            continue
        session.add(DncEntry(number=phone, listed_on=day, source=source or name[:SOURCE_MAX],
                             channel=DncChannel.IMPORT, reason=reason,
                             added_by=by.id if by else None, created_at=now))
        result.added += 1
    session.flush()
    fresh = [p for p in wanted if p not in listed]
    for start in range(0, len(fresh), 1000):
        chunk = fresh[start:start + 1000]
        session.execute(update(Customer).where(Customer.phone.in_(chunk))
                        .values(do_not_call=True, updated_at=now)
                        .execution_options(synchronize_session=False))
    audit.record(session, by, "import", "dnc_entry", "", {
        "kind": KIND, "file": name, "imported": result.added, "rejected": 0,
        "already": result.already}, ip)
    return result


def set_for_customer(session: Session, by: User | None, ip: str, customer: Customer,
                     do_not_call: bool, reason: str) -> Customer:
    """Set or lift 请勿呼叫 (dialing refuses such customers), with the reason:
    the customer's number goes onto (or off) the do-not-call register."""
    problems = Problems()
    reason = (reason or "").strip()
    if not reason:
        problems.add("reason", N_("Say why (e.g. the customer asked on the phone on 11-28)."))
    elif len(reason) > customers.REASON_MAX:
        problems.add("reason", N_("The reason is longer than %(count)d characters."),
                     count=customers.REASON_MAX)
    problems.raise_if_any()
    before = customer.do_not_call
    entry = find(session, customer.phone)
    if do_not_call and entry is None:
        add(session, by, ip, customer.phone, channel=DncChannel.MANUAL, reason=reason,
                record=False)
    elif not do_not_call and entry is not None:
        remove(session, by, ip, entry, reason, record=False)
    if before != do_not_call:
        customer.do_not_call = do_not_call
        customer.updated_at = utcnow()
        audit.record(session, by, "set_do_not_call", "customer", customer.id,
                     {"do_not_call": do_not_call, "why": reason}, ip,
                     object_name=customers.audit_name(customer))
    return customer
