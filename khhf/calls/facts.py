"""What happened on a call, as a pure function of its events.

Both sources of events, the live AMI stream (ami_events.py) and the CEL
record Asterisk writes itself (cel.py), are first turned into the same
small `LegEvent`s; `reduce` folds them into `CallFacts` and `summarize`
turns the facts into the columns of the call row. Same input, same row:
so a replay, or a reconcile after the bridge was down, is harmless.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from .states import CARRIER_OUTCOMES, CallOutcome, CallState

MANAGER, CUSTOMER = "manager", "customer"

# Q.850 causes (Asterisk's AST_CAUSE_*) we tell apart
CAUSE_UNALLOCATED = 1       # SIP 404: empty number (空号)
CAUSE_NO_ROUTE = 3          # the PBX had no way to the trunk (its contact unreachable)
CAUSE_NORMAL = 16
CAUSE_BUSY = 17             # SIP 486
CAUSE_NO_USER_RESPONSE = 18
CAUSE_NO_ANSWER = 19
CAUSE_SUBSCRIBER_ABSENT = 20  # switched off, out of coverage
CAUSE_CALL_REJECTED = 21    # SIP 403, 603: the carrier (or the callee's network) refused it
CAUSE_CONGESTION = 34       # SIP 503
CAUSE_NETWORK_OUT_OF_ORDER = 38
CAUSE_TEMPORARY_FAILURE = 41
NETWORK_CAUSES = frozenset({CAUSE_SUBSCRIBER_ABSENT, CAUSE_CONGESTION,
                            CAUSE_NETWORK_OUT_OF_ORDER, CAUSE_TEMPORARY_FAILURE})


@dataclass(frozen=True)
class LegEvent:
    """One normalised event on one leg of a call.

    kind: start | ring | answer | hangup_request | hangup | dial_result |
          originate_failed | end, and two that KHHF itself records:
          not_placed (nothing rang: the PBX never took the call) and
          lost (the channels vanished with no recorded end)
    """
    kind: str
    at: dt.datetime
    leg: str | None = None          # MANAGER or CUSTOMER
    cause: int | None = None        # Q.850
    dial_status: str | None = None  # Asterisk DIALSTATUS
    sip_code: int | None = None     # the customer's final SIP response


@dataclass
class CallFacts:
    started: set = field(default_factory=set)
    ring_at: dict = field(default_factory=dict)
    answer_at: dict = field(default_factory=dict)
    hangup_at: dict = field(default_factory=dict)
    hangup_cause: dict = field(default_factory=dict)
    first_hangup_request: str | None = None
    dial_status: str | None = None
    sip_code: int | None = None
    end_at: dt.datetime | None = None
    originate_failed: bool = False
    not_placed: bool = False
    lost_at: dt.datetime | None = None


def reduce(facts: CallFacts, ev: LegEvent) -> CallFacts:
    """Fold one event into the facts (returns a new CallFacts)."""
    return reduce_all(facts, (ev,))


def reduce_all(facts: CallFacts, events: Iterable[LegEvent]) -> CallFacts:
    """Fold events one after the other into the facts, as `reduce` would
    (returns a new CallFacts; `facts` is left as it was)."""
    f = copy.copy(facts)
    f.started, f.ring_at, f.answer_at = set(f.started), dict(f.ring_at), dict(f.answer_at)
    f.hangup_at, f.hangup_cause = dict(f.hangup_at), dict(f.hangup_cause)
    for ev in events:
        _fold(f, ev)
    return f


def _fold(f: CallFacts, ev: LegEvent) -> None:
    """Fold one event into `f`, a copy that nobody else holds."""
    leg = ev.leg
    if f.not_placed and ev.kind in ("start", "ring", "answer"):
        # a channel after all (the PBX was slow): the call was placed
        f.not_placed, f.end_at = False, None
    if ev.kind == "start":
        f.started.add(leg)
        if leg == CUSTOMER:  # CEL has no ringing event: the dial start is close
            f.ring_at.setdefault(leg, ev.at)
    elif ev.kind == "ring":
        f.started.add(leg)
        f.ring_at[leg] = min(f.ring_at.get(leg, ev.at), ev.at)
    elif ev.kind == "answer":
        f.started.add(leg)
        f.answer_at[leg] = min(f.answer_at.get(leg, ev.at), ev.at)
    elif ev.kind == "hangup_request":
        # the first leg that asked to hang up is the one who hung up
        if f.first_hangup_request is None and len(f.answer_at) == 2:
            f.first_hangup_request = leg
    elif ev.kind == "hangup":
        f.started.add(leg)
        f.hangup_at[leg] = ev.at
        if ev.cause is not None:
            f.hangup_cause[leg] = ev.cause
    elif ev.kind == "dial_result":
        f.dial_status = ev.dial_status or f.dial_status
        f.sip_code = ev.sip_code or f.sip_code
    elif ev.kind == "originate_failed":
        f.originate_failed = True
        if not f.started:  # else the desk leg's own hang-up ends the call
            f.end_at = f.end_at or ev.at
    elif ev.kind == "not_placed":
        # only a call on which nothing ever started can be "not placed"
        if not f.started:
            f.not_placed = True
            f.end_at = f.end_at or ev.at
    elif ev.kind == "lost":
        f.lost_at = f.lost_at or ev.at
    elif ev.kind == "end":
        f.end_at = ev.at
    if f.started and f.started <= f.hangup_at.keys():
        f.end_at = max(f.hangup_at.values())


def is_lost(f: CallFacts) -> bool:
    """The call vanished: declared lost, and no leg's end was ever recorded."""
    return f.lost_at is not None and f.end_at is None


