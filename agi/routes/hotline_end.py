"""agi://.../hotline-end,<call id>,<stage>,<DIALSTATUS>,<ANSWEREDTIME>,
<DIALEDPEERNUMBER>,<unified number>,<recording file>,<ANSWEREDTIME_MS>: close
an inbound call. ANSWEREDTIME is whole seconds cut down (a 31.9 s talk says
31); the milliseconds, when given, make the talk time and the answer moment
exact to the recording's length.

Called from the h extension of khhf-hotline, on the hung-up channel, so
the call row does not depend on the AMI bridge (as VICIdial's hang-up AGI).
Everything arrives as arguments: no round trip to a dead channel.
"""

from __future__ import annotations

import functools
import re

from khhf.services import hotline


def _int(text: str) -> int | None:
    """ASCII digits that fit a database integer, else None (never raises)."""
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text or "") else None


async def route(session, args):
    args = list(args) + [""] * (8 - len(args))
    call_id, stage, dial_status, answered, peer, unified_number, rec_file, answered_ms = args[:8]
    await session.unit_of_work(functools.partial(
        hotline.finish_call, uniqueid=session.env.get("agi_uniqueid", ""),
        call_id=_int(call_id), caller=session.env.get("agi_callerid", ""),
        unified_number=unified_number, settings=session.settings,
        hangup=hotline.Hangup(stage=stage, dial_status=dial_status,
                              answered_seconds=_int(answered) or 0,
                              answered_ms=_int(answered_ms), answered_by=peer,
                              recording_file=rec_file)))
