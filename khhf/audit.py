"""The operation log (全程操作日志): one record per write, log-in and playback.

Every component writes through `record`, in the same unit of work as the
change it describes, so the log and the data never disagree. Phone numbers
in `detail` must already be masked (see khhf.phones.mask_phone).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from khhf.models import AuditLog, User

# the actor of writes no user asked for: demo data, imports, the hotline
SYSTEM = "system"
# What the log calls each kind of event; the UI translates them.
ACTIONS = (
    "login", "login_failed", "login_refused", "logout",
    "create", "update", "delete", "set_password", "set_on_duty",
    "play_recording",
    "import", "set_do_not_call", "reassign_customer",
)


def record(session: Session, user: User | None, action: str, object_type: str = "",
           object_id: object = "", detail: str = "", ip: str = "",
           *, username: str | None = None) -> AuditLog:
    """Add one audit entry to `session` (committed with the caller's work).

    `username` names the actor when there is no user row, e.g. a failed
    log-in with an unknown name; with neither, the actor is SYSTEM.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; add it to khhf.audit.ACTIONS")
    entry = AuditLog(
        user_id=user.id if user is not None else None,
        username=(user.username if user is not None else username or SYSTEM)[:64],
        action=action,
        object_type=object_type,
        object_id="" if object_id is None else str(object_id),
        detail=detail,
        ip=(ip or "")[:45],
    )
    session.add(entry)
    return entry


def describe_changes(changes: dict[str, tuple[object, object]]) -> str:
    """'field: old → new; ...' for the fields whose value changed."""
    return "; ".join(f"{k}: {_show(a)} → {_show(b)}" for k, (a, b) in changes.items() if a != b)


def _show(value: object) -> str:
    return "—" if value is None or value == "" else str(value)
