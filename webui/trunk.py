"""The carrier trunk as the manager's pages see it (khhf.services.trunk):
its status for this request, and the notice the desk and phone pages show
while it is down (templates/manager/_trunk.html)."""

from __future__ import annotations

from flask import current_app
from flask_babel import gettext

from khhf import health
from khhf.services import trunk
from khhf.services.trunk import TrunkState
from webui.db import get_db


def status() -> trunk.TrunkStatus:
    """The trunk now: the bridge's view of the PBX's qualify, and the last calls."""
    settings = current_app.extensions["khhf_settings"]
    return trunk.status(get_db(), settings, health.trunk_contact_status(settings))


def notice() -> str | None:
    """What the manager's pages say while the trunk is down, else None."""
    found = status()
    if not found.down:
        return None
    if found.state == TrunkState.UNREACHABLE:
        return gettext("Trunk failure: the carrier's line does not answer, so calls to "
                       "customers cannot go out now. Progressive dial is paused and goes on "
                       "by itself when the line is back.")
    return gettext("Trunk failure: the carrier refuses calls (SIP %(code)s), so calls to "
                   "customers cannot get through now. Progressive dial is paused and goes on "
                   "by itself when the line is back.", code=found.sip_code or "?")
