"""What a call row's `state` and `outcome` may say: the one home of both words.

The fold (khhf.calls.facts) decides them for outbound calls, the hotline
(khhf.services.hotline) for inbound ones; everything else reads them. The
values are the strings stored in calls.state and calls.outcome (schema.sql
checks the states; tests/test_schema.py keeps the two lists equal), and a
member compares equal to its string, so SQL and templates need no change.
"""

from __future__ import annotations

from enum import StrEnum


class CallState(StrEnum):
    """Where a call is: the stages of a two-leg outbound call, then its end."""
    REQUESTED = "requested"                # asked of the PBX, nothing rang yet
    MANAGER_RINGING = "manager_ringing"    # the manager's phone rings (desk, or mobile)
    MANAGER_ANSWERED = "manager_answered"  # the manager answered; the customer is dialed
    CUSTOMER_RINGING = "customer_ringing"
    CONNECTED = "connected"                # the customer answered: in conversation
    ENDED = "ended"                        # over, after the customer's phone was rung
    FAILED = "failed"                      # over, and the customer was never dialed


# a call in one of these is over: nothing about it changes any more
FINAL_STATES = frozenset({CallState.ENDED, CallState.FAILED})


class CallOutcome(StrEnum):
    """How a call ended (None while it goes on)."""
    # the customer was dialed (state ended)
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    EMPTY_NUMBER = "empty_number"          # 空号: SIP 404
    UNREACHABLE = "unreachable"            # switched off, out of coverage, the network
    REJECTED = "rejected"                  # the carrier refused the call: SIP 403/603, Q.850 21
    MANAGER_ABANDONED = "manager_abandoned"
    # the carrier trunk failed the dial, not the customer's phone (state
    # failed: the customer's phone never rang); calls.sip_code says how
    CARRIER_REJECTED = "carrier_rejected"        # SIP 5xx, e.g. 503 Service Unavailable
    CARRIER_UNREACHABLE = "carrier_unreachable"  # no answer at all (408), or the PBX
                                                 # knows the trunk is down (qualify)
    # the call never got past the manager's desk phone (state failed)
    NOT_PLACED = "not_placed"              # the PBX never took the call
    MANAGER_UNAVAILABLE = "manager_unavailable"
    MANAGER_BUSY = "manager_busy"
    MANAGER_NO_ANSWER = "manager_no_answer"
    MANAGER_HUNG_UP = "manager_hung_up"
    # ... nor past the manager's mobile (a two-leg call, 双呼)
    MOBILE_UNREACHABLE = "mobile_unreachable"
    MOBILE_BUSY = "mobile_busy"
    MOBILE_NO_ANSWER = "mobile_no_answer"
    # Asterisk lost the call (a crash) before recording its end
    LOST = "lost"
    # a hotline call: who answered (a colleague's is stored 'group:<extension>'), or nobody
    DESK = "desk"
    MOBILE = "mobile"
    GROUP = "group"
    MISSED = "missed"


class RecordingStatus(StrEnum):
    """What became of a call's recording, judged from the file once the call
    has ended (None until then, or when nothing was to be recorded)."""
    COMPLETE = "complete"   # its length is the talk time, within RECORDING_TOLERANCE_S
    PARTIAL = "partial"     # shorter than the talk: cut off (the disk filled, a crash)
    MISSING = "missing"     # no readable file: nothing of the talk was kept


# a recording this much shorter than the talk time is still complete
RECORDING_TOLERANCE_S = 1.0


# outcomes of calls that never rang the customer: not an attempt on the task
DESK_SIDE_OUTCOMES = frozenset({
    CallOutcome.NOT_PLACED, CallOutcome.MANAGER_UNAVAILABLE, CallOutcome.MANAGER_BUSY,
    CallOutcome.MANAGER_NO_ANSWER, CallOutcome.MANAGER_HUNG_UP,
    CallOutcome.MOBILE_UNREACHABLE, CallOutcome.MOBILE_BUSY, CallOutcome.MOBILE_NO_ANSWER})


# outcomes of calls the carrier trunk failed: not an attempt on the task
# either, and what khhf.services.trunk counts to tell that the line is down
CARRIER_OUTCOMES = frozenset({CallOutcome.CARRIER_REJECTED, CallOutcome.CARRIER_UNREACHABLE})
# outcomes of calls that rang (or tried to ring) the customer and did not
# reach them: the ones a task type may file by itself (自动结果), in the
# order the forms list them
UNREACHED_OUTCOMES = (CallOutcome.NO_ANSWER, CallOutcome.BUSY, CallOutcome.UNREACHABLE,
                      CallOutcome.EMPTY_NUMBER, CallOutcome.REJECTED)


def answered_by_colleague(extension: str) -> str:
    """The outcome of a hotline call a colleague in the group answered."""
    return f"{CallOutcome.GROUP}:{extension}"[:24]


def colleague_extension(outcome: str | None) -> str | None:
    """The desk extension in a 'group:<extension>' outcome, else None."""
    if outcome and outcome.startswith(f"{CallOutcome.GROUP}:"):
        return outcome.split(":", 1)[1].split("@", 1)[0]
    return None
