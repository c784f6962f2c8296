"""Task types with their result codes, and campaigns (批次) with their rounds.

A task type (回访, 营销, 调查, or one an administrator defines) has result
codes (the digits a manager types by SMS or keypad: 1 or 2 digits, unique
within the type; each either final or "try again"), a short call script
shown to the manager, and the number of call attempts a task gets.

A campaign calls a selection of customers of one county with one task type,
over a period. Every campaign is made of rounds (campaign_cycles): a
one-off campaign has one round, its whole period; a weekly or monthly one
has a round per week or month from its first day, up to its last day if it
has one. A round's tasks are made when it is due: round 1 when the
campaign is activated, later ones by the timed-jobs daemon (`python -m
jobs`). Making a round is idempotent: the UNIQUE (campaign_id, seq) row is
written first, in the same transaction as the round's tasks, so two
processes (or a restarted daemon) racing for one round make it once.

Which customers a round calls (`selection`): every customer of the county,
those of chosen managers, or ('list') the customers an import gave the
campaign. Customers on the do-not-call list are never selected.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any

from sqlalchemy import Integer, cast, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from khhf import audit, i18n, local_time
from khhf.calls.states import UNREACHED_OUTCOMES, CallOutcome
from khhf.models import (
    Call,
    Campaign,
    CampaignCycle,
    County,
    Customer,
    Feedback,
    Manager,
    OutcomeRule,
    ResultCode,
    Task,
    TaskKind,
    TaskStatus,
    TaskType,
    User,
)
from khhf.services import N_, Problems, parse_int, tasks
from khhf.services.hotline import CALLBACK_TASK_TYPE

CODE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
RESULT_CODE_PATTERN = re.compile(r"\d{1,2}")
MAX_ATTEMPTS_LIMIT = 20
CYCLES = ("once", "weekly", "monthly")
SELECTIONS = ("county", "managers", "list")
STATUSES = ("draft", "active", "closed")
MANAGER_IN_SCRIPT = "{经理}"  # where a call script names the manager reading it

MAX_RETRY_MINUTES = 7 * 24 * 60

# (code, label, success, final): the same digits mean the same in every
# standard type, so a manager learns them once
_COMMON_CODES = (("2", "客户拒绝", False, True), ("3", "无人接听", False, False),
                 ("4", "关机/停机", False, False), ("5", "空号", False, True),
                 ("6", "预约再拨", False, False), ("7", "忙线", False, False),
                 ("8", "呼叫被拒", False, False), ("9", "多次未接通", False, True))
# (outcome, code, retry minutes, max retries, close code): what the system
# files itself when a standard type's call ends unreached (自动结果); the
# same in revision 0005, which gives them to existing databases
STANDARD_RULES = ((CallOutcome.NO_ANSWER, "3", 60, 2, "9"), (CallOutcome.BUSY, "7", 30, 2, "9"),
                  (CallOutcome.UNREACHABLE, "4", 120, 2, "9"),
                  (CallOutcome.EMPTY_NUMBER, "5", 0, 0, ""),
                  (CallOutcome.REJECTED, "8", 240, 1, "9"))
STANDARD_TYPES: tuple[dict[str, Any], ...] = (
    {"code": "revisit", "name": "回访", "description": "客户满意度回访", "max_attempts": 3,
     "script": "您好，我是中国移动客户经理{经理}。打扰您一分钟，想了解您对我们服务的"
               "满意程度，有什么意见和建议吗？",
     "codes": (("1", "回访成功", True, True),) + _COMMON_CODES},
    {"code": "marketing", "name": "营销", "description": "业务推荐与营销", "max_attempts": 3,
     "kind": TaskKind.MARKETING,
     "script": "您好，我是中国移动客户经理{经理}。根据您的使用情况，我们有一项更"
               "适合您的优惠套餐，想花一分钟给您介绍一下。",
     "codes": (("1", "营销成功", True, True),) + _COMMON_CODES},
    {"code": "survey", "name": "调查", "description": "客户意见调查", "max_attempts": 3,
     "kind": TaskKind.SURVEY,
     "script": "您好，我是中国移动客户经理{经理}。我们正在做一项简短的客户调查，"
               "只有三个问题，您现在方便吗？",
     "codes": (("1", "调查成功", True, True),) + _COMMON_CODES},
)


# -- task types ---------------------------------------------------------------

def script_for(task_type: TaskType, manager_name: str) -> str:
    """The call script a manager reads for a task of `task_type` (its
    description when it has none), naming them where it says {经理}."""
    return (task_type.script or task_type.description).replace(MANAGER_IN_SCRIPT, manager_name)


def ensure_standard_types(session: Session) -> int:
    """Create the three standard task types (回访, 营销, 调查) with their
    result codes if the database has no task type but the hotline's own
    call-back type; returns how many were made. `khhf init` (which a site
    may run again on an existing database) and the demo seed call it; no
    page does, as a page view writes nothing."""
    if session.scalar(select(exists().where(TaskType.code != CALLBACK_TASK_TYPE))):
        return 0
    for spec in STANDARD_TYPES:
        save_task_type(session, None, "", None, **{**spec, "codes": [
            {"code": c, "label": label, "is_success": ok, "is_final": final}
            for c, label, ok, final in spec["codes"]], "rules": [
            {"outcome": o, "code": c, "retry_minutes": m, "max_retries": n, "close_code": z}
            for o, c, m, n, z in STANDARD_RULES]})
    return len(STANDARD_TYPES)


def save_task_type(session: Session, by: User | None, ip: str, task_type: TaskType | None,
                   *, code: str, name: str, description: str = "", script: str = "",
                   max_attempts, codes: list[dict], kind: str | None = None,
                   requires_consent: bool | None = None, rules: list[dict] | None = None
                   ) -> TaskType:
    """Create a task type (`task_type` None) or change one, with its result
    codes and automatic outcomes: the one rule set behind the web form and
    `khhf types import`.

    `codes` are dicts with code, label, is_success, is_final and
    stops_calls (不再联系: filing it puts the customer's number on the
    do-not-call register); entries with neither code nor label are
    ignored. `kind` (TaskKind) and `requires_consent` (its calls ring only
    customers who consented; a return visit may not require it) keep the
    type's own values when None. A code that tasks or feedback
    already use cannot be removed (its label may change). `rules` (None:
    keep the type's own) are dicts with outcome (one of
    UNREACHED_OUTCOMES), code (the result code's digits; empty: no rule,
    the manager files it), retry_minutes, max_retries and close_code (a
    final code's digits; needed when `code` is a "try again" one). Raises
    ValidationError, with nothing written, listing every problem; a
    problem about one entry of `codes` has its index there as
    params["entry"]. Audited as a create or an update."""
    kind = kind if kind is not None else (task_type.kind if task_type else TaskKind.REVISIT)
    if requires_consent is None:
        requires_consent = task_type.requires_consent if task_type else False
    fields = _check_type(session, task_type, code, name, description, script, max_attempts,
                         codes, kind, requires_consent)
    if rules is None:
        rules = [rule_fields(r) for r in task_type.outcome_rules] if task_type else []
    wanted_rules = _check_rules(rules, fields["codes"])
    before = _type_fields(task_type) if task_type is not None else None
    task_type = task_type if task_type is not None else TaskType()
    task_type.code, task_type.name = fields["code"], fields["name"]
    task_type.description, task_type.script = fields["description"], fields["script"]
    task_type.max_attempts = fields["max_attempts"]
    task_type.kind, task_type.requires_consent = fields["kind"], fields["requires_consent"]
    wanted = {c["code"]: c for c in fields["codes"]}
    for rc in list(task_type.result_codes):
        if rc.code in wanted:
            c = wanted.pop(rc.code)
            rc.label, rc.is_success, rc.is_final = c["label"], c["is_success"], c["is_final"]
            rc.stops_calls = c["stops_calls"]
        else:
            task_type.result_codes.remove(rc)
    for c in wanted.values():
        task_type.result_codes.append(ResultCode(**c))
    # rules change in place by outcome (UNIQUE (type, outcome): a delete and an
    # insert of one outcome in one flush would collide), in the codes' flush
    by_code = {rc.code: rc for rc in task_type.result_codes}
    rules_wanted = {r["outcome"]: r for r in wanted_rules}
    have = {rule.outcome: rule for rule in task_type.outcome_rules}
    for outcome, rule in have.items():
        if outcome not in rules_wanted:
            task_type.outcome_rules.remove(rule)
    for outcome, r in rules_wanted.items():
        rule = have.get(outcome) or OutcomeRule(outcome=outcome)
        rule.result_code, rule.close_code = by_code[r["code"]], by_code.get(r["close_code"])
        rule.retry_minutes, rule.max_retries = r["retry_minutes"], r["max_retries"]
        if outcome not in have:
            task_type.outcome_rules.append(rule)
    session.add(task_type)
    session.flush()
    after = _type_fields(task_type)
    if before is None:
        audit.record(session, by, "create", "task_type", task_type.id, {"fields": after}, ip,
                     object_name=task_type.name)
    else:
        audit.record(session, by, "update", "task_type", task_type.id,
                     audit.changes({k: (before[k], after[k]) for k in before}), ip,
                     object_name=task_type.name)
    return task_type


def _type_fields(t: TaskType) -> dict:
    return {"code": t.code, "task_type": t.name, "description": t.description,
            "script": t.script, "max_attempts": t.max_attempts, "kind": t.kind,
            "requires_consent": bool(t.requires_consent),
            "result_codes": describe_codes(t.result_codes),
            "outcome_rules": describe_rules(t.outcome_rules)}


def rule_fields(rule: OutcomeRule) -> dict:
    """A stored rule as save_task_type takes it."""
    return {"outcome": rule.outcome, "code": rule.result_code.code,
            "retry_minutes": rule.retry_minutes, "max_retries": rule.max_retries,
            "close_code": rule.close_code.code if rule.close_code else ""}


def describe_rules(rules) -> str:
    """The rules on one line, in the site's words like the codes' labels, e.g.
    无人接听→3 60分钟×2→9, 空号→5: outcome → code, retry minutes × times → close code."""
    order = {o: i for i, o in enumerate(UNREACHED_OUTCOMES)}
    return ", ".join(
        f"{outcome_word(r.outcome)}→{r.result_code.code}" + (
            f" {r.retry_minutes}分钟×{r.max_retries}→{r.close_code.code}"
            if r.close_code is not None else "")
        for r in sorted(rules, key=lambda r: order.get(r.outcome, 99)))


def outcome_word(outcome: str, locale: str = i18n.DEFAULT_LOCALE) -> str:
    """An unreached outcome as the site says it (无人接听, 忙线, ...): how
    spreadsheets and the log write it."""
    with i18n.speaking(locale):
        return str(i18n.CALL_OUTCOME_LABELS[CallOutcome(outcome)])


def _check_rules(rules: list[dict], codes: list[dict]) -> list[dict]:
    """The automatic outcomes, checked against the type's result codes (as
    _check_type returned them); raises ValidationError listing every problem."""
    problems = Problems()
    final = {c["code"]: c["is_final"] for c in codes}
    rows, seen = [], set()
    for entry, r in enumerate(rules):
        outcome = str(r.get("outcome") or "")
        value = str(r.get("code") or "").strip()
        if not value:
            continue  # no rule: the manager files this outcome
        if outcome not in UNREACHED_OUTCOMES:
            problems.add("rules", N_("%(value)s is not an outcome the system can file: one of "
                                     "no answer, busy, unreachable, empty number, rejected."),
                         value=outcome or "—", rule=entry)
            continue
        if outcome in seen:
            problems.add("rules", N_("The outcome %(outcome)s has two rules: give it one."),
                         outcome=outcome, rule=entry)
        seen.add(outcome)
        if value not in final:
            problems.add("rules", N_("Automatic outcome %(outcome)s: result code %(value)s is "
                                     "not one of this type's codes."),
                         outcome=outcome, value=value, rule=entry)
            continue
        row = {"outcome": outcome, "code": value, "retry_minutes": 0, "max_retries": 0,
               "close_code": ""}
        if not final[value]:
            minutes, retries = parse_int(r.get("retry_minutes")), parse_int(r.get("max_retries"))
            close = str(r.get("close_code") or "").strip()
            if minutes is None or not 0 <= minutes <= MAX_RETRY_MINUTES:
                problems.add("rules", N_("Automatic outcome %(outcome)s: call again after a "
                                         "whole number of minutes from 0 to %(max)s."),
                             outcome=outcome, max=MAX_RETRY_MINUTES, rule=entry)
            if retries is None or not 0 <= retries <= MAX_ATTEMPTS_LIMIT:
                problems.add("rules", N_("Automatic outcome %(outcome)s: call again at most a "
                                         "whole number of times from 0 to %(max)s."),
                             outcome=outcome, max=MAX_ATTEMPTS_LIMIT, rule=entry)
            if not final.get(close):
                problems.add("rules", N_("Automatic outcome %(outcome)s: %(value)s means "
                                         "“try again”, so choose the final code that "
                                         "closes the task when the retries are used up."),
                             outcome=outcome, value=value, rule=entry)
            row.update(retry_minutes=minutes, max_retries=retries, close_code=close)
        rows.append(row)
    problems.raise_if_any()
    return rows


def describe_codes(codes) -> str:
    """The codes on one line, e.g. 1 回访成功*, 2 客户拒绝*, 3 无人接听, 9 不再联系*!
    (a star marks a final code, ! one that stops calls: 不再联系)."""
    return ", ".join(f"{c.code} {c.label}{'*' if c.is_final else ''}"
                     f"{'!' if c.stops_calls else ''}"
                     for c in sorted(codes, key=lambda c: c.code.zfill(2)))


def _check_type(session, task_type, code, name, description, script, max_attempts, codes,
                kind, requires_consent):
    problems = Problems()
    if kind not in TaskKind.__members__.values():
        problems.add("kind", N_("Choose what the task type is for: return visit, marketing, "
                                "survey or other."))
    elif requires_consent and kind == TaskKind.REVISIT:
        problems.add("requires_consent", N_("A return visit may not require the customer's "
                                            "consent: untick it, or choose marketing as the "
                                            "kind."))
    own_id = task_type.id if task_type is not None else None
    code, name = (code or "").strip().lower(), (name or "").strip()
    if not CODE_PATTERN.fullmatch(code):
        problems.add("code", N_("Code: 1 to 32 lower-case letters, digits, '_' or '-', "
                                "e.g. revisit."))
    elif session.scalar(select(TaskType.id).where(TaskType.code == code,
                                                  TaskType.id != own_id)) is not None:
        problems.add("code", N_("Code %(value)s is used by another task type; choose another."),
                     value=code)
    if not 1 <= len(name) <= 64:
        problems.add("name", N_("Enter the task type's name (at most 64 characters)."))
    attempts = parse_int(max_attempts)
    if attempts is None or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
        problems.add("max_attempts", N_("Max attempts: a whole number from 1 to %(max)s."),
                     max=MAX_ATTEMPTS_LIMIT)
    rows, seen = [], set()
    for entry, c in enumerate(codes):
        value, label = (c.get("code") or "").strip(), (c.get("label") or "").strip()
        if not value and not label:
            continue
        if not RESULT_CODE_PATTERN.fullmatch(value):
            problems.add("codes", N_("Result code %(value)s: write 1 or 2 digits (what the "
                                     "manager types by SMS or keypad)."), value=value or "—",
                         entry=entry)
        elif value in seen:
            problems.add("codes", N_("Result code %(value)s appears twice: each code must be "
                                     "unique within its task type."), value=value, entry=entry)
        if not 1 <= len(label) <= 64:
            problems.add("codes", N_("Result code %(value)s needs a label (at most 64 "
                                     "characters)."), value=value or "—", entry=entry)
        seen.add(value)
        stops = bool(c.get("stops_calls"))
        if stops and not c.get("is_final"):
            problems.add("codes", N_("Result code %(value)s stops calls (不再联系): mark it "
                                     "final too, since the customer is not called again."),
                         value=value or "—", entry=entry)
        rows.append({"code": value, "label": label, "is_success": bool(c.get("is_success")),
                     "is_final": bool(c.get("is_final")), "stops_calls": stops})
    if not rows:
        problems.add("codes", N_("Give the task type at least one result code."))
    elif not any(r["is_final"] for r in rows):
        problems.add("codes", N_("Mark at least one result code as final, so a task can be "
                                 "finished."))
    if task_type is not None:
        removed = [rc for rc in task_type.result_codes if rc.code not in seen]
        for rc in removed:
            used = session.scalar(select(exists().where(Task.result_code_id == rc.id))) or \
                session.scalar(select(exists().where(Feedback.result_code_id == rc.id)))
            if used:
                problems.add("codes", N_("Result code %(value)s (%(label)s) is already used "
                                         "by tasks; keep it (you may rename it)."),
                             value=rc.code, label=rc.label)
    problems.raise_if_any()
    return {"code": code, "name": name, "description": (description or "").strip(),
            "script": (script or "").strip(), "max_attempts": attempts, "codes": rows,
            "kind": kind, "requires_consent": bool(requires_consent)}


# -- campaigns ------------------------------------------------------------------

def create_campaign(session: Session, by: User, ip: str, *, county_id, task_type_id, name: str,
                    cycle: str, starts_on, ends_on=None, selection: str = "county",
                    manager_ids=()) -> Campaign:
    """A draft campaign. Supervisors may only create campaigns of their own county."""
    f = _check_campaign(session, by, None, county_id, task_type_id, name, cycle, starts_on,
                        ends_on, selection, manager_ids)
    row = Campaign(county_id=f["county_id"], task_type_id=f["task_type_id"], name=f["name"],
                   cycle=f["cycle"], starts_on=f["starts_on"], ends_on=f["ends_on"],
                   selection=f["selection"], status="draft",
                   created_by=by.id if by is not None else None)
    row.managers = f["managers"]
    session.add(row)
    session.flush()
    audit.record(session, by, "create", "campaign", row.id,
                 {"fields": _campaign_fields(session, row)}, ip, object_name=row.name)
    return row


def update_campaign(session: Session, by: User, ip: str, campaign: Campaign, *, county_id,
                    task_type_id, name: str, cycle: str, starts_on, ends_on=None,
                    selection: str = "county", manager_ids=()) -> Campaign:
    """Change a campaign. Once it has tasks, only its name and last day may change."""
    f = _check_campaign(session, by, campaign, county_id, task_type_id, name, cycle, starts_on,
                        ends_on, selection, manager_ids)
    before = _campaign_fields(session, campaign)
    campaign.name, campaign.ends_on = f["name"], f["ends_on"]
    if not _has_tasks(session, campaign):
        campaign.county_id, campaign.task_type_id = f["county_id"], f["task_type_id"]
        campaign.cycle, campaign.starts_on = f["cycle"], f["starts_on"]
        campaign.selection, campaign.managers = f["selection"], f["managers"]
    session.flush()
    after = _campaign_fields(session, campaign)
    audit.record(session, by, "update", "campaign", campaign.id,
                 audit.changes({k: (before[k], after[k]) for k in before}), ip,
                 object_name=campaign.name)
    return campaign


def _has_tasks(session, campaign) -> bool:
    return campaign.id is not None and bool(session.scalar(
        select(exists().where(Task.campaign_id == campaign.id))))


def _campaign_fields(session, c: Campaign) -> dict:
    county, task_type = session.get(County, c.county_id), session.get(TaskType, c.task_type_id)
    return {"campaign": c.name, "county": county.name if county else None,
            "task_type": task_type.name if task_type else None, "cycle": c.cycle,
            "starts_on": str(c.starts_on), "ends_on": str(c.ends_on) if c.ends_on else None,
            "selection": c.selection,
            "managers": sorted(m.employee_no for m in c.managers)}


def parse_date(value) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except (TypeError, ValueError):
        return None


def _check_campaign(session, by, campaign, county_id, task_type_id, name, cycle, starts_on,
                    ends_on, selection, manager_ids):
    problems = Problems()
    name = (name or "").strip()
    county_id, task_type_id = parse_int(county_id), parse_int(task_type_id)
    county = session.get(County, county_id) if county_id else None
    if county is None or (by is not None and by.role != "admin" and by.county_id != county.id):
        problems.add("county_id", N_("Choose the campaign's county."))
    if task_type_id is None or session.get(TaskType, task_type_id) is None:
        problems.add("task_type_id", N_("Choose the campaign's task type."))
    if not 1 <= len(name) <= 128:
        problems.add("name", N_("Enter the campaign's name (at most 128 characters)."))
    if cycle not in CYCLES:
        problems.add("cycle", N_("Choose the cycle: once, weekly or monthly."))
    start = parse_date(starts_on)
    end = parse_date(ends_on) if ends_on not in (None, "") else None
    if start is None:
        problems.add("starts_on", N_("Enter the first day as YYYY-MM-DD."))
    if ends_on not in (None, "") and end is None:
        problems.add("ends_on", N_("Enter the last day as YYYY-MM-DD, or leave it empty."))
    elif start and end and end < start:
        problems.add("ends_on", N_("The last day must not be before the first day."))
    if cycle == "once" and start and end is None:
        problems.add("ends_on", N_("A one-off campaign needs a last day."))
    if selection not in SELECTIONS:
        problems.add("selection", N_("Choose which customers the campaign calls."))
    managers = []
    if selection == "managers":
        ids = [i for i in (parse_int(m) for m in manager_ids or ()) if i is not None]
        managers = session.scalars(select(Manager).where(
            Manager.id.in_(ids), Manager.county_id == (county_id or 0))).all() if ids else []
        if not managers or len(managers) != len(set(ids)):
            problems.add("manager_ids", N_("Choose one or more customer managers of the "
                                           "campaign's county."))
    if campaign is not None and campaign.status == "closed":
        problems.add("name", N_("The campaign is closed and can no longer be changed."))
    problems.raise_if_any()
    return {"county_id": county_id, "task_type_id": task_type_id, "name": name, "cycle": cycle,
            "starts_on": start, "ends_on": end, "selection": selection, "managers": managers}


def activate(session: Session, by: User | None, ip: str, campaign: Campaign,
             today: dt.date) -> int:
    """Start a draft campaign: it becomes active and its due rounds are made
    now (round 1 at once if its first day, `today` the site's local day, has
    come). Returns the tasks made."""
    problems = Problems()
    if campaign.status != "draft":
        problems.add("status", N_("Only a draft campaign can be started."))
    problems.raise_if_any()
    campaign.status = "active"
    audit.record(session, by, "update", "campaign", campaign.id,
                 audit.changes({"campaign_status": ("draft", "active")}), ip,
                 object_name=campaign.name)
    session.flush()
    return sum(made for _cycle, made in create_due_rounds(session, campaign, today))


def close(session: Session, by: User | None, ip: str, campaign: Campaign) -> None:
    """Close a campaign: no more rounds. Its open tasks stay workable."""
    problems = Problems()
    if campaign.status == "closed":
        problems.add("status", N_("The campaign is already closed."))
    problems.raise_if_any()
    audit.record(session, by, "update", "campaign", campaign.id,
                 audit.changes({"campaign_status": (campaign.status, "closed")}), ip,
                 object_name=campaign.name)
    campaign.status = "closed"
    session.flush()


# -- rounds -------------------------------------------------------------------------

def _add_months(day: dt.date, months: int) -> dt.date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def round_period(campaign: Campaign, seq: int) -> tuple[dt.date, dt.date] | None:
    """(first day, last day) of round `seq` (1-based); None if the campaign
    ends before it starts."""
    start = campaign.starts_on
    if campaign.cycle == "once":
        if seq != 1:
            return None
        return start, campaign.ends_on or start
    if campaign.cycle == "weekly":
        first = start + dt.timedelta(weeks=seq - 1)
        last = first + dt.timedelta(days=6)
    else:
        first = _add_months(start, seq - 1)
        last = _add_months(start, seq) - dt.timedelta(days=1)
    if campaign.ends_on is not None:
        if first > campaign.ends_on:
            return None
        last = min(last, campaign.ends_on)
    return first, last


def due_seqs(campaign: Campaign, today: dt.date) -> list[int]:
    """The rounds whose first day has come (every one of them: a round the
    daemon missed while it was down is still made)."""
    if campaign.status != "active":
        return []
    seqs, seq = [], 1
    while (period := round_period(campaign, seq)) is not None and period[0] <= today:
        seqs.append(seq)
        seq += 1
    return seqs


def next_round(session: Session, campaign: Campaign) -> tuple[int, dt.date] | None:
    """(seq, first day) of the first round not made yet, or None if there is none."""
    if campaign.status != "active":
        return None
    made = session.scalar(select(func.max(CampaignCycle.seq))
                          .where(CampaignCycle.campaign_id == campaign.id)) or 0
    period = round_period(campaign, made + 1)
    return (made + 1, period[0]) if period else None


def round_due_at(day: dt.date, timezone: str) -> dt.datetime:
    """When a round starting on `day` is due: local midnight, as an aware datetime."""
    return dt.datetime.combine(day, dt.time(0, 0), local_time.zone(timezone))


def create_due_rounds(session: Session, campaign: Campaign, today: dt.date):
    """Make every due round not made yet; [(cycle, tasks made)]."""
    return [create_round(session, campaign, seq) for seq in due_seqs(campaign, today)]


def selected_customers(session: Session, campaign: Campaign):
    """SELECT of (customer id, their manager id if active) that a round calls."""
    active = select(Manager.id).where(Manager.status == "active")
    query = select(Customer.id, Customer.manager_id, Customer.manager_id.in_(active)) \
        .where(Customer.county_id == campaign.county_id, Customer.do_not_call.is_(False))
    if campaign.selection == "managers":
        query = query.where(Customer.manager_id.in_([m.id for m in campaign.managers]))
    elif campaign.selection == "list":
        query = query.where(Customer.id.in_(select(Task.customer_id).where(
            Task.campaign_id == campaign.id)))
    return query.order_by(Customer.id)


def create_round(session: Session, campaign: Campaign, seq: int) -> tuple[CampaignCycle, int]:
    """Make round `seq` of `campaign` with one task per selected customer,
    unless it exists; returns (the round, tasks made: 0 if it existed).
    Tasks go to the customer's own manager if active, the rest as 自动分配
    (distribution.auto) would. Idempotent under races: the round's row is
    written first under UNIQUE (campaign_id, seq); the loser of a race finds
    it and makes nothing."""
    existing = session.scalar(select(CampaignCycle).where(
        CampaignCycle.campaign_id == campaign.id, CampaignCycle.seq == seq))
    if existing is not None:
        return existing, 0
    period = round_period(campaign, seq)
    if period is None:
        raise ValueError(f"campaign {campaign.id} has no round {seq}")
    cycle = CampaignCycle(campaign_id=campaign.id, seq=seq, starts_on=period[0],
                          ends_on=period[1])
    try:
        with session.begin_nested():
            session.add(cycle)
            session.flush()
    except IntegrityError as exc:
        # another process made it between our look and our write
        theirs = session.scalar(select(CampaignCycle).where(
            CampaignCycle.campaign_id == campaign.id, CampaignCycle.seq == seq))
        if theirs is None:  # it committed before our write failed: visible now
            raise RuntimeError(f"round {seq} of campaign {campaign.id} was made by another "
                               f"process but cannot be read; run it again") from exc
        return theirs, 0
    task_type = session.get(TaskType, campaign.task_type_id)
    if task_type is None:  # campaigns.task_type_id references task_types
        raise LookupError(f"campaign {campaign.id} has no task type {campaign.task_type_id}")
    made = 0
    for customer_id, manager_id, manager_active in session.execute(
            selected_customers(session, campaign)).all():
        tasks.new_task(session, task_type_id=task_type.id, customer_id=customer_id,
                       manager_id=manager_id if manager_active else None,
                       max_attempts=task_type.max_attempts, campaign_id=campaign.id,
                       cycle_id=cycle.id, flush=False)
        made += 1
    session.flush()
    from khhf.services import distribution  # one home for "least loaded"
    distribution.assign_unassigned(session, campaign, cycle.id)
    audit.record(session, None, "create", "campaign_cycle", cycle.id,
                 {"fields": {"campaign": campaign.name, "round": seq,
                             "period": f"{period[0]} – {period[1]}", "tasks": made}},
                 object_name=campaign.name)
    return cycle, made


# -- progress ------------------------------------------------------------------------

def progress(session: Session, campaign_ids: list[int]) -> dict:
    """Per campaign and manager: tasks assigned, dialed (the customer's phone
    rang at least once), connected (the customer answered at least once),
    done, and done by result code.

    {campaign_id: {"rows": [{"manager_id", "assigned", "dialed", "connected",
    "done", "codes": {label: n}}], "total": {...}}}
    """
    if not campaign_ids:
        return {}
    answered = exists().where(Call.task_id == Task.id, Call.answer_at.is_not(None))
    rows = session.execute(
        select(Task.campaign_id, Task.manager_id, func.count(),
               func.sum(cast(Task.attempts > 0, Integer)),
               func.sum(cast(answered, Integer)),
               func.sum(cast(Task.status == TaskStatus.DONE, Integer)))
        .where(Task.campaign_id.in_(campaign_ids), Task.status != TaskStatus.CANCELLED)
        .group_by(Task.campaign_id, Task.manager_id)).all()
    codes = session.execute(
        select(Task.campaign_id, Task.manager_id, ResultCode.label, func.count())
        .join(ResultCode, ResultCode.id == Task.result_code_id)
        .where(Task.campaign_id.in_(campaign_ids), Task.status == TaskStatus.DONE)
        .group_by(Task.campaign_id, Task.manager_id, ResultCode.label)).all()
    out: dict = {cid: {"rows": {}, "total": _blank(None)} for cid in campaign_ids}
    for cid, mid, n, dialed, connected, done in rows:
        row = out[cid]["rows"].setdefault(mid, _blank(mid))
        row.update(assigned=n, dialed=dialed or 0, connected=connected or 0, done=done or 0)
    for cid, mid, label, n in codes:
        out[cid]["rows"].setdefault(mid, _blank(mid))["codes"][label] = n
    for item in out.values():
        total = item["total"]
        for row in item["rows"].values():
            for key in ("assigned", "dialed", "connected", "done"):
                total[key] += row[key]
            for label, n in row["codes"].items():
                total["codes"][label] = total["codes"].get(label, 0) + n
        item["rows"] = sorted(item["rows"].values(), key=lambda r: (r["manager_id"] is None,
                                                                    r["manager_id"] or 0))
    return out


def _blank(manager_id):
    return {"manager_id": manager_id, "assigned": 0, "dialed": 0, "connected": 0, "done": 0,
            "codes": {}}
