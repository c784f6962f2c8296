"""Result feedback by SMS (短信反馈): the prompt after a call, and the reply.

The prompt. When an outbound call in which the customer answered has ended,
and no result was filed for it within `sms_prompt_delay_seconds`, the
manager's mobile gets one SMS naming the task (a short reference `#12`, the
task type, the masked customer number) and the digit menu of the task
type's result codes. `send_prompts` is the sweep that queues them; the
jobs daemon runs it every few seconds (jobs/scheduler.py). It keeps no
state of its own: a call is due while it has no prompt row and no result,
so a restarted daemon catches up, and the unique index on the prompt's
call (ux_sms_messages_prompt_call) makes a second prompt for one call
impossible, even from two sweepers. A result filed first, by any channel
(web, keypad), means no prompt: the sweep asks the feedback table, not a
flag of the channel's.

The reply. `receive` stores a message from a mobile (khhf.services.sms)
and handles it at once; the SMSC's deliveries (smsgw), the admin's web
form and `khhf sms inject` all come through it. The text is parsed by
khhf.sms_reply; then, for a manager's mobile:

- one open prompt (or the one named by `#ref`): the result is filed
  through khhf.services.results.file_result (channel 'sms') and a
  confirmation goes back;
- a reply that cannot be understood: one help SMS (the menu of the open
  prompts);
- several prompts open and no reference: an SMS asking for it;
- the prompt's task has its result already: an SMS saying so;
- the same text again from the same phone, with no prompt sent to it in
  between (an SMSC redelivery, an impatient thumb): stored, nothing else;
- a number that is no manager's: stored and ignored.

Every message in and out is stored (sms_messages: `kind` says what an
outbound one is, `reply_outcome` what a reply did) and audited. Customer
numbers appear masked in every SMS and log.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from khhf import audit, i18n, sms_reply
from khhf.calls.states import CallState
from khhf.config import Settings
from khhf.models import (
    Call,
    Feedback,
    Manager,
    ResultCode,
    SmsKind,
    SmsMessage,
    SmsReplyOutcome,
    SmsStatus,
    Task,
    User,
    utcnow,
)
from khhf.phones import mask_phone

from . import N_, ValidationError, results, sms, tasks

log = logging.getLogger(__name__)

# answered calls older than this get no prompt (e.g. on the first start)
PROMPT_HORIZON = dt.timedelta(hours=24)
# a prompt is "open" (a bare digit may answer it) this long at most
PROMPT_OPEN_FOR = dt.timedelta(days=7)
# references cycle 1..REF_CYCLE per manager, skipping those of open prompts
REF_CYCLE = 999
# an identical text from the same phone within this, with no prompt sent
# to it in between, is a duplicate
DUPLICATE_WINDOW = dt.timedelta(hours=24)
# leftover 'received' rows (their handling failed) are retried after this
RETRY_AFTER = dt.timedelta(seconds=30)

# The SMS texts: msgids of the catalog, said by sms.say (the site's language)
PROMPT = N_("#%(ref)s %(task_type)s %(customer)s: the call has ended; reply with the result: "
            "%(menu)s. %(hint)s")
HINT_MANY = N_("With several waiting, add the reference, e.g. 1 #%(ref)s")
CONFIRM = N_("Filed #%(ref)s %(customer)s: %(label)s. %(booked)s")
BOOKED = N_("Calling again on %(month)02d-%(day)02d at %(time)s.")
HELP = N_("Your reply was not understood. %(menus)s")
HELP_NONE = N_("No call is waiting for a result: no need to reply.")
HELP_WAITING = N_("Waiting for a result: %(items)s.")
HELP_MENU = N_("Reply with a result code: %(menu)s.")
AMBIGUOUS = N_("%(n)s calls are waiting for a result: %(items)s. Reply with the reference, "
               "e.g. 1 #%(ref)s")
UNKNOWN_REF = N_("There is no result prompt #%(ref)s. %(rest)s")
ALREADY = N_("#%(ref)s %(customer)s has its result already: %(label)s (%(channel)s); no need "
             "to reply.")
CLOSED = N_("The task of #%(ref)s %(customer)s is closed; no need to reply.")
NO_CODE = N_("#%(ref)s %(customer)s: there is no result code %(code)s. Reply with: %(menu)s")
REFUSED = N_("#%(ref)s %(customer)s: not filed. %(why)s Reply with: %(menu)s")
MENU_BOOKING = N_("%(code)s+time %(label)s (e.g. %(code)s 1201 1430)")


def refusal(problems) -> str:
    """file_result's refusals (khhf.services.Problem), as the SMS says them."""
    return "".join(i18n.problem_text(p, sms.SMS_LOCALE) for p in problems)


