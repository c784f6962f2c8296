"""The hotline (客户经理服务热线): whom a customer calling a unified number reaches.

The FastAGI routes (agi/routes/hotline.py, hotline_end.py) call these
functions, each inside one unit of work; nothing here knows Asterisk.

- `start_call` writes the inbound call row and answers "who rings": the
  customer's own active manager (desk phone, then mobile), then the county's
  fallback group: its on-duty active managers' desk phones. An off-duty
  (离岗) manager is away from the desk: their desk phone is skipped and the
  call goes straight to their mobile, then to the group.
- `finish_call` closes the call row when the channel hangs up; a call that
  nobody answered becomes a high-priority call-back task for the owning
  manager (or the county's fallback owner) and an SMS in the outbox.
- `complete_call` does both from the hang-up's event (khhf.calls.inbound),
  for the AMI bridge: a call whose AGI write never happened still gets its
  one row.

Every writer of an inbound row (the routing AGI after its answer, the
hang-up AGI, the AMI bridge) inserts it idempotently on the channel's
unique uniqueid, and closes it under a row lock: one row per call, closed
once, whichever comes first.

The AGI route answers from an in-memory Directory of managers and counties,
checked against the database's routing_generation counter on every call
(with the customer row, read afresh): the very next call after a
reassignment, a hand-over or a duty change follows it, whichever process
made the change. The call row is written after the answer (record_call).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from khhf import numbering
from khhf.calls.inbound import HotlineEnd
from khhf.calls.states import CallOutcome, CallState, answered_by_colleague
from khhf.config import Settings
from khhf.models import Call, County, Customer, Manager, SmsKind, Task, TaskType, UnifiedNumber, utcnow
from khhf.numbering import UNIFIED_NUMBER, NumberError, normalise
from khhf.phones import mask_phone
from khhf.services import N_, sms, tasks

log = logging.getLogger(__name__)

CALLBACK_TASK_TYPE = "callback"
# missed hotline calls come before every campaign task (those default to 0)
CALLBACK_PRIORITY = 100

# what the manager's phone receives (sms.say_sms); the SMPP sender sends the outbox
SMS_MISSED_CALL = N_("Missed call: customer %(who)s called at %(at)s; a call-back task is "
                     "waiting, please call back soon.")
# the note on a customer first known from a missed call (data, in Chinese)
NOTE_FIRST_SEEN = "首次来电：热线未接"
# customer_number of an inbound call whose caller id is withheld or unusable
UNKNOWN_CALLER = ""
# a repeated missed call raises the open call-back's priority by this much
REPEAT_PRIORITY_STEP = 1
# an inbound row still open after this long lost its hang-up (the AGI service
# was down when the caller hung up, or the PBX crashed): close_stale_calls
# closes it, so no row stays open for good
STALE_INBOUND = dt.timedelta(hours=1)
# the stages of the ring order, as the dialplan names them (KHHF_STAGE)
# (the outcome of a call one of them answered has the stage's name)
ANSWERING_STAGES = (CallOutcome.DESK, CallOutcome.MOBILE, CallOutcome.GROUP)


@dataclasses.dataclass(frozen=True)
class Routing:
    """Where the dialplan rings an inbound call, in order, and the call row's facts."""
    call_id: int | None         # None until the row is written (the fast path writes it after)
    customer_id: int | None
    manager_id: int | None      # the owning, active manager; None: the group only
    desk: str                   # the manager's desk extension, or '' (none, or off duty)
    mobile: str                 # the manager's mobile, or ''
    group: tuple[str, ...]      # fallback group: on-duty desk extensions, owner excluded
    county_desks: tuple[str, ...]  # every on-duty desk of the county (degraded mode)
    strategy: str               # 'ringall' or 'hunt'
    recording_file: str         # relative to the recordings directory
    county_id: int | None = None
    customer_number: str = UNKNOWN_CALLER  # normalised, or '' for an unknown caller

    @property
    def route(self) -> str:
        return "manager" if self.manager_id is not None else "group"


def dial_string(extensions) -> str:
    """'PJSIP/8001&PJSIP/8002' for Dial(), from validated desk extensions."""
    return "&".join(f"PJSIP/{ext}" for ext in extensions)


_UNSAFE_IN_NAME = re.compile(r"[^\w.-]")


