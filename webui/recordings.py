"""Recording review (录音调听): search, play in the browser with seeking, download.

Who hears what is webui.access.scope(Call): administrators every county,
supervisors their county, a manager their own calls. A recording is named
by its call's id only (`/recordings/<call_id>`, a stable URL other pages
link to); no request ever carries a path.

Playing is audited once per play, not once per byte range: the page's
play button POSTs to `play`, which writes the operation-log entry and
answers with the audio URL carrying a short-lived token signed for this
user, this log-in and this call. The audio URL (`audio`) answers the
browser's Range requests (206, Accept-Ranges, Content-Range; 416 for a
range outside the file) without writing anything, and only with a valid
token (without one it sends the viewer to the recording's page, where
play is). Behind the SIP edge, a recording another node made and this
machine does not have is fetched from that node's bridge for each request
(khhf.services.recordings.open_anywhere); the rules and the audit are the
same. A download is a POST too, audited, answered with the file as an
attachment named by call id and time, never by the customer's number.

Customer numbers: masked in the search results (a list of many
customers); whole on a recording's page, as on the customer's page, for
whoever may open it: a reviewer checking a complaint needs to know whom
the call was with.
"""

from __future__ import annotations

import datetime as dt
from typing import NoReturn

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wsgi import wrap_file

from khhf.models import Call, Customer, Manager, ResultCode, TaskType
from khhf.services import lookups, recordings
from webui import params
from webui.access import allow, client_ip, load, scope
from webui.audit import _local_start  # the one home of "a local day in UTC"
from webui.db import get_db, writing

bp = Blueprint("recordings", __name__, url_prefix="/recordings")

# how long the audio URL a play hands out stays valid: a long call, paused
# and resumed, keeps seeking; a copied URL still needs this user's log-in
TOKEN_SECONDS = 2 * 3600
_TOKEN_SALT = "khhf-recording-play"
MAX_SECONDS = 24 * 3600


def _settings():
    return current_app.extensions["khhf_settings"]


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_TOKEN_SALT)


def play_token(call: Call) -> str:
    """A token for the audio of `call`, for the current user and log-in."""
    return _serializer().dumps([call.id, current_user.id, current_user.session_epoch])


def _token_is_valid(call: Call, token: str) -> bool:
    try:
        call_id, user_id, epoch = _serializer().loads(
            token, max_age=current_app.config.get("RECORDING_TOKEN_SECONDS", TOKEN_SECONDS))
    except (BadSignature, ValueError, TypeError):
        return False
    return (call_id, user_id, epoch) == (call.id, current_user.id, current_user.session_epoch)


@bp.app_template_global()
def has_recording(call: Call) -> bool:
    """Whether a call's page can play its recording (for the links from
    the pages that list calls)."""
    return recordings.state(call) == "ready"


@bp.route("/")
@allow("admin", "supervisor", "manager")
@params.query(after=params.Id(_l("Page")), county=params.Id(_l("County")),
              manager=params.Id(_l("Customer manager")), since=params.Day(_l("From")),
              until=params.Day(_l("To")),
              min_seconds=params.Whole(_l("Shortest (seconds)"), 1, MAX_SECONDS),
              max_seconds=params.Whole(_l("Longest (seconds)"), 1, MAX_SECONDS))
def index(after, county, manager, since, until, min_seconds, max_seconds):
    db = get_db()
    args = request.args
    number = recordings.number_digits(args.get("number", "")[:32])
    problem = None
    if number is None:
        problem = gettext("Search a number by its digits (spaces and dashes are fine), "
                          "whole or in part.")
        number = ""
    results = _result_choices(db)
    result = args.get("result", "")
    if result not in {value for value, _label in results}:
        result = ""
    direction = args.get("direction", "")
    filters = recordings.Filters(
        county_id=county, manager_id=manager, number=number,
        since=_local_start(since) if since else None,
        until=_local_start(until + dt.timedelta(days=1)) if until else None,
        direction=direction if direction in recordings.DIRECTIONS else "",
        result=result, min_seconds=min_seconds, max_seconds=max_seconds)
    rows = recordings.search(db, scope(Call), filters, after=after,
                             limit=recordings.PAGE_SIZE + 1)
    more = len(rows) > recordings.PAGE_SIZE
    rows = rows[:recordings.PAGE_SIZE]
    role = current_user.role
    counties = lookups.counties(db) if role == "admin" else []
    managers = lookups.managers(db, scope(Manager)) if role != "manager" else []
    feedback = recordings.latest_results(db, [r.id for r in rows])
    codes = {c.id: c for c in db.scalars(select(ResultCode).where(
        ResultCode.id.in_({fb.result_code_id for fb in feedback.values()})))}
    return render_template(
        "recordings/index.html", rows=rows, filters=filters, since=since, until=until,
        problem=problem, counties=counties, managers=managers, results=results,
        feedback={call_id: codes.get(fb.result_code_id) for call_id, fb in feedback.items()},
        names=_names(db, rows), next_after=rows[-1].id if more else None,
        query_args={k: v for k, v in args.items() if k != "after" and v})