# -- the menu -------------------------------------------------------------------

def _codes(session: Session, task_type_id: int) -> list[ResultCode]:
    codes = session.scalars(select(ResultCode).where(ResultCode.task_type_id == task_type_id))
    return sorted(codes, key=lambda c: (int(c.code) if c.code.isdigit() else 999, c.code))


def booking_code(codes: list[ResultCode]) -> ResultCode | None:
    """The code the menu shows with "+时间": the "try again" code whose label
    speaks of an appointment (预约), else none (a time is still accepted
    with any "try again" code)."""
    for c in codes:
        if not c.is_final and "预约" in c.label:
            return c
    return None


def menu(codes: list[ResultCode]) -> str:
    """「1回访成功 2客户拒绝 … 6+时间 预约再拨（如 6 1201 1430）」"""
    booking = booking_code(codes)
    items = [sms.say(MENU_BOOKING, code=c.code, label=c.label) if c is booking
             else f"{c.code}{c.label}" for c in codes]
    return " ".join(items)


def _customer(task: Task) -> str:
    return mask_phone(task.customer.phone)


# -- the prompt -------------------------------------------------------------------

def _result_filed(call=Call):
    """SQL: a result was filed for `call` (any channel): a feedback row of
    its task naming it, or filed after the customer answered."""
    return exists().where(Feedback.task_id == call.task_id,
                          or_(Feedback.call_id == call.id,
                              Feedback.created_at >= call.answer_at))


def due_calls(session: Session, settings: Settings, now: dt.datetime,
              call_ids: list[int] | None = None) -> list[Call]:
    """Answered outbound calls whose prompt is due: ended at least the delay
    ago (and within PROMPT_HORIZON), no result filed, no prompt yet, the
    task still open and its manager (the caller) active with a mobile.
    `call_ids` narrows the look to those calls."""
    delay = dt.timedelta(seconds=settings.sms_prompt_delay_seconds)
    later = aliased(Call)
    query = (
        select(Call).join(Task, Task.id == Call.task_id)
        .join(Manager, Manager.id == Task.manager_id)
        .where(Call.direction == "outbound", Call.state == CallState.ENDED,
               Call.answer_at.is_not(None), Call.end_at.is_not(None),
               Call.end_at <= now - delay, Call.end_at >= now - PROMPT_HORIZON,
               Task.status.in_(tasks.OPEN), Task.manager_id == Call.manager_id,
               Manager.status == "active", Manager.mobile.is_not(None), Manager.mobile != "",
               ~exists().where(SmsMessage.kind == SmsKind.PROMPT, SmsMessage.call_id == Call.id),
               ~_result_filed(Call),
               # a later answered call of the task gets the prompt instead
               ~exists().where(later.task_id == Call.task_id, later.id > Call.id,
                               later.direction == "outbound", later.answer_at.is_not(None)))
        .order_by(Call.id))
    if call_ids is not None:
        query = query.where(Call.id.in_(call_ids))
    return list(session.scalars(query))


def open_prompts(session: Session, manager_id: int, now: dt.datetime) -> list[SmsMessage]:
    """The manager's prompts still waiting for a result (newest first)."""
    rows = session.scalars(
        select(SmsMessage).join(Call, Call.id == SmsMessage.call_id)
        .join(Task, Task.id == Call.task_id)
        .where(SmsMessage.kind == SmsKind.PROMPT, SmsMessage.manager_id == manager_id,
               SmsMessage.created_at >= now - PROMPT_OPEN_FOR,
               Task.status.in_(tasks.OPEN), ~_result_filed(Call))
        .order_by(SmsMessage.id.desc()))
    return list(rows)


