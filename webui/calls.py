"""Calls: one-click dial (一键呼叫) from a task, and a call's live status.

The view asks khhf.services.dialing whether the call may be placed (every
refusal is explained before anything rings), commits the call row, then
asks the AMI bridge to originate it: the manager's desk phone rings first,
then the customer, who sees the county's unified number.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, redirect, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from khhf import bridge_client
from khhf import config as khhf_config
from khhf.calls.states import FINAL_STATES, CallState
from khhf.config import ConfigError
from khhf.models import Call, Task, utcnow
from khhf.services import ValidationError, dial_rules, dialing, nodes, outcomes
from webui import trunk
from webui.access import allow, client_ip, load
from webui.db import get_db, writing
from webui.forms import problem_text
from webui.i18n import call_outcome
from webui.redirects import referrer_path

bp = Blueprint("calls", __name__, url_prefix="/calls")

# what the workspace shows while a call goes on (座机振铃 → 呼叫客户 → 通话中 → 已结束)
CALL_PROGRESS_LABELS = {
    CallState.REQUESTED: _l("Connecting"),
    CallState.MANAGER_RINGING: _l("Desk phone ringing"),
    CallState.MANAGER_ANSWERED: _l("Calling the customer"),
    CallState.CUSTOMER_RINGING: _l("Calling the customer"),
    CallState.CONNECTED: _l("In conversation"),
}


# a two-leg call (双呼) rings the manager's mobile first
MOBILE_PROGRESS_LABELS = {
    CallState.MANAGER_RINGING: _l("Your mobile is ringing"),
}


def progress_label(call: Call) -> str:
    """The live label of `call`: its stage, or "ended" with its outcome."""
    if call.state in FINAL_STATES:
        return gettext("Ended: %(outcome)s", outcome=call_outcome(call))
    if call.manager_device == dialing.MOBILE and call.state in MOBILE_PROGRESS_LABELS:
        return str(MOBILE_PROGRESS_LABELS[call.state])
    return str(CALL_PROGRESS_LABELS.get(call.state, call.state))


def settings() -> khhf_config.Settings:
    """khhf's settings, as given to create_app."""
    return current_app.extensions["khhf_settings"]


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


def _answer(ok: bool, message: str, status: int, **extra):
    if _wants_json():
        return jsonify(ok=ok, message=message, **extra), status
    flash(message, "success" if ok else "danger")
    return redirect(referrer_path() or url_for("manager.home"))


def _restarting_message() -> str:
    """The PBX is shutting down gracefully (`core restart gracefully`)."""
    return gettext("The phone system is restarting and takes no new calls; calls in progress "
                   "go on. Try again in a minute.")


@bp.route("/dial/<int:task_id>", methods=["POST"])
@allow("manager")
def dial(task_id):
    """Place a call for the task: from the desk phone, or, with the form
    field device=mobile, a two-leg call through the manager's mobile."""
    task_id = load(Task, task_id).id
    device = request.form.get("device") or dialing.DESK
    if device not in dialing.DEVICES:
        return _answer(False, gettext("Choose the desk phone or the mobile to call from."), 400)
    try:
        # the node (behind the edge: the live nodes by load), and whether the
        # manager is on a call, as the PBXs know
        live, targets = bridge_client.live_across(nodes.dial_targets(get_db(), settings()))
    except bridge_client.PbxRestarting:
        # refused, not held: a restart waits for the longest call in progress,
        # and a desk phone that rang minutes after the click would surprise
        return _answer(False, _restarting_message(), 503)
    except (bridge_client.BridgeUnavailable, ConfigError) as error:
        current_app.logger.warning("dial of task %s: the PBX cannot be asked: %s", task_id, error)
        return _answer(False, gettext("The phone system did not take the call; try again "
                                      "in a moment or tell your administrator."), 503)
    try:
        with writing() as w:
            call = dialing.request_call(w.session, targets[0], current_user, task_id,
                                        ip=client_ip(), live=live, device=device,
                                        trunk=trunk.status())
    except ValidationError as error:
        # refused only by the rules about the customer (khhf.services.dial_rules):
        # progressive dial moves on to the next task and comes back later
        by_rules = all(p.field in dial_rules.FIELDS for p in error.problems)
        return _answer(False, " ".join(map(problem_text, error.problems)), 409,
                       next=by_rules)
    try:
        bridge_client.dial_across(targets, call.id, lambda node: move_to(call.id, node))
    except (bridge_client.BridgeUnavailable, ConfigError) as error:
        # nothing rang: close the row so the manager is not "on a call"
        with writing() as w:
            dialing.mark_not_placed(w.session, w.session.get(Call, call.id))
        current_app.logger.warning("dial of call %s failed: %s", call.id, error)
        if isinstance(error, bridge_client.PbxRestarting):
            return _answer(False, _restarting_message(), 503)
        return _answer(False, gettext("The phone system did not take the call; try again "
                                      "in a moment or tell your administrator."), 503)
    if device == dialing.MOBILE:
        return _answer(True, gettext("Your mobile is ringing, showing the unified number: "
                                     "answer it to reach the customer."), 200, call_id=call.id)
    return _answer(True, gettext("Your desk phone is ringing: pick it up to reach the "
                                 "customer."), 200, call_id=call.id)


def move_to(call_id: int, node: khhf_config.Settings) -> bool:
    """Hand the requested call to another PBX node (the first refused it
    before anything rang)."""
    with writing() as w:
        return dialing.move_to_node(w.session, call_id, node.pbx_name)


@bp.route("/<int:call_id>")
@allow("manager", "supervisor", "admin")
def status(call_id):
    call = load(Call, call_id)
    final = call.state in FINAL_STATES
    # an unreached call the system filed by its task type's rule: nothing to ask
    filed = final and outcomes.filed_by_system(get_db(), call.id)
    return jsonify(id=call.id, state=call.state, outcome=call.outcome,
                   label=call_outcome(call), talk_seconds=call.talk_seconds,
                   task_id=call.task_id, progress=progress_label(call),
                   final=final, filed_by_system=bool(filed),
                   ended_seconds_ago=max(0.0, (utcnow() - call.end_at).total_seconds())
                   if final and call.end_at else None)
