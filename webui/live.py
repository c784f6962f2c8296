"""The live view (实时监控): a supervisor's page of their county now, and
the listen-in on a manager's call from the supervisor's own desk phone.

The page (live/index.html) draws itself from GET /live/state, which its
script polls every LIVE_POLL_MS: polling, not server-sent events, for the
reason webui.workspace gives (an SSE stream holds one of the server's few
threads for as long as a supervisor keeps the page open). One poll is one
CoreShowChannels through the bridge and a few indexed counts.

Listening: POST /live/listen/<manager id> with mode=listen|whisper. The
rule (who may listen to whom) and its audit entries are in
khhf.services.live; this view asks the PBX for its channels, then asks the
bridge to ring the supervisor's desk phone. Behind the SIP edge the
channels are every beating node's, and the ring is asked of the bridge of
the node whose Asterisk carries the manager's call (docs/cluster.md).
Managers may post here too, so that their refusal is explained and
audited like any other.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from khhf import bridge_client, i18n
from khhf.config import ConfigError
from khhf.models import Manager, utcnow
from khhf.services import ValidationError, live, nodes
from webui.access import allow, client_ip
from webui.db import get_db, writing
from webui.forms import problem_text
from webui.redirects import referrer_path

bp = Blueprint("live", __name__, url_prefix="/live")

POLL_MS = 2000  # default page refresh; LIVE_POLL_MS in the app config overrides
ACTIVITY_LABELS = {
    "idle": _l("Idle"),
    "ringing": _l("Ringing"),
    "on_call": _l("On a call"),
}


def settings():
    return current_app.extensions["khhf_settings"]


def _channels():
    """The PBX's channels now (behind an edge: every node's that beats), or
    None when no bridge can say."""
    try:
        return bridge_client.channels_across(nodes.watch_targets(get_db(), settings()),
                                             timeout=5)
    except (bridge_client.BridgeUnavailable, ConfigError) as error:
        current_app.logger.warning("live view: the PBX cannot be asked: %s", error)
        return None


def _county():
    """Whose calls the user sees: their county; an administrator all (None)."""
    return None if current_user.role == "admin" else current_user.county_id


def _answer(ok: bool, message: str, status: int = 200):
    """JSON for the page's script; a flash and a redirect for a plain form."""
    if request.accept_mimetypes.best == "application/json":
        return jsonify(ok=ok, message=message), status
    flash(message, "success" if ok else "danger")
    return redirect(referrer_path() or url_for("auth.index"))


@bp.route("/")
@allow("supervisor", "admin")
def index():
    return render_template("live/index.html",
                           poll_ms=current_app.config.get("LIVE_POLL_MS", POLL_MS),
                           own_desk=current_user.desk_extension)


@bp.route("/state")
@allow("supervisor", "admin")
def state():
    """JSON: the board, labels already in the viewer's language."""
    channels = _channels()
    session = get_db()
    now = utcnow()
    board = live.board(session, settings(), _county(), channels, now)
    def clock(at: dt.datetime | None) -> str:
        return f"{settings().local(at):%H:%M:%S}" if at else ""

    return jsonify(
        pbx=board.pbx_known,
        notice="" if board.pbx_known else gettext(
            "The phone system cannot be asked right now: calls are shown from the call "
            "records only."),
        managers=[{
            "id": m.id, "name": m.name, "desk": m.desk or "—",
            "duty": gettext("On duty") if m.on_duty else gettext("Off duty"),
            "on_duty": m.on_duty, "activity": m.activity,
            "activity_label": str(ACTIVITY_LABELS[m.activity]),
            "since": clock(m.since),
            "seconds": max(0, int((now - m.since).total_seconds())) if m.since else None,
            "direction": str(i18n.DIRECTION_LABELS.get(m.direction, "")),
            "customer": m.customer, "calls": m.calls, "connected": m.connected,
            "results": m.results, "can_listen": m.can_listen} for m in board.managers],
        ringing=[{"id": c.id, "at": clock(c.at), "caller": c.caller, "manager": c.manager}
                 for c in board.ringing],
        missed=[{"id": c.id, "at": clock(c.at), "caller": c.caller, "manager": c.manager}
                for c in board.missed],
        missed_today=board.missed_today)


@bp.route("/listen/<int:manager_id>", methods=["POST"])
@allow("manager", "supervisor", "admin")
def listen(manager_id):
    """Ring the user's desk phone into a listen-in on the manager's call."""
    mode = request.form.get("mode", "")
    if get_db().get(Manager, manager_id) is None:
        abort(404)  # no such manager anywhere; another county's is refused (and audited) below
    channels = _channels()
    if channels is None:
        return _answer(False, gettext(
            "The phone system cannot be asked right now; try again in a moment."), 503)
    with writing() as w:
        try:
            plan = live.request_listen(w.session, current_user, manager_id, mode, channels,
                                       ip=client_ip())
        except ValidationError as error:  # its audit entry is saved as the block ends
            return _answer(False, " ".join(map(problem_text, error.problems)), 409)
    # the bridge of the node that carries the call: ChanSpy sees only its own PBX
    target = nodes.node_target(get_db(), settings(), plan.node)
    try:
        if target is None:
            raise bridge_client.NothingSent(f"PBX node {plan.node} no longer beats")
        bridge_client.listen(target, plan.supervisor_desk, plan.manager_desk, plan.mode)
    except (bridge_client.BridgeUnavailable, ConfigError) as error:
        current_app.logger.warning("listen-in on manager %s failed: %s", manager_id, error)
        with writing() as w:
            live.record_listen(w.session, current_user, plan, ip=client_ip(), failed=True)
        if isinstance(error, bridge_client.NothingSent) and nodes.in_cluster(settings()):
            return _answer(False, gettext(
                "The phone system node that carries %(name)s's call does not answer (it may "
                "have stopped); try again in a moment.", name=plan.manager.user.display_name),
                503)
        return _answer(False, gettext(
            "The phone system did not take the call; try again in a moment."), 503)
    with writing() as w:
        live.record_listen(w.session, current_user, plan, ip=client_ip())
    message = (gettext("Your desk phone %(desk)s is ringing: pick it up to listen silently "
                       "to %(name)s's call.", desk=plan.supervisor_desk,
                       name=plan.manager.user.display_name)
               if plan.mode == "listen" else
               gettext("Your desk phone %(desk)s is ringing: pick it up to listen; only "
                       "%(name)s hears you, the customer does not.",
                       desk=plan.supervisor_desk, name=plan.manager.user.display_name))
    return _answer(True, message)
