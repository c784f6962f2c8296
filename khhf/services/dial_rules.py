"""The dialing rules (呼叫规则): the one place that decides whether a call
to a customer may ring now. Every path that places an outbound call asks
`check` before it writes the call row the AMI bridge originates
(khhf.services.dialing.request_call: the desk phone, the two-leg mobile
call, the CLI and bench dials, progressive dial); the bridge originates
only such rows, so no INVITE reaches the trunk without these rules.

The rules, each a refusal with what to do and, where time cures it, the
earliest local time the customer may be called:

    window        calls ring only inside settings.calling_window (local time)
    do_not_call   the number is on the do-not-call register (dnc_entries),
                  or the customer is flagged do_not_call
    consent       the task's type requires consent, the customer gave none
    per_day       at most settings.customer_calls_per_day calls to the number
                  in any 24 hours, counted across campaigns, managers, numbers
    per_5min      at most settings.customer_calls_per_5min in any 5 minutes
    campaign_gap  settings.campaign_gap_minutes between calls for different
                  campaigns, unless this is a call-back the customer booked

A call counts if it is outbound to the number and may have rung it: every
row except those that ended on the manager's side (khhf.calls.states.
DESK_SIDE_OUTCOMES: the customer was never dialed). The counts come from
the calls table by customer_number (index ix_calls_number_time), in the
same round trip as the register's row for the number.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import StrEnum

from sqlalchemy import CompoundSelect, bindparam, literal, null, or_, select, union_all
from sqlalchemy.orm import Session

from khhf.calls.states import DESK_SIDE_OUTCOMES
from khhf.config import Settings
from khhf.models import Call, Customer, DncEntry, Task, TaskKind

from . import N_

FIVE_MINUTES = dt.timedelta(minutes=5)
DAY = dt.timedelta(hours=24)
# a booked call-back may be dialed this early and still be "at that time"
CALLBACK_EARLY = dt.timedelta(minutes=10)


class Rule(StrEnum):
    """Which rule refused a call."""
    WINDOW = "window"
    DO_NOT_CALL = "do_not_call"
    CONSENT = "consent"
    PER_DAY = "per_day"
    PER_5MIN = "per_5min"
    CAMPAIGN_GAP = "campaign_gap"


# rules that time cures: the customer may be called later without anyone
# changing anything (progressive dial skips such tasks and comes back)
TIMED = frozenset({Rule.WINDOW, Rule.PER_DAY, Rule.PER_5MIN, Rule.CAMPAIGN_GAP})


# the Problems fields of these refusals (request_call's other checks use others)
FIELDS = frozenset({"time", "customer"})


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One rule refusing the call: `message` a msgid with `params`;
    `not_before` (naive UTC) the earliest time every timed rule allows,
    None for a rule time does not cure (do-not-call, consent)."""
    rule: Rule
    message: str
    params: dict
    not_before: dt.datetime | None = None

    @property
    def field(self) -> str:
        return "time" if self.rule == Rule.WINDOW else "customer"


def in_calling_window(settings: Settings, now_utc: dt.datetime) -> bool:
    """Whether `now_utc` is inside the calling window, in local time."""
    start, end = settings.calling_hours
    local = settings.local(now_utc).time()
    return start <= local and (local < end or end == dt.time.max)   # time.max: 24:00


def window_opens(settings: Settings, at_utc: dt.datetime) -> dt.datetime:
    """`at_utc` if it is inside the calling window, else when the window
    next opens (naive UTC)."""
    if in_calling_window(settings, at_utc):
        return at_utc
    start, _end = settings.calling_hours
    local = settings.local(at_utc)
    day = local.date() if local.time() < start else local.date() + dt.timedelta(days=1)
    return settings.from_local(dt.datetime.combine(day, start))


def campaign_key(campaign_id: int | None, task_type_id: int | None) -> tuple:
    """What 'the same campaign' means for the gap: the campaign; tasks
    outside campaigns (call-backs, ad hoc) by their task type."""
    return (campaign_id, None) if campaign_id is not None else (None, task_type_id)


# built once: a statement made per call costs more than running it (SQLAlchemy
# rebuilds and re-keys it each time). One round trip: the number's counted
# calls of the last 24 hours, and a row marked listed if it is on the
# do-not-call register (bench/dial_latency.py measures the check).
_CALLS_AND_REGISTER: CompoundSelect = union_all(
    select(Call.requested_at, Task.campaign_id, Task.task_type_id,
           literal(False).label("listed"))
    .outerjoin(Task, Task.id == Call.task_id)
    .where(Call.customer_number == bindparam("number"), Call.requested_at > bindparam("since"),
           Call.requested_at <= bindparam("now"), Call.direction == "outbound",
           or_(Call.outcome.is_(None), Call.outcome.not_in(DESK_SIDE_OUTCOMES))),
    select(null(), null(), null(), literal(True))
    .where(DncEntry.number == bindparam("number")))