def _next_ref(session: Session, manager_id: int, taken: set[str]) -> str:
    """The reference after the manager's last one, skipping `taken` (those
    of the open prompts)."""
    last = session.scalar(select(SmsMessage.ref).where(
        SmsMessage.kind == SmsKind.PROMPT, SmsMessage.manager_id == manager_id)
        .order_by(SmsMessage.id.desc()).limit(1))
    n = int(last) if last and last.isdigit() else 0
    for _ in range(REF_CYCLE):
        n = n % REF_CYCLE + 1
        if str(n) not in taken:
            return str(n)
    return str(n)  # 999 open prompts: the oldest's number again; #ref finds the newest


def send_prompts(session: Session, settings: Settings, now: dt.datetime | None = None,
                 call_ids: list[int] | None = None) -> int:
    """Queue the prompt of every due call (see `due_calls`), or of those of
    `call_ids` that are due; returns how many."""
    now = now or utcnow()
    made = 0
    # per manager: (task ids, references) of the open prompts, read once a sweep
    open_by_manager: dict[int, tuple[set[int], set[str]]] = {}
    menus: dict[int, list[ResultCode]] = {}
    for call in due_calls(session, settings, now, call_ids):
        task = call.task
        if task is None or task.manager is None:
            # due_calls joins the task and its manager
            raise LookupError(f"call {call.id} is due a prompt but has no task or manager")
        manager = task.manager
        if manager.id not in open_by_manager:
            found = open_prompts(session, manager.id, now)
            open_by_manager[manager.id] = ({p.task_id for p in found if p.task_id is not None},
                                           {p.ref for p in found if p.ref is not None})
        open_tasks, taken = open_by_manager[manager.id]
        # one open prompt per task: a second answered call asks nothing new
        if task.id in open_tasks:
            continue
        ref = _next_ref(session, manager.id, taken)
        if task.task_type_id not in menus:
            menus[task.task_type_id] = _codes(session, task.task_type_id)
        codes = menus[task.task_type_id]
        body = sms.say_sms(PROMPT, ref=ref, task_type=task.task_type.name,
                        customer=_customer(task), menu=menu(codes),
                        hint=sms.say(HINT_MANY, ref=ref))
        try:
            with session.begin_nested():
                sms.queue(session, manager, body, kind=SmsKind.PROMPT, task_id=task.id,
                          call_id=call.id, ref=ref, now=now)
        except IntegrityError:
            continue  # another sweeper queued it first
        open_tasks.add(task.id)
        taken.add(ref)
        made += 1
        log.info("result prompt #%s for call %s (task %s, %s) queued to %s", ref, call.id,
                 task.id, _customer(task), mask_phone(manager.mobile))
    return made


# -- the reply --------------------------------------------------------------------

def receive(session: Session, mobile: str, text: str, *, settings: Settings | None = None,
            user: User | None = None, via: str = "smsc", ip: str = "",
            now: dt.datetime | None = None) -> SmsMessage:
    """Store a message from `mobile` (khhf.services.sms.receive: raises
    SmsError for a bad number or text) and handle it as a reply. Should
    the handling fail unexpectedly, the message stays 'received' and the
    jobs daemon's sweep (`handle_leftovers`) tries again."""
    row = sms.receive(session, mobile, text, user=user, via=via, ip=ip)
    try:
        with session.begin_nested():
            handle(session, row, settings or Settings(), now or utcnow())
    except Exception:
        log.exception("SMS %s from %s: handling failed; the jobs daemon retries it",
                      row.id, mask_phone(row.peer_number))
    return row


def _leftovers(now: dt.datetime):
    return select(SmsMessage).where(
        SmsMessage.direction == "in", SmsMessage.status == SmsStatus.RECEIVED,
        SmsMessage.created_at <= now - RETRY_AFTER).order_by(SmsMessage.id)


def has_leftovers(session: Session, now: dt.datetime) -> bool:
    """Some inbound message waits for `handle_leftovers`."""
    return session.scalar(_leftovers(now).limit(1)) is not None


def handle_leftovers(session: Session, settings: Settings, now: dt.datetime | None = None) -> int:
    """Handle inbound messages left 'received' (a failed or interrupted
    handling); returns how many."""
    now = now or utcnow()
    rows = session.scalars(_leftovers(now)).all()
    for row in rows:
        try:
            with session.begin_nested():
                handle(session, row, settings, now)
        except Exception as exc:
            # a second failure: set aside for a person, not retried forever
            log.exception("SMS %s from %s: handling failed again; marked 'error'",
                          row.id, mask_phone(row.peer_number))
            row.error = f"handling failed: {exc}"[:500]
            _done(session, row, SmsReplyOutcome.ERROR)
    return len(rows)


