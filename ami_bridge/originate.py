"""The originate path: how a one-click dial becomes an AMI Originate.

Asterisk rings the manager's desk phone first; when the manager answers,
that channel enters the khhf-outbound context, which dials the customer
through the trunk showing the county's unified number (see
asterisk/extensions.d/30-outbound.conf). Channel variables carry the call
and task ids so every event maps back to one call row.

A two-leg call (双呼, manager_device "mobile") rings the manager's mobile
through the trunk instead, showing the unified number there too (so the
manager knows the system is calling); once answered, the same context
dials the customer exactly as from the desk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from khhf import numbering
from khhf.channel_vars import CALL_ID, LISTEN_MODE, REC_FILE, TASK_ID, TRUNK_ENDPOINT, UNIFIED_NUMBER
from khhf.services.live import MODES as LISTEN_MODES

OUTBOUND_CONTEXT = "khhf-outbound"


class OriginateError(ValueError):
    """The call cannot be placed; the message says why."""


@dataclass(frozen=True)
class OutboundCall:
    call_id: int
    channel_id: str              # the call row's uniqueid: every leg's linkedid
    task_id: int | None
    desk_extension: str
    customer_number: str
    unified_number: str
    recording_file: str          # relative to the recordings directory
    manager_ring_seconds: int = 30
    customer_ring_seconds: int | None = None   # None: the dialplan's default
    manager_device: str = "desk"     # or "mobile": ring manager_mobile through the trunk
    manager_mobile: str = ""


def originate_action(call: OutboundCall) -> dict:
    """The AMI Originate action for `call` (pure; validated)."""
    if not re.fullmatch(r"khhf-\d+-[0-9a-f]+", call.channel_id):
        raise OriginateError(f"channel id {call.channel_id!r} is not a KHHF call id")
    if call.manager_device == "mobile":
        if not numbering.MOBILE.fullmatch(call.manager_mobile):
            raise OriginateError(f"manager's mobile {call.manager_mobile!r} is not an 11-digit "
                                 f"mobile number")
    elif call.manager_device != "desk":
        raise OriginateError(f"manager device {call.manager_device!r} is neither desk nor mobile")
    elif not numbering.DESK_EXTENSION.fullmatch(call.desk_extension):
        raise OriginateError(f"desk extension {call.desk_extension!r} is not a four-digit "
                             f"extension")
    if not numbering.CUSTOMER_NUMBER.fullmatch(call.customer_number):
        raise OriginateError(f"customer number {call.customer_number!r} is neither an 11-digit "
                             f"mobile nor a fixed line with area code")
    if not numbering.UNIFIED_NUMBER.fullmatch(call.unified_number):
        raise OriginateError(f"unified number {call.unified_number!r} is not 11 digits "
                             f"starting 13 to 19 (khhf.numbering.UNIFIED_NUMBER)")
    if not re.fullmatch(r"[\w/.-]+\.wav", call.recording_file) or ".." in call.recording_file:
        raise OriginateError(f"recording file {call.recording_file!r} is not a relative .wav path")
    variables = [
        # two underscores: inherited by the customer's channel too
        f"__{CALL_ID}={call.call_id}",
        f"__{TASK_ID}={call.task_id or ''}",
        f"{UNIFIED_NUMBER}={call.unified_number}",
        f"{REC_FILE}={call.recording_file}",
    ]
    if call.customer_ring_seconds:
        variables.append(f"KHHF_CUSTOMER_RING={int(call.customer_ring_seconds)}")
    if call.manager_device == "mobile":
        # through the carrier, which sees only the unified number (From and
        # P-Asserted-Identity): the manager's mobile shows the system calling
        channel, caller_id = f"PJSIP/{call.manager_mobile}@{TRUNK_ENDPOINT}", call.unified_number
    else:
        # what the desk phone shows while ringing: the customer it will reach
        channel = f"PJSIP/{call.desk_extension}"
        caller_id = f'"KHHF {call.call_id}" <{call.customer_number}>'
    return {
        "Action": "Originate",
        "Channel": channel,
        "Context": OUTBOUND_CONTEXT,
        "Exten": call.customer_number,
        "Priority": "1",
        "CallerID": caller_id,
        "Timeout": str(call.manager_ring_seconds * 1000),
        "Async": "true",
        "ChannelId": call.channel_id,
        "Variable": variables,
    }


LISTEN_CONTEXT = "khhf-listen"


@dataclass(frozen=True)
class ListenCall:
    """A supervisor's listen-in: ring `supervisor_desk`, then spy on the
    channel of `manager_desk` (asterisk/extensions.d/40-listen.conf)."""
    supervisor_desk: str
    manager_desk: str
    mode: str                    # khhf.services.live.MODES
    ring_seconds: int = 30


def listen_action(call: ListenCall) -> dict:
    """The AMI Originate action for a listen-in (pure; validated)."""
    for name, ext in (("supervisor", call.supervisor_desk), ("manager", call.manager_desk)):
        if not numbering.DESK_EXTENSION.fullmatch(ext or ""):
            raise OriginateError(f"{name} desk extension {ext!r} is not a four-digit extension")
    if call.supervisor_desk == call.manager_desk:
        raise OriginateError("a desk phone cannot listen to itself")
    if call.mode not in LISTEN_MODES:
        raise OriginateError(f"listen mode {call.mode!r} is not one of {', '.join(LISTEN_MODES)}")
    return {
        "Action": "Originate",
        "Channel": f"PJSIP/{call.supervisor_desk}",
        "Context": LISTEN_CONTEXT,
        "Exten": call.manager_desk,
        "Priority": "1",
        # what the supervisor's phone shows while ringing: whose call it is
        "CallerID": f'"KHHF {call.mode} {call.manager_desk}" <{call.manager_desk}>',
        "Timeout": str(call.ring_seconds * 1000),
        "Async": "true",
        "Variable": [f"{LISTEN_MODE}={call.mode}"],
    }
