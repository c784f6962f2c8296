"""The unified-number pool (统一号码池): which of its county's numbers an
outbound call shows, the admin's changes to the pool, and how each number
is doing.

The choice, for every outbound call (`choose`, from khhf.services.dialing):

1. the number this customer has seen from us before (the newest call with
   them, either way: a call we placed that reached the carrier, or their
   own call to the hotline), if it is usable now: customers learn a
   number, and reach the hotline through it;
2. else the least used usable number of the county: fewest calls today,
   then the longest unused (last_used_at), then the primary number, then
   the oldest;
3. none usable: refused before anything rings, with a message saying why.

Usable: state active, and under each of its caps now (0: no cap), counted
from the calls table: calls.unified_number of outbound calls requested
today (local day: daily cap), in the last 60 minutes (hourly cap), and
still open (concurrent cap). A call that ended at the manager's phone
(state failed: the customer was never dialed) does not count; a call being
set up does. An open row older than OPEN_HORIZON (a crash) blocks nothing.

Two managers dialing at once: the choice locks the county's pool rows (SELECT
... FOR UPDATE on PostgreSQL; on SQLite every write is serialised by BEGIN
IMMEDIATE) and the call row gets its number in the same unit of work, so
the second choice waits for the first's call row and counts it. The caps are
therefore exact for calls placed through `choose`; they are soft only in
that a cap counts call rows, not channels: a two-leg call (双呼) shows the
number to the manager's mobile too and counts once, and a call row left
open by a crash counts as concurrent for OPEN_HORIZON.

The lock is what a county's dials queue on, so it is taken last and held
briefly: khhf.services.dialing writes everything else of the dial (the call
row, the task, the audit entry) first, then chooses, then commits; the
choice counts each number's calls only up to its caps (`capped_usage`: a
number at a cap is blocked however far beyond it is), so it costs the caps,
not the number's calls of the day. A choice that waits longer than
POOL_LOCK_TIMEOUT_S for the lock (PostgreSQL; SQLite's busy timeout is the
same) fails as "the database is busy" (khhf.db.is_busy): the web answers
503, try again.

The primary number (is_primary) is the county's published number: printed
for customers, and the tie-break when no rule above prefers another.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from sqlalchemy import bindparam, case, func, literal, or_, select, text, union_all
from sqlalchemy.orm import Session

from khhf import audit, db, numbering
from khhf.calls.states import FINAL_STATES, CallState
from khhf.config import Settings
from khhf.local_time import day_start
from khhf.models import Call, County, NumberState, UnifiedNumber, User

from . import N_, Problems

# an open call row older than this is a crash's leftover: it holds no channel
OPEN_HORIZON = dt.timedelta(hours=2)
HOUR = dt.timedelta(hours=1)
CAPS = ("daily_cap", "hourly_cap", "concurrent_cap")
MAX_CAP = 100_000
# the choice counts a number without a daily cap this far: "fewest calls
# today" among such numbers, then the longest unused (round robin)
ORDER_BOUND = 1_000
# the longest a dial waits for its county's pool lock (as SQLite's busy timeout)
POOL_LOCK_TIMEOUT_S = db.SQLITE_BUSY_TIMEOUT_MS // 1000


@dataclasses.dataclass(frozen=True)
class Use:
    """A number's outbound calls counted against its caps at one moment."""
    today: int = 0
    last_hour: int = 0
    open: int = 0


# the statements of every dial, built once (building them costs more than running them)
_USAGE = (
    select(Call.unified_number,
           func.sum(case((Call.requested_at >= bindparam("today"), 1), else_=0)),
           func.sum(case((Call.requested_at > bindparam("hour_ago"), 1), else_=0)),
           func.sum(case((Call.state.not_in(sorted(FINAL_STATES))
                          & (Call.requested_at > bindparam("horizon")), 1), else_=0)))
    # by the number, not the county: ix_calls_unified_time answers it alone
    .where(Call.direction == "outbound",
           Call.unified_number.in_(bindparam("numbers", expanding=True)),
           Call.requested_at >= bindparam("since"), Call.requested_at <= bindparam("now"),
           Call.state != CallState.FAILED)
    .group_by(Call.unified_number))


