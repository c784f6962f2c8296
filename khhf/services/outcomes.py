"""Automatic outcomes (自动结果): the system files the result of a call that
did not reach the customer, by the task type's rule, the moment the call
ends.

The AMI bridge finalises call rows (khhf.calls.store); when a row becomes
final with an outcome the task type has a rule for (UNREACHED_OUTCOMES:
no answer, busy, unreachable, empty number, rejected), `file_automatic`
files the rule's result code in the same unit of work, channel `system`,
audited with the system as the actor. The manager is not asked.

    a "try again" code   the task is due again `retry_minutes` after the
                         call ended (pending, with that time), unless this
                         outcome was filed `max_retries` times before or
                         the task's attempts are used up: then the rule's
                         close code (final) is filed instead
    a final code         the task is closed (空号)

Exactly once per call: the fold recomputes a row from every stored event
on each batch, a reconcile and a restarted bridge replay them, so the
filing checks for a result already filed about the call (by anyone) and a
partial UNIQUE index (ux_feedback_system_call) holds it in the database.
A result the manager filed during the call wins; the manager may also
correct a system result afterwards (khhf.services.results).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from khhf import audit
from khhf.calls.states import CallState
from khhf.models import Call, Feedback, FeedbackChannel, OutcomeRule, Task, TaskStatus, utcnow
from khhf.phones import mask_phone

from . import tasks


def rule_for(session: Session, task: Task, call: Call) -> OutcomeRule | None:
    """The task type's rule for how `call` ended, if it has one."""
    if call.state != CallState.ENDED or call.outcome is None:
        return None
    return session.scalar(select(OutcomeRule).where(
        OutcomeRule.task_type_id == task.task_type_id, OutcomeRule.outcome == call.outcome))


def filed_by_system(session: Session, call_id: int) -> bool:
    """Whether the system filed the result of call `call_id` (the workspace
    then asks the manager nothing and progressive dial moves on)."""
    return bool(session.scalar(select(exists().where(
        Feedback.call_id == call_id, Feedback.channel == FeedbackChannel.SYSTEM))))


def file_automatic(session: Session, task: Task, call: Call,
                   now: dt.datetime | None = None) -> Feedback | None:
    """File the automatic outcome of `call` (the task's latest call, just
    final) if its task type has a rule for it; None when there is nothing
    to file (no rule, a result already filed about the call, the task not
    waiting for one)."""
    if task.status != TaskStatus.NOT_REACHED or call.manager_id is None:
        return None  # closed, moved on, or a result was filed during the call
    rule = rule_for(session, task, call)
    if rule is None or session.scalar(select(exists().where(Feedback.call_id == call.id))):
        return None
    now = now or utcnow()
    code, retry_at = rule.result_code, None
    if not code.is_final:
        before = session.scalar(
            select(func.count()).select_from(Feedback).join(Call, Call.id == Feedback.call_id)
            .where(Feedback.task_id == task.id, Feedback.channel == FeedbackChannel.SYSTEM,
                   Call.outcome == rule.outcome)) or 0
        if before >= rule.max_retries or task.attempts >= task.max_attempts \
                or rule.close_code is None:
            code = rule.close_code or code
        else:
            retry_at = (call.end_at or now) + dt.timedelta(minutes=rule.retry_minutes)
    feedback = Feedback(task_id=task.id, call_id=call.id, manager_id=call.manager_id,
                        result_code_id=code.id, channel=FeedbackChannel.SYSTEM, created_at=now)
    session.add(feedback)
    tasks.file_result(task, code, retry_at, now)
    feedback.appointment_at = task.appointment_at
    session.flush()
    fields: dict[str, object] = {"result": f"{code.code} {code.label}", "outcome": call.outcome}
    if retry_at is not None:
        fields["retry_minutes"] = rule.retry_minutes
    audit.record(session, None, "create", "feedback", feedback.id,
                 {"fields": fields, "task": task.id, "call": call.id,
                  "channel": FeedbackChannel.SYSTEM, "task_status": task.status},
                 object_name=" ".join(filter(None, (task.customer.name,
                                                    mask_phone(task.customer.phone)))))
    return feedback