def customer_facts(session: Session, number: str, now: dt.datetime
                   ) -> tuple[list[tuple[dt.datetime, tuple]], bool]:
    """([(requested_at, campaign key)] of the counted outbound calls to
    `number` in the 24 hours up to `now`, oldest first; whether the number
    is on the do-not-call register)."""
    listed, calls = False, []
    for at, campaign, type_id, on_register in session.execute(
            _CALLS_AND_REGISTER, {"number": number, "since": now - DAY, "now": now}):
        if on_register:
            listed = True
        else:
            calls.append((at, campaign_key(campaign, type_id)))
    calls.sort(key=lambda c: c[0])
    return calls, listed


def is_booked_callback(task: Task, now: dt.datetime) -> bool:
    """The customer asked to be called now: the task's call-back is due."""
    return task.appointment_at is not None and task.appointment_at - CALLBACK_EARLY <= now


def check(session: Session, settings: Settings, task: Task, now: dt.datetime) -> list[Refusal]:
    """Every rule that refuses a call for `task` to its customer at `now`
    (naive UTC); empty when the call may ring. Reads only."""
    customer: Customer = task.customer
    calls, listed = customer_facts(session, customer.phone, now)
    refusals: list[Refusal] = []
    if customer.do_not_call or listed:
        refusals.append(Refusal(Rule.DO_NOT_CALL, N_(
            "The customer is on the do-not-call list: file a result instead of calling."), {}))
    task_type = task.task_type
    if task_type.requires_consent and task_type.kind != TaskKind.REVISIT and not customer.consent:
        refusals.append(Refusal(Rule.CONSENT, N_(
            "Tasks of type %(type)s call only customers who consented to such calls, and this "
            "customer has not: record the customer's consent first, or cancel the task."),
            {"type": task_type.name}))
    timed: list[tuple[Rule, str, dict, dt.datetime]] = []
    for rule, span, limit, message in (
            (Rule.PER_5MIN, FIVE_MINUTES, settings.customer_calls_per_5min, N_(
                "The customer has had %(count)s calls in the last 5 minutes (at most "
                "%(max)s): the customer may be called from %(when)s.")),
            (Rule.PER_DAY, DAY, settings.customer_calls_per_day, N_(
                "The customer has had %(count)s calls in the last 24 hours (at most "
                "%(max)s): the customer may be called from %(when)s."))):
        within = [at for at, _key in calls if at > now - span]
        if len(within) >= limit:
            # once the oldest calls beyond the limit leave the span
            timed.append((rule, message, {"count": len(within), "max": limit},
                          within[len(within) - limit] + span))
    gap = dt.timedelta(minutes=settings.campaign_gap_minutes)
    own = campaign_key(task.campaign_id, task.task_type_id)
    others = [at for at, key in calls if key != own and at > now - gap]
    if others and not is_booked_callback(task, now):
        timed.append((Rule.CAMPAIGN_GAP, N_(
            "The customer was called for another campaign at %(at)s, and calls for different "
            "campaigns are %(minutes)s minutes apart unless the customer booked the "
            "call-back: the customer may be called from %(when)s."),
            {"at": _clock(settings, others[-1]), "minutes": settings.campaign_gap_minutes},
            others[-1] + gap))
    if timed or not in_calling_window(settings, now):
        when = window_opens(settings, max([now, *(t[3] for t in timed)]))
        if not in_calling_window(settings, now):
            refusals.append(Refusal(Rule.WINDOW, N_(
                "Calls are only placed between %(window)s (%(zone)s): the customer may be "
                "called from %(when)s; or book a call-back."),
                {"window": settings.calling_window, "zone": settings.timezone,
                 "when": _clock(settings, when, ceil=True)}, when))
        for rule, message, params, _at in timed:
            refusals.append(Refusal(rule, message,
                                    {**params, "when": _clock(settings, when, ceil=True)}, when))
    return refusals


def _clock(settings: Settings, utc: dt.datetime, ceil: bool = False) -> str:
    """A time as the site reads it: YYYY-MM-DD HH:MM local (`ceil`: rounded
    up to the minute, so 'from 14:36' is never early)."""
    if ceil and (utc.second or utc.microsecond):
        utc = utc.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return f"{settings.local(utc):%Y-%m-%d %H:%M}"


def callable_at(session: Session, settings: Settings, task: Task,
                now: dt.datetime) -> dt.datetime | None:
    """When the task's customer may be called: `now`, a later time (naive
    UTC) when only timed rules refuse, None when a rule time does not cure
    refuses (do-not-call, consent)."""
    refusals = check(session, settings, task, now)
    if any(r.rule not in TIMED for r in refusals):
        return None
    return max((r.not_before for r in refusals if r.not_before), default=now)
