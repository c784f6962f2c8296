"""The OpenAPI 3.0 document of /api/v1/, served at /api/v1/openapi.json: the
reference a CRM developer reads. Written by hand, next to the views;
tests/test_api_openapi.py fails when a route, a method, a path parameter
or a query parameter is in one and not the other."""

from __future__ import annotations

from khhf.models import ApiOperation, WebhookEventKind
from khhf.services import api_ops

VERSION = "1.0.0"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_id(name: str, what: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": f"The {what}'s id.",
            "schema": {"type": "integer", "minimum": 1}}


def _query(name: str, description: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


PAGING = [
    _query("cursor", "next_cursor of the previous page; leave out for the first page.",
           {"type": "string"}),
    _query("limit", "Items per page.", {"type": "integer", "minimum": 1,
                                        "maximum": api_ops.MAX_PAGE,
                                        "default": api_ops.DEFAULT_PAGE}),
]
ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "429": {"$ref": "#/components/responses/RateLimited"},
}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "description": "Your key for this batch: a repeat with the same key gets the "
                              "first answer and writes nothing (or send batch_key in the body).",
               "schema": {"type": "string", "maxLength": 128}}


def _op(summary: str, operation: str | None, responses: dict, *, parameters=(),
        body: dict | None = None, tag: str = "") -> dict:
    out: dict = {"summary": summary, "tags": [tag] if tag else [],
                 "responses": {**responses, **ERRORS}}
    if operation:
        out["description"] = f"Needs the operation `{operation}`."
        out["x-khhf-operation"] = operation
    else:
        out["security"] = []
    if parameters:
        out["parameters"] = list(parameters)
    if body is not None:
        out["requestBody"] = {"required": True,
                              "content": {"application/json": {"schema": body}}}
    return out


def _batch_body(row: str) -> dict:
    return {"type": "object", "required": ["rows"], "properties": {
        "rows": {"type": "array", "minItems": 1, "maxItems": api_ops.MAX_BATCH,
                 "items": _ref(row)},
        "atomic": {"type": "boolean", "default": False,
                   "description": "true: any reject refuses the whole batch (422), "
                                  "nothing is written."},
        "batch_key": {"type": "string", "maxLength": 128,
                      "description": "The idempotency key, if not in the header."}}}


def _batch_responses() -> dict:
    return {"200": _json(_ref("BatchResult"), "Accepted rows written (in one transaction); "
                                              "rejects listed."),
            "422": _json(_ref("Error"), "Refused: nothing written (with atomic, `result` "
                                        "holds the rejects).")}


def _schemas() -> dict:
    text = {"type": "string"}
    when = {"type": "string", "format": "date-time", "nullable": True}
    return {
        "Error": {"type": "object", "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "description": "Machine code."},
                "message": {"type": "string", "description": "Reason, in Chinese "
                                                             "(Accept-Language: en: English)."},
                "field": {"type": "string", "description": "The field or parameter at fault."},
                "problems": {"type": "array", "items": _ref("Problem")}}}}},
        "Problem": {"type": "object", "properties": {"field": text, "code": text,
                                                     "message": text}},
        "Customer": {"type": "object", "required": ["phone"], "properties": {
            "phone": {"type": "string", "description": "Mobile (11 digits) or fixed line "
                                                       "with area code."},
            "name": text, "note": text,
            "manager": {"type": "string", "description": "The owning manager's employee "
                                                         "number."}}},
        "Manager": {"type": "object", "required": ["employee_no", "display_name"],
                    "properties": {"employee_no": text, "display_name": text,
                                   "username": text, "desk_extension": text, "mobile": text}},
        "BatchResult": {"type": "object", "properties": {
            "received": {"type": "integer"}, "accepted": {"type": "integer"},
            "created": {"type": "integer"}, "updated": {"type": "integer"},
            "rejected": {"type": "integer"},
            "rejects": {"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer", "description": "The row's place in rows, from 0."},
                "problems": {"type": "array", "items": _ref("Problem")}}}}}},
        "Task": {"type": "object", "properties": {
            "id": {"type": "integer"}, "campaign_id": {"type": "integer", "nullable": True},
            "customer_number": text, "manager": {"type": "string", "nullable": True},
            "task_type": text,
            "status": {"type": "string", "enum": list(api_ops.TASK_STATUSES_READ)},
            "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
            "result_code": {"type": "string", "nullable": True},
            "result_label": {"type": "string", "nullable": True},
            "appointment_at": when, "last_call_at": when, "created_at": when,
            "updated_at": when}},
        "Call": {"type": "object", "properties": {
            "id": {"type": "integer"}, "direction": {"type": "string",
                                                     "enum": ["outbound", "inbound"]},
            "task_id": {"type": "integer", "nullable": True}, "customer_number": text,
            "manager": {"type": "string", "nullable": True}, "state": text,
            "outcome": {"type": "string", "nullable": True}, "requested_at": when,
            "answered_at": when, "ended_at": when,
            "talk_seconds": {"type": "integer", "nullable": True},
            "hangup_by": {"type": "string", "nullable": True},
            "recording": {"type": "boolean", "description": "A recording exists (fetch it "
                                                            "with recordings:read)."}}},
        "TaskPage": {"type": "object", "properties": {
            "items": {"type": "array", "items": _ref("Task")},
            "next_cursor": {"type": "string", "nullable": True}}},
        "CallPage": {"type": "object", "properties": {
            "items": {"type": "array", "items": _ref("Call")},
            "next_cursor": {"type": "string", "nullable": True}}},
        "WebhookEvent": {"type": "object", "description":
                         "POSTed to the client's webhook URL. Headers: X-KHHF-Event, "
                         "X-KHHF-Event-Id (de-duplicate by it), X-KHHF-Timestamp (UNIX "
                         "seconds), X-KHHF-Signature: v1=hex(HMAC-SHA256(key, timestamp + '.' "
                         "+ body)), key = HMAC-SHA256(token, 'khhf-webhook').",
                         "properties": {"id": text,
                                        "type": {"type": "string",
                                                 "enum": [str(k) for k in WebhookEventKind]},
                                        "created_at": when, "data": {"type": "object"}}},
    }


