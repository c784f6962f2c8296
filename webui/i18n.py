"""Language in the web UI: Simplified Chinese by default, English on request
(?lang=en, remembered in the session). The catalog, the labels and the
operation log's sentences are the domain's (khhf/i18n.py); this module
tells it the request's locale and wires it into Flask-Babel, Jinja and
WTForms.
"""

from __future__ import annotations

from babel import support
from flask import g, has_request_context, request, session
from flask_babel import Babel, get_locale, get_translations
from wtforms.i18n import messages_path as wtforms_messages_path

from khhf import i18n as core

# the domain's catalog and labels, named here for the web's modules and templates
from khhf.i18n import (  # noqa: F401
    ACTION_LABELS,
    ASSIGNMENT_REASON_LABELS,
    AUDIT_ADDRESS_LABELS,
    AUDIT_FIELD_LABELS,
    CALL_OUTCOME_LABELS,
    CAMPAIGN_CYCLE_LABELS,
    CAMPAIGN_SELECTION_LABELS,
    CAMPAIGN_STATUS_LABELS,
    CHANNEL_LABELS,
    DEFAULT_LOCALE,
    DIRECTION_LABELS,
    DISTRIBUTION_LABELS,
    DNC_CHANNEL_LABELS,
    FALLBACK_STRATEGY_LABELS,
    IMPORT_KIND_LABELS,
    IMPORT_STATUS_LABELS,
    LISTEN_MODE_LABELS,
    LISTEN_REFUSAL_LABELS,
    LOCALES,
    MANAGER_STATUS_LABELS,
    NUMBER_BLOCKED_LABELS,
    NUMBER_STATE_LABELS,
    OBJECT_TYPE_LABELS,
    RECORDING_STATUS_LABELS,
    ROLE_LABELS,
    SMS_KIND_LABELS,
    SMS_REPLY_OUTCOME_LABELS,
    SMS_STATUS_LABELS,
    SMS_VIA_LABELS,
    TASK_KIND_LABELS,
    TASK_STATUS_LABELS,
    TASK_TYPE_LABELS,
    TIMEZONE_LABELS,
    TRANSLATIONS,
    WEBHOOK_STATUS_LABELS,
    audit_actor,
    audit_address,
    audit_object,
    audit_sentence,
    call_outcome,
    group_extension,
    label,
    task_type_name,
    zone_name,
)


def init_app(app) -> None:
    core.compile_catalogs()
    # the domain's lazy labels and sentences speak the request's language
    core.set_locale_selector(_request_locale)
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config["BABEL_DEFAULT_TIMEZONE"] = app.config["TIMEZONE"]
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals.update(
        ROLE_LABELS=ROLE_LABELS, ACTION_LABELS=ACTION_LABELS,
        TASK_STATUS_LABELS=TASK_STATUS_LABELS, MANAGER_STATUS_LABELS=MANAGER_STATUS_LABELS,
        DIRECTION_LABELS=DIRECTION_LABELS, CHANNEL_LABELS=CHANNEL_LABELS,
        CALL_OUTCOME_LABELS=CALL_OUTCOME_LABELS,
        SMS_STATUS_LABELS=SMS_STATUS_LABELS,
        SMS_KIND_LABELS=SMS_KIND_LABELS, SMS_REPLY_OUTCOME_LABELS=SMS_REPLY_OUTCOME_LABELS,
        FALLBACK_STRATEGY_LABELS=FALLBACK_STRATEGY_LABELS, label=label,
        call_outcome=call_outcome, task_type_name=task_type_name, zone_name=zone_name,
        audit_actor=audit_actor, audit_sentence=audit_sentence, get_locale=get_locale,
        IMPORT_STATUS_LABELS=IMPORT_STATUS_LABELS, RECORDING_STATUS_LABELS=RECORDING_STATUS_LABELS,
        WEBHOOK_STATUS_LABELS=WEBHOOK_STATUS_LABELS,
        ASSIGNMENT_REASON_LABELS=ASSIGNMENT_REASON_LABELS, audit_address=audit_address,
        NUMBER_STATE_LABELS=NUMBER_STATE_LABELS, NUMBER_BLOCKED_LABELS=NUMBER_BLOCKED_LABELS,
        TASK_KIND_LABELS=TASK_KIND_LABELS, DNC_CHANNEL_LABELS=DNC_CHANNEL_LABELS)
    app.before_request(_remember_requested_locale)
    app.before_request(_wtforms_catalog)
    # the templates' _(): the request's catalog looked up once per request.
    # Flask-Babel's own callables find the domain, the locale and the catalog
    # again for every string (about 35 on the manager's home page).
    app.jinja_env.install_gettext_callables(
        gettext=lambda s: _request_catalog().ugettext(s),
        ngettext=lambda s, p, n: _request_catalog().ungettext(s, p, n),
        pgettext=lambda c, s: _request_catalog().upgettext(c, s),
        npgettext=lambda c, s, p, n: _request_catalog().unpgettext(c, s, p, n),
        newstyle=True)


def _request_catalog():
    """This request's translations (Flask-Babel's), kept for the request."""
    catalog = g.get("khhf_catalog")
    if catalog is None:
        catalog = g.khhf_catalog = get_translations()
    return catalog


_WTFORMS_CATALOGS: dict[str, support.Translations] = {}


def _wtforms_catalog():
    """WTForms' own messages, parsed once per locale. Flask-WTF keeps them
    on the request only (request.wtforms_translations), so every page with a
    form read and parsed WTForms' catalog file again."""
    locale = str(get_locale())
    catalog = _WTFORMS_CATALOGS.get(locale)
    if catalog is None:
        catalog = _WTFORMS_CATALOGS[locale] = support.Translations.load(
            wtforms_messages_path(), [locale], domain="wtforms")
    request.wtforms_translations = catalog


def _request_locale() -> str | None:
    return str(get_locale()) if has_request_context() else None


def select_locale() -> str:
    lang = session.get("lang")
    return lang if lang in LOCALES else DEFAULT_LOCALE


def _remember_requested_locale():
    lang = request.args.get("lang")
    if lang in LOCALES:
        session["lang"] = lang