def recording_file(settings: Settings, uniqueid: str, requested_at: dt.datetime) -> str:
    """An inbound call's recording, by the channel's uniqueid (known before
    the row is written; the degraded dialplan names it the same way)."""
    return f"{settings.recording_day(requested_at)}/in-{_UNSAFE_IN_NAME.sub('_', uniqueid)}.wav"


def _decide(*, customer_id: int | None, county_id: int | None, manager, group: tuple[str, ...],
            strategy: str, number: str | None, uniqueid: str, requested_at: dt.datetime,
            settings: Settings, call_id: int | None = None) -> Routing:
    """The ring order from the facts, whichever path looked them up
    (`manager`: a Manager or a DirectoryManager, active; or None)."""
    return Routing(
        call_id=call_id, customer_id=customer_id,
        manager_id=manager.id if manager else None,
        desk=_desk(manager) if manager and manager.on_duty else "", mobile=_mobile(manager),
        group=tuple(ext for ext in group if not manager or ext != manager.desk_extension),
        county_desks=group, strategy=strategy,
        recording_file=recording_file(settings, uniqueid, requested_at),
        county_id=county_id, customer_number=number or UNKNOWN_CALLER)


def _active(customer_id, manager):
    """The owner if still active; someone who left is never rung."""
    if manager is not None and manager.status != "active":
        # the hand-over service moves customers on departure; never ring
        # someone who has left, whatever the data says
        log.warning("customer %s is still assigned to departed manager %s",
                    customer_id, manager.id)
        return None
    return manager


def start_call(session: Session, *, caller: str, unified_number: str, uniqueid: str,
               linkedid: str = "", now: dt.datetime | None = None,
               settings: Settings | None = None) -> Routing:
    """Log an inbound call and decide its ring order (idempotent on uniqueid),
    all from the database: the AGI route's fallback when its in-memory
    directory (RoutingDirectory) cannot answer.
    `settings`: this site's time zone and PBX node (default: the defaults)."""
    now = now or utcnow()
    settings = settings or Settings()
    call = session.scalar(select(Call).where(Call.uniqueid == uniqueid))
    if call is None:
        call, manager = _new_call(session, caller, unified_number, uniqueid, linkedid, now,
                                  settings)
    else:
        manager = session.get(Manager, call.manager_id) if call.manager_id else None
    county = session.get(County, call.county_id) if call.county_id else None
    return _decide(customer_id=call.customer_id, county_id=call.county_id, manager=manager,
                   group=on_duty_desks(session, county.id) if county else (),
                   strategy=county.fallback_strategy if county else "ringall",
                   number=call.customer_number, uniqueid=uniqueid,
                   requested_at=call.requested_at, settings=settings, call_id=call.id)


def caller_number(caller: str | None) -> str | None:
    """The caller id, normalised once (khhf.numbering), or None when it is
    unusable (withheld, foreign, garbage): such a caller is "unknown"."""
    try:
        return normalise(caller)
    except NumberError:
        return None


def _new_call(session, caller, unified_number, uniqueid, linkedid,
              now, settings: Settings) -> tuple[Call, Manager | None]:
    number = caller_number(caller)
    if number is None:
        log.info("hotline call %s from an unusable caller id %r: an unknown caller",
                 uniqueid, mask_phone(caller or ""))
    # the county entity, not just its id: start_call's get() then needs no query
    county = session.scalar(select(County).join(UnifiedNumber).where(
        UnifiedNumber.number == unified_number))
    customer = manager = None
    if number:
        row = session.execute(select(Customer, Manager).outerjoin(
            Manager, Manager.id == Customer.manager_id).where(Customer.phone == number)).first()
        if row is not None:
            customer, manager = row
            manager = _active(customer.id, manager)
    call = _insert_call(session, customer_id=customer.id if customer else None,
                        manager_id=manager.id if manager else None,
                        county_id=county.id if county is not None else
                        (customer.county_id if customer else None),
                        number=number, unified_number=unified_number, uniqueid=uniqueid,
                        linkedid=linkedid, now=now, settings=settings)
    if call.manager_id != (manager.id if manager else None):  # another writer's row
        manager = session.get(Manager, call.manager_id) if call.manager_id else None
    return call, manager


