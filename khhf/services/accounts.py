"""Users and customer managers: creating, editing, passwords, log-in.

Passwords are hashed with werkzeug.security (scrypt). Log-in attempts are
limited per user name and IP address, counted from the audit log itself
(action 'login_failed'): no extra table, shared by every web worker, and it
survives a restart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from khhf import audit, numbering
from khhf.config import Settings
from khhf.models import AuditLog, County, Manager, User, utcnow
from khhf.phones import mask_phone
from khhf.services import N_, Problems, handover, validated

PASSWORD_MIN_LENGTH = 8
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{2,63}")
EMPLOYEE_NO_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
MANAGER_STATUSES = ("active", "departed")
# compared against when the user name is unknown, so both paths cost the same
_DUMMY_HASH = generate_password_hash(secrets.token_hex(8))


class LoginRefused(Exception):
    """A log-in was refused; `message` (a msgid) and `params` say why."""

    def __init__(self, message: str, *, rate_limited: bool = False, **params):
        self.message, self.params, self.rate_limited = message, params, rate_limited
        super().__init__(message % params)


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def generate_password() -> str:
    """A random password that is easy to read aloud (no 0/O, 1/l)."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(12))


@dataclasses.dataclass(frozen=True)
class CheckedPassword:
    """What check_password found: the user name asked for, the user's id (None
    if unknown) and the hash the password matched (None if it did not)."""
    username: str
    user_id: int | None
    matched_hash: str | None


def check_password(session: Session, username: str, password: str) -> CheckedPassword:
    """Compare a password with the stored hash, only reading. The hash costs
    tenths of a second on purpose: the web UI runs this before its writing
    unit of work begins, so SQLite's one write lock is not held meanwhile."""
    username = (username or "").strip().lower()
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")  # both paths cost the same
        return CheckedPassword(username, None, None)
    matched = check_password_hash(user.password_hash, password or "")
    return CheckedPassword(username, user.id, user.password_hash if matched else None)


