"""The supervisor's live view (实时监控): who is on a call now and since
when, who is on duty, today's figures per manager, the hotline's ringing
and missed calls; and the listen-in (silent or whisper) on a manager's
live call from the supervisor's own desk phone.

"Now" comes from the PBX: the channels the AMI bridge sees (a
CoreShowChannels snapshot, khhf.bridge_client.channels), matched to call
rows by linkedid. The rows alone would show a call the PBX lost as live.

Listening is decided here, once: only a supervisor of the manager's county
(or an administrator), from their own desk phone, while the manager's desk
phone has a call. Every request, granted or refused, is in the audit log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from khhf import audit, local_time
from khhf.bridge_client import Channel
from khhf.calls.states import FINAL_STATES, CallOutcome
from khhf.config import Settings
from khhf.models import Call, Feedback, Manager, User, utcnow
from khhf.phones import mask_phone

from . import N_, Problems, ValidationError

MODES = ("listen", "whisper")
# Asterisk's channel states of a phone that rings (ChannelStateDesc)
RINGING_STATES = ("Ring", "Ringing")
# the hotline's missed calls the page lists (the count covers the whole day)
MISSED_SHOWN = 20
# when the PBX cannot be asked: open rows this young are shown as live
UNKNOWN_PBX_HORIZON = dt.timedelta(hours=2)


@dataclasses.dataclass(frozen=True)
class ManagerNow:
    """One manager's line on the live view."""
    id: int
    name: str
    desk: str | None
    on_duty: bool
    activity: str                    # idle | ringing | on_call
    since: dt.datetime | None        # UTC: when the current call began
    direction: str | None            # outbound | inbound, when a call row is known
    customer: str                    # masked number (and name) of the other party, or ""
    calls: int                       # today's calls (both directions)
    connected: int                   # of which the customer talked
    results: int                     # results filed today
    can_listen: bool                 # a desk-phone call: ChanSpy can reach it


@dataclasses.dataclass(frozen=True)
class HotlineCall:
    id: int
    at: dt.datetime                  # UTC
    caller: str                      # masked
    manager: str                     # the owning manager's name, or ""


@dataclasses.dataclass(frozen=True)
class Board:
    managers: list[ManagerNow]
    ringing: list[HotlineCall]
    missed: list[HotlineCall]
    missed_today: int
    pbx_known: bool                  # False: the bridge could not be asked


def day_start(settings: Settings, now: dt.datetime) -> dt.datetime:
    """Local midnight of `now`'s day, as naive UTC (the database's time)."""
    return local_time.day_start(local_time.today(settings.timezone, now), settings.timezone)


def _party(call: Call) -> str:
    name = call.customer.name if call.customer is not None else ""
    return " ".join(filter(None, (name, mask_phone(call.customer_number))))


def board(session: Session, settings: Settings, county_id: int | None,
          channels: Sequence[Channel] | None, now: dt.datetime | None = None) -> Board:
    """The live view of `county_id` (None: every county) given the PBX's
    channels (None: the bridge could not say; then open rows count)."""
    now = now or utcnow()
    since_midnight = day_start(settings, now)
    in_county = (lambda col: col == county_id) if county_id is not None else (lambda col: true())
    managers = session.execute(
        select(Manager, User.display_name).join(User, User.id == Manager.user_id)
        .where(Manager.status == "active", in_county(Manager.county_id))
        .order_by(Manager.desk_extension.is_(None), Manager.desk_extension, Manager.id)).all()
    ids = [m.id for m, _ in managers]
    counts = {mid: (calls, connected) for mid, calls, connected in session.execute(
        select(Call.manager_id, func.count(Call.id), func.count(Call.answer_at))
        .where(Call.manager_id.in_(ids), Call.requested_at >= since_midnight)
        .group_by(Call.manager_id))}
    results = dict(session.execute(
        select(Feedback.manager_id, func.count(Feedback.id))
        .where(Feedback.manager_id.in_(ids), Feedback.created_at >= since_midnight)
        .group_by(Feedback.manager_id)).all())
    open_calls = session.scalars(select(Call).where(
        Call.state.not_in(FINAL_STATES), in_county(Call.county_id),
        Call.requested_at > now - UNKNOWN_PBX_HORIZON)).all()
    live_ids = None if channels is None else {c.linkedid for c in channels}
    live_calls = {c.linkedid: c for c in open_calls
                  if live_ids is None or c.linkedid in live_ids}
    by_desk: dict[str, list[Channel]] = {}
    for channel in channels or ():
        if channel.endpoint:
            by_desk.setdefault(channel.endpoint, []).append(channel)

    rows = []
    for manager, name in managers:
        desk_channels = by_desk.get(manager.desk_extension or "", [])
        if desk_channels:  # the PBX says: their desk phone rings or talks
            call = next((live_calls[c.linkedid] for c in desk_channels
                         if c.linkedid in live_calls), None)
            up = any(c.state == "Up" for c in desk_channels)
            activity = "on_call" if up else "ringing"
            since = now - dt.timedelta(seconds=max(c.seconds for c in desk_channels))
        elif (call := next((c for c in live_calls.values() if c.manager_id == manager.id
                            and c.direction == "outbound"), None)) is not None:
            # no desk channel, a live outbound row (or the PBX cannot be asked)
            activity, since = "on_call", call.answer_at or call.requested_at
        else:
            activity, since = "idle", None
        calls, connected = counts.get(manager.id, (0, 0))
        rows.append(ManagerNow(
            id=manager.id, name=name, desk=manager.desk_extension, on_duty=manager.on_duty,
            activity=activity, since=since, direction=call.direction if call else None,
            customer=_party(call) if call else "", calls=calls, connected=connected,
            results=results.get(manager.id, 0),
            can_listen=any(c.state == "Up" for c in desk_channels)))

    # a hotline call rings until one of its channels is up: a desk or a mobile
    # answered, or the caller hears the "will call you back" message
    answered = {c.linkedid for c in channels or () if c.state == "Up"}
    names: dict[int | None, str] = {m.id: name for m, name in managers}  # a call may have no manager
    ringing = [HotlineCall(c.id, c.requested_at, mask_phone(c.customer_number),
                           names.get(c.manager_id, ""))
               for c in sorted(live_calls.values(), key=lambda c: c.requested_at)
               if c.direction == "inbound" and c.linkedid not in answered]
    missed_filter = (Call.direction == "inbound", Call.outcome == CallOutcome.MISSED,
                     Call.requested_at >= since_midnight, in_county(Call.county_id))
    missed = [HotlineCall(c.id, c.requested_at, mask_phone(c.customer_number),
                          names.get(c.manager_id, ""))
              for c in session.scalars(select(Call).where(*missed_filter)
                                       .order_by(Call.requested_at.desc()).limit(MISSED_SHOWN))]
    missed_today = session.scalar(select(func.count(Call.id)).where(*missed_filter)) or 0
    return Board(rows, ringing, missed, missed_today, channels is not None)