def _insert_call(session: Session, *, customer_id, manager_id, county_id, number,
                 unified_number, uniqueid, linkedid, now, settings: Settings) -> Call:
    """The inbound row of the channel `uniqueid`: inserted unless a row is
    there already (another writer's, which then stands), and returned."""
    _insert_row(session, customer_id=customer_id, manager_id=manager_id, county_id=county_id,
                number=number, unified_number=unified_number, uniqueid=uniqueid,
                linkedid=linkedid, now=now, settings=settings)
    return session.scalars(select(Call).where(Call.uniqueid == uniqueid)
                           .execution_options(populate_existing=True)).one()


def _insert_row(session: Session, *, customer_id, manager_id, county_id, number,
                unified_number, uniqueid, linkedid, now, settings: Settings) -> None:
    """Insert the inbound row of the channel `uniqueid` unless a row is
    there already (one statement: the unique uniqueid decides)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(Call).values(
        direction="inbound", customer_id=customer_id, manager_id=manager_id,
        county_id=county_id, uniqueid=uniqueid, linkedid=linkedid or uniqueid,
        # the normalised number, or empty for an unknown caller: never
        # the raw caller id, which is not a number anything can use
        customer_number=number or UNKNOWN_CALLER,
        unified_number=unified_number if UNIFIED_NUMBER.fullmatch(unified_number or "") else None,
        state=CallState.REQUESTED, requested_at=now, pbx_node=settings.pbx_name,
    ).on_conflict_do_nothing(index_elements=["uniqueid"]))


def _locked_call(session: Session, uniqueid: str) -> Call | None:
    """The inbound row of `uniqueid`, locked for this transaction (PostgreSQL:
    FOR UPDATE; SQLite's writing transactions hold the database's write
    lock already), read afresh: whoever closes it second sees it closed."""
    return session.scalars(select(Call).where(Call.uniqueid == uniqueid).with_for_update()
                           .execution_options(populate_existing=True)).one_or_none()


def record_call(session: Session, *, routing: Routing, unified_number: str, uniqueid: str,
                linkedid: str, now: dt.datetime, settings: Settings) -> None:
    """Write the row of a call the directory routed (after the AGI answered);
    idempotent on uniqueid: when the hang-up route or the AMI bridge wrote
    it first (a very short call, or this write failed), that row stands.
    One statement (an insert that skips a row already there): nothing
    reads the row back."""
    _insert_row(session, customer_id=routing.customer_id, manager_id=routing.manager_id,
                county_id=routing.county_id, number=routing.customer_number,
                unified_number=unified_number, uniqueid=uniqueid, linkedid=linkedid, now=now,
                settings=settings)


def on_duty_desks(session: Session, county_id: int) -> tuple[str, ...]:
    """The county's fallback group: on-duty active managers' desk extensions, in hunt order."""
    rows = session.scalars(select(Manager.desk_extension).where(
        Manager.county_id == county_id, Manager.status == "active", Manager.on_duty.is_(True),
        Manager.desk_extension.is_not(None)).order_by(Manager.id))
    return tuple(ext for ext in rows if ext is not None and numbering.DESK_EXTENSION.fullmatch(ext))


# -- the directory: what routing needs besides the customer row, in memory ----
#
# The AGI service (agi/directory.py) keeps a Directory of every manager and
# county and, per call, reads one row: routing_generation's counter with the
# unified number's county and the caller's customer (both unique look-ups).
# Triggers raise the counter in the transaction of any change to managers or
# counties (khhf.models.routing_triggers), whichever process makes it; a
# counter unlike the directory's means: load it again, then route. The
# customer row (its owner) is read afresh on every call, so assignments and
# hand-overs need no invalidation at all.

# {p}: the driver's placeholder
LOOKUP_SQL = ("SELECT g.generation, u.county_id, c.id, c.county_id, c.manager_id "
              "FROM routing_generation g "
              "LEFT JOIN unified_numbers u ON u.number = {p} "
              "LEFT JOIN customers c ON c.phone = {p} WHERE g.id = 1")
GENERATION_SQL = "SELECT generation FROM routing_generation WHERE id = 1"
MANAGERS_SQL = ("SELECT id, county_id, desk_extension, mobile, status, on_duty "
                "FROM managers ORDER BY id")
COUNTIES_SQL = "SELECT id, fallback_strategy FROM counties"


@dataclasses.dataclass(frozen=True)
class DirectoryManager:
    """A manager as routing sees it (the attributes of Manager it reads)."""
    id: int
    county_id: int
    desk_extension: str | None
    mobile: str | None
    status: str
    on_duty: bool


@dataclasses.dataclass(frozen=True)
class Directory:
    """Every manager and county at one routing_generation."""
    generation: int
    managers: dict[int, DirectoryManager]
    strategies: dict[int, str]             # county id -> fallback strategy
    groups: dict[int, tuple[str, ...]]     # county id -> on_duty_desks

    @classmethod
    def from_rows(cls, generation: int, managers, counties) -> Directory:
        """From MANAGERS_SQL's and COUNTIES_SQL's rows."""
        by_id = {row[0]: DirectoryManager(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
                 for row in managers}
        groups: dict[int, list[str]] = {}
        for m in by_id.values():  # in id order: the hunt order (on_duty_desks)
            if m.status == "active" and m.on_duty and m.desk_extension \
                    and numbering.DESK_EXTENSION.fullmatch(m.desk_extension):
                groups.setdefault(m.county_id, []).append(m.desk_extension)
        return cls(generation, by_id, {row[0]: row[1] for row in counties},
                   {county: tuple(desks) for county, desks in groups.items()})

    def route(self, row, *, number: str | None, uniqueid: str, now: dt.datetime,
              settings: Settings) -> Routing:
        """The ring order from LOOKUP_SQL's row for the caller's normalised
        `number` (None: unknown, looked up as NULL), as start_call decides it."""
        _generation, unified_county, customer_id, customer_county, manager_id = row
        manager = None
        if manager_id is not None:
            manager = _active(customer_id, self.managers.get(manager_id))
        county_id = unified_county if unified_county is not None else customer_county
        known = county_id in self.strategies
        return _decide(customer_id=customer_id, county_id=county_id, manager=manager,
                       group=self.groups.get(county_id, ()) if known else (),
                       strategy=self.strategies[county_id] if known else "ringall",
                       number=number, uniqueid=uniqueid, requested_at=now, settings=settings)


def county_groups(session: Session) -> dict[str, str]:
    """unified number -> Dial string of its county's on-duty desk phones.

    What Asterisk keeps in AstDB to ring when the AGI service is down.
    """
    out = {}
    for number, county_id in session.execute(
            select(UnifiedNumber.number, UnifiedNumber.county_id).order_by(UnifiedNumber.number)):
        out[number] = dial_string(on_duty_desks(session, county_id))
    return out


def _desk(manager: Manager | None) -> str:
    ext = manager.desk_extension if manager else None
    return ext if ext and numbering.DESK_EXTENSION.fullmatch(ext) else ""


def _mobile(manager: Manager | None) -> str:
    if not manager or not manager.mobile:
        return ""
    try:
        return normalise(manager.mobile)
    except NumberError:
        log.warning("manager %s has an unusable mobile number; not ringing it", manager.id)
        return ""


@dataclasses.dataclass(frozen=True)
class Hangup:
    """What the dialplan knows when the customer's channel hangs up."""
    stage: str = ""             # routing | desk | mobile | group | message
    dial_status: str = ""       # DIALSTATUS of the last Dial
    answered_seconds: int = 0   # ANSWEREDTIME (whole seconds, cut down)
    answered_ms: int | None = None   # ANSWEREDTIME_MS, when the dialplan gave it
    answered_by: str = ""       # DIALEDPEERNUMBER: extension, or number@trunk
    recording_file: str = ""


