"""Who may open what: the one place for role and county checks.

Every view carries its rule: `@allow("admin")`, `@allow("manager",
"supervisor")` or `@public`. A route without a rule is refused (403) and
fails tests/test_web_routes.py. Objects are loaded through `load`, which
applies `scope`: what the current user may see of each model. Lists use
the same `scope`, so a page and its links never disagree.
"""

from __future__ import annotations

import functools

from flask import abort, current_app, request
from flask_login import current_user
from sqlalchemy import false, select, true

from khhf.models import ROLES, Call, Campaign, County, Customer, ImportJob, Manager, Task, User
from webui.db import get_db

PUBLIC = "public"
# an integration API view (webui/api): a client's bearer token, not a log-in
API = "api-token"


def allow(*roles: str):
    """Log-in required, and the user's role must be one of `roles`."""
    unknown = set(roles) - set(ROLES)
    if not roles or unknown:
        raise ValueError(f"allow() needs roles from {ROLES}, got {roles}")

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated:
                return current_app.login_manager.unauthorized()
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)
        wrapper.access = frozenset(roles)
        return wrapper
    return decorate


def public(view):
    """Anyone may open this view, logged in or not."""
    view.access = PUBLIC
    return view


def access_rule(app, endpoint: str):
    """The rule an endpoint declared: PUBLIC, API, a set of roles, or None."""
    if endpoint == "static" or endpoint.endswith(".static"):
        return PUBLIC
    return getattr(app.view_functions[endpoint], "access", None)


def deny_routes_without_rule():
    """Fail closed: a view nobody declared a rule for is open to nobody."""
    if request.endpoint and access_rule(current_app, request.endpoint) is None:
        abort(403)


def scope(model):
    """A WHERE clause: the rows of `model` the current user may see."""
    user = current_user
    if user.role == "admin":
        return true()
    if user.role == "supervisor":
        county_managers = select(Manager.id).where(Manager.county_id == user.county_id)
        rules = {County: County.id == user.county_id, User: User.county_id == user.county_id,
                 Manager: Manager.county_id == user.county_id,
                 Customer: Customer.county_id == user.county_id,
                 Task: Task.manager_id.in_(county_managers),
                 Call: Call.county_id == user.county_id,
                 Campaign: Campaign.county_id == user.county_id,
                 ImportJob: ImportJob.county_id == user.county_id}
    else:
        own = select(Manager.id).where(Manager.user_id == user.id).scalar_subquery()
        rules = {County: County.id == user.county_id, User: User.id == user.id,
                 Manager: Manager.user_id == user.id, Customer: Customer.manager_id == own,
                 Task: Task.manager_id == own, Call: Call.manager_id == own}
    # a model without a rule here is visible to administrators only
    return rules.get(model, false())


def load(model, object_id: int, session=None):
    """The object, if the current user may see it; else 404 (whether it
    exists elsewhere is not their business). Read through `session` if
    given, else the request's."""
    obj = (session or get_db()).scalar(select(model).where(model.id == object_id, scope(model)))
    if obj is None:
        abort(404)
    return obj


def client_ip() -> str:
    """The address the audit log records (the app listens on loopback or
    behind a proxy that the deployment configures with ProxyFix)."""
    return request.remote_addr or ""
