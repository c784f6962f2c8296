"""The message catalog: every text a person reads (web pages, SMS, voice
prompts, files the command line writes) comes from it. Simplified Chinese
by default, English on request.

Flask-free, so the command line and the SMS path use it without importing
the web UI (webui/i18n.py adds only the request's locale and the Flask glue).

Catalogs live in khhf/translations/<locale>/LC_MESSAGES/messages.po (a
wheel ships them compiled, .mo only). Update them with scripts/translations.

This module is also the one home of the labels for codes users might see
(roles, statuses, call outcomes, ...) and of the operation log's sentences.
A label is lazy: it is translated when shown, into the locale of the moment
(`current_locale`: the web request's, else the default).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from babel import support
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from khhf import audit, local_time
from khhf.calls.states import CARRIER_OUTCOMES, CallOutcome, CallState, RecordingStatus, colleague_extension
from khhf.models import FeedbackChannel, NumberState, SmsKind, SmsReplyOutcome, SmsStatus, TaskStatus, WebhookStatus

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
LOCALES = ("zh", "en")
DEFAULT_LOCALE = "zh"


# -- catalogs and the locale of the moment ------------------------------------

@functools.cache
def catalog(locale: str) -> support.NullTranslations:
    """The compiled catalog of `locale`, loaded once. In a checkout whose
    .mo is missing or older than its .po, the .po is compiled in memory
    (nothing is written: the caller may not own the directory)."""
    po = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"
    mo = po.with_suffix(".mo")
    if po.exists() and (not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime):
        with po.open("rb") as fh:
            messages = read_po(fh, locale=locale)
        compiled = io.BytesIO()
        write_mo(compiled, messages)
        compiled.seek(0)
        return support.Translations(compiled, domain="messages")
    return support.Translations.load(str(TRANSLATIONS), [locale], domain="messages")


_locale_selector: Callable[[], str | None] | None = None


def set_locale_selector(selector: Callable[[], str | None] | None) -> None:
    """Who says which locale is the current one (the web UI: the request's);
    `selector` returns None when it has no say (outside a request)."""
    global _locale_selector
    _locale_selector = selector


_spoken: contextvars.ContextVar[str | None] = contextvars.ContextVar("khhf_locale", default=None)


@contextlib.contextmanager
def speaking(locale: str) -> Iterator[None]:
    """Render in `locale` within the block, whatever the request's: an SMS
    to a manager is in the site's language even when an administrator
    reading English injects the reply on the web."""
    token = _spoken.set(locale)
    try:
        yield
    finally:
        _spoken.reset(token)


def current_locale() -> str:
    """The locale texts are shown in now: `speaking`'s, else the selector's,
    else the default."""
    chosen = _spoken.get()
    if chosen is None and _locale_selector is not None:
        chosen = _locale_selector()
    return chosen if chosen in LOCALES else DEFAULT_LOCALE


def gettext(message: str, /, locale: str | None = None, **params) -> str:
    """`message` (an English msgid) in `locale` (default: the current one),
    with %(name)s filled from `params`."""
    text = catalog(locale or current_locale()).gettext(message)
    return text % params if params else text


def lazy_gettext(message: str) -> support.LazyProxy:
    """`message`, translated each time it is shown (into the current locale)."""
    return support.LazyProxy(gettext, message, enable_cache=False)


def translator(locale: str = DEFAULT_LOCALE) -> Callable[[str, dict | None], str]:
    """msgid, params -> text in `locale`: for files written outside a
    request (the command line, background jobs)."""
    def translate(message: str, params: dict | None = None) -> str:
        return gettext(message, locale, **(params or {}))
    return translate


# -- code -> label: the one home of every label for a code a user might see.
# Codes stay in the data and the URLs; templates show them only through these.

ROLE_LABELS = {
    "admin": lazy_gettext("Administrator"),
    "manager": lazy_gettext("Customer manager"),
    "supervisor": lazy_gettext("County supervisor"),
}

MANAGER_STATUS_LABELS = {
    "active": lazy_gettext("Active"),
    "departed": lazy_gettext("Departed"),
}

FALLBACK_STRATEGY_LABELS = {
    "ringall": lazy_gettext("Ring all at once"),
    "hunt": lazy_gettext("Ring in turn"),
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
    "purge_recordings": lazy_gettext("Delete old recordings"),
    "listen": lazy_gettext("Listen to a call"),
    "listen_refused": lazy_gettext("Listen refused"),
    "backup": lazy_gettext("Backup"),
    "restore": lazy_gettext("Restore from backup"),
    "export": lazy_gettext("Export"),
    "api_call": lazy_gettext("API call"),
}

# how a supervisor listened to a call (khhf.services.live.MODES)
LISTEN_MODE_LABELS = {
    "listen": lazy_gettext("silent listen"),
    "whisper": lazy_gettext("whisper to the manager"),
}

# why a listen-in was refused (the reason codes of khhf.services.live)
LISTEN_REFUSAL_LABELS = {
    "not_supervisor": lazy_gettext("only supervisors may listen"),
    "other_county": lazy_gettext("not a manager of their county"),
    "bad_mode": lazy_gettext("no such way of listening"),
    "no_desk_phone": lazy_gettext("they have no desk phone"),
    "no_call": lazy_gettext("the manager was not on a desk-phone call"),
    "desk_busy": lazy_gettext("their desk phone was busy"),
    "pbx": lazy_gettext("the phone system did not take the call"),
}

# what an audit entry is about (khhf.audit.OBJECT_TYPES)
OBJECT_TYPE_LABELS = {
    "user": lazy_gettext("user"),
    "manager": lazy_gettext("customer manager"),
    "county": lazy_gettext("county"),
    "call": lazy_gettext("call"),
    "task": lazy_gettext("task"),
    "customer": lazy_gettext("customer"),
    "feedback": lazy_gettext("task result"),
    "sms": lazy_gettext("SMS"),
    "task_type": lazy_gettext("task type"),
    "campaign": lazy_gettext("campaign"),
    "campaign_cycle": lazy_gettext("campaign round"),
    "api_client": lazy_gettext("API client"),
    "unified_number": lazy_gettext("unified number"),
    "dnc_entry": lazy_gettext("do-not-call entry"),
    "pbx_node": lazy_gettext("PBX node"),
}

# a unified number's state in its county's pool (khhf.models.NumberState)
NUMBER_STATE_LABELS: dict[str, support.LazyProxy] = {
    NumberState.ACTIVE: lazy_gettext("In use"),
    NumberState.RESTING: lazy_gettext("Resting"),
    NumberState.RETIRED: lazy_gettext("Retired"),
}
# why a number takes no new call now (khhf.services.number_pool.blocked_by)
NUMBER_BLOCKED_LABELS: dict[str, support.LazyProxy] = {
    **NUMBER_STATE_LABELS,
    "daily_cap": lazy_gettext("Daily cap reached"),
    "hourly_cap": lazy_gettext("Hourly cap reached"),
    "concurrent_cap": lazy_gettext("All its lines busy"),
}

CAMPAIGN_CYCLE_LABELS = {"once": lazy_gettext("Once"), "weekly": lazy_gettext("Weekly"),
                         "monthly": lazy_gettext("Monthly")}
# "In progress", not "Active": in Chinese an active manager (在职) and a
# running campaign (进行中) are different words
CAMPAIGN_STATUS_LABELS = {"draft": lazy_gettext("Draft"), "active": lazy_gettext("In progress"),
                          "closed": lazy_gettext("Closed")}
CAMPAIGN_SELECTION_LABELS = {"county": lazy_gettext("All customers of the county"),
                             "managers": lazy_gettext("Customers of chosen managers"),
                             "list": lazy_gettext("An imported list")}
DISTRIBUTION_LABELS = {"average": lazy_gettext("Average"), "auto": lazy_gettext("Automatic")}

TASK_STATUS_LABELS = {
    TaskStatus.PENDING: lazy_gettext("To call"),
    TaskStatus.DIALING: lazy_gettext("Dialing"),
    TaskStatus.CONNECTED: lazy_gettext("Connected"),
    TaskStatus.NOT_REACHED: lazy_gettext("Not reached"),
    TaskStatus.DONE: lazy_gettext("Done"),
    TaskStatus.CANCELLED: lazy_gettext("Cancelled"),
}

# where a webhook delivery is (khhf.models.WebhookStatus)
WEBHOOK_STATUS_LABELS = {
    WebhookStatus.PENDING: lazy_gettext("Pending"),
    WebhookStatus.DELIVERED: lazy_gettext("Delivered"),
    WebhookStatus.FAILED: lazy_gettext("Failed"),
}

SMS_STATUS_LABELS = {
    SmsStatus.QUEUED: lazy_gettext("Queued"),
    SmsStatus.SENDING: lazy_gettext("Sending"),
    SmsStatus.SENT: lazy_gettext("Sent"),
    SmsStatus.UNKNOWN: lazy_gettext("Unknown (not resent)"),
    SmsStatus.FAILED: lazy_gettext("Failed"),
    SmsStatus.RECEIVED: lazy_gettext("Received"),
    SmsStatus.PROCESSED: lazy_gettext("Processed"),
}

# sms_messages.kind: what an outbound SMS is
SMS_KIND_LABELS = {
    SmsKind.PROMPT: lazy_gettext("Result prompt"),
    SmsKind.ANSWER: lazy_gettext("Answer to a reply"),
    SmsKind.MISSED_CALL: lazy_gettext("Missed-call notice"),
}
# sms_messages.reply_outcome: what an inbound reply did
SMS_REPLY_OUTCOME_LABELS = {
    SmsReplyOutcome.FILED: lazy_gettext("Result filed"),
    SmsReplyOutcome.UNCLEAR: lazy_gettext("Not understood: help sent"),
    SmsReplyOutcome.AMBIGUOUS: lazy_gettext("Reference asked for"),
    SmsReplyOutcome.DUPLICATE: lazy_gettext("Duplicate: ignored"),
    SmsReplyOutcome.ALREADY_FILED: lazy_gettext("Result filed before"),
    SmsReplyOutcome.NO_PROMPT: lazy_gettext("No prompt open"),
    SmsReplyOutcome.UNKNOWN_REF: lazy_gettext("Unknown reference"),
    SmsReplyOutcome.REFUSED: lazy_gettext("Result refused"),
    SmsReplyOutcome.STRANGER: lazy_gettext("Not a manager's mobile: ignored"),
    SmsReplyOutcome.ERROR: lazy_gettext("Handling failed: see the jobs log"),
}

# how a result was filed (feedback.channel)
CHANNEL_LABELS = {
    FeedbackChannel.WEB: lazy_gettext("Web"),
    FeedbackChannel.SMS: lazy_gettext("SMS"),
    FeedbackChannel.KEYPAD: lazy_gettext("Keypad"),
    FeedbackChannel.SYSTEM: lazy_gettext("Filed by the system"),
}

SMS_VIA_LABELS = {
    "smsc": lazy_gettext("the SMSC"),
    "web": lazy_gettext("the web form"),
    "cli": lazy_gettext("the command line"),
}

# task types the system itself creates (their names are stored in Chinese,
# the operators' language); other task types are named by the people who
# make them, and shown as named
TASK_TYPE_LABELS = {
    "callback": lazy_gettext("Hotline call-back"),
}

DIRECTION_LABELS = {
    "outbound": lazy_gettext("Outgoing"),
    "inbound": lazy_gettext("Hotline"),
}

IMPORT_STATUS_LABELS = {
    "checking": lazy_gettext("Checking"),
    "checked": lazy_gettext("Checked: see the preview"),
    "committing": lazy_gettext("Importing"),
    "committed": lazy_gettext("Imported"),
    "failed": lazy_gettext("Failed"),
}

# -- health notices: what staff read on every page while a check of
# khhf.health is red (the banner, webui/health.py). Keyed by the check's
# name; a check with no entry here still shows, by its name and detail.
# `manager` is what customer managers read, for the few checks that stop
# their work; the others they are not shown.

@dataclasses.dataclass(frozen=True)
class HealthNotice:
    problem: object              # what is wrong (lazy text)
    todo: object                 # what the administrator does
    manager: object | None = None  # what a customer manager reads, if anything


HEALTH_NOTICES = {
    "database": HealthNotice(
        lazy_gettext("The database cannot be reached or is locked: nothing can be saved."),
        lazy_gettext("Start the database server, or end the process that holds it; "
                     "`khhf status` says which."),
        lazy_gettext("The system cannot save right now; please try again later.")),
    "pbx": HealthNotice(
        lazy_gettext("The phone system (PBX) does not answer: no call can be placed or "
                     "received."),
        lazy_gettext("Start the PBX (khhf-pbx); `khhf status` says more."),
        lazy_gettext("The phone system is down: calls cannot be placed right now.")),
    "bridge": HealthNotice(
        lazy_gettext("The call bridge is not working: calls cannot be placed and call "
                     "results are not recorded as they happen."),
        lazy_gettext("Start it (khhf-bridge); `khhf status` says more."),
        lazy_gettext("Calls cannot be placed right now; please try again later.")),
    "bridge_lag": HealthNotice(
        lazy_gettext("Call records are behind the phone system: the newest calls show "
                     "late."),
        lazy_gettext("Usually the database is slow or locked: see the database check in "
                     "`khhf status`.")),
    "agi": HealthNotice(
        lazy_gettext("The hotline routing service is not running: callers to the unified "
                     "number reach the county's group, not their own manager."),
        lazy_gettext("Start it (khhf-agi); `khhf status` says more.")),
    "web": HealthNotice(
        lazy_gettext("The web service is not running."),
        lazy_gettext("Start it (khhf-web); `khhf status` says more.")),
    "smsgw": HealthNotice(
        lazy_gettext("The SMS gateway is not running: messages wait in the outbox."),
        lazy_gettext("Start it (khhf-smsgw); `khhf status` says more.")),
    "smsc": HealthNotice(
        lazy_gettext("The SMS gateway is not connected to the SMSC: messages wait in the "
                     "outbox."),
        lazy_gettext("Check that the SMSC is up and the smsc_ settings are right; the "
                     "gateway retries by itself.")),
    "sms_outbox": HealthNotice(
        lazy_gettext("Some SMS were submitted without an answer from the SMSC."),
        lazy_gettext("Check with the SMSC, then send them again (`khhf sms requeue`).")),
    "jobs": HealthNotice(
        lazy_gettext("The timed-jobs service is not running: campaign rounds, SMS result "
                     "prompts and backups wait."),
        lazy_gettext("Start it (khhf-jobs); `khhf status` says more.")),
    "job_runs": HealthNotice(
        lazy_gettext("A timed job failed several times in a row."),
        lazy_gettext("See the timed-jobs service's log (`journalctl -u khhf-jobs`).")),
    "disk": HealthNotice(
        lazy_gettext("Little disk space is left for recordings."),
        lazy_gettext("Free space on that disk, or set recording_retention_days.")),
    "trunk": HealthNotice(
        lazy_gettext("The carrier trunk is down: outbound calls fail and hotline calls may "
                     "not arrive."),
        lazy_gettext("Ask the carrier to check the line; calls work again by themselves when "
                     "it is back."),
        lazy_gettext("The carrier's line is down: calls cannot be placed right now.")),
}


def health_notice(check: dict) -> HealthNotice:
    """The notice for a red check (a dict of khhf.health.report): its own,
    or, for a check not listed above, one made of its name, detail and todo."""
    notice = HEALTH_NOTICES.get(str(check.get("name")))
    if notice is not None:
        return notice
    return HealthNotice(gettext("Health check %(name)s is failing: %(detail)s",
                                name=check.get("name"), detail=check.get("detail")),
                        check.get("todo") or gettext("See `khhf status`."))


IMPORT_KIND_LABELS = {
    "customers": lazy_gettext("Customer list"),
    "managers": lazy_gettext("Manager list"),
    "tasks": lazy_gettext("Task list"),
    "dnc": lazy_gettext("Do-not-call list"),
}

# how a number reached the do-not-call register (khhf.models.DncChannel)
DNC_CHANNEL_LABELS = {
    "import": lazy_gettext("Imported from a file"),
    "result": lazy_gettext("Result filed (no more calls)"),
    "manual": lazy_gettext("Added by hand"),
}

# what a task type is for (khhf.models.TaskKind)
TASK_KIND_LABELS = {
    "revisit": lazy_gettext("Return visit"),
    "marketing": lazy_gettext("Marketing"),
    "survey": lazy_gettext("Survey"),
    "other": lazy_gettext("Other"),
}

# why a customer has their manager (khhf.models.ASSIGNMENT_REASONS)
ASSIGNMENT_REASON_LABELS = {
    "import": lazy_gettext("Imported from a file"),
    "reassign": lazy_gettext("Reassigned by hand"),
    "departure": lazy_gettext("Handed over: the manager left"),
}

# the operation log's address of what was not done over the web (khhf.audit)
AUDIT_ADDRESS_LABELS = {
    audit.CLI_ADDRESS: lazy_gettext("Command line"),
}

# a call's outcome, or its state while it is still going on
CALL_OUTCOME_LABELS = {
    CallState.REQUESTED: lazy_gettext("Requested"),
    CallState.MANAGER_RINGING: lazy_gettext("Your phone is ringing"),
    CallState.MANAGER_ANSWERED: lazy_gettext("Calling the customer"),
    CallState.CUSTOMER_RINGING: lazy_gettext("Customer's phone is ringing"),
    CallState.CONNECTED: lazy_gettext("In conversation"),
    CallState.ENDED: lazy_gettext("Ended"),
    CallState.FAILED: lazy_gettext("Failed"),
    CallOutcome.ANSWERED: lazy_gettext("Answered"),
    CallOutcome.BUSY: lazy_gettext("Busy"),
    CallOutcome.NO_ANSWER: lazy_gettext("No answer"),
    CallOutcome.EMPTY_NUMBER: lazy_gettext("Number does not exist"),
    CallOutcome.UNREACHABLE: lazy_gettext("Unreachable"),
    CallOutcome.REJECTED: lazy_gettext("Rejected by the network"),
    CallOutcome.MANAGER_ABANDONED: lazy_gettext("You hung up before the customer answered"),
    CallOutcome.CARRIER_REJECTED: lazy_gettext("Trunk failure: the carrier refused the call"),
    CallOutcome.CARRIER_UNREACHABLE: lazy_gettext("Trunk failure: the carrier does not answer"),
    CallOutcome.MANAGER_NO_ANSWER: lazy_gettext("Your desk phone did not answer"),
    CallOutcome.MANAGER_BUSY: lazy_gettext("Your desk phone was busy"),
    CallOutcome.MANAGER_UNAVAILABLE: lazy_gettext("Your desk phone is not reachable"),
    CallOutcome.MANAGER_HUNG_UP: lazy_gettext("You hung up before the customer was dialed"),
    # a two-leg call (双呼): the manager's mobile, rung through the trunk first
    CallOutcome.MOBILE_NO_ANSWER: lazy_gettext("Your mobile did not answer"),
    CallOutcome.MOBILE_BUSY: lazy_gettext("Your mobile was busy"),
    CallOutcome.MOBILE_UNREACHABLE: lazy_gettext("Your mobile is not reachable"),
    CallOutcome.NOT_PLACED: lazy_gettext("Not placed"),
    CallOutcome.LOST: lazy_gettext("Lost by the phone system"),
    # the hotline (khhf.services.hotline.finish_call): who answered, or nobody
    CallOutcome.DESK: lazy_gettext("Answered at the desk phone"),
    CallOutcome.MOBILE: lazy_gettext("Answered on the mobile"),
    CallOutcome.GROUP: lazy_gettext("Answered by a colleague"),
    CallOutcome.MISSED: lazy_gettext("Missed: a call-back task was made"),
}

# calls.recording_status: what became of a call's recording
RECORDING_STATUS_LABELS = {
    RecordingStatus.COMPLETE: lazy_gettext("Recording complete"),
    RecordingStatus.PARTIAL: lazy_gettext("Recording incomplete"),
    RecordingStatus.MISSING: lazy_gettext("No recording"),
}

# the configured time zone, as people say it (khhf.local_time: any other
# zone is named by its own name)
TIMEZONE_LABELS = {zone: lazy_gettext(word) for zone, word in local_time.ZONE_WORDS.items()}

# the fields an audit entry's detail names (khhf.audit): what the forms call them
AUDIT_FIELD_LABELS = {
    "username": lazy_gettext("User name"),
    "display_name": lazy_gettext("Name"),
    "role": lazy_gettext("Role"),
    "county": lazy_gettext("County"),
    "is_active": lazy_gettext("May log in"),
    "employee_no": lazy_gettext("Employee number"),
    "desk_extension": lazy_gettext("Desk extension"),
    "mobile": lazy_gettext("Mobile"),
    "status": lazy_gettext("Status"),
    "on_duty": lazy_gettext("On duty"),
    "code": lazy_gettext("Code"),
    "name": lazy_gettext("County name"),
    "fallback_strategy": lazy_gettext("Fallback ringing"),
    "numbers": lazy_gettext("Unified numbers"),
    "primary": lazy_gettext("Primary number"),
    "customer_name": lazy_gettext("Customer name"),
    "phone": lazy_gettext("Phone"),
    "note": lazy_gettext("Note"),
    "result": lazy_gettext("Result"),
    "appointment_at": lazy_gettext("Call back at"),
    "outcome": lazy_gettext("Call outcome"),
    "retry_minutes": lazy_gettext("Call again after (minutes)"),
    "outcome_rules": lazy_gettext("Automatic outcomes"),
    "from": lazy_gettext("Sender"),
    "via": lazy_gettext("Via"),
    "sms_status": lazy_gettext("Status"),
    "to": lazy_gettext("Recipient"),
    "sms_kind": lazy_gettext("Kind of SMS"),
    "sms_reply_outcome": lazy_gettext("Reply handled as"),
    "task_type": lazy_gettext("Task type"),
    "campaign": lazy_gettext("Campaign name"),
    "max_attempts": lazy_gettext("Max attempts"),
    "result_codes": lazy_gettext("Result codes"),
    "script": lazy_gettext("Call script"),
    "description": lazy_gettext("Description"),
    "cycle": lazy_gettext("Cycle"),
    "starts_on": lazy_gettext("First day"),
    "ends_on": lazy_gettext("Last day"),
    "selection": lazy_gettext("Customers called"),
    "managers": lazy_gettext("Customer managers"),
    "campaign_status": lazy_gettext("Status"),
    "round": lazy_gettext("Round"),
    "period": lazy_gettext("Period"),
    "tasks": lazy_gettext("Tasks"),
    "distribution": lazy_gettext("Distribution"),
    "tasks_by_manager": lazy_gettext("Tasks by manager"),
    "manager": lazy_gettext("Customer manager"),
    "operations": lazy_gettext("Operations"),
    "webhook": lazy_gettext("Webhooks"),
    "number_state": lazy_gettext("Number state"),
    "daily_cap": lazy_gettext("Calls a day"),
    "hourly_cap": lazy_gettext("Calls an hour"),
    "concurrent_cap": lazy_gettext("Calls at once"),
    "listed_on": lazy_gettext("Date listed"),
    "dnc_source": lazy_gettext("Source"),
    "dnc_channel": lazy_gettext("Entered by"),
    "consent": lazy_gettext("Consent to marketing calls"),
    "consent_source": lazy_gettext("Consent source"),
    "kind": lazy_gettext("Kind"),
    "requires_consent": lazy_gettext("Requires consent"),
}
# the values of coded fields
_AUDIT_VALUE_LABELS: dict[str, dict] = {
    "role": ROLE_LABELS,
    "status": MANAGER_STATUS_LABELS,
    "fallback_strategy": FALLBACK_STRATEGY_LABELS,
    "via": SMS_VIA_LABELS,
    "sms_status": SMS_STATUS_LABELS,
    # entries written before revision 0002 name a reply's outcome sms_kind
    "sms_kind": {**SMS_KIND_LABELS, **SMS_REPLY_OUTCOME_LABELS},
    "sms_reply_outcome": SMS_REPLY_OUTCOME_LABELS,
    "cycle": CAMPAIGN_CYCLE_LABELS,
    "selection": CAMPAIGN_SELECTION_LABELS,
    "campaign_status": CAMPAIGN_STATUS_LABELS,
    "distribution": DISTRIBUTION_LABELS,
    "number_state": NUMBER_STATE_LABELS,
    "dnc_channel": DNC_CHANNEL_LABELS,
    "kind": TASK_KIND_LABELS,
    "outcome": CALL_OUTCOME_LABELS,
}
# between the parts of a sentence, and between the items of one value
_LIST_SEPARATOR = {"zh": "；", "en": "; "}
_ITEM_SEPARATOR = {"zh": "、", "en": ", "}


def label(labels: dict, code: str | None) -> str:
    """The label of `code` in `labels`; an unknown code is shown as it is
    (the walk in tests/test_web_i18n.py finds any that reach a page)."""
    if code is None or code == "":
        return "—"
    return str(labels.get(code, code))


def join_items(items: Iterable[str]) -> str:
    """Items of one list as the current locale writes them (甲、乙 / a, b)."""
    return _ITEM_SEPARATOR.get(current_locale(), ", ").join(items)


def audit_address(entry) -> str:
    """Where an audit entry came from: an IP address, or the command line."""
    return label(AUDIT_ADDRESS_LABELS, entry.ip)


def call_outcome(call, desk_names: dict[str, str] | None = None) -> str:
    """What happened on `call` (or is happening), in the viewer's language;
    `desk_names` (desk extension -> name) names the colleague who answered."""
    extension = group_extension(call)
    if extension is not None:
        name = (desk_names or {}).get(extension)
        if name:
            return gettext("Answered by %(name)s (extension %(extension)s)", name=name,
                           extension=extension)
        return gettext("Answered by a colleague (extension %(extension)s)",
                       extension=extension)
    text = label(CALL_OUTCOME_LABELS, call.outcome or call.state)
    if call.outcome in CARRIER_OUTCOMES and getattr(call, "sip_code", None):
        text = gettext("%(what)s (SIP response %(code)s)", what=text, code=call.sip_code)
    return text


def group_extension(call) -> str | None:
    """The desk extension of the colleague who answered a hotline call in
    the group ('group:8002'), else None."""
    return colleague_extension(call.outcome)


def task_type_name(task_type) -> str:
    """A task type's name: a system type's translated label, else its stored name."""
    return str(TASK_TYPE_LABELS.get(task_type.code, task_type.name))


def zone_name(zone: str, locale: str | None = None) -> str:
    """The time zone `zone` as people say it: 北京时间 for Asia/Shanghai, else its name."""
    word = local_time.zone_word(zone)
    return gettext(word, locale) if word != zone else zone


def problem_text(problem, locale: str | None = None) -> str:
    """A service's problem (khhf.services.Problem) in `locale` (default: the
    current one); a `zone` parameter is the site's time zone, named as
    people say it ("Beijing time")."""
    params = problem.params
    if "zone" in params:
        params = {**params, "zone": zone_name(params["zone"], locale)}
    if "outcome" in params:
        with speaking(locale or current_locale()):
            params = {**params, "outcome": str(label(CALL_OUTCOME_LABELS, params["outcome"]))}
    return gettext(problem.message, locale, **params)


# -- the operation log as sentences --------------------------------------------

def audit_actor(entry) -> str:
    """Who did it: the person's name, else the user name typed, else the system."""
    if entry.actor_name:
        return entry.actor_name
    if entry.username and entry.username != audit.SYSTEM:
        return entry.username
    return gettext("The system")