def _at_most(i: int, limit: str, *where):
    """How many of number i's outbound calls up to now that count against
    its caps match `where`, counted no further than the bound parameter
    `limit`_i: the index entries read are at most the cap, however many
    calls the number made."""
    counted = (select(literal(1))
               .where(Call.unified_number == bindparam(f"number_{i}"),
                      Call.direction == "outbound", Call.requested_at <= bindparam("now"),
                      Call.state != CallState.FAILED, *where)
               .limit(bindparam(f"{limit}_{i}")).subquery())
    return select(func.count()).select_from(counted).scalar_subquery()


@functools.cache
def _capped_use(k: int):
    """The statement of capped_usage for k numbers: one round trip (built
    once per pool size: building costs more than running it)."""
    return union_all(*(
        select(literal(i),
               _at_most(i, "day_limit", Call.requested_at >= bindparam("today")),
               _at_most(i, "hour_limit", Call.requested_at > bindparam("hour_ago")),
               _at_most(i, "open_limit", Call.requested_at > bindparam("horizon"),
                        Call.state.not_in(sorted(FINAL_STATES))))
        for i in range(k)))


_SEEN = (
    select(Call.unified_number)
    .where(Call.customer_id == bindparam("customer_id"),
           Call.unified_number.in_(
               select(UnifiedNumber.number)
               .where(UnifiedNumber.county_id == bindparam("county_id")).scalar_subquery()),
           or_(Call.direction == "inbound", Call.state != CallState.FAILED))
    .order_by(Call.requested_at.desc(), Call.id.desc()).limit(1))
_POOL = (
    select(UnifiedNumber).where(UnifiedNumber.county_id == bindparam("county_id"))
    .order_by(UnifiedNumber.id).with_for_update()
    .execution_options(populate_existing=True))
_LOCK_TIMEOUT = text(f"SET LOCAL lock_timeout = '{POOL_LOCK_TIMEOUT_S}s'")


def usage(session: Session, settings: Settings, numbers: list[str],
          now: dt.datetime) -> dict[str, Use]:
    """number -> its Use at `now` (one query over the numbers' recent calls)."""
    today = day_start(settings.local(now).date(), settings.timezone)
    hour_ago, horizon = now - HOUR, now - OPEN_HORIZON
    rows = session.execute(_USAGE, {"today": today, "hour_ago": hour_ago, "horizon": horizon,
                                    "numbers": numbers, "since": min(today, hour_ago, horizon),
                                    "now": now})
    return {number: Use(int(d or 0), int(h or 0), int(o or 0)) for number, d, h, o in rows}


def capped_usage(session: Session, settings: Settings, pool: list[UnifiedNumber],
                 now: dt.datetime) -> dict[str, Use]:
    """number -> its Use at `now` as the choice needs it: each count exact
    up to the number's cap of it (a count at the cap blocks the number
    however far beyond it is), today's up to ORDER_BOUND when the number
    has no daily cap, no count for a cap of 0 (none) nor for a number that
    is not active. One query."""
    active = [n for n in pool if n.state == NumberState.ACTIVE]
    if not active:
        return {}
    today = day_start(settings.local(now).date(), settings.timezone)
    params: dict[str, object] = {"today": today, "hour_ago": now - HOUR,
                                 "horizon": now - OPEN_HORIZON, "now": now}
    for i, n in enumerate(active):
        params.update({f"number_{i}": n.number, f"day_limit_{i}": n.daily_cap or ORDER_BOUND,
                       f"hour_limit_{i}": n.hourly_cap, f"open_limit_{i}": n.concurrent_cap})
    rows = session.execute(_capped_use(len(active)), params)
    return {active[i].number: Use(int(d), int(h), int(o)) for i, d, h, o in rows}


def blocked_by(number: UnifiedNumber, use: Use) -> str | None:
    """Why `number` may not show on a new call now ('resting', 'daily_cap',
    ...), or None when it may."""
    if number.state != NumberState.ACTIVE:
        return number.state
    for cap, count in (("daily_cap", use.today), ("hourly_cap", use.last_hour),
                       ("concurrent_cap", use.open)):
        limit = getattr(number, cap)
        if limit and count >= limit:
            return cap
    return None


def seen_number(session: Session, customer_id: int, county_id: int) -> str | None:
    """The number of the county's pool on the newest call with this customer
    that they saw: their own call to the hotline, or ours that got past the
    manager."""
    return session.scalar(_SEEN, {"customer_id": customer_id, "county_id": county_id})


