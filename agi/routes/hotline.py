"""agi://.../hotline,<unified number>,<linkedid>: route a customer's call.

Called from khhf-hotline (asterisk/extensions.d/10-from-trunk.conf) when
the carrier delivers a call to a unified number. Writes the call row and
sets the ring order as channel variables; KHHF_ROUTE is set last, so a
route cut short by the deadline leaves it empty and the dialplan falls back.
"""

from __future__ import annotations

import functools

from khhf import channel_vars as var
from khhf.services import hotline


async def route(session, args):
    unified_number = args[0] if args else session.env.get("agi_extension", "")
    linkedid = args[1] if len(args) > 1 else ""
    routing = await session.unit_of_work(functools.partial(
        hotline.start_call, caller=session.env.get("agi_callerid", ""),
        unified_number=unified_number, uniqueid=session.env.get("agi_uniqueid", ""),
        linkedid=linkedid, settings=session.settings))
    # one round trip; KHHF_ROUTE last, so it is only ever set with the rest
    await session.set_variables({
        var.CALL_ID: routing.call_id,
        var.REC_FILE: routing.recording_file,
        var.DESK: routing.desk,
        var.MOBILE: routing.mobile,
        var.GROUP: hotline.dial_string(routing.group),
        var.GROUP_STRATEGY: routing.strategy,
        var.COUNTY_DESKS: hotline.dial_string(routing.county_desks),
        var.ROUTE: routing.route,
    })
