"""Forms: fields and CSRF only. What makes input valid is the domain
services' business (khhf.services); `show_problems` puts their verdict
next to the fields it concerns."""

from __future__ import annotations

from flask import flash
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)

from khhf import i18n
from khhf.services import ValidationError
from webui.i18n import FALLBACK_STRATEGY_LABELS, MANAGER_STATUS_LABELS, ROLE_LABELS
from webui.params import MAX_ID


def _int_or_none(value):
    """A chosen id, or None (nothing chosen, or not an id: the service says so)."""
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if 1 <= value <= MAX_ID else None


def county_field(label=None):
    return SelectField(label or _l("County"), coerce=_int_or_none, validate_choice=False)


def county_choices(counties, empty_label=None) -> list[SelectChoice]:
    choices = [SelectChoice(c.id, f"{c.name} ({c.code})") for c in counties]
    return ([SelectChoice("", empty_label)] if empty_label else []) + choices


def manager_choices(managers, empty_label=None, *, with_county=False) -> list[SelectChoice]:
    """Customer managers as choices: "name (employee number)", and the
    county when managers of several counties are offered."""
    choices = [SelectChoice(m.id, f"{m.user.display_name} ({m.employee_no}, {m.county.name})"
                            if with_county else f"{m.user.display_name} ({m.employee_no})")
               for m in managers]
    return ([SelectChoice("", empty_label)] if empty_label else []) + choices


def problem_text(problem) -> str:
    """A service's problem in the viewer's language (khhf.i18n.problem_text)."""
    return i18n.problem_text(problem)


def show_problems(form, error: ValidationError) -> None:
    """Translate each problem and attach it to its field (or flash it)."""
    for problem in error.problems:
        message = problem_text(problem)
        field = getattr(form, problem.field, None)
        if field is None:
            flash(message, "danger")
        else:
            field.errors = [*field.errors, message]


class LoginForm(FlaskForm):
    username = StringField(_l("User name"))
    password = PasswordField(_l("Password"))


class CountyForm(FlaskForm):
    code = StringField(_l("Code"), description=_l("Short Latin name used in configuration, "
                                                  "e.g. anji."))
    name = StringField(_l("County name"))
    fallback_strategy = SelectField(_l("Fallback ringing"), choices=[
        SelectChoice(code, text) for code, text in FALLBACK_STRATEGY_LABELS.items()],
        validate_choice=False)
    numbers = TextAreaField(_l("Unified numbers"), description=_l(
        "11 digits starting 13 to 19 each, one per line."))
    primary = StringField(_l("Primary number"), description=_l(
        "Shown to customers on outbound calls; empty means the first one."))


class UserForm(FlaskForm):
    username = StringField(_l("User name"))
    display_name = StringField(_l("Name"))
    password = PasswordField(_l("Password"))
    role = SelectField(_l("Role"), validate_choice=False, choices=[
        SelectChoice(code, ROLE_LABELS[code]) for code in ("supervisor", "admin")])
    county_id = county_field()
    is_active = BooleanField(_l("May log in"), default=True)
    desk_extension = StringField(_l("Desk extension"), description=_l(
        "Optional, 4 digits from 2000 to 9999: the desk SIP phone on which a supervisor "
        "listens to calls (live view)."))


class PasswordForm(FlaskForm):
    password = PasswordField(_l("New password"))


class ManagerForm(FlaskForm):
    username = StringField(_l("User name"))
    display_name = StringField(_l("Name"))
    password = PasswordField(_l("Password"))
    county_id = county_field()
    employee_no = StringField(_l("Employee number"))
    desk_extension = StringField(_l("Desk extension"), description=_l(
        "4 digits from 2000 to 9999; the desk SIP phone registers with it."))
    mobile = StringField(_l("Mobile"))
    status = SelectField(_l("Status"), validate_choice=False, choices=[
        SelectChoice(code, text) for code, text in MANAGER_STATUS_LABELS.items()])
    successor = SelectField(_l("Hand over to"), coerce=_int_or_none, validate_choice=False,
                            description=_l("When this manager departs: who takes over their "
                                           "customers and open tasks."))


class DutyForm(FlaskForm):
    on_duty = HiddenField()


class ConfirmForm(FlaskForm):
    """A button that changes something: only the CSRF token."""



class ApiClientForm(FlaskForm):
    """A new integration API client (khhf.services.api_clients.create)."""
    name = StringField(_l("Client name"))
    county = SelectField(_l("County"), validate_choice=False)
    operations = SelectMultipleField(_l("Operations"), validate_choice=False)
    allowed_addresses = StringField(_l("Allowed source addresses"),
                                    description=_l("IP addresses or networks, e.g. "
                                                   "10.1.0.0/16; empty: any."))
    webhook_url = StringField(_l("Webhook URL"),
                              description=_l("Where events are POSTed; empty: no webhooks."))
    rate_per_minute = StringField(_l("Requests per minute"), default="600")