def finish_call(session: Session, *, uniqueid: str, hangup: Hangup, call_id: int | None = None,
                caller: str = "", unified_number: str = "", linkedid: str = "",
                now: dt.datetime | None = None, requested_at: dt.datetime | None = None,
                settings: Settings | None = None, locked: Call | None = None) -> Call:
    """Close the inbound call; a missed call becomes a call-back task and an SMS.

    Idempotent: a call already ended is returned unchanged, and the row is
    locked first, so two writers closing it at once (the hang-up AGI, the
    AMI bridge) close it once. When the routing AGI failed (the call rang
    the degraded group), the call row is written here, late but complete
    (`requested_at`: when the call came, default `now`). The row is the
    channel's `uniqueid`'s; `call_id` (the route's KHHF_CALL_ID) is not
    needed to find it, and a forged one cannot close another call.
    `locked`: the row, when the caller has locked it already (_locked_call).
    """
    del call_id  # the uniqueid decides
    now = now or utcnow()
    settings = settings or Settings()
    call = locked if locked is not None else _locked_call(session, uniqueid)
    if call is None:
        _new_call(session, caller, unified_number, uniqueid, linkedid, requested_at or now,
                  settings)
        call = _locked_call(session, uniqueid)
        assert call is not None  # just inserted, or another writer's
    if call.state == CallState.ENDED and call.outcome != CallOutcome.LOST:
        return call
    answered = hangup.dial_status == "ANSWER" and hangup.stage in ANSWERING_STAGES
    call.state, call.end_at = CallState.ENDED, now
    if answered:
        talked = (dt.timedelta(milliseconds=hangup.answered_ms)
                  if hangup.answered_ms is not None
                  else dt.timedelta(seconds=max(0, hangup.answered_seconds)))
        call.outcome = CallOutcome(hangup.stage)
        call.talk_seconds = round(talked.total_seconds())   # as the outbound fold rounds
        call.answer_at = now - talked
        if re.fullmatch(r"[\w/.-]+\.wav", hangup.recording_file or "") \
                and ".." not in hangup.recording_file:
            call.recording_path = hangup.recording_file
        if hangup.stage == CallOutcome.GROUP:
            call.outcome = answered_by_colleague(hangup.answered_by)
        return call
    call.outcome = CallOutcome.MISSED
    _call_back(session, call, now, settings)
    return call