def log_in(session: Session, username: str, password: str, ip: str, *,
           max_failures: int = Settings.login_max_failures,
           window: dt.timedelta = dt.timedelta(minutes=Settings.login_failure_minutes),
           checked: CheckedPassword | None = None) -> User:
    """The user these credentials name, or LoginRefused. After `max_failures`
    failed log-ins within `window` from `ip` for `username`, every attempt is
    refused (the web UI passes Settings.login_max_failures and
    login_failure_minutes; the defaults are theirs).
    `checked`: the password already checked (check_password), else it is here.

    Either way an audit entry is added: the caller commits in both cases.
    """
    if checked is None:
        checked = check_password(session, username, password)
    username = checked.username
    since = utcnow() - window
    failures = session.scalar(
        select(func.count()).select_from(AuditLog).where(
            AuditLog.action == "login_failed", AuditLog.username == username[:64],
            AuditLog.ip == (ip or "")[:45], AuditLog.at >= since)) or 0
    user = session.scalar(select(User).where(User.username == username))
    if failures >= max_failures:
        audit.record(session, user, "login_refused", "user", user.id if user else "",
                     {"reason": "too_many_failures", "failures": failures,
                      "minutes": int(window.total_seconds() // 60)}, ip, username=username,
                     object_name=user.display_name if user else username)
        raise LoginRefused(N_("Too many failed log-ins for this user name from your "
                              "address. Wait %(minutes)d minutes and try again, or ask "
                              "an administrator to reset your password."),
                           rate_limited=True, minutes=int(window.total_seconds() // 60))
    if user is None:
        audit.record(session, None, "login_failed", "user", "", {"reason": "unknown_user"}, ip,
                     username=username, object_name=username)
        raise LoginRefused(N_("Wrong user name or password."))
    # the password must have matched the hash the user has now (not one
    # replaced since it was checked)
    if checked.user_id != user.id or checked.matched_hash != user.password_hash:
        audit.record(session, user, "login_failed", "user", user.id,
                     {"reason": "wrong_password"}, ip)
        raise LoginRefused(N_("Wrong user name or password."))
    if not user.is_active:
        audit.record(session, user, "login_refused", "user", user.id,
                     {"reason": "account_disabled"}, ip)
        raise LoginRefused(N_("This account is disabled. Ask an administrator to enable it."))
    user.last_login_at = utcnow()
    audit.record(session, user, "login", "user", user.id, None, ip)
    return user


def log_out(session: Session, user: User, ip: str) -> None:
    """End every session of `user`, on every device (the caller commits)."""
    user.end_sessions()
    audit.record(session, user, "logout", "user", user.id, None, ip)


def create_user(session: Session, by: User | None, ip: str, *, username: str,
                display_name: str, password: str, role: str,
                county_id: int | None) -> User:
    """An administrator or a county supervisor (managers: create_manager)."""
    problems = Problems()
    username = _check_username(session, problems, username)
    display_name = _check_display_name(problems, display_name)
    _check_password(problems, password)
    county = _check_role_county(session, problems, role, county_id, allow_manager=False)
    problems.raise_if_any()
    user = User(username=username, display_name=display_name, role=role,
                county_id=county.id if county else None, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    audit.record(session, by, "create", "user", user.id,
                 {"fields": {"username": username, "role": role,
                             "county": county.name if county else None}}, ip,
                 object_name=display_name)
    return user


def update_user(session: Session, by: User | None, ip: str, user: User, *,
                display_name: str, role: str, county_id: int | None,
                is_active: bool) -> User:
    """Change a user's name, role, county or whether they may log in."""
    problems = Problems()
    display_name = _check_display_name(problems, display_name)
    if (user.role == "manager") != (role == "manager"):
        problems.add("role", N_("A customer manager stays a customer manager: to change "
                                "the role, disable this user and create a new one."))
    county = _check_role_county(session, problems, role, county_id, allow_manager=True)
    if by is not None and by.id == user.id and (not is_active or role != user.role):
        problems.add("is_active", N_("You cannot disable your own account or change your "
                                     "own role; ask another administrator."))
    problems.raise_if_any()
    changes = {"display_name": (user.display_name, display_name), "role": (user.role, role),
               "county": (user.county.name if user.county else None,
                          county.name if county else None),
               "is_active": (user.is_active, is_active)}
    user.display_name, user.role, user.is_active = display_name, role, is_active
    user.county_id = county.id if county else None
    if user.manager is not None and county is not None:  # a manager always has one
        user.manager.county_id = county.id
    audit.record(session, by, "update", "user", user.id, audit.changes(changes), ip,
                 object_name=display_name)
    return user


def set_password(session: Session, by: User | None, ip: str, user: User, password: str) -> None:
    """Replace a user's password (the log says who did it, never the password)."""
    problems = Problems()
    _check_password(problems, password)
    problems.raise_if_any()
    user.password_hash = hash_password(password)
    user.end_sessions()  # whoever knew the old password is logged out everywhere
    audit.record(session, by, "set_password", "user", user.id, None, ip,
                 object_name=user.display_name)


def create_manager(session: Session, by: User | None, ip: str, *, username: str,
                   display_name: str, password: str, county_id: int | None,
                   employee_no: str, desk_extension: str, mobile: str) -> Manager:
    """A customer manager: the log-in user and the manager row, together."""
    problems = Problems()
    username, display_name, county, employee_no, desk_extension, mobile = _check_new_manager(
        session, problems, username=username, display_name=display_name, county_id=county_id,
        employee_no=employee_no, desk_extension=desk_extension, mobile=mobile)
    _check_password(problems, password)
    problems.raise_if_any()
    user = User(username=username, display_name=display_name, role="manager",
                county_id=county.id, password_hash=hash_password(password))
    manager = Manager(user=user, county_id=county.id, employee_no=employee_no,
                      desk_extension=desk_extension, mobile=mobile)
    session.add(manager)
    session.flush()
    audit.record(session, by, "create", "manager", manager.id,
                 {"fields": {"username": username, "county": county.name,
                             "employee_no": employee_no, "desk_extension": desk_extension,
                             "mobile": mask_phone(mobile) if mobile else None}}, ip,
                 object_name=display_name)
    return manager


def check_manager(session: Session, *, username: str, display_name: str,
                  county_id: int | None, employee_no: str, desk_extension: str,
                  mobile: str) -> list:
    """The problems create_manager would find with these fields (without
    the password): imports check every row before writing any."""
    problems = Problems()
    _check_new_manager(session, problems, username=username, display_name=display_name,
                       county_id=county_id, employee_no=employee_no,
                       desk_extension=desk_extension, mobile=mobile)
    return problems.items


def _check_new_manager(session, problems, *, username, display_name, county_id, employee_no,
                       desk_extension, mobile):
    username = _check_username(session, problems, username)
    display_name = _check_display_name(problems, display_name)
    county = _check_role_county(session, problems, "manager", county_id, allow_manager=True)
    employee_no, desk_extension, mobile = _check_manager_fields(
        session, problems, None, employee_no, desk_extension, mobile)
    return username, display_name, county, employee_no, desk_extension, mobile


def update_manager(session: Session, by: User | None, ip: str, manager: Manager, *,
                   display_name: str, county_id: int | None, employee_no: str,
                   desk_extension: str, mobile: str, status: str,
                   successor_id: int | None = None) -> Manager:
    """Edit a manager. Departing goes through khhf.services.handover: their
    customers and open tasks go to `successor_id`, or without one are spread
    over the county's other active managers; they go off duty and can no
    longer log in."""
    problems = Problems()
    display_name = _check_display_name(problems, display_name)
    county = _check_role_county(session, problems, "manager", county_id, allow_manager=True)
    employee_no, desk_extension, mobile = _check_manager_fields(
        session, problems, manager, employee_no, desk_extension, mobile)
    if status not in MANAGER_STATUSES:
        problems.add("status", N_("Choose a status: active or departed."))
    problems.raise_if_any()
    county = validated(county, "the county")  # a manager's is required
    changes = {
        "display_name": (manager.user.display_name, display_name),
        "county": (manager.county.name, county.name),
        "employee_no": (manager.employee_no, employee_no),
        "desk_extension": (manager.desk_extension, desk_extension),
        "mobile": (mask_phone(manager.mobile) if manager.mobile else None,
                   mask_phone(mobile) if mobile else None),
        "status": (manager.status, status),
    }
    if status == "departed" and manager.status == "active":
        # checks before it changes anything; the caller rolls back if it refuses
        handover.depart_manager(session, manager.id, successor_id=successor_id, by_user=by,
                                ip=ip)
    elif status == "active" and manager.status == "departed":
        manager.status, manager.departed_at, manager.successor_id = "active", None, None
        manager.user.is_active = True
    manager.user.display_name = display_name
    manager.county_id = manager.user.county_id = county.id
    manager.employee_no, manager.desk_extension, manager.mobile = (
        employee_no, desk_extension, mobile)
    audit.record(session, by, "update", "manager", manager.id, audit.changes(changes), ip,
                 object_name=display_name)
    return manager


def set_on_duty(session: Session, by: User | None, ip: str, manager: Manager,
                on_duty: bool) -> Manager:
    """在岗/离岗: whether the manager is at the desk. On duty, their
    customers' hotline calls ring the desk phone first and they are in the
    county's fallback group; off duty, the hotline skips the desk phone and
    rings their mobile (khhf.services.hotline.start_call)."""
    problems = Problems()
    if on_duty and manager.status != "active":
        problems.add("on_duty", N_("A departed manager cannot go on duty."))
    problems.raise_if_any()
    if manager.on_duty != on_duty:
        manager.on_duty = on_duty
        audit.record(session, by, "set_on_duty", "manager", manager.id,
                     {"on_duty": on_duty}, ip, object_name=manager.user.display_name)
    return manager


def _check_username(session, problems, username) -> str:
    username = (username or "").strip().lower()
    if not USERNAME_PATTERN.fullmatch(username):
        problems.add("username", N_("User name: 3 to 64 characters, lower-case letters, "
                                    "digits, '.', '_' or '-', starting with a letter or "
                                    "digit, e.g. zhangsan."))
    elif session.scalar(select(User.id).where(User.username == username)) is not None:
        problems.add("username", N_("User name %(username)s is taken; choose another."),
                     username=username)
    return username


def _check_display_name(problems, display_name) -> str:
    display_name = (display_name or "").strip()
    if not 1 <= len(display_name) <= 64:
        problems.add("display_name", N_("Enter the person's name (at most 64 characters)."))
    return display_name


def _check_password(problems, password) -> None:
    if len(password or "") < PASSWORD_MIN_LENGTH:
        problems.add("password", N_("The password needs at least %(count)d characters."),
                     count=PASSWORD_MIN_LENGTH)


def _check_role_county(session, problems, role, county_id, *, allow_manager) -> County | None:
    roles = ("admin", "supervisor", "manager") if allow_manager else ("admin", "supervisor")
    if role not in roles:
        if role == "manager":
            problems.add("role", N_("Customer managers are added on the managers page, "
                                    "with their desk phone and mobile."))
        else:
            problems.add("role", N_("Choose a role."))
        return None
    county = session.get(County, county_id) if county_id else None
    if role == "admin":
        return None
    if county is None:
        problems.add("county_id", N_("Choose the county this person works for."))
    return county


def _check_manager_fields(session, problems, manager, employee_no, desk_extension, mobile):
    own_id = manager.id if manager is not None else None
    employee_no = (employee_no or "").strip()
    if not EMPLOYEE_NO_PATTERN.fullmatch(employee_no):
        problems.add("employee_no", N_("Employee number: 1 to 32 letters, digits, '_' "
                                       "or '-', as on the staff card."))
    elif session.scalar(select(Manager.id).where(Manager.employee_no == employee_no,
                                                 Manager.id != own_id)) is not None:
        problems.add("employee_no", N_("Employee number %(value)s belongs to another "
                                       "manager; check it."), value=employee_no)
    desk_extension = (desk_extension or "").strip() or None
    if desk_extension is not None:
        if not numbering.DESK_EXTENSION.fullmatch(desk_extension):
            problems.add("desk_extension", N_("Desk extension: 4 digits from 2000 to 9999, "
                                              "e.g. 8001; leave it empty if there is no "
                                              "desk phone."))
        elif session.scalar(select(Manager.id).where(
                Manager.desk_extension == desk_extension, Manager.id != own_id)) is not None \
                or desk_extension_of_user(session, desk_extension) is not None:
            problems.add("desk_extension", N_("Desk extension %(value)s is already in use; "
                                              "choose a free one."), value=desk_extension)
    mobile = _check_mobile(problems, mobile)
    if mobile is not None:
        holder = session.scalar(select(Manager).where(Manager.mobile == mobile,
                                                      Manager.id != own_id))
        if holder is not None:
            # the hotline rings it and SMS replies are matched by it: one person each
            problems.add("mobile", N_("Mobile %(value)s is already the number of customer "
                                      "manager %(name)s (%(no)s); each manager needs their "
                                      "own. If %(name)s has left, clear the number on their "
                                      "page first."),
                         value=mobile, name=holder.user.display_name, no=holder.employee_no)
    return employee_no, desk_extension, mobile


def _check_mobile(problems, mobile) -> str | None:
    if not (mobile or "").strip():
        return None
    try:
        return numbering.mobile(mobile)
    except numbering.NumberError:
        problems.add("mobile", N_("Mobile: 11 digits starting with 1, e.g. 13812345678."))
        return None


def active_desk_extensions(session: Session) -> list[str]:
    """The desk extensions of active managers, and of enabled supervisors
    and administrators who have one (the live view's listen-in rings it):
    the phones the PBX renders (PBX control takes this list; it does not
    query the database itself)."""
    managers = session.scalars(select(Manager.desk_extension).where(
        Manager.status == "active", Manager.desk_extension.is_not(None)))
    others = session.scalars(select(User.desk_extension).where(
        User.is_active, User.role != "manager", User.desk_extension.is_not(None)))
    return sorted({d for d in (*managers, *others) if d is not None})


def desk_extension_of_user(session: Session, desk_extension: str) -> User | None:
    """The supervisor or administrator whose desk phone is `desk_extension`."""
    return session.scalar(select(User).where(User.desk_extension == desk_extension))


def set_desk_extension(session: Session, by: User | None, ip: str, user: User,
                       desk_extension: str | None) -> User:
    """Give a supervisor or administrator a desk phone (empty: none). The
    live view's listen-in rings it; the PBX renders it like a manager's
    (active_desk_extensions). One extension, one phone: never a
    manager's, never another user's."""
    problems = Problems()
    desk_extension = (desk_extension or "").strip() or None
    if user.role == "manager":
        problems.add("desk_extension", N_("A customer manager's desk extension is set on "
                                          "the manager's page."))
    elif desk_extension is not None:
        if not numbering.DESK_EXTENSION.fullmatch(desk_extension):
            problems.add("desk_extension", N_("Desk extension: 4 digits from 2000 to 9999, "
                                              "e.g. 8001; leave it empty if there is no "
                                              "desk phone."))
        elif session.scalar(select(Manager.id).where(
                Manager.desk_extension == desk_extension)) is not None or \
                (desk_extension_of_user(session, desk_extension) or user) is not user:
            problems.add("desk_extension", N_("Desk extension %(value)s is already in use; "
                                              "choose a free one."), value=desk_extension)
    problems.raise_if_any()
    if user.desk_extension != desk_extension:
        audit.record(session, by, "update", "user", user.id,
                     audit.changes({"desk_extension": (user.desk_extension, desk_extension)}),
                     ip, object_name=user.display_name)
        user.desk_extension = desk_extension
    return user
