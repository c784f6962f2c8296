"""The end of a hotline (inbound) call as the dialplan announces it.

The h extension of khhf-hotline (asterisk/extensions.d/10-from-trunk.conf)
says everything the call row needs in one user event, to the AMI
(`UserEvent(KhhfHotlineEnd,Facts: ...)`) and to the CEL record
(`CELGenUserEvent(KhhfHotlineEnd,...)`), before it asks the AGI service to
close the row. So the AMI bridge and its CEL reconciler can write and close
the row of a call whose AGI write never happened (the service died between
its answer and its write, or was down at the hang-up); see
khhf.services.hotline.complete_call. Pure functions over plain mappings.

The facts are one string, `FIELDS` joined by '/', the recording's path
last (it holds slashes itself). The ids are the routing AGI's decision
(channel variables it set), empty when it never answered (degraded mode).
The caller id in them is cut to digits and '+' (it must not hold a '/' or
a ','); the AMI event's own CallerIDNum header and the AGI's agi_callerid
are the caller id as the carrier sent it, and are preferred.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping

HOTLINE_END_EVENT = "KhhfHotlineEnd"
# the order of the facts in the event (the dialplan writes them so)
FIELDS = ("stage", "dial_status", "answered_ms", "peer", "unified_number", "customer_id",
          "manager_id", "arrived", "route", "caller", "recording_file")
_DIGITS = re.compile(r"[0-9]{1,9}")


@dataclasses.dataclass(frozen=True)
class HotlineEnd:
    """A hotline call's channel hung up: what the dialplan knew then."""
    uniqueid: str               # the customer's channel: the row's unique key
    linkedid: str
    at: dt.datetime             # the hang-up, as Asterisk stamped the event (UTC, naive)
    arrived_at: dt.datetime | None  # when the call entered the hotline
    caller: str                 # the caller id as the carrier sent it
    unified_number: str
    customer_id: int | None     # the routing AGI's decision, None when it made none
    manager_id: int | None
    routed: bool                # the routing AGI answered (KHHF_ROUTE was set)
    stage: str                  # KHHF_STAGE: routing | desk | mobile | group | message
    dial_status: str            # DIALSTATUS of the last Dial
    answered_ms: int | None     # ANSWEREDTIME_MS (ANSWEREDTIME cuts 31.9 s down to 31)
    answered_by: str            # DIALEDPEERNUMBER
    recording_file: str


def _id(text: str) -> int | None:
    return int(text) if _DIGITS.fullmatch(text or "") else None


def _epoch(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(float(text or ""), dt.timezone.utc).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def parse(facts: str, *, uniqueid: str, linkedid: str, at: dt.datetime) -> HotlineEnd | None:
    """The HotlineEnd the `facts` string says (None when it is not one)."""
    parts = (facts or "").split("/", len(FIELDS) - 1)
    if len(parts) != len(FIELDS) or not uniqueid:
        return None
    f = dict(zip(FIELDS, parts))
    return HotlineEnd(
        uniqueid=uniqueid, linkedid=linkedid or uniqueid, at=at, arrived_at=_epoch(f["arrived"]),
        caller=f["caller"], unified_number=f["unified_number"],
        customer_id=_id(f["customer_id"]), manager_id=_id(f["manager_id"]),
        routed=f["route"] != "", stage=f["stage"], dial_status=f["dial_status"],
        answered_ms=_id(f["answered_ms"]), answered_by=f["peer"],
        recording_file=f["recording_file"])


def from_ami(event: Mapping) -> HotlineEnd | None:
    """The HotlineEnd an AMI event announces, or None."""
    if event.get("Event") != "UserEvent" or event.get("UserEvent") != HOTLINE_END_EVENT:
        return None
    at = _epoch(event.get("Timestamp"))
    if at is None:
        return None
    end = parse(event.get("Facts", ""), uniqueid=event.get("Uniqueid", ""),
                linkedid=event.get("Linkedid", ""), at=at)
    caller = event.get("CallerIDNum")
    if end is not None and caller and caller != "<unknown>":
        end = dataclasses.replace(end, caller=caller)
    return end


def from_cel(row: Mapping) -> HotlineEnd | None:
    """The HotlineEnd a CEL row (a mapping of events.CEL_COLUMNS) announces, or None."""
    if HOTLINE_END_EVENT not in (row.get("eventtype"), row.get("userdeftype")):
        return None
    at = _epoch(row.get("eventtime"))
    try:
        extra = json.loads(row.get("eventextra") or "{}").get("extra", "")
    except (ValueError, AttributeError):
        return None
    if at is None:
        return None
    return parse(str(extra), uniqueid=row.get("uniqueid", ""), linkedid=row.get("linkedid", ""),
                 at=at)
