"""The integration API (/api/v1/), its common parts: JSON over HTTP for the operator's own
systems, described by /api/v1/openapi.json (webui/api/openapi.py) and
docs/api.md.

Who may call: a bearer token of an API client (khhf.services.api_clients),
nothing else. The browser's session cookie is neither read nor set under
/api/ (webui.security), and CSRF does not apply (no cookie, nothing a page
of another site could ride on). Each view declares its operation with
`@operation(...)`:

    401  no token, a wrong one, or a revoked one (WWW-Authenticate: Bearer)
    403  a good token, but not for this operation or from this address
    404  no such object in the client's county (another county's is "no such")
    429  over the client's rate limit (Retry-After)

Errors are {"error": {"code", "message", "field", "problems": [...]}}, the
messages in Chinese (English with Accept-Language: en). Every call by a
known client is audited (client, operation, status, counts): writes in
their own unit of work, reads and refusals in a short one of their own
(webui.db.record_read).
"""

from __future__ import annotations

import collections
import functools
import math
import re
import threading
import time

from flask import current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from khhf import i18n
from khhf.models import ApiClient
from khhf.services import N_, Problem, ValidationError, api_clients, api_ops
from webui.access import API, client_ip
from webui.db import get_db, record_read

# a machine code and an English msgid (translated when answered) per HTTP error
HTTP_ERRORS = {
    400: ("bad_request", N_("The request is malformed: send a JSON object as the body "
                            "(Content-Type: application/json).")),
    401: ("unauthorized", N_("Send a valid API token: Authorization: Bearer <token>.")),
    403: ("forbidden", N_("This token may not do this operation (or not from this address).")),
    404: ("not_found", N_("There is no such object for this token.")),
    405: ("method_not_allowed", N_("This method is not allowed on this path.")),
    413: ("too_large", N_("The request is too large.")),
    429: ("rate_limited", N_("Too many requests: wait for the time in Retry-After.")),
    500: ("server_error", N_("The server failed; nothing was saved. Try again later.")),
    503: ("unavailable", N_("The system is busy; nothing was saved. Try again in a moment.")),
}


def locale() -> str:
    """The answer's language: Chinese unless the client asks for English."""
    best = request.accept_languages.best_match(list(i18n.LOCALES))
    return best if best in i18n.LOCALES else i18n.DEFAULT_LOCALE


def error(status: int, *, message: str | None = None, code: str | None = None,
          field: str | None = None, problems: list[dict] | None = None, headers=None,
          **extra):
    """A JSON error answer."""
    default_code, default_message = HTTP_ERRORS.get(status, ("error", HTTP_ERRORS[400][1]))
    body = {"code": code or default_code,
            "message": message or i18n.gettext(default_message, locale())}
    if field is not None:
        body["field"] = field
    if problems:
        body["problems"] = problems
    response = jsonify(error=body, **extra)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def refused(exc: ValidationError, status: int = 422, **extra):
    """A service's refusal: every problem with its field, code and reason."""
    problems = [api_ops.problem_json(p, locale()) for p in exc.problems]
    first = problems[0]
    return error(status, message=first["message"], code=first["code"], field=first["field"],
                 problems=problems, **extra)


def http_error(exc: HTTPException):
    """The app's error handlers answer this for paths under /api/."""
    status = exc.code or 500
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error(status, headers=headers)


# -- the rate limit --------------------------------------------------------------------

class RateLimit:
    """Requests per client in the last 60 s, in this web process (a
    deployment with several workers gives each its own window)."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._calls: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def take(self, client_id: int, per_minute: int, now: float | None = None) -> float:
        """0 if the request may go on (and count it), else seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            calls = self._calls[client_id]
            while calls and calls[0] <= now - self.WINDOW:
                calls.popleft()
            if len(calls) >= per_minute:
                return calls[0] + self.WINDOW - now
            calls.append(now)
            return 0.0


def _limits() -> RateLimit:
    return current_app.extensions.setdefault("khhf_api_rate", RateLimit())


# -- authentication and the audit ----------------------------------------------------------

class ParameterError(ValidationError):
    """A query parameter or a body field is malformed (400)."""


class Param:
    """A query parameter of the API: parsed to its type, or a ParameterError
    naming it (webui.params.query calls parse)."""

    def __init__(self, name: str, kind: str = "string", *, low: int = 1,
                 high: int = 2**63 - 1, default=None, choices: tuple = ()):
        self.name, self.label, self.kind, self.default = name, name, kind, default
        self.low, self.high, self.choices = low, high, choices

    def parse(self, raw: str):
        if self.kind == "integer":
            if not re.fullmatch(r"[0-9]{1,19}", raw) or not self.low <= int(raw) <= self.high:
                raise ParameterError([Problem(self.name, N_(
                    "%(name)s must be a whole number from %(low)d to %(high)d."),
                    {"name": self.name, "low": self.low, "high": self.high})])
            return int(raw)
        if self.choices and raw not in self.choices:
            raise ParameterError([Problem(self.name, N_("%(name)s must be one of: %(known)s."),
                                          {"name": self.name,
                                           "known": ", ".join(self.choices)})])
        if len(raw) > 256:
            raise ParameterError([Problem(self.name, N_("%(name)s is too long."),
                                          {"name": self.name})])
        return raw


def current_client() -> ApiClient:
    """The client of this request (set by `operation`)."""
    return g.api_client


def operation(name: str):
    """The view is API operation `name` (khhf.models.ApiOperation, or
    "read" for what any client may read about itself)."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            client = api_clients.authenticate(get_db(), token.strip()) \
                if scheme.lower() == "bearer" else None
            if client is None:
                return error(401, headers={"WWW-Authenticate": "Bearer"})
            if not api_clients.address_allowed(client, client_ip()):
                response = error(403, code="address_not_allowed",
                                 message=i18n.gettext("Requests with this token are not "
                                                      "allowed from %(address)s.", locale(),
                                                      address=client_ip()))
            elif name != "read" and name not in client.operation_set:
                response = error(403, code="operation_not_allowed",
                                 message=i18n.gettext("This token may not %(operation)s: "
                                                      "ask the administrator to allow it.",
                                                      locale(), operation=name))
            else:
                wait = _limits().take(client.id, client.rate_per_minute)
                if wait:
                    # not audited: a flood must not become a flood of writes
                    return error(429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
                g.api_client, g.api_operation, g.api_counts = client, name, {}
                response = _answer(view, args, kwargs)
            if not g.get("api_audited"):
                client_id, status, counts = client.id, response.status_code, g.get("api_counts", {})
                record_read(lambda s: api_clients.record_call(
                    s, s.get(ApiClient, client_id), name, client_ip(), status, **counts))
            return response
        wrapper.access = API
        return wrapper
    return decorate


def _answer(view, args, kwargs):
    """The view's answer; a refusal it raised as its JSON error."""
    try:
        return current_app.make_response(view(*args, **kwargs))
    except api_ops.NotFound:
        return error(404)
    except ParameterError as exc:
        return refused(exc, 400)
    except ValidationError as exc:
        return refused(exc, 422)


def audited(session, status: int, **counts: int) -> None:
    """Audit this call in the write's own unit of work (`session`)."""
    api_clients.record_call(session, session.get(ApiClient, current_client().id),
                            g.api_operation, client_ip(), status, **counts)
    g.api_audited = True
