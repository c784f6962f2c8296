"""Result filing (结果反馈): the one way a manager's result reaches a task.

The web form calls `file_result`; the SMS reply and phone-keypad channels
call it too. (The system files unreached calls itself: khhf.services.
outcomes; a manager's result after one corrects it.) It validates
everything first (the task is the user's and open, or closed by the
system's result; the code belongs to the task's type, a call-back time is
in the future and inside the calling window), then writes a `feedback`
row, moves the task through the state machine
(khhf.services.tasks.file_result) and records an audit entry. The caller
commits.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from khhf import audit
from khhf.config import Settings
from khhf.models import (
    Call,
    DncChannel,
    Feedback,
    FeedbackChannel,
    Manager,
    ResultCode,
    Task,
    User,
    utcnow,
)
from khhf.phones import mask_phone

from . import N_, Problems, dial_rules, dnc, tasks, validated, workspace

# the channels a manager files through (the system files its own: outcomes)
CHANNELS = (FeedbackChannel.WEB, FeedbackChannel.SMS, FeedbackChannel.KEYPAD)
MAX_NOTE = 1000
# how far ahead a call-back may be booked
MAX_APPOINTMENT_AHEAD = dt.timedelta(days=90)


def file_result(session: Session, user: User, task_id: int, result_code_id: int, note: str = "",
                appointment_at: dt.datetime | None = None, channel: str = "web",
                call_id: int | None = None, *, settings: Settings | None = None, ip: str = "",
                now: dt.datetime | None = None, while_live: bool = True) -> Feedback:
    """File result `result_code_id` for task `task_id` as `user`.

    `appointment_at` (naive UTC) books a call-back: the task stays open,
    pending, with that time. `settings` gives the calling window (default:
    the built-in one). `call_id` names the call the result is about
    (default: the task's latest outbound call). `while_live=False` refuses
    a result while one of the task's calls is still on (the web form, until
    the manager confirms: a result chosen mid-call is often a guess; SMS
    and keypad results come when the call is over). Raises ValidationError,
    with nothing written, when the result is refused.
    """
    now = now or utcnow()
    settings = settings or Settings()
    problems = Problems()
    manager = session.scalar(select(Manager).where(Manager.user_id == user.id))
    task = session.get(Task, task_id)
    if manager is None or task is None or task.manager_id != manager.id:
        # the same answer for "no such task" and "not yours": no probing
        problems.refuse("task", N_("This task is not yours: only the task's own manager can "
                                   "file its result."))
    if channel not in CHANNELS:
        raise ValueError(f"unknown feedback channel {channel!r}; one of {CHANNELS}")
    # a result the system filed may be corrected, even one that closed the task
    system = system_result(session, task) if task.status != tasks.CANCELLED else None
    if task.status not in tasks.OPEN and system is None:
        problems.add("task", N_("The task is already closed: its result was filed before."))
    code = session.get(ResultCode, result_code_id) if result_code_id else None
    if code is None or code.task_type_id != task.task_type_id:
        problems.add("result_code", N_("Choose one of the results of this task's type."))
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        problems.add("note", N_("The note is too long: at most %(max)s characters."),
                     max=MAX_NOTE)
    if appointment_at is not None:
        _check_appointment(problems, settings, appointment_at, now)
        if code is not None and code.is_final:
            problems.add("appointment_at", N_("“%(label)s” closes the task: choose a result "
                                              "that calls again to book a call-back."),
                         label=code.label)
    if call_id is not None:
        call = session.get(Call, call_id)
        if call is None or call.task_id != task.id:
            problems.add("call", N_("That call is not one of this task's calls."))
    if not while_live and workspace.live_call(session, task.id) is not None:
        problems.add("while_live", N_("The call is still on: save the result when it has "
                                      "ended, or tick “Save while the call is on” to save "
                                      "it now."))
    problems.raise_if_any()
    code = validated(code, "the result code")

    if call_id is None:
        call_id = session.scalar(select(func.max(Call.id)).where(
            Call.task_id == task.id, Call.direction == "outbound"))
    feedback = Feedback(task_id=task.id, call_id=call_id, manager_id=manager.id,
                        result_code_id=code.id, channel=channel, note=note, created_at=now)
    session.add(feedback)
    tasks.file_result(task, code, appointment_at, now, correcting=system is not None)
    # the call-back actually booked (none when the task closed instead)
    feedback.appointment_at = task.appointment_at
    session.flush()
    if code.stops_calls:
        # 不再联系: the number goes on the do-not-call register, the manager
        # and the result saying who and why
        dnc.add(session, user, ip, task.customer.phone, channel=DncChannel.RESULT,
                source=task.task_type.name, reason=f"{code.code} {code.label}", now=now,
                exists_ok=True)
    fields = {"result": f"{code.code} {code.label}", "note": note}
    if task.appointment_at is not None:
        fields["appointment_at"] = f"{settings.local(task.appointment_at):%Y-%m-%d %H:%M}"
    detail = {"fields": fields, "task": task.id, "channel": channel,
              "task_status": task.status}
    if system is not None:
        wrong = session.get(ResultCode, system.result_code_id)
        detail["corrects"] = f"{wrong.code} {wrong.label}" if wrong else str(system.id)
    audit.record(session, user, "create", "feedback", feedback.id, detail, ip,
                 object_name=" ".join(filter(None, (task.customer.name,
                                                    mask_phone(task.customer.phone)))))
    return feedback


def system_result(session: Session, task: Task) -> Feedback | None:
    """The result the system filed for the task's latest call, while it is
    the task's latest result: the one a manager's result corrects."""
    latest = session.scalar(select(Feedback).where(Feedback.task_id == task.id)
                            .order_by(Feedback.id.desc()).limit(1))
    if latest is None or latest.channel != FeedbackChannel.SYSTEM:
        return None
    newest_call = session.scalar(select(func.max(Call.id)).where(
        Call.task_id == task.id, Call.direction == "outbound"))
    return latest if latest.call_id == newest_call else None


def _check_appointment(problems: Problems, settings: Settings, at: dt.datetime,
                       now: dt.datetime) -> None:
    if at <= now:
        problems.add("appointment_at", N_("The call-back time has passed: choose a time in "
                                          "the future."))
    elif at > now + MAX_APPOINTMENT_AHEAD:
        problems.add("appointment_at", N_("The call-back time is too far ahead: at most "
                                          "%(days)s days."), days=MAX_APPOINTMENT_AHEAD.days)
    elif not dial_rules.in_calling_window(settings, at):
        problems.add("appointment_at", N_("Calls are only placed between %(window)s "
                                          "(%(zone)s): choose a call-back time inside it."),
                     window=settings.calling_window, zone=settings.timezone)