def audit_object(entry) -> str:
    """'customer manager 李娜': the object's kind and its name at the time."""
    kind = label(OBJECT_TYPE_LABELS, entry.object_type)
    if entry.object_name:
        return gettext("%(kind)s %(name)s", kind=kind, name=entry.object_name)
    if entry.object_id:
        return gettext("%(kind)s no. %(id)s", kind=kind, id=entry.object_id)
    return kind if entry.object_type else ""


def audit_sentence(entry) -> str:
    """One audit entry as a sentence in the viewer's language."""
    d = audit.load_detail(entry)
    who, what = audit_actor(entry), audit_object(entry)
    action, reason = entry.action, d.get("reason")
    if action == "login":
        text = gettext("%(actor)s logged in.", actor=who)
    elif action == "logout":
        text = gettext("%(actor)s logged out.", actor=who)
    elif action == "login_failed" and reason == "unknown_user":
        text = gettext("Failed log-in: there is no user named %(username)s.",
                       username=entry.username)
    elif action == "login_failed":
        text = gettext("Failed log-in by %(actor)s: wrong password.", actor=who)
    elif action == "login_refused" and reason == "too_many_failures":
        text = gettext("Log-in as %(username)s refused: %(count)d failed log-ins in "
                       "%(minutes)d minutes.", username=entry.username,
                       count=d.get("failures", 0), minutes=d.get("minutes", 0))
    elif action == "login_refused":
        text = gettext("Log-in by %(actor)s refused: the account is disabled.", actor=who)
    elif action == "create" and entry.object_type == "call" and d.get("device") == "mobile":
        text = gettext("%(actor)s called customer %(customer)s from their mobile.", actor=who,
                       customer=entry.object_name or "—")
    elif action == "create" and entry.object_type == "call":
        text = gettext("%(actor)s called customer %(customer)s.", actor=who,
                       customer=entry.object_name or "—")
    elif action == "create" and entry.object_type == "feedback" and d.get("corrects"):
        text = gettext("%(actor)s corrected the system's result for %(object)s: from "
                       "%(old)s to %(new)s.", actor=who, object=what, old=d["corrects"],
                       new=(d.get("fields") or {}).get("result", "—"))
    elif action == "create" and d.get("fields"):
        text = gettext("%(actor)s added %(object)s: %(fields)s.", actor=who, object=what,
                       fields=_fields(d["fields"]))
    elif action == "create":
        text = gettext("%(actor)s added %(object)s.", actor=who, object=what)
    elif action == "update" and reason == "departed":
        text = gettext("%(actor)s marked %(object)s as departed; customers handed over to: "
                       "%(customers)s; open tasks handed over to: %(tasks)s.", actor=who,
                       object=what, customers=_counts(d.get("customers")),
                       tasks=_counts(d.get("tasks")))
    elif action == "update" and d.get("changes"):
        text = gettext("%(actor)s changed %(object)s: %(changes)s.", actor=who, object=what,
                       changes=_changes(d["changes"]))
    elif action == "update":
        text = gettext("%(actor)s saved %(object)s without changes.", actor=who, object=what)
    elif action == "delete":
        text = gettext("%(actor)s removed %(object)s.", actor=who, object=what)
    elif action == "set_password":
        text = gettext("%(actor)s set a new password for %(object)s.", actor=who, object=what)
    elif action == "set_on_duty":
        text = (gettext("%(actor)s put %(object)s on duty.", actor=who, object=what)
                if d.get("on_duty") else
                gettext("%(actor)s put %(object)s off duty.", actor=who, object=what))
    elif action == "import":
        text = gettext("%(actor)s imported a %(kind)s from %(file)s: %(imported)d rows "
                       "imported, %(rejected)d rejected.", actor=who,
                       kind=label(IMPORT_KIND_LABELS, d.get("kind")), file=d.get("file", "—"),
                       imported=d.get("imported", 0), rejected=d.get("rejected", 0))
    elif action == "set_do_not_call":
        text = (gettext("%(actor)s set do-not-call on %(object)s: %(why)s.", actor=who,
                        object=what, why=d.get("why", "—"))
                if d.get("do_not_call") else
                gettext("%(actor)s lifted do-not-call on %(object)s: %(why)s.", actor=who,
                        object=what, why=d.get("why", "—")))
    elif action == "reassign_customer":
        old, new = (d.get("changes") or {}).get("manager") or [None, None]
        text = gettext("%(actor)s gave %(object)s to %(new)s (before: %(old)s); %(count)d "
                       "open tasks moved with the customer.", actor=who, object=what,
                       new=new or "—", old=old or "—", count=d.get("tasks", 0))
    elif action == "play_recording" and d.get("mode") == "download":
        text = gettext("%(actor)s downloaded the recording of %(object)s.", actor=who,
                       object=what)
    elif action == "play_recording":
        text = gettext("%(actor)s played the recording of %(object)s.", actor=who, object=what)
    elif action == "purge_recordings":
        text = gettext("%(actor)s deleted %(count)d recordings older than %(days)d days "
                       "(%(missing)d files were already gone, %(refused)d left alone: "
                       "outside the recordings directory).", actor=who,
                       count=d.get("deleted", 0), days=d.get("days", 0),
                       missing=d.get("missing", 0), refused=d.get("refused", 0))
    elif action == "backup":
        text = gettext("%(actor)s backed up the system to %(file)s (%(count)d recordings).",
                       actor=who, file=d.get("archive", "—"), count=d.get("recordings", 0))
    elif action == "restore":
        text = gettext("%(actor)s restored the system from %(file)s, taken at %(time)s "
                       "(%(count)d recordings).", actor=who, file=d.get("archive", "—"),
                       time=d.get("started_at", "—"), count=d.get("recordings", 0))
    elif action == "listen":
        text = gettext("%(actor)s listened to the call of %(object)s from desk phone %(desk)s "
                       "(%(mode)s).", actor=who, object=what, desk=d.get("desk", "—"),
                       mode=label(LISTEN_MODE_LABELS, d.get("mode")))
    elif action == "export" and d.get("kind") == "tasks":
        text = gettext("%(actor)s exported the %(count)d tasks of %(object)s (%(format)s).",
                       actor=who, count=d.get("rows", 0), object=what,
                       format=str(d.get("format", "")).upper())
    elif action == "export":
        text = gettext("%(actor)s exported the %(count)d customers of %(object)s (%(format)s).",
                       actor=who, count=d.get("rows", 0), object=what or gettext("every county"),
                       format=str(d.get("format", "")).upper())
    elif action == "api_call":
        counts = {k: v for k, v in d.items() if k not in ("operation", "status")}
        text = gettext("%(object)s called %(operation)s: answer %(status)s%(counts)s.",
                       object=what, operation=d.get("operation", "—"),
                       status=d.get("status", "—"),
                       counts="".join(f" {k}={v}" for k, v in sorted(counts.items())))
    elif action == "listen_refused":
        text = gettext("%(actor)s was refused listening to the call of %(object)s: "
                       "%(why)s.", actor=who, object=what,
                       why=label(LISTEN_REFUSAL_LABELS, reason))
    else:
        text = gettext("%(actor)s: %(action)s %(object)s.", actor=who,
                       action=label(ACTION_LABELS, action), object=what)
    # free text from before the log was structured, shown as it was written
    return f"{text} {d['text']}" if d.get("text") else text