@dataclasses.dataclass(frozen=True)
class ListenPlan:
    """A granted listen-in: what the bridge is asked to do."""
    supervisor_desk: str
    manager_desk: str
    mode: str
    manager: Manager
    node: str = ""                   # the PBX node whose Asterisk carries the call


def request_listen(session: Session, user: User, manager_id: int, mode: str,
                   channels: Sequence[Channel], ip: str = "") -> ListenPlan:
    """Decide whether `user` may listen ('listen') or whisper ('whisper') to
    manager `manager_id`'s call now, with `channels` the PBX's channels.

    A refusal raises ValidationError, with its audit entry ('listen_refused',
    a coded reason) already in `session`: the caller commits it. A grant
    returns the plan; the caller asks the bridge, then calls `record_listen`.
    """
    problems = Problems()
    manager = session.get(Manager, manager_id)
    reason = None
    if user.role not in ("supervisor", "admin"):
        reason = "not_supervisor"
        problems.add("manager", N_("Only a county supervisor may listen to a manager's call."))
    elif manager is None or manager.status != "active" or (
            user.role == "supervisor" and manager.county_id != user.county_id):
        # one answer for "no such manager" and "another county's": no probing
        reason = "other_county"
        problems.add("manager", N_("You may only listen to the managers of your own county."))
    elif mode not in MODES:
        reason = "bad_mode"
        problems.add("mode", N_("Choose silent listen or whisper."))
    elif not user.desk_extension:
        reason = "no_desk_phone"
        problems.add("manager", N_("You have no desk phone to listen on: ask an administrator "
                                   "to set your desk extension."))
    else:
        endpoints = {c.endpoint: c for c in channels if c.endpoint}
        desk = manager.desk_extension
        # behind an edge, the channel names the node that carries the call:
        # ChanSpy reaches only its own Asterisk's channels
        talking = next((c for c in channels if c.endpoint == desk and c.state == "Up"), None)
        if not desk or talking is None:
            reason = "no_call"
            problems.add("manager", N_("%(name)s is not on a desk-phone call now: listen "
                                       "while the page shows them on a call."),
                         name=manager.user.display_name)
        elif user.desk_extension in endpoints:
            reason = "desk_busy"
            problems.add("manager", N_("Your desk phone %(desk)s is busy: hang it up, then "
                                       "try again."), desk=user.desk_extension)
        else:
            return ListenPlan(user.desk_extension, desk, mode, manager, talking.node)
    # a check above refused (and said why in `reason`)
    detail = {"reason": reason, "mode": mode if mode in MODES else ""}
    audit.record(session, user, "listen_refused", "manager", manager_id, detail, ip,
                 object_name=manager.user.display_name if manager is not None else "")
    raise ValidationError(problems.items)


def record_listen(session: Session, user: User, plan: ListenPlan, ip: str = "",
                  failed: bool = False) -> None:
    """The audit entry of a listen-in the bridge started (or, `failed`,
    could not start: reason 'pbx')."""
    detail = {"mode": plan.mode, "desk": plan.supervisor_desk}
    if failed:
        detail["reason"] = "pbx"
    audit.record(session, user, "listen_refused" if failed else "listen", "manager",
                 plan.manager.id, detail, ip, object_name=plan.manager.user.display_name)