def complete_call(session: Session, end: HotlineEnd, settings: Settings) -> Call:
    """Write (unless written) and close the row of the hotline call whose
    hang-up the dialplan announced (khhf.calls.inbound): what the AMI bridge
    and its CEL reconciler do with that event, so a call whose AGI write
    never happened (the service died after its answer, or was down at the
    hang-up) still has its one row, with the customer and manager the route
    chose. A row the AGI service wrote stands; one it closed stays as it is.
    The row is locked first (one statement when it is there, as it mostly is).
    """
    call = _locked_call(session, end.uniqueid)
    if call is None and end.routed:
        customer = session.get(Customer, end.customer_id) if end.customer_id else None
        manager = session.get(Manager, end.manager_id) if end.manager_id else None
        county_id = session.scalar(select(UnifiedNumber.county_id).where(
            UnifiedNumber.number == end.unified_number))
        _insert_call(session, customer_id=customer.id if customer else None,
                     manager_id=manager.id if manager else None,
                     county_id=county_id if county_id is not None else
                     (customer.county_id if customer else None),
                     number=caller_number(end.caller), unified_number=end.unified_number,
                     uniqueid=end.uniqueid, linkedid=end.linkedid,
                     now=end.arrived_at or end.at, settings=settings)
    # not routed (degraded mode): written as the hang-up AGI writes it, from the database
    return finish_call(session, uniqueid=end.uniqueid, caller=end.caller,
                       unified_number=end.unified_number, linkedid=end.linkedid,
                       now=end.at, requested_at=end.arrived_at, settings=settings, locked=call,
                       hangup=Hangup(stage=end.stage, dial_status=end.dial_status,
                                     answered_ms=end.answered_ms,
                                     answered_by=end.answered_by,
                                     recording_file=end.recording_file))


def closed_calls(session: Session, uniqueids) -> set[str]:
    """Which of the channels `uniqueids` have an inbound row that is closed
    for good (ended, not as lost): complete_call would leave those as they
    are, so a writer that read them closed (one query for a whole batch)
    need not lock them. A closed row never opens again, so reading it
    without a lock is enough."""
    ids = set(uniqueids)
    if not ids:
        return set()
    return set(session.scalars(select(Call.uniqueid).where(
        Call.uniqueid.in_(ids), Call.state == CallState.ENDED,
        Call.outcome != CallOutcome.LOST)))


def fallback_owner(session: Session, county_id: int | None) -> Manager | None:
    """Who owns what nobody else does in a county: an on-duty active
    manager first, else any active one; the longest-serving (lowest id)."""
    if county_id is None:
        return None
    return session.scalar(select(Manager).where(
        Manager.county_id == county_id, Manager.status == "active")
        .order_by(Manager.on_duty.desc(), Manager.id).limit(1))


