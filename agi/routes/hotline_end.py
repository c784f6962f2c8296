"""agi://.../hotline-end,<call id>,<stage>,<DIALSTATUS>,<ANSWEREDTIME>,
<DIALEDPEERNUMBER>,<unified number>,<recording file>[,<facts>]: close an inbound call.

Called from the h extension of khhf-hotline, on the hung-up channel, so
the call row does not depend on the AMI bridge (as VICIdial's hang-up AGI).
Everything arrives as arguments: no round trip to a dead channel. <facts>
is KHHF_END, the hang-up's facts the dialplan also gives the AMI bridge
(khhf.calls.inbound): with it, the row this route writes when none is
there (its routing write never happened) names the customer and manager
the route chose, exactly as the bridge's would (hotline.complete_call).
"""

from __future__ import annotations

import dataclasses
import functools
import re

from khhf.calls import inbound
from khhf.models import utcnow
from khhf.services import hotline


def _int(text: str) -> int | None:
    """ASCII digits that fit a database integer, else None (never raises)."""
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text or "") else None


async def route(session, args):
    args = list(args) + [""] * (8 - len(args))
    call_id, stage, dial_status, answered, peer, unified_number, rec_file, facts = args[:8]
    uniqueid = session.env.get("agi_uniqueid", "")
    end = inbound.parse(facts, uniqueid=uniqueid, linkedid="", at=utcnow()) if facts else None
    if end is not None:
        # the caller id as the carrier sent it, not the digits the facts keep
        end = dataclasses.replace(end, caller=session.env.get("agi_callerid", end.caller))
        await session.unit_of_work(functools.partial(
            hotline.complete_call, end=end, settings=session.settings))
        return
    await session.unit_of_work(functools.partial(
        hotline.finish_call, uniqueid=uniqueid,
        call_id=_int(call_id), caller=session.env.get("agi_callerid", ""),
        unified_number=unified_number, settings=session.settings,
        hangup=hotline.Hangup(stage=stage, dial_status=dial_status,
                              answered_seconds=_int(answered) or 0, answered_by=peer,
                              recording_file=rec_file)))
