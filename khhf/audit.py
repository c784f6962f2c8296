"""The operation log (全程操作日志): one record per write, log-in and playback.

Every component writes through `record`, in the same unit of work as the
change it describes, so the log and the data never disagree.

An entry names its actor (user name and the person's name) and its object
(type, id and the object's name at the time: a person's name, a county's
name, a customer's), so a search for 李娜 finds what she did and what was
done to her. What happened is kept as structured detail, a JSON object:

    {"fields": {field: value, ...}}          what an object was created with
    {"changes": {field: [old, new], ...}}    what an update changed (`changes`)
    {"reason": "wrong_password", ...}        a coded reason, with its parameters

Values are codes ('departed', 'hunt'), names or masked numbers, never
sentences: the web UI renders each entry as a sentence in the viewer's
language (khhf.i18n.audit_sentence). Phone numbers in the detail must
already be masked (khhf.phones.mask_phone).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlalchemy.orm import Session

from khhf.models import AuditLog, User

# the actor of writes no user asked for: demo data, imports, the hotline
SYSTEM = "system"
# the address of what was done on the command line (khhf ...), not over the web
CLI_ADDRESS = "cli"
# What the log calls each kind of event; the UI translates them.
ACTIONS = (
    "login", "login_failed", "login_refused", "logout",
    "create", "update", "delete", "set_password", "set_on_duty",
    "play_recording",
    "import", "set_do_not_call", "reassign_customer",
    "purge_recordings",
    "listen", "listen_refused",
    "backup", "restore", "export",
    "api_call",
)
# what an entry can be about; the UI translates them
OBJECT_TYPES = ("user", "manager", "county", "call", "task", "customer", "sms",
                "task_type", "campaign", "campaign_cycle", "feedback", "api_client",
                "unified_number", "dnc_entry", "pbx_node")
# coded reasons ("reason" in the detail); the UI says each in words
REASONS = ("unknown_user", "wrong_password", "account_disabled", "too_many_failures",
           "departed",
           # a listen-in refused (khhf.services.live)
           "not_supervisor", "other_county", "bad_mode", "no_desk_phone", "no_call",
           "desk_busy", "pbx")


def record(session: Session, user: User | None, action: str, object_type: str = "",
           object_id: object = "", detail: Mapping | str | None = None, ip: str = "",
           *, object_name: str = "", username: str | None = None) -> AuditLog:
    """Add one audit entry to `session` (committed with the caller's work).

    `username` names the actor when there is no user row, e.g. a failed
    log-in with an unknown name; with neither, the actor is SYSTEM.
    `object_name` is the object's name as people know it; a user acting on
    their own user row needs none. A plain-text `detail` is kept as written
    (untranslated): prefer the structure above.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; add it to khhf.audit.ACTIONS")
    if object_type and object_type not in OBJECT_TYPES:
        raise ValueError(f"unknown audit object type {object_type!r}; add it to "
                         "khhf.audit.OBJECT_TYPES")
    if isinstance(detail, str):
        detail = {"text": detail} if detail else {}
    detail = dict(detail or {})
    if detail.get("reason") not in (None, *REASONS):
        raise ValueError(f"unknown audit reason {detail['reason']!r}; add it to "
                         "khhf.audit.REASONS")
    object_id = "" if object_id is None else str(object_id)
    if not object_name and user is not None and object_type == "user" \
            and object_id == str(user.id):
        object_name = user.display_name
    entry = AuditLog(
        user_id=user.id if user is not None else None,
        username=(user.username if user is not None else username or SYSTEM)[:64],
        actor_name=(user.display_name if user is not None else "")[:64],
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_name=(object_name or "")[:128],
        # not ASCII-escaped: a search for a Chinese name finds it in the detail too
        detail=json.dumps(detail, ensure_ascii=False, default=str) if detail else "",
        ip=(ip or "")[:45],
    )
    session.add(entry)
    return entry


def changes(pairs: Mapping[str, tuple[object, object]]) -> dict:
    """{"changes": {field: [old, new]}} for the fields whose value changed."""
    return {"changes": {k: [a, b] for k, (a, b) in pairs.items() if a != b}}


def load_detail(entry: AuditLog) -> dict:
    """An entry's structured detail; an old plain-text detail as {"text": ...}."""
    if not entry.detail:
        return {}
    try:
        detail = json.loads(entry.detail)
    except ValueError:
        detail = None
    return detail if isinstance(detail, dict) else {"text": entry.detail}