def response_code(f: CallFacts) -> int | None:
    """The customer leg's final SIP response: the one received, or 408 when
    none came before SIP timer B fired (RFC 3261 8.1.3.1: the caller treats
    the timeout as 408; Asterisk then reports CHANUNAVAIL, Q.850 cause 18,
    and no SIP response)."""
    if f.sip_code is not None:
        return f.sip_code
    if f.dial_status == "CHANUNAVAIL" and f.hangup_cause.get(CUSTOMER) == CAUSE_NO_USER_RESPONSE:
        return 408
    return None


def carrier_outcome(f: CallFacts) -> CallOutcome | None:
    """The trunk failed the dial, not the customer's phone: None when it did not.

    A 5xx is the carrier's own refusal (503 Service Unavailable, an
    overloaded or broken carrier); 408 is no answer at all, within SIP
    timer B (khhf.config trunk_response_seconds; the carrier's own 408 says
    the same); CHANUNAVAIL with no SIP response, or Q.850 cause 3, is
    PJSIP refusing to send to a trunk its qualify found unreachable."""
    if CUSTOMER in f.answer_at:
        return None
    code = response_code(f)
    if code is not None and 500 <= code <= 599:
        return CallOutcome.CARRIER_REJECTED
    if code == 408 or (code is None and (f.dial_status == "CHANUNAVAIL"
                                         or f.hangup_cause.get(CUSTOMER) == CAUSE_NO_ROUTE)):
        return CallOutcome.CARRIER_UNREACHABLE
    return None


def customer_outcome(f: CallFacts) -> CallOutcome:
    """The outcome of a call on which the customer was dialed."""
    if CUSTOMER in f.answer_at:
        return CallOutcome.ANSWERED
    carrier = carrier_outcome(f)
    if carrier is not None:
        return carrier
    cause = f.hangup_cause.get(CUSTOMER)
    code, status = f.sip_code, f.dial_status
    if code in (486, 600) or status == "BUSY" or cause == CAUSE_BUSY:
        return CallOutcome.BUSY
    if code in (404, 604) or cause == CAUSE_UNALLOCATED:
        return CallOutcome.EMPTY_NUMBER
    if code in (403, 603) or cause == CAUSE_CALL_REJECTED:
        return CallOutcome.REJECTED
    if code == 480 or status in ("CHANUNAVAIL", "CONGESTION") or cause in NETWORK_CAUSES:
        return CallOutcome.UNREACHABLE
    if status == "NOANSWER":
        # Dial's own ring timeout: authoritative, whatever order the two
        # channels' Hangup events come in (under load the manager's leg can
        # be stamped first, though the PBX ended the customer's leg)
        return CallOutcome.NO_ANSWER
    if status == "CANCEL" or f.first_hangup_request == MANAGER or \
            (MANAGER in f.hangup_at and CUSTOMER in f.hangup_at
             and f.hangup_at[MANAGER] < f.hangup_at[CUSTOMER]):
        return CallOutcome.MANAGER_ABANDONED
    # rang out: 18/19 (no user response, no answer), or nothing more said
    return CallOutcome.NO_ANSWER


