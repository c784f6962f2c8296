"""One-click dial (一键呼叫): decide whether a manager may call a task's
customer now, and if so write the call row the AMI bridge will place.

Every refusal happens here, before anything rings, with a message saying
what is wrong and what to do: the manager's and the task's own checks
here, the rules about the customer (calling window, do-not-call, consent,
per-customer limits) in khhf.services.dial_rules.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from khhf import audit, numbering
from khhf.bridge_client import LiveCalls
from khhf.calls import events, store
from khhf.calls.states import FINAL_STATES, CallState
from khhf.config import Settings
from khhf.models import Call, County, Customer, Manager, Task, TaskStatus, User, utcnow
from khhf.phones import mask_phone

from . import N_, Problems, dial_rules, number_pool, tasks, validated
from .trunk import TrunkStatus

# A requested call has no channel yet for this long (the bridge originates it
# within the same web request): an open row younger than this is a call being
# set up; an older one counts only if the PBX has its channels.
SETUP_GRACE = dt.timedelta(seconds=15)
# when the PBX cannot be asked (no bridge): open rows this young count as live
UNKNOWN_PBX_HORIZON = dt.timedelta(hours=2)


def on_a_call(session: Session, manager: Manager, live: LiveCalls | None,
              now: dt.datetime) -> bool:
    """Whether the manager is on a call now, as the PBX knows it: a channel on
    their desk phone, or one of their calls with live channels, or a call
    requested moments ago and still being set up. An old open row (a crash,
    a forged request) blocks nobody. `live` None: the PBX could not be asked;
    then open rows of the last hours count."""
    open_calls = select(Call.linkedid, Call.requested_at).where(
        Call.manager_id == manager.id, Call.state.not_in(FINAL_STATES))
    if live is None:
        return session.scalar(select(Call.id).where(
            Call.manager_id == manager.id, Call.state.not_in(FINAL_STATES),
            Call.requested_at > now - UNKNOWN_PBX_HORIZON).limit(1)) is not None
    if manager.desk_extension and manager.desk_extension in live.endpoints:
        return True
    return any(linkedid in live.linkedids or requested_at > now - SETUP_GRACE
               for linkedid, requested_at in session.execute(open_calls))


# the manager's phone a call rings first (calls.manager_device)
DESK, MOBILE = "desk", "mobile"
DEVICES = (DESK, MOBILE)


def default_device(manager: Manager) -> str:
    """The phone 呼叫 rings unless the manager picks one: on duty (在岗) the
    manager is at the desk, off duty (离岗) away from it, so the mobile; a
    manager with only one of the two phones gets that one."""
    if not manager.mobile:
        return DESK
    if not manager.desk_extension:
        return MOBILE
    return DESK if manager.on_duty else MOBILE


def request_call(session: Session, settings: Settings, user: User, task_id: int, ip: str = "",
                 now: dt.datetime | None = None, live: LiveCalls | None = None,
                 device: str | None = None, trunk: TrunkStatus | None = None) -> Call:
    """Validate a dial request by `user` for task `task_id`; add the call row.

    `live` is what the PBX has channels for now (khhf.bridge_client.live);
    without it, the manager's open call rows decide whether they are busy.
    `device` is the manager's phone to ring first: DESK, or MOBILE for a
    two-leg call (双呼) through the trunk. The pages that let the manager
    choose offer default_device first; a caller that does not choose (the
    desk workspace's 呼叫) rings the desk.
    Raises ValidationError (nothing written) when the call must not be placed.
    The unit of work holds the county's number pool locked when this
    returns: commit (or roll back) at once.
    """
    now = now or utcnow()
    problems = Problems()
    manager = session.scalar(select(Manager).where(Manager.user_id == user.id))
    # the task with its customer, county and type, in one query (the checks
    # below read them through the task's relations, from the session)
    task = session.scalars(select(Task).where(Task.id == task_id).options(
        joinedload(Task.customer).joinedload(Customer.county), joinedload(Task.task_type))
        ).unique().one_or_none()
    if manager is None or task is None or task.manager_id != manager.id:
        # the same answer for "no such task" and "not yours": no probing
        problems.refuse("task", N_("This task is not yours: only the task's own manager can call it."))
    customer = task.customer
    county = session.get(County, customer.county_id)
    device = device or DESK
    if device not in DEVICES:
        problems.add("device", N_("Choose the desk phone or the mobile to call from."))
    elif device == DESK and (manager.status != "active" or not manager.desk_extension):
        problems.add("manager", N_("You have no desk phone: ask an administrator to set your "
                                   "desk extension."))
    elif device == MOBILE and (manager.status != "active" or not manager.mobile):
        problems.add("manager", N_("You have no mobile number on file: call from your desk "
                                   "phone, or ask an administrator to add your mobile."))
    if task.status in tasks.CLOSED:
        problems.add("task", N_("The task is closed: reopen it before calling again."))
    elif task.status == TaskStatus.DIALING:
        problems.add("task", N_("This task is being called right now: wait for the call to end."))
    elif task.attempts >= task.max_attempts:
        problems.add("task", N_("The task has reached its %(max)s call attempts: file a result."),
                     max=task.max_attempts)
    # the calling window, do-not-call, consent and per-customer limits
    for refusal in dial_rules.check(session, settings, task, now):
        problems.add(refusal.field, refusal.message, **refusal.params)
    if trunk is not None and trunk.pbx_says_down:
        problems.add("trunk", N_("Trunk failure: the carrier's line does not answer, so the "
                                 "call cannot go out now; try again when the line is back."))
    if on_a_call(session, manager, live, now):
        problems.add("manager", N_("You are already on a call: hang up before dialing the next."))
    problems.raise_if_any()
    county = validated(county, "the county")

    # a savepoint: a refusal by the pool, the last check, undoes the writes
    with session.begin_nested():
        call = Call(direction="outbound", task_id=task.id, customer_id=customer.id,
                    manager_id=manager.id, county_id=county.id, customer_number=customer.phone,
                    state=CallState.REQUESTED, requested_at=now, pbx_node=settings.pbx_name,
                    manager_device=device)
        session.add(call)
        session.flush()
        tasks.dial(task, now)
        detail = {"task": task.id} if device == DESK else {"task": task.id, "device": device}
        name = " ".join(filter(None, (customer.name, mask_phone(customer.phone))))
        audit.record(session, user, "create", "call", call.id, detail, ip, object_name=name)
        session.flush()
        # the number the customer sees, chosen from the county's pool, last: the
        # choice locks the pool until this unit of work ends, and every dial of
        # the county waits for it, so nothing but the choice and the call's
        # number is done under the lock (the caller commits at once)
        chosen = number_pool.choose(session, settings, county, customer.id, now, problems)
        if chosen is not None and not numbering.UNIFIED_NUMBER.fullmatch(chosen.number):
            # stored before the county form had this rule: the bridge would refuse it
            problems.add("county", N_("Your county's unified number %(value)s cannot be shown "
                                      "on calls: ask an administrator to correct it on the "
                                      "county's page."), value=chosen.number)
        problems.raise_if_any()  # the savepoint rolls back: nothing written
        call.unified_number = validated(chosen, "the number").number
        # the desk-phone channel's id, and so every leg's linkedid: the nonce keeps
        # it unique even across databases sharing one PBX; written with the
        # number (one UPDATE of the row, at the commit)
        call.uniqueid = call.linkedid = f"khhf-{call.id}-{secrets.token_hex(4)}"
        call.recording_path = recording_file(settings, call)
    return call


def recording_file(settings: Settings, call: Call) -> str:
    """Where the call's recording goes, relative to the recordings directory:
    the local day it was requested, and its id (the bridge passes it to
    Asterisk with the Originate)."""
    return f"{settings.recording_day(call.requested_at)}/{call.id}.wav"


def move_to_node(session: Session, call_id: int, node: str) -> bool:
    """Hand a requested call that its PBX node's bridge refused before
    anything rang to another node (khhf.bridge_client.dial_across); False
    when it is no longer a requested call (nothing is changed then)."""
    return session.scalar(
        update(Call).where(Call.id == call_id, Call.state == CallState.REQUESTED,
                           Call.direction == "outbound")
        .values(pbx_node=node).returning(Call.id)
        .execution_options(synchronize_session=False)) is not None


def mark_not_placed(session: Session, call: Call, now: dt.datetime | None = None) -> None:
    """Record that a requested call never rang (the bridge refused it, or
    Asterisk never created its channel). The call's events decide its row
    (khhf.calls.store): if a channel did start after all, the call stands."""
    store.record(session, call, events.NOT_PLACED, now)
