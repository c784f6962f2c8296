"""Is the carrier trunk (中继线路) up? One answer for the staff banner and
`khhf status` (khhf.health check_trunk), the manager's pages and
progressive dial (webui.workspace), and the dial service.

Two real signals, each enough to call the line down:

- the PBX's own view: with trunk_qualify_seconds > 0 Asterisk sends the
  trunk SIP OPTIONS and reports the contact's status (AMI ContactStatus
  events), which the AMI bridge keeps in its heartbeat. Unreachable: the
  carrier does not answer at all, and PJSIP sends no INVITE to it (a dial
  fails at once as carrier_unreachable). Before the first answer of a
  freshly started PBX the status is unknown, which is not "down";
- the calls: the last FAILURE_STREAK outbound calls that reached the
  trunk all failed on the carrier's side (outcomes carrier_rejected, e.g.
  SIP 503, or carrier_unreachable, SIP 408 after timer B), the latest
  within HOLD. A carrier that answers OPTIONS but refuses every INVITE is
  caught only this way.

While the line is down progressive dial pauses (it asks again every
PAUSE_POLL_SECONDS and goes on by itself when the line is back) and a dial
the PBX could not send is refused before the desk phone rings. A manual
dial while only the calls say "down" is allowed: it is the probe that
shows the line is back; so is HOLD passing with no new failure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from khhf.calls.states import CARRIER_OUTCOMES, DESK_SIDE_OUTCOMES, FINAL_STATES, CallOutcome
from khhf.config import Settings
from khhf.models import Call, utcnow

# this many trunk calls in a row failed by the carrier: the line is down
FAILURE_STREAK = 3
# ... for this long after the latest of them, unless a call gets through
HOLD = dt.timedelta(minutes=2)
# only calls this recent are looked at (an old streak says nothing of now)
LOOK_BACK = dt.timedelta(hours=1)
# progressive dial, paused, asks again this often
PAUSE_POLL_SECONDS = 15
# the contact status of a trunk whose qualify gets no answer
PBX_UNAVAILABLE = "Unreachable"


class TrunkState(StrEnum):
    UP = "up"
    UNREACHABLE = "unreachable"   # no answer: OPTIONS unanswered, or INVITEs time out
    REJECTING = "rejecting"       # the carrier answers, refusing every call (5xx)


@dataclasses.dataclass(frozen=True)
class TrunkStatus:
    state: TrunkState
    pbx_says_down: bool = False          # qualify: the PBX will not send a call
    failures: int = 0                    # trunk calls in a row the carrier failed
    sip_code: int | None = None          # the latest of them's SIP response
    since: dt.datetime | None = None     # the first of them ended (UTC)
    pbx_state: str | None = None         # the trunk's contact status (None: not known)

    @property
    def down(self) -> bool:
        return self.state != TrunkState.UP


def _trunk_calls(session: Session, settings: Settings, now: dt.datetime):
    """The newest finished outbound calls of this PBX node that reached the
    trunk (the customer was dialed), newest first."""
    return session.execute(
        select(Call.outcome, Call.sip_code, Call.end_at)
        .where(Call.direction == "outbound", Call.pbx_node == settings.pbx_name,
               Call.requested_at >= now - LOOK_BACK, Call.state.in_(FINAL_STATES),
               Call.outcome.is_not(None),
               Call.outcome.not_in(DESK_SIDE_OUTCOMES | {CallOutcome.LOST}))
        .order_by(Call.requested_at.desc(), Call.id.desc()).limit(FAILURE_STREAK)).all()


def status(session: Session, settings: Settings, pbx_state: str | None,
           now: dt.datetime | None = None) -> TrunkStatus:
    """The trunk's status now; `pbx_state` is its contact status as the AMI
    bridge last heard it (khhf.health.trunk_contact_status; None: unknown)."""
    now = now or utcnow()
    failures = 0
    recent = _trunk_calls(session, settings, now)
    for call in recent:
        if call.outcome not in CARRIER_OUTCOMES:
            break
        failures += 1
    latest = recent[0] if failures else None
    # the streak says "down" only while it is fresh
    failing = None if latest is None or failures < FAILURE_STREAK or latest.end_at is None \
        or now - latest.end_at > HOLD else latest.outcome
    pbx_down = pbx_state == PBX_UNAVAILABLE
    if pbx_down or failing == CallOutcome.CARRIER_UNREACHABLE:
        state = TrunkState.UNREACHABLE
    elif failing is not None:
        state = TrunkState.REJECTING
    else:
        state = TrunkState.UP
    return TrunkStatus(state, pbx_down, failures, latest.sip_code if latest else None,
                       recent[failures - 1].end_at if failing else None, pbx_state)