def _call_back(session: Session, call: Call, now: dt.datetime, settings: Settings) -> None:
    """A missed call: the owner (or the county's fallback owner) calls back.

    The first missed call from a number opens a call-back task and queues
    an SMS to the owner; another missed call while that task is open only
    raises its priority (the calls are linked to it, so the task shows how
    often the customer tried). An unknown caller (withheld or unusable
    caller id) gets no task: nobody could call back.
    """
    if not call.customer_number:
        log.warning("missed hotline call %s from a withheld or unusable number: "
                    "nobody can call back", call.id)
        return
    owner = session.get(Manager, call.manager_id) if call.manager_id else None
    if owner is None or owner.status != "active":
        owner = fallback_owner(session, call.county_id)
    if owner is None:
        log.error("missed hotline call %s: county %s has no active manager to call back",
                  call.id, call.county_id)
        return
    customer = session.get(Customer, call.customer_id) if call.customer_id else None
    if customer is None:
        # customer_number is normalised: the same look-up start_call made,
        # again, in case another call created the customer since
        customer = session.scalar(select(Customer).where(Customer.phone == call.customer_number))
    if customer is None:
        # an unknown caller becomes an (unassigned) customer of the county, so
        # the call-back task has someone to call
        customer = Customer(phone=call.customer_number, county_id=owner.county_id,
                            note=NOTE_FIRST_SEEN)
        session.add(customer)
        session.flush()
    call.customer_id = customer.id
    task, created = open_callback_task(session, customer, owner, now)
    call.task_id = task.id
    if not created:
        return  # the owner already has an SMS about this customer's open call-back
    if owner.mobile:
        who = f"{customer.name} " if customer.name else ""
        at = settings.local(now)
        # through the outbox the gateway sends (audited there)
        sms.queue(session, owner, sms.say_sms(SMS_MISSED_CALL,
                                              who=who + mask_phone(customer.phone),
                                              at=f"{at:%m-%d %H:%M}"),
                  kind=SmsKind.MISSED_CALL, task_id=task.id, now=now)
    else:
        log.warning("manager %s has no mobile: the missed-call SMS is not queued", owner.id)


def open_callback_task(session: Session, customer: Customer, owner: Manager,
                       now: dt.datetime) -> tuple[Task, bool]:
    """The customer's open call-back task, made or refreshed: (task, created).

    Through the task state machine (khhf.services.tasks): one open call-back
    per customer; a repeated missed call moves it to the current owner and
    raises its priority.
    """
    task = session.scalar(select(Task).join(TaskType).where(
        TaskType.code == CALLBACK_TASK_TYPE, Task.customer_id == customer.id,
        Task.status.in_(tasks.OPEN)).order_by(Task.id).limit(1))
    if task is None:
        task = tasks.new_task(session, task_type_id=_callback_type(session).id,
                              customer_id=customer.id, manager_id=owner.id,
                              priority=CALLBACK_PRIORITY)
        return task, True
    tasks.reassign(task, owner.id, now)
    tasks.raise_priority(task, max(task.priority, CALLBACK_PRIORITY) + REPEAT_PRIORITY_STEP, now)
    session.flush()
    return task, False


def close_stale_calls(session: Session, now: dt.datetime | None = None,
                      horizon: dt.timedelta = STALE_INBOUND) -> int:
    """Close inbound rows whose hang-up never arrived; return how many.

    The h extension's hotline-end closes every inbound row; this sweep (run
    by the AGI service) catches the rows it could not, so none stays open
    and makes its manager look busy. Such a row ends with outcome 'lost';
    a hotline-end arriving later still completes it.
    """
    now = now or utcnow()
    stale = session.scalars(select(Call).where(
        Call.direction == "inbound", Call.state != CallState.ENDED,
        Call.requested_at < now - horizon).with_for_update()).all()
    for call in stale:
        call.state, call.end_at, call.outcome = CallState.ENDED, now, CallOutcome.LOST
    if stale:
        log.warning("closed %d inbound call row(s) whose hang-up never arrived", len(stale))
    return len(stale)


def _callback_type(session: Session) -> TaskType:
    task_type = session.scalar(select(TaskType).where(TaskType.code == CALLBACK_TASK_TYPE))
    if task_type is None:
        # data the system writes is in the operators' language; the English
        # UI translates this type by its code (khhf.i18n.TASK_TYPE_LABELS)
        task_type = TaskType(code=CALLBACK_TASK_TYPE, name="热线回电",
                             description="客户拨打热线无人接听，需回电。")
        session.add(task_type)
        session.flush()
    return task_type