def _result_choices(db) -> list[tuple[str, str]]:
    """(value, label) of the result filter: each result code, by task type."""
    rows = db.execute(select(ResultCode.id, ResultCode.code, ResultCode.label, TaskType.name)
                      .join(TaskType, TaskType.id == ResultCode.task_type_id)
                      .order_by(TaskType.name, ResultCode.code)).all()
    return [(recordings.NO_RESULT, gettext("No result filed"))] + [
        (str(rid), f"{type_name} · {code} {text}") for rid, code, text, type_name in rows]


def _names(db, rows) -> dict:
    """Names for the rows: customers by id, managers by id."""
    customer_ids = {r.customer_id for r in rows if r.customer_id}
    manager_ids = {r.manager_id for r in rows if r.manager_id}
    customers = dict(db.execute(select(Customer.id, Customer.name)
                                .where(Customer.id.in_(customer_ids))).all()) if rows else {}
    return {"customer": customers, "manager": lookups.manager_names(db, manager_ids)}


@bp.route("/<int:call_id>")
@allow("admin", "supervisor", "manager")
def show(call_id):
    db = get_db()
    call = load(Call, call_id)
    status = recordings.locate(db, _settings(), call)
    feedback = recordings.latest_results(db, [call.id]).get(call.id)
    return render_template(
        "recordings/show.html", call=call, status=status,
        customer=db.get(Customer, call.customer_id) if call.customer_id else None,
        manager=db.get(Manager, call.manager_id) if call.manager_id else None,
        result=db.get(ResultCode, feedback.result_code_id) if feedback else None,
        feedback=feedback)


@bp.route("/<int:call_id>/play", methods=["POST"])
@allow("admin", "supervisor", "manager")
def play(call_id):
    """Audit one play and hand out the audio URL (JSON for the page's script;
    a redirect to it without script)."""
    call = load(Call, call_id)
    _ensure_playable(call)
    with writing() as w:
        recordings.record_play(w.session, current_user, client_ip(), call)
    url = url_for(".audio", call_id=call.id, t=play_token(call))
    if request.accept_mimetypes.best == "application/json":
        return jsonify(ok=True, url=url)
    return redirect(url)


@bp.route("/<int:call_id>/download", methods=["POST"])
@allow("admin", "supervisor", "manager")
def download(call_id):
    call = load(Call, call_id)
    fh, info, content_type = _open(call)
    with writing() as w:
        recordings.record_play(w.session, current_user, client_ip(), call, download=True)
    return _file_response(call, fh, info, content_type, attachment=True)


@bp.route("/<int:call_id>/audio")
@allow("admin", "supervisor", "manager")
def audio(call_id):
    """The recording's bytes for the audio element, with Range; reads only."""
    call = load(Call, call_id)
    if not _token_is_valid(call, request.args.get("t", "")):
        return redirect(url_for(".show", call_id=call.id))
    fh, info, content_type = _open(call)
    return _file_response(call, fh, info, content_type, attachment=False)


def _ensure_playable(call: Call) -> None:
    status = recordings.locate(get_db(), _settings(), call)  # another node's: its size only
    if status != "ready":
        _refuse(call, status)


def _open(call: Call):
    try:
        return recordings.open_anywhere(get_db(), _settings(), call)
    except recordings.RecordingUnavailable as exc:
        _refuse(call, exc.reason)


def _refuse(call: Call, reason: str) -> NoReturn:
    if reason == "refused":
        current_app.logger.warning("recording of call %s refused: its path leads outside "
                                   "the recordings directory", call.id)
    if reason == "unreachable":  # the node that keeps it does not answer now
        abort(503)
    abort(404)


def _file_response(call: Call, fh, info, content_type: str, *, attachment: bool):
    """The file, with Range support (werkzeug: 206, Content-Range, 416)."""
    response = current_app.response_class(wrap_file(request.environ, fh),
                                          mimetype=content_type, direct_passthrough=True)
    response.content_length = info.st_size
    response.last_modified = dt.datetime.fromtimestamp(info.st_mtime, dt.timezone.utc)
    response.set_etag(call.recording_sha256 or f"{call.id}-{info.st_size}-{int(info.st_mtime)}")
    # customers' voices: not kept in shared or disk caches
    response.headers["Cache-Control"] = "private, no-store"
    disposition = "attachment" if attachment else "inline"
    response.headers.set("Content-Disposition", disposition,
                         filename=recordings.download_name(_settings(), call))
    try:
        return response.make_conditional(request.environ, accept_ranges=True,
                                         complete_length=info.st_size)
    except RequestedRangeNotSatisfiable:  # a 416: the file is not sent
        fh.close()
        raise
