"""Counties (县区) and their unified numbers (统一号码)."""

from __future__ import annotations

import re

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from khhf import audit, numbering
from khhf.models import Campaign, County, Customer, UnifiedNumber, User
from khhf.services import N_, Problems

CODE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
FALLBACK_STRATEGIES = ("ringall", "hunt")


def parse_numbers(text: str) -> list[str]:
    """Unified numbers as typed: one per line, or separated by commas or
    spaces ("139 0000 0000" on a line of its own is one number)."""
    numbers = []
    for line in re.split(r"[\n,，;；]+", text or ""):
        try:
            numbering.unified_number(line)
            numbers.append(line.strip())
        except numbering.NumberError:
            numbers.extend(line.split())
    return numbers


def create_county(session: Session, by: User | None, ip: str, *, code: str, name: str,
                  fallback_strategy: str, numbers: list[str], primary: str) -> County:
    """A county with its unified numbers; `primary` is the one outbound calls show."""
    code, name, numbers, primary = _check(session, None, code, name, fallback_strategy,
                                          numbers, primary)
    county = County(code=code, name=name, fallback_strategy=fallback_strategy)
    session.add(county)
    session.flush()
    _set_numbers(session, county, numbers, primary)
    audit.record(session, by, "create", "county", county.id,
                 {"fields": {"code": code, "fallback_strategy": fallback_strategy,
                             "numbers": numbers, "primary": primary or None}}, ip,
                 object_name=name)
    return county


def update_county(session: Session, by: User | None, ip: str, county: County, *, code: str,
                  name: str, fallback_strategy: str, numbers: list[str],
                  primary: str) -> County:
    """Rename a county, change its fallback ringing or its unified numbers."""
    code, name, numbers, primary = _check(session, county, code, name, fallback_strategy,
                                          numbers, primary)
    changes = {"code": (county.code, code), "name": (county.name, name),
               "fallback_strategy": (county.fallback_strategy, fallback_strategy),
               "numbers": (sorted(n.number for n in county.unified_numbers), sorted(numbers)),
               "primary": (county.primary_number, primary or None)}
    county.code, county.name, county.fallback_strategy = code, name, fallback_strategy
    _set_numbers(session, county, numbers, primary)
    audit.record(session, by, "update", "county", county.id, audit.changes(changes), ip,
                 object_name=name)
    return county


def delete_county(session: Session, by: User | None, ip: str, county: County) -> None:
    """Remove a county that nobody and nothing belongs to yet."""
    problems = Problems()
    for model in (User, Customer, Campaign):
        if session.scalar(select(exists().where(model.county_id == county.id))):
            problems.add("county", N_("County %(name)s still has users, customers or "
                                      "campaigns; move or remove them first."),
                         name=county.name)
            break
    problems.raise_if_any()
    audit.record(session, by, "delete", "county", county.id, {"fields": {"code": county.code}},
                 ip, object_name=county.name)
    session.delete(county)


def _check(session, county, code, name, fallback_strategy, numbers, primary):
    problems = Problems()
    own_id = county.id if county is not None else None
    code, name = (code or "").strip().lower(), (name or "").strip()
    if not CODE_PATTERN.fullmatch(code):
        problems.add("code", N_("Code: 1 to 32 lower-case letters, digits, '_' or '-', "
                                "e.g. anji."))
    elif session.scalar(select(County.id).where(County.code == code,
                                                County.id != own_id)) is not None:
        problems.add("code", N_("Code %(value)s is used by another county; choose another."),
                     value=code)
    if not 1 <= len(name) <= 64:
        problems.add("name", N_("Enter the county's name (at most 64 characters)."))
    if fallback_strategy not in FALLBACK_STRATEGIES:
        problems.add("fallback_strategy", N_("Choose how the fallback group rings: all "
                                             "at once, or in turn."))
    # normalised at the door, by the rule the trunk's dialplan and Originate use
    checked = {}
    for typed in numbers:
        try:
            checked[numbering.unified_number(typed)] = typed
        except numbering.NumberError:
            problems.add("numbers", N_("%(value)s is not a unified number: write 11 digits "
                                       "starting 13 to 19, e.g. 13900000000 (+86, spaces and "
                                       "dashes are fine), one number per line."), value=typed)
    numbers = list(checked)
    for number in numbers:
        if session.scalar(select(UnifiedNumber.id).where(
                UnifiedNumber.number == number,
                UnifiedNumber.county_id != (own_id or 0))) is not None:
            problems.add("numbers", N_("%(value)s already belongs to another county."),
                         value=number)
    primary = (primary or "").strip()
    try:
        primary = numbering.unified_number(primary) if primary else ""
    except numbering.NumberError:
        pass  # not among the numbers either: said below
    if primary and primary not in numbers:
        problems.add("primary", N_("The primary number must be one of the county's "
                                   "unified numbers."))
    if not primary and numbers:
        primary = numbers[0]
    problems.raise_if_any()
    return code, name, numbers, primary


def _set_numbers(session, county, numbers, primary):
    """Make the county's unified numbers exactly `numbers`, `primary` first."""
    for n in list(county.unified_numbers):
        if n.number not in numbers:
            county.unified_numbers.remove(n)
        else:
            n.is_primary = False
    # at most one primary per county (a unique index): clear, then set
    session.flush()
    present = {n.number: n for n in county.unified_numbers}
    for number in numbers:
        if number not in present:
            present[number] = UnifiedNumber(number=number)
            county.unified_numbers.append(present[number])
    if primary:
        present[primary].is_primary = True
    session.flush()