def document() -> dict:
    """The OpenAPI document."""
    ops = ApiOperation
    return {
        "openapi": "3.0.3",
        "info": {"title": "KHHF integration API", "version": VERSION,
                 "description": "Customers and tasks in, results and calls out, events "
                                "pushed. Bearer tokens per client (one county); see "
                                "docs/api.md."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {"get": _op("This document", None, {"200": {
                "description": "OpenAPI 3.0"}}, tag="meta")},
            "/client": {"get": _op("The client of this token", "any", {"200": {
                "description": "name, county, operations, rate_per_minute, webhooks"}},
                tag="meta")},
            "/customers": {"post": _op(
                "Add or update customers by phone number", ops.CUSTOMERS_WRITE,
                _batch_responses(), parameters=[IDEMPOTENCY], body=_batch_body("Customer"),
                tag="customers")},
            "/managers": {"post": _op(
                "Add or update customer managers by employee number", ops.MANAGERS_WRITE,
                _batch_responses(), parameters=[IDEMPOTENCY], body=_batch_body("Manager"),
                tag="managers")},
            "/campaigns/{campaign_id}/tasks": {"post": _op(
                "Create a campaign's tasks from customer numbers", ops.TASKS_WRITE,
                {**_batch_responses(), "404": {"$ref": "#/components/responses/NotFound"}},
                parameters=[_path_id("campaign_id", "campaign"), IDEMPOTENCY],
                body={"type": "object", "required": ["numbers"], "properties": {
                    "numbers": {"type": "array", "items": {"type": "string"},
                                "minItems": 1, "maxItems": api_ops.MAX_BATCH},
                    "atomic": {"type": "boolean"}, "batch_key": {"type": "string"}}},
                tag="tasks")},
            "/tasks": {"get": _op(
                "Tasks with status and result", ops.TASKS_READ,
                {"200": _json(_ref("TaskPage"), "A page of tasks, by id")},
                parameters=[*PAGING,
                            _query("campaign_id", "Only this campaign's.",
                                   {"type": "integer", "minimum": 1}),
                            _query("status", "Only tasks in this status.",
                                   {"type": "string",
                                    "enum": list(api_ops.TASK_STATUSES_READ)})],
                tag="tasks")},
            "/tasks/{task_id}": {"get": _op(
                "One task", ops.TASKS_READ,
                {"200": _json(_ref("Task"), "The task"),
                 "404": {"$ref": "#/components/responses/NotFound"}},
                parameters=[_path_id("task_id", "task")], tag="tasks")},
            "/calls": {
                "get": _op("Calls: outcome, times, talk time, recording present",
                           ops.CALLS_READ, {"200": _json(_ref("CallPage"), "A page of calls")},
                           parameters=[*PAGING, _query("task_id", "Only this task's calls.",
                                                       {"type": "integer", "minimum": 1})],
                           tag="calls"),
                "post": _op(
                    "Click-to-dial on behalf of the task's manager", ops.CALLS_DIAL,
                    {"201": _json(_ref("Call"), "The call, placed: the manager's phone rings"),
                     "404": {"$ref": "#/components/responses/NotFound"},
                     "409": _json(_ref("Error"), "Refused by a rule of the dial (calling "
                                                 "window, do-not-call, busy, ...)"),
                     "503": _json(_ref("Error"), "The phone system is unavailable")},
                    body={"type": "object", "required": ["task_id", "manager"], "properties": {
                        "task_id": {"type": "integer"},
                        "manager": {"type": "string", "description": "Employee number"},
                        "device": {"type": "string", "enum": ["desk", "mobile"]}}},
                    tag="calls")},
            "/calls/{call_id}": {"get": _op(
                "One call", ops.CALLS_READ,
                {"200": _json(_ref("Call"), "The call"),
                 "404": {"$ref": "#/components/responses/NotFound"}},
                parameters=[_path_id("call_id", "call")], tag="calls")},
            "/calls/{call_id}/recording": {"get": _op(
                "The call's recording (audio/wav), with Range", ops.RECORDINGS_READ,
                {"200": {"description": "The file",
                         "content": {"audio/wav": {"schema": {"type": "string",
                                                              "format": "binary"}}}},
                 "206": {"description": "The requested range"},
                 "404": {"$ref": "#/components/responses/NotFound"},
                 "416": {"description": "Range not satisfiable"},
                 "503": _json(_ref("Error"), "Behind the SIP edge: the PBX node that "
                                             "keeps the recording does not answer")},
                parameters=[_path_id("call_id", "call"),
                            {"name": "Range", "in": "header", "required": False,
                             "schema": {"type": "string"}}],
                tag="calls")},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "khhf_<id>_<secret>, from "
                                                          "`khhf api clients add` or the "
                                                          "admin's API page"}},
            "schemas": _schemas(),
            "responses": {
                name: _json(_ref("Error"), text) for name, text in (
                    ("BadRequest", "Malformed request: the field and why"),
                    ("Unauthorized", "No token, a wrong or a revoked one"),
                    ("Forbidden", "Not this token's operation, or not from this address"),
                    ("NotFound", "No such object in this token's county"),
                    ("RateLimited", "Over the rate limit: see Retry-After"))},
        },
        "x-webhooks": {str(k): _ref("WebhookEvent") for k in WebhookEventKind},
    }
