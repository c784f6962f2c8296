"""The integration API's operations over HTTP: each view authenticates
(core.operation), reads or writes through khhf.services.api_ops, and
answers JSON. The OpenAPI document (webui/api/openapi.py) describes each
one; tests/test_api_openapi.py keeps the two equal."""

from __future__ import annotations

import datetime as dt
import re

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.wsgi import wrap_file

from khhf import bridge_client, i18n
from khhf import config as khhf_config
from khhf.config import ConfigError
from khhf.models import ApiClient, ApiOperation, Call
from khhf.services import N_, Problem, ValidationError, api_ops, dialing, nodes, recordings
from webui import trunk
from webui.access import client_ip, public
from webui.api import openapi
from webui.api.core import (
    Param,
    ParameterError,
    audited,
    current_client,
    error,
    locale,
    operation,
    refused,
)
from webui.calls import move_to
from webui.db import get_db, writing
from webui.params import query

bp = Blueprint("api", __name__, url_prefix="/api/v1")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")


CURSOR = Param("cursor")
LIMIT = Param("limit", "integer", high=api_ops.MAX_PAGE, default=api_ops.DEFAULT_PAGE)


def settings() -> khhf_config.Settings:
    return current_app.extensions["khhf_settings"]


def json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ParameterError([Problem("body", N_(
            "The request is malformed: send a JSON object as the body (Content-Type: "
            "application/json)."))])
    return body


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ParameterError([Problem(name, N_("%(name)s must be true or false."),
                                      {"name": name})])
    return value


@bp.errorhandler(500)
def _server_error(_exc):
    return error(500)


# -- the document and the client itself ---------------------------------------------------

@bp.route("/openapi.json")
@public
def openapi_json():
    """The OpenAPI 3.0 document of this API: the reference."""
    return jsonify(openapi.document())


@bp.route("/client")
@operation("read")
def whoami():
    """The client this token belongs to: its county and operations."""
    client = current_client()
    return jsonify(name=client.name, county=client.county.code,
                   operations=sorted(client.operation_set),
                   rate_per_minute=client.rate_per_minute,
                   webhooks=bool(client.webhook_url))


# -- batches ---------------------------------------------------------------------------

def _batch(op: str, work):
    """A write of a batch: once per idempotency key (header Idempotency-Key,
    or the body's batch_key), all accepted rows in one unit of work."""
    body = json_body()
    key = request.headers.get("Idempotency-Key") or body.get("batch_key")
    if key is not None and (not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key)):
        raise ParameterError([Problem("Idempotency-Key", N_(
            "The idempotency key must be 1 to 128 printable ASCII characters."))])
    atomic = _flag(body, "atomic")
    client = current_client()
    if key:
        prior = api_ops.remembered(get_db(), client, key)
        if prior is not None:
            return _replay(prior, op)
    try:
        with writing() as w:
            own = w.session.get(ApiClient, client.id)
            result = work(w.session, own, body, atomic)
            if key:
                api_ops.remember(w.session, own, key, op, 200, result)
            audited(w.session, 200, received=result["received"], accepted=result["accepted"],
                    rejected=result["rejected"])
    except api_ops.Rejected as exc:
        return refused(exc, 422, result=exc.body)
    except IntegrityError:
        # the same key, sent twice at once: the other request's answer stands
        prior = api_ops.remembered(get_db(), client, key) if key else None
        if prior is None:
            raise
        return _replay(prior, op)
    return jsonify(result), 200


