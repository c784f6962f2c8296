"""Turn raw events into LegEvents: from the AMI stream and from CEL rows.

Pure functions over plain mappings, so a test can feed them recorded traces.
An outbound call is recognised by its linkedid: the originate path gives
the desk-phone channel the call row's own `uniqueid` ("khhf-<id>-<nonce>",
see khhf.services.dialing), and every leg of the call inherits it as its
linkedid. The manager's leg is that originated channel; the customer's
leg is the other one, on the trunk endpoint (see leg_of).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import TypeGuard

from khhf.channel_vars import TRUNK_ENDPOINT

from .facts import CUSTOMER, MANAGER, LegEvent

LINKEDID = re.compile(r"khhf-\d+-[0-9a-f]+")
DIAL_USER_EVENT = "KhhfDial"
# the AMI events the bridge asks for (manager.conf eventfilter matches this list)
AMI_EVENTS = ("Newchannel", "Newstate", "HangupRequest", "Hangup", "UserEvent",
              "OriginateResponse", "FullyBooted")


def is_ours(linkedid: str | None) -> TypeGuard[str]:
    """True for the linkedid of a call KHHF originated."""
    return bool(LINKEDID.fullmatch(linkedid or ""))


_PJSIP_CHANNEL = re.compile(r"PJSIP/([^-/;@]+)-[0-9a-f]+")


def endpoint_of(channel: str) -> str | None:
    """The PJSIP endpoint of a channel name: 'PJSIP/8001-0000002a' -> '8001'."""
    m = _PJSIP_CHANNEL.fullmatch(channel or "")
    return m.group(1) if m else None


def leg_of(channel: str, trunk: str = TRUNK_ENDPOINT, uniqueid: str | None = None,
           linkedid: str | None = None) -> str:
    """MANAGER or CUSTOMER: which leg of a call `channel` is.

    The originated channel (its uniqueid is the call's linkedid) is the
    manager's leg, whatever it rings: the desk phone, or the manager's
    mobile through the trunk in a two-leg call (双呼). Otherwise the
    channel on the trunk is the customer's."""
    if uniqueid and uniqueid == linkedid:
        return MANAGER
    return CUSTOMER if channel.startswith(f"PJSIP/{trunk}-") else MANAGER


def _source_leg(source: str, channel: str, leg: str, trunk: str) -> str:
    """The leg a CEL HANGUP row's hangupsource names, seen from the row's
    own channel and leg: itself, the other trunk channel (in a two-leg
    call both legs are on the trunk), or a desk phone."""
    if source == channel:
        return leg
    if source.startswith(f"PJSIP/{trunk}-"):
        return CUSTOMER if leg == MANAGER else MANAGER
    return leg_of(source, trunk)


def _epoch(value: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).replace(tzinfo=None)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def from_ami(event: Mapping, trunk: str = TRUNK_ENDPOINT) -> list[LegEvent]:
    """LegEvents for one AMI event (a mapping of its headers)."""
    name = event.get("Event")
    stamp = event.get("Timestamp")
    if not stamp:
        return []
    at = _epoch(stamp)
    leg = leg_of(event.get("Channel", ""), trunk, event.get("Uniqueid"), event.get("Linkedid"))
    if name == "Newchannel":
        return [LegEvent("start", at, leg)]
    if name == "Newstate":
        kind = {"Ringing": "ring", "Up": "answer"}.get(event.get("ChannelStateDesc", ""))
        return [LegEvent(kind, at, leg)] if kind else []
    if name == "HangupRequest":
        return [LegEvent("hangup_request", at, leg)]
    if name == "Hangup":
        return [LegEvent("hangup", at, leg, cause=_int(event.get("Cause")))]
    if name == "UserEvent" and event.get("UserEvent") == DIAL_USER_EVENT:
        return [LegEvent("dial_result", at, dial_status=event.get("DialStatus") or None,
                         sip_code=_int(event.get("SipCode")))]
    if name == "OriginateResponse" and event.get("Response") == "Failure":
        return [LegEvent("originate_failed", at)]
    return []


# what KHHF itself records about a call (source 'khhf' in call_events)
NOT_PLACED, LOST = "NotPlaced", "Lost"
_KHHF_KINDS = {NOT_PLACED: "not_placed", LOST: "lost"}


def khhf_event(name: str, at: dt.datetime) -> dict:
    """The payload of an event KHHF records itself (NOT_PLACED or LOST)."""
    stamp = at.replace(tzinfo=dt.timezone.utc).timestamp()
    return {"Event": name, "Timestamp": f"{stamp:.6f}"}


def from_khhf(event: Mapping) -> list[LegEvent]:
    """LegEvents for one event KHHF recorded itself (see khhf_event)."""
    kind = _KHHF_KINDS.get(event.get("Event", ""))
    stamp = event.get("Timestamp")
    return [LegEvent(kind, _epoch(stamp))] if kind and stamp else []


def ami_dedup_key(event: Mapping) -> str:
    return ":".join(["ami", event.get("Event", ""), event.get("Uniqueid", ""),
                     event.get("Timestamp", ""), event.get("ChannelStateDesc", "")])[:128]


# cel_custom.conf writes these columns, in this order
CEL_COLUMNS = ("eventtype", "eventtime", "uniqueid", "linkedid", "channame", "exten",
               "appname", "appdata", "eventextra", "userdeftype")


def from_cel(row: Mapping, trunk: str = TRUNK_ENDPOINT) -> list[LegEvent]:
    """LegEvents for one CEL row (a mapping of CEL_COLUMNS)."""
    kind = row.get("eventtype")
    try:
        at = _epoch(row["eventtime"])
    except (KeyError, ValueError):
        return []
    channel = row.get("channame", "")
    leg = leg_of(channel, trunk, row.get("uniqueid"), row.get("linkedid"))
    extra = {}
    if row.get("eventextra"):
        try:
            extra = json.loads(row["eventextra"])
        except ValueError:
            extra = {}
    if kind == "CHAN_START":
        return [LegEvent("start", at, leg)]
    if kind == "ANSWER":
        return [LegEvent("answer", at, leg)]
    if kind == "HANGUP":
        out = []
        source = extra.get("hangupsource") or ""
        if source:
            out.append(LegEvent("hangup_request", at, _source_leg(source, channel, leg, trunk)))
        out.append(LegEvent("hangup", at, leg, cause=_int(extra.get("hangupcause"))))
        return out
    if DIAL_USER_EVENT in (kind, row.get("userdeftype")):
        # CELGenUserEvent(KhhfDial,<DIALSTATUS>/<SIP code>), see 30-outbound.conf
        status, _, code = str(extra.get("extra", "")).partition("/")
        return [LegEvent("dial_result", at, dial_status=status or None, sip_code=_int(code))]
    if kind == "LINKEDID_END":
        return [LegEvent("end", at)]
    return []


def cel_dedup_key(row: Mapping) -> str:
    return ":".join(["cel", row.get("eventtype", ""), row.get("uniqueid", ""),
                     row.get("eventtime", "")])[:128]
