"""agi://.../hotline,<unified number>,<linkedid>: route a customer's call.

Called from khhf-hotline (asterisk/extensions.d/10-from-trunk.conf) when
the carrier delivers a call to a unified number. Sets the ring order as
channel variables; KHHF_ROUTE is set last, so a route cut short by the
deadline leaves it empty and the dialplan falls back.

The ring order comes from the in-memory directory (agi/directory.py: one
read per call) and the call row is written after the answer, once Asterisk
is ringing (hotline.record_call; should that fail, the hang-up route writes
it). When the directory cannot answer, everything is read and written in
one unit of work first (hotline.start_call), as the fallback.
"""

from __future__ import annotations

import functools
import logging

from agi.directory import DirectoryUnavailable
from khhf import channel_vars as var
from khhf.models import utcnow
from khhf.phones import mask_phone
from khhf.services import hotline

log = logging.getLogger(__name__)


async def route(session, args):
    unified_number = args[0] if args else session.env.get("agi_extension", "")
    linkedid = args[1] if len(args) > 1 else ""
    caller = session.env.get("agi_callerid", "")
    uniqueid = session.env.get("agi_uniqueid", "")
    routing = None
    if session.directory is not None:
        now = utcnow()
        try:
            routing = await session.directory.route(
                caller=caller, unified_number=unified_number, uniqueid=uniqueid, now=now,
                settings=session.settings)
        except DirectoryUnavailable as exc:
            log.warning("hotline call from %s: the directory cannot answer (%s); reading "
                        "the database", mask_phone(caller), exc)
        else:
            session.after(functools.partial(
                hotline.record_call, routing=routing, unified_number=unified_number,
                uniqueid=uniqueid, linkedid=linkedid, now=now, settings=session.settings))
    if routing is None:
        routing = await session.unit_of_work(functools.partial(
            hotline.start_call, caller=caller, unified_number=unified_number,
            uniqueid=uniqueid, linkedid=linkedid, settings=session.settings))
    # one round trip, our last command (Asterisk goes on without waiting for
    # us to close); KHHF_ROUTE last, so it is only ever set with the rest
    # (KHHF_CALL_ID: the row's id when it was written first; the hang-up
    # route finds the row by the channel's uniqueid either way)
    await session.set_variables(last=True, values={
        var.CALL_ID: routing.call_id or "",
        # whom it routed for: the AMI bridge writes the row from the hang-up's
        # event with these if this service dies before its write
        var.CUSTOMER_ID: routing.customer_id or "",
        var.MANAGER_ID: routing.manager_id or "",
        var.REC_FILE: routing.recording_file,
        var.DESK: routing.desk,
        var.MOBILE: routing.mobile,
        var.GROUP: hotline.dial_string(routing.group),
        var.GROUP_STRATEGY: routing.strategy,
        var.COUNTY_DESKS: hotline.dial_string(routing.county_desks),
        var.ROUTE: routing.route,
    })