def choose(session: Session, settings: Settings, county: County, customer_id: int,
           now: dt.datetime, problems: Problems) -> UnifiedNumber | None:
    """The number an outbound call to the customer shows, by the rules
    above; its last_used_at becomes `now`. None, with a problem added,
    when no number of the county may show now. Locks the county's pool
    until the unit of work ends: call it last, and commit at once."""
    # read before the lock: it only prefers one usable number to another (a
    # dial to the same customer committing meanwhile is rare and harmless)
    seen = seen_number(session, customer_id, county.id)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK_TIMEOUT)
    pool = list(session.scalars(_POOL, {"county_id": county.id}))
    if not pool:
        problems.add("county", N_("Your county has no unified number: ask an administrator "
                                  "to add one."))
        return None
    uses = capped_usage(session, settings, pool, now)
    usable = [n for n in pool if blocked_by(n, uses.get(n.number, Use())) is None]
    if not usable:
        if all(n.state != NumberState.ACTIVE for n in pool):
            problems.add("county", N_("Every unified number of your county is resting or "
                                      "retired: ask an administrator to reactivate one or "
                                      "add a number."))
        else:
            problems.add("county", N_("Every unified number of your county in use has reached "
                                      "its daily, hourly or concurrent-call cap: try again in "
                                      "a few minutes (an hourly cap frees as the hour goes "
                                      "on, a daily one tomorrow), or ask an administrator to "
                                      "raise the caps or add a number."))
        return None
    chosen = next((n for n in usable if n.number == seen), None)
    if chosen is None:
        chosen = min(usable, key=lambda n: (uses.get(n.number, Use()).today,
                                            n.last_used_at or dt.datetime.min,
                                            not n.is_primary, n.id))
    chosen.last_used_at = now
    return chosen


# -- the admin's changes -----------------------------------------------------------

def find(session: Session, number: str) -> UnifiedNumber | None:
    """The pool row of a unified number as typed, or None."""
    try:
        number = numbering.unified_number(number)
    except numbering.NumberError:
        return None
    return session.scalar(select(UnifiedNumber).where(UnifiedNumber.number == number))


def _caps(problems: Problems, caps: dict) -> dict:
    checked = {}
    for cap, value in caps.items():
        if value is None:
            continue
        try:
            value = int(str(value).strip())
        except ValueError:
            value = -1
        if not 0 <= value <= MAX_CAP:
            problems.add(cap, N_("A cap is a whole number from 0 (no cap) to %(max)s."),
                         max=MAX_CAP)
        checked[cap] = value
    return checked


def add_number(session: Session, by: User | None, ip: str, settings: Settings, county: County,
               number: str, **caps) -> UnifiedNumber:
    """Add `number` to the county's pool, active, with the given caps
    (daily_cap, hourly_cap, concurrent_cap; a cap not given starts at the
    setting number_<cap>). A county's first number becomes its primary."""
    problems = Problems()
    typed = number
    try:
        number = numbering.unified_number(number)
    except numbering.NumberError:
        problems.refuse("number", N_("%(value)s is not a unified number: write 11 digits "
                                     "starting 13 to 19, e.g. 13900000000."), value=typed)
    other = session.scalar(select(UnifiedNumber).where(UnifiedNumber.number == number))
    if other is not None:
        problems.add("number", N_("%(value)s is already a unified number of %(county)s."),
                     value=number, county=other.county.name)
    values = {cap: getattr(settings, f"number_{cap}") for cap in CAPS}
    values.update(_caps(problems, {cap: caps.get(cap) for cap in CAPS}))
    problems.raise_if_any()
    row = UnifiedNumber(number=number, state=NumberState.ACTIVE,
                        is_primary=not county.unified_numbers, **values)
    county.unified_numbers.append(row)
    session.flush()
    audit.record(session, by, "create", "unified_number", row.id,
                 {"fields": {"county": county.name, "number_state": row.state, **values}}, ip,
                 object_name=number)
    return row


def set_state(session: Session, by: User | None, ip: str, row: UnifiedNumber,
              state: str) -> UnifiedNumber:
    """Rest (休息), reactivate (在用) or retire (停用) a number. Every state
    keeps routing the hotline; only active numbers show on new calls. The
    primary (published) number cannot be retired: make another primary first."""
    problems = Problems()
    if state not in set(NumberState):
        problems.refuse("state", N_("Choose in use, resting or retired."))
    if state == NumberState.RETIRED and row.is_primary and len(row.county.unified_numbers) > 1:
        problems.add("state", N_("%(value)s is the county's primary (published) number: make "
                                 "another number primary on the county's page before "
                                 "retiring it."), value=row.number)
    problems.raise_if_any()
    old, row.state = row.state, NumberState(state)
    audit.record(session, by, "update", "unified_number", row.id,
                 audit.changes({"number_state": (old, row.state)}), ip, object_name=row.number)
    return row