def handle(session: Session, row: SmsMessage, settings: Settings, now: dt.datetime) -> None:
    """Act on the received message `row` (see the module's docstring); it
    ends 'processed' with `reply_outcome` saying what it did."""
    if row.status != SmsStatus.RECEIVED:
        return
    manager = session.get(Manager, row.manager_id) if row.manager_id else None
    if manager is None or manager.status != "active":
        _done(session, row, SmsReplyOutcome.STRANGER)
        log.info("SMS %s from %s: no active manager has this mobile; stored, ignored",
                 row.id, mask_phone(row.peer_number))
        return
    if _is_duplicate(session, row, manager, now):
        _done(session, row, SmsReplyOutcome.DUPLICATE)
        return
    prompts = open_prompts(session, manager.id, now)
    try:
        reply = sms_reply.parse(row.body)
    except sms_reply.Unclear:
        _done(session, row, SmsReplyOutcome.UNCLEAR)
        _answer(session, row, manager, sms.say_sms(HELP, menus=_menus(session, prompts)))
        return
    if reply.ref is not None:
        prompt = session.scalar(select(SmsMessage).where(
            SmsMessage.kind == SmsKind.PROMPT, SmsMessage.manager_id == manager.id,
            SmsMessage.ref == reply.ref).order_by(SmsMessage.id.desc()).limit(1))
        if prompt is None:
            _done(session, row, SmsReplyOutcome.UNKNOWN_REF)
            rest = _listing(session, prompts) if prompts else sms.say(HELP_NONE)
            _answer(session, row, manager, sms.say_sms(UNKNOWN_REF, ref=reply.ref, rest=rest))
            return
    elif len(prompts) == 1:
        prompt = prompts[0]
    elif prompts:
        _done(session, row, SmsReplyOutcome.AMBIGUOUS)
        _answer(session, row, manager, sms.say_sms(
            AMBIGUOUS, n=len(prompts), items=_listing(session, prompts), ref=prompts[-1].ref))
        return
    else:
        # nothing open: about the latest prompt, if there is one (filed already)
        prompt = session.scalar(select(SmsMessage).where(
            SmsMessage.kind == SmsKind.PROMPT, SmsMessage.manager_id == manager.id)
            .order_by(SmsMessage.id.desc()).limit(1))
        if prompt is None:
            _done(session, row, SmsReplyOutcome.NO_PROMPT)
            _answer(session, row, manager, sms.say_sms(HELP_NONE))
            return
    row.reply_to_id = prompt.id
    _file(session, row, manager, prompt, reply, settings, now)


def _file(session, row, manager, prompt, reply, settings, now) -> None:
    call = session.get(Call, prompt.call_id)
    task = session.get(Task, call.task_id)
    names = {"ref": prompt.ref, "customer": _customer(task)}
    filed = session.scalar(select(Feedback).where(
        Feedback.task_id == task.id,
        or_(Feedback.call_id == call.id, Feedback.created_at >= call.answer_at))
        .order_by(Feedback.id.desc()).limit(1))
    if filed is not None or task.status not in tasks.OPEN:
        _done(session, row, SmsReplyOutcome.ALREADY_FILED)
        if filed is None:
            _answer(session, row, manager, sms.say_sms(CLOSED, **names), task)
        else:
            label = session.get(ResultCode, filed.result_code_id).label
            with i18n.speaking(sms.SMS_LOCALE):
                channel = i18n.label(i18n.CHANNEL_LABELS, filed.channel)
            _answer(session, row, manager, sms.say_sms(ALREADY, label=label, channel=channel,
                                                    **names), task)
        return
    codes = _codes(session, task.task_type_id)
    code = next((c for c in codes if c.code.isdigit() and int(c.code) == int(reply.code)), None)
    if code is None:
        _done(session, row, SmsReplyOutcome.REFUSED)
        _answer(session, row, manager, sms.say_sms(NO_CODE, code=reply.code, menu=menu(codes),
                                                **names), task)
        return
    appointment = None
    if reply.call_back is not None:
        local = sms_reply.resolve(reply.call_back, settings.local(now))
        appointment = settings.from_local(local)
    # a note is what came after the code; the menu's label echoed is none
    note = reply.note.removeprefix(code.label).strip(" ,，。、.")
    user = session.get(User, manager.user_id)
    try:
        with session.begin_nested():
            feedback = results.file_result(session, user, task.id, code.id, note=note,
                                           appointment_at=appointment, channel="sms",
                                           call_id=call.id, settings=settings, now=now)
    except ValidationError as exc:
        _done(session, row, SmsReplyOutcome.REFUSED)
        _answer(session, row, manager, sms.say_sms(REFUSED, why=refusal(exc.problems),
                                                menu=menu(codes), **names), task)
        return
    row.feedback_id = feedback.id
    _done(session, row, SmsReplyOutcome.FILED)
    booked = ""
    if task.appointment_at is not None:
        at = settings.local(task.appointment_at)
        booked = sms.say(BOOKED, month=at.month, day=at.day, time=f"{at:%H:%M}")
    _answer(session, row, manager, sms.say_sms(CONFIRM, label=code.label, booked=booked,
                                            **names), task)
    log.info("SMS %s: result %s filed for task %s (#%s, %s)", row.id, code.code, task.id,
             prompt.ref, _customer(task))


