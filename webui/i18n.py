"""Language and time: Simplified Chinese by default, English on request
(?lang=en, remembered in the session); times shown in the configured zone
(Asia/Shanghai), while the database keeps naive UTC.

Catalogs live in webui/translations/<locale>/LC_MESSAGES/messages.po; the
.mo files are compiled from them when the app starts if missing or stale.
Update them with scripts/translations.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import request, session
from flask_babel import Babel, get_locale, lazy_gettext

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
LOCALES = ("zh", "en")
DEFAULT_LOCALE = "zh"

ROLE_LABELS = {
    "admin": lazy_gettext("Administrator"),
    "manager": lazy_gettext("Customer manager"),
    "supervisor": lazy_gettext("County supervisor"),
}

ACTION_LABELS = {
    "login": lazy_gettext("Log-in"),
    "login_failed": lazy_gettext("Failed log-in"),
    "login_refused": lazy_gettext("Log-in refused"),
    "logout": lazy_gettext("Log-out"),
    "create": lazy_gettext("Create"),
    "update": lazy_gettext("Update"),
    "delete": lazy_gettext("Delete"),
    "set_password": lazy_gettext("Set password"),
    "set_on_duty": lazy_gettext("On/off duty"),
    "import": lazy_gettext("Import"),
    "set_do_not_call": lazy_gettext("Do-not-call"),
    "reassign_customer": lazy_gettext("Reassign customer"),
    "play_recording": lazy_gettext("Play recording"),
}

TASK_STATUS_LABELS = {
    "pending": lazy_gettext("To call"),
    "dialing": lazy_gettext("Dialing"),
    "connected": lazy_gettext("Connected"),
    "not_reached": lazy_gettext("Not reached"),
    "done": lazy_gettext("Done"),
    "cancelled": lazy_gettext("Cancelled"),
}

IMPORT_STATUS_LABELS = {
    "checking": lazy_gettext("Checking"),
    "checked": lazy_gettext("Checked: see the preview"),
    "committing": lazy_gettext("Importing"),
    "committed": lazy_gettext("Imported"),
    "failed": lazy_gettext("Failed"),
}

# a call's outcome, or its state while it is still going on
CALL_OUTCOME_LABELS = {
    "requested": lazy_gettext("Requested"),
    "manager_ringing": lazy_gettext("Your phone is ringing"),
    "manager_answered": lazy_gettext("Calling the customer"),
    "customer_ringing": lazy_gettext("Customer's phone is ringing"),
    "connected": lazy_gettext("In conversation"),
    "answered": lazy_gettext("Answered"),
    "busy": lazy_gettext("Busy"),
    "no_answer": lazy_gettext("No answer"),
    "empty_number": lazy_gettext("Number does not exist"),
    "unreachable": lazy_gettext("Unreachable"),
    "manager_abandoned": lazy_gettext("You hung up before the customer answered"),
    "manager_no_answer": lazy_gettext("Your desk phone did not answer"),
    "manager_busy": lazy_gettext("Your desk phone was busy"),
    "manager_unavailable": lazy_gettext("Your desk phone is not reachable"),
    "manager_hung_up": lazy_gettext("You hung up before the customer was dialed"),
    "not_placed": lazy_gettext("Not placed"),
    "lost": lazy_gettext("Lost by the phone system"),
}


def init_app(app) -> None:
    compile_catalogs()
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config["BABEL_DEFAULT_TIMEZONE"] = app.config["TIMEZONE"]
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals.update(ROLE_LABELS=ROLE_LABELS, ACTION_LABELS=ACTION_LABELS,
                                 TASK_STATUS_LABELS=TASK_STATUS_LABELS,
                                 CALL_OUTCOME_LABELS=CALL_OUTCOME_LABELS,
                                 IMPORT_STATUS_LABELS=IMPORT_STATUS_LABELS,
                                 get_locale=get_locale)
    app.before_request(_remember_requested_locale)


def select_locale() -> str:
    lang = session.get("lang")
    return lang if lang in LOCALES else DEFAULT_LOCALE


def _remember_requested_locale():
    lang = request.args.get("lang")
    if lang in LOCALES:
        session["lang"] = lang


def compile_catalogs(directory: Path = TRANSLATIONS) -> None:
    """Compile each messages.po whose .mo is missing or older than it."""
    for po in directory.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as fh:
            catalog = read_po(fh)
        # write aside, then rename: two workers starting at once both succeed
        fd, tmp = tempfile.mkstemp(dir=mo.parent, suffix=".mo.tmp")
        with os.fdopen(fd, "wb") as fh:
            write_mo(fh, catalog)
        os.replace(tmp, mo)


def translator(locale: str = DEFAULT_LOCALE):
    """msgid, params -> text in `locale`, outside a request (the command
    line, files written by background jobs)."""
    po = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"
    with po.open("rb") as fh:
        catalog = read_po(fh)
    strings = {m.id: m.string for m in catalog if m.id and isinstance(m.id, str) and m.string}

    def translate(message: str, params: dict | None = None) -> str:
        text = strings.get(message) or message
        return text % params if params else text
    return translate