def _separator() -> str:
    return _LIST_SEPARATOR.get(current_locale(), "; ")


def _value(field: str, value) -> str:
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    if isinstance(value, list):
        return join_items(map(str, value)) or "—"
    return label(_AUDIT_VALUE_LABELS.get(field, {}), value if value is None else str(value))


def _fields(fields: dict) -> str:
    # what a new object was made with; what it was made without goes unsaid
    return _separator().join(
        gettext("%(field)s %(value)s", field=label(AUDIT_FIELD_LABELS, k), value=_value(k, v))
        for k, v in fields.items() if v not in (None, "", []))


def _changes(changes: dict) -> str:
    return _separator().join(
        gettext("%(field)s from %(old)s to %(new)s", field=label(AUDIT_FIELD_LABELS, k),
                old=_value(k, old), new=_value(k, new))
        for k, (old, new) in changes.items())


def _counts(pairs) -> str:
    if not pairs:
        return gettext("nobody")
    return _separator().join(gettext("%(name)s (%(count)d)", name=name, count=count)
                             for name, count in pairs)


def compile_catalogs(directory: Path = TRANSLATIONS) -> None:
    """Compile each messages.po whose .mo is missing or older than it (the
    web UI's Flask-Babel loads the .mo files from the directory)."""
    for po in directory.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as fh:
            messages = read_po(fh)
        # write aside, then rename: two workers starting at once both succeed
        fd, tmp = tempfile.mkstemp(dir=mo.parent, suffix=".mo.tmp")
        with os.fdopen(fd, "wb") as fh:
            write_mo(fh, messages)
        os.replace(tmp, mo)