def manager_outcome(f: CallFacts) -> CallOutcome:
    """The outcome of a call that never got past the manager's desk phone."""
    if MANAGER not in f.started:
        if f.not_placed and not f.originate_failed:
            return CallOutcome.NOT_PLACED        # the PBX never took the call
        return CallOutcome.MANAGER_UNAVAILABLE   # not even a channel: phone not registered
    cause = f.hangup_cause.get(MANAGER)
    if cause == CAUSE_BUSY:
        return CallOutcome.MANAGER_BUSY
    if MANAGER in f.answer_at:
        return CallOutcome.MANAGER_HUNG_UP       # answered, hung up before the customer was dialed
    if cause in (CAUSE_NO_ANSWER, CAUSE_NO_USER_RESPONSE, CAUSE_NORMAL):
        return CallOutcome.MANAGER_NO_ANSWER
    return CallOutcome.MANAGER_UNAVAILABLE


# a two-leg call (双呼) rings the manager's mobile through the trunk first:
# the same facts, said of the mobile
MOBILE_OUTCOMES = {CallOutcome.MANAGER_NO_ANSWER: CallOutcome.MOBILE_NO_ANSWER,
                   CallOutcome.MANAGER_BUSY: CallOutcome.MOBILE_BUSY,
                   CallOutcome.MANAGER_UNAVAILABLE: CallOutcome.MOBILE_UNREACHABLE}


def summarize(f: CallFacts, manager_device: str = "desk") -> dict:
    """The call row's columns that the facts determine; `manager_device`
    (the row's) says which of the manager's phones the first leg rang."""
    row: dict = {}
    if CUSTOMER in f.answer_at:
        state = CallState.CONNECTED
    elif CUSTOMER in f.started:
        state = CallState.CUSTOMER_RINGING
    elif MANAGER in f.answer_at:
        state = CallState.MANAGER_ANSWERED
    elif MANAGER in f.started:
        state = CallState.MANAGER_RINGING
    else:
        state = CallState.REQUESTED
    row["ring_at"] = f.ring_at.get(CUSTOMER) or f.ring_at.get(MANAGER)
    row["answer_at"] = f.answer_at.get(CUSTOMER)
    if is_lost(f):
        # Asterisk lost the call (a crash) before writing its end: close it at
        # its declared moment, or at the last moment an event shows it alive
        # (a lost node's CEL, read when it returns, may know more), so
        # nobody stays "on a call"
        talked = CUSTOMER in f.answer_at
        end = max([f.lost_at, *f.ring_at.values(), *f.answer_at.values(), *f.hangup_at.values()])
        row.update(state=CallState.ENDED if talked else CallState.FAILED, outcome=CallOutcome.LOST,
                   end_at=end)
        if talked:
            row["talk_seconds"] = max(0, round((end - f.answer_at[CUSTOMER]).total_seconds()))
        return {k: v for k, v in row.items() if v is not None}
    if f.end_at is not None:
        dialed = CUSTOMER in f.started or f.dial_status is not None
        row["outcome"] = customer_outcome(f) if dialed else manager_outcome(f)
        if manager_device == "mobile":
            row["outcome"] = MOBILE_OUTCOMES.get(row["outcome"], row["outcome"])
        row["end_at"] = f.end_at
        # the carrier failing it: the customer's phone never rang
        rang = dialed and row["outcome"] not in CARRIER_OUTCOMES
        state = CallState.ENDED if rang else CallState.FAILED
        if dialed:
            row["sip_code"] = response_code(f)
        leg = CUSTOMER if dialed else MANAGER
        row["hangup_cause"] = f.hangup_cause.get(leg, f.hangup_cause.get(MANAGER))
        if CUSTOMER in f.answer_at:
            row["talk_seconds"] = max(0, round((f.hangup_at.get(CUSTOMER, f.end_at)
                                                - f.answer_at[CUSTOMER]).total_seconds()))
            by = f.first_hangup_request
            if by is None and len(f.hangup_at) == 2:
                by = min(f.hangup_at, key=lambda k: (f.hangup_at[k], k != CUSTOMER))
            row["hangup_by"] = by
    row["state"] = state
    return {k: v for k, v in row.items() if v is not None}