def set_caps(session: Session, by: User | None, ip: str, row: UnifiedNumber,
             **caps) -> UnifiedNumber:
    """Change a number's caps (daily_cap, hourly_cap, concurrent_cap; 0: no cap)."""
    problems = Problems()
    values = _caps(problems, {cap: caps.get(cap) for cap in CAPS})
    problems.raise_if_any()
    changes = {cap: (getattr(row, cap), value) for cap, value in values.items()}
    for cap, value in values.items():
        setattr(row, cap, value)
    audit.record(session, by, "update", "unified_number", row.id, audit.changes(changes), ip,
                 object_name=row.number)
    return row


# -- how each number is doing ---------------------------------------------------------

@dataclasses.dataclass
class NumberFigures:
    """Outbound calls showing one number (over a day or a window) that
    reached the carrier and ended: calls, answered, talk seconds."""
    calls: int = 0
    answered: int = 0
    talk_seconds: int = 0

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.calls if self.calls else None

    @property
    def average_talk(self) -> float | None:
        return self.talk_seconds / self.answered if self.answered else None

    def add(self, answered: bool, talk: int | None) -> None:
        self.calls += 1
        if answered:
            self.answered += 1
            self.talk_seconds += talk or 0


def by_day(session: Session, settings: Settings, county: County, first: dt.date,
           last: dt.date) -> dict[tuple[dt.date, str], NumberFigures]:
    """(local day, number) -> its figures, for the county's ended outbound
    calls from local day `first` to `last`. Counted from the calls table
    (a county's calls over a few weeks: bounded, grouped here by local day),
    not from the nightly report sums."""
    lo = day_start(first, settings.timezone)
    hi = day_start(last + dt.timedelta(days=1), settings.timezone)
    out: dict[tuple[dt.date, str], NumberFigures] = {}
    rows = session.execute(
        select(Call.unified_number, Call.requested_at, Call.answer_at.is_not(None),
               Call.talk_seconds)
        .where(Call.county_id == county.id, Call.direction == "outbound",
               Call.state == CallState.ENDED, Call.unified_number.is_not(None),
               Call.requested_at >= lo, Call.requested_at < hi))
    for number, at, answered, talk in rows:
        out.setdefault((settings.local(at).date(), number or ""), NumberFigures()).add(
            answered, talk)
    return out


@dataclasses.dataclass(frozen=True)
class NumberWarning:
    """A number answered much less often than its county over the window."""
    number: str
    figures: NumberFigures
    county_rate: float
    days: int


def warnings(session: Session, settings: Settings, county: County,
             now: dt.datetime) -> list[NumberWarning]:
    """Numbers whose answer rate over the last number_watch_days local days
    (today included), with at least number_watch_min_calls calls, is below
    number_watch_percent % of the county's rate over the same days: the
    carrier's apps have likely marked them (骚扰电话); rest them."""
    last = settings.local(now).date()
    first = last - dt.timedelta(days=max(settings.number_watch_days, 1) - 1)
    per_number: dict[str, NumberFigures] = {}
    whole = NumberFigures()
    for (_, number), f in by_day(session, settings, county, first, last).items():
        mine = per_number.setdefault(number, NumberFigures())
        for target in (mine, whole):
            target.calls += f.calls
            target.answered += f.answered
            target.talk_seconds += f.talk_seconds
    county_rate = whole.answer_rate
    if not county_rate:
        return []
    bar = county_rate * settings.number_watch_percent / 100
    return [NumberWarning(number, f, county_rate, settings.number_watch_days)
            for number, f in sorted(per_number.items())
            if f.calls >= settings.number_watch_min_calls and (f.answer_rate or 0) < bar]


@dataclasses.dataclass(frozen=True)
class PoolRow:
    """One number of a county's pool as the pool page and `khhf numbers list` show it."""
    number: UnifiedNumber
    use: Use
    blocked: str | None


def pool(session: Session, settings: Settings, county: County,
         now: dt.datetime) -> list[PoolRow]:
    """The county's numbers (primary first), each with its use now."""
    rows = sorted(county.unified_numbers, key=lambda n: (not n.is_primary, n.number))
    uses = usage(session, settings, [n.number for n in rows], now)
    return [PoolRow(n, uses.get(n.number, Use()), blocked_by(n, uses.get(n.number, Use())))
            for n in rows]