def _is_duplicate(session: Session, row: SmsMessage, manager: Manager,
                  now: dt.datetime) -> bool:
    """The same text came from this phone before, and no prompt went to it since."""
    text = " ".join(sms_reply.normalize(row.body).split())
    earlier = session.scalars(select(SmsMessage).where(
        SmsMessage.direction == "in", SmsMessage.peer_number == row.peer_number,
        SmsMessage.id < row.id, SmsMessage.status == SmsStatus.PROCESSED,
        SmsMessage.created_at >= now - DUPLICATE_WINDOW)
        .order_by(SmsMessage.id.desc()).limit(20)).all()
    for before in earlier:
        if " ".join(sms_reply.normalize(before.body).split()) != text:
            continue
        prompted_since = session.scalar(select(exists().where(
            SmsMessage.kind == SmsKind.PROMPT, SmsMessage.manager_id == manager.id,
            SmsMessage.id > before.id)))
        return not prompted_since
    return False


def _listing(session: Session, prompts: list[SmsMessage]) -> str:
    """「#12 138****8000、#13 139****1234」, oldest first."""
    with i18n.speaking(sms.SMS_LOCALE):
        return i18n.join_items(f"#{p.ref} {_customer(_prompt_task(session, p))}"
                               for p in reversed(prompts))


def _prompt_task(session: Session, prompt: SmsMessage) -> Task:
    """The task a result prompt asks about (sms.queue gives every prompt one)."""
    task = session.get(Task, prompt.task_id) if prompt.task_id is not None else None
    if task is None:
        raise LookupError(f"result prompt {prompt.id} has no task")
    return task


def _menus(session: Session, prompts: list[SmsMessage]) -> str:
    """The help: how to answer the open prompts (or that there is none)."""
    if not prompts:
        return sms.say(HELP_NONE)
    types = {_prompt_task(session, p).task_type_id for p in prompts}
    lines = [sms.say(HELP_WAITING, items=_listing(session, prompts))]
    for type_id in sorted(types):
        lines.append(sms.say(HELP_MENU, menu=menu(_codes(session, type_id))))
    if len(prompts) > 1:
        lines.append(sms.say(HINT_MANY, ref=prompts[-1].ref))
    return "".join(lines)


def _done(session: Session, row: SmsMessage, outcome: SmsReplyOutcome) -> None:
    sms.move(row, "process", SmsStatus.PROCESSED)
    row.reply_outcome = outcome
    audit.record(session, None, "update", "sms", row.id,
                 {"changes": {"sms_status": [SmsStatus.RECEIVED, SmsStatus.PROCESSED],
                              "sms_reply_outcome": [None, outcome]}},
                 object_name=mask_phone(row.peer_number))


def _answer(session: Session, row: SmsMessage, manager: Manager, body: str,
            task: Task | None = None) -> SmsMessage:
    return sms.queue(session, manager, body, kind=SmsKind.ANSWER, reply_to_id=row.id,
                     task_id=task.id if task is not None else None)