def _replay(prior, op: str):
    if prior.operation != op:
        raise ValidationError([Problem("Idempotency-Key", N_(
            "This idempotency key was used for another operation: use a new key."))])
    response = current_app.response_class(prior.response, status=prior.status_code,
                                          mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.route("/customers", methods=["POST"])
@operation(ApiOperation.CUSTOMERS_WRITE)
def customers_upsert():
    """Add or update customers of the client's county, by phone number."""
    return _batch("customers", lambda s, client, body, atomic: api_ops.upsert_customers(
        s, client, body.get("rows"), client_ip(), atomic=atomic, locale=locale()))


@bp.route("/managers", methods=["POST"])
@operation(ApiOperation.MANAGERS_WRITE)
def managers_upsert():
    """Add or update customer managers of the client's county, by employee number."""
    return _batch("managers", lambda s, client, body, atomic: api_ops.upsert_managers(
        s, client, body.get("rows"), client_ip(), atomic=atomic, locale=locale()))


@bp.route("/campaigns/<int:campaign_id>/tasks", methods=["POST"])
@operation(ApiOperation.TASKS_WRITE)
def campaign_tasks(campaign_id):
    """A campaign's tasks, one per customer number."""
    return _batch(f"tasks:{campaign_id}", lambda s, client, body, atomic: api_ops.create_tasks(
        s, client, campaign_id, body.get("numbers"), client_ip(), atomic=atomic,
        locale=locale()))


# -- reads -----------------------------------------------------------------------------

@bp.route("/tasks")
@operation(ApiOperation.TASKS_READ)
@query(cursor=CURSOR, limit=LIMIT, campaign_id=Param("campaign_id", "integer"),
       status=Param("status", choices=api_ops.TASK_STATUSES_READ))
def tasks_list(cursor, limit, campaign_id, status):
    """Tasks with their status and result, by ascending id."""
    page = api_ops.tasks_page(get_db(), current_client(), cursor=cursor, limit=limit,
                              campaign_id=campaign_id, status=status)
    _count(items=len(page.items))
    return jsonify(page.to_json())


@bp.route("/tasks/<int:task_id>")
@operation(ApiOperation.TASKS_READ)
def task_show(task_id):
    return jsonify(api_ops.task(get_db(), current_client(), task_id))


@bp.route("/calls")
@operation(ApiOperation.CALLS_READ)
@query(cursor=CURSOR, limit=LIMIT, task_id=Param("task_id", "integer"))
def calls_list(cursor, limit, task_id):
    """Calls (outbound and hotline) of the county, by ascending id."""
    page = api_ops.calls_page(get_db(), current_client(), cursor=cursor, limit=limit,
                              task_id=task_id)
    _count(items=len(page.items))
    return jsonify(page.to_json())


@bp.route("/calls/<int:call_id>")
@operation(ApiOperation.CALLS_READ)
def call_show(call_id):
    return jsonify(api_ops.call(get_db(), current_client(), call_id))


@bp.route("/calls/<int:call_id>/recording")
@operation(ApiOperation.RECORDINGS_READ)
def call_recording(call_id):
    """The call's recording (audio/wav), with HTTP Range."""
    call = api_ops.call_in_county(get_db(), current_client(), call_id)
    try:
        # behind the SIP edge, another node's recording comes from that node
        fh, info, content_type = recordings.open_anywhere(get_db(), settings(), call)
    except recordings.RecordingUnavailable as exc:
        if exc.reason == "unreachable":
            return error(503, code="pbx_unavailable", message=i18n.gettext(
                "The recording is kept on phone system node %(node)s, which does not answer "
                "now (it may have stopped); try again later.", locale(), node=call.pbx_node))
        return error(404, code="no_recording", field="call_id", message=_no_recording())
    response = current_app.response_class(wrap_file(request.environ, fh),
                                          mimetype=content_type, direct_passthrough=True)
    response.content_length = info.st_size
    response.last_modified = dt.datetime.fromtimestamp(info.st_mtime, dt.timezone.utc)
    response.set_etag(call.recording_sha256 or f"{call.id}-{info.st_size}-{int(info.st_mtime)}")
    response.headers["Cache-Control"] = "private, no-store"
    response.headers.set("Content-Disposition", "attachment",
                         filename=recordings.download_name(settings(), call))
    return response.make_conditional(request.environ, accept_ranges=True,
                                     complete_length=info.st_size)


def _no_recording() -> str:
    return i18n.gettext("This call has no recording to fetch (none was made, or it was "
                        "deleted).", locale())


def _count(**counts: int) -> None:
    g.api_counts = counts


# -- click-to-dial ---------------------------------------------------------------------

@bp.route("/calls", methods=["POST"])
@operation(ApiOperation.CALLS_DIAL)
def call_dial():
    """Place a call for a task on behalf of its manager (the CRM's dial
    button): the web's dial decides, then the AMI bridge originates it."""
    body = json_body()
    task_id, manager, device = body.get("task_id"), body.get("manager"), body.get("device")
    if not isinstance(task_id, int) or isinstance(task_id, bool) or not 0 < task_id < 2**63:
        raise ParameterError([Problem("task_id", N_("task_id must be the id of a task "
                                                    "(a whole number)."))])
    if not isinstance(manager, str) or not manager:
        raise ParameterError([Problem("manager", N_("manager must be the employee number "
                                                    "of the task's manager."))])
    if device is not None and device not in dialing.DEVICES:
        raise ParameterError([Problem("device", N_("Choose the desk phone or the mobile to "
                                                   "call from."))])
    try:
        live, targets = bridge_client.live_across(nodes.dial_targets(get_db(), settings()))
    except (bridge_client.BridgeUnavailable, ConfigError) as exc:
        current_app.logger.warning("API dial of task %s: the PBX cannot be asked: %s",
                                   task_id, exc)
        return _pbx_down()
    try:
        with writing() as w:
            call = api_ops.dial(w.session, targets[0], w.session.get(ApiClient, current_client().id),
                                task_id, manager, client_ip(), live, device,
                                trunk=trunk.status())
            call_id = call.id
    except ValidationError as exc:
        return refused(exc, 409)
    try:
        bridge_client.dial_across(targets, call_id, lambda node: move_to(call_id, node))
    except (bridge_client.BridgeUnavailable, ConfigError) as exc:
        with writing() as w:  # nothing rang: the manager is not "on a call"
            dialing.mark_not_placed(w.session, w.session.get(Call, call_id))
        current_app.logger.warning("API dial of call %s failed: %s", call_id, exc)
        return _pbx_down()
    _count(task=task_id)
    return jsonify(api_ops.call(get_db(), current_client(), call_id)), 201


def _pbx_down():
    return error(503, code="pbx_unavailable", message=i18n.gettext(
        "The phone system did not take the call; try again in a moment or tell your "
        "administrator.", locale()))
