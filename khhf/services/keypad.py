"""The result on the phone's keypad (按键反馈): after the customer hangs up
first, the manager's leg stays on a short prompt that asks for the call's
result as the digits of one of the task type's result codes (the same
digits as the SMS menu and the web form), reads the digits back, and files
the result once the manager confirms.

`step` is the whole conversation, one turn at a time: given the call,
where the conversation is (`state`, a string the dialplan keeps in a
channel variable and hands back) and the digits just pressed, it says what
to play next and whether to read digits. So the AGI route stays stateless
and the dialplan only plays. Every turn reads the task afresh: a result
filed on the web meanwhile is noticed and said ("已登记"), and
results.file_result checks everything again before it writes.

Labels are not spoken: result codes are data each site defines, and a
prompt per label would have to be synthesised whenever one changes. The
digits are read back; the codes' meaning is on the SMS menu and the web
form, and the standard types share them (khhf.services.campaigns).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, joinedload

from khhf.config import Settings
from khhf.models import Call, Feedback, Manager, ResultCode, Task, TaskType, User

from . import ValidationError, results, tasks

READ, SAY = "read", "say"
# how many times the manager is asked (again after no key or a wrong one)
MAX_TRIES = 3
CONFIRM, CHANGE = "1", "2"
_DIGITS = re.compile(r"[0-9]{1,2}")
_STATE = re.compile(r"(?:ask:(\d)|confirm:(\d{1,18}):(\d))")


@dataclass(frozen=True)
class Step:
    """What the dialplan does next: play `prompts` (sound names under the
    prompts' directory), then read up to `max_digits` digits (READ) or hang
    up (SAY). `state` comes back with the next turn."""
    action: str
    prompts: tuple[str, ...]
    state: str = ""
    max_digits: int = 1


def _say(*prompts: str) -> Step:
    return Step(SAY, prompts)


def _ask(codes: list[ResultCode], tries: int, *before: str) -> Step:
    return Step(READ, (*before, "keypad-ask"), f"ask:{tries}",
                max(len(c.code) for c in codes))


def _confirm(code: ResultCode, tries: int) -> Step:
    return Step(READ, ("keypad-you-chose", *(f"digits/{d}" for d in code.code),
                       "keypad-confirm"), f"confirm:{code.id}:{tries}")


def _give_up(digits: str) -> Step:
    # nothing filed: the SMS prompt (or the web) asks later
    return _say("keypad-not-filed" if digits else "keypad-no-input")


def already_filed(session: Session, task: Task, call_id: int) -> bool:
    """True when the task is closed or a result was filed for this call (on
    any channel): there is nothing left to ask."""
    return task.status not in tasks.OPEN or bool(session.scalar(
        select(exists().where(Feedback.call_id == call_id))))


def step(session: Session, call_id: int | None, state: str = "", digits: str = "", *,
         settings: Settings | None = None, now: dt.datetime | None = None) -> Step:
    """The next turn of the keypad conversation on call `call_id`.

    `state` is "" at the start, else what the previous Step said; `digits`
    what the manager pressed since ("" when nothing before the timeout).
    Files the result (channel "keypad") when the manager confirms.
    """
    # the call, its task, the task's type and result codes, and whether a
    # result was filed for the call: one query (a turn is one AGI request)
    row = session.execute(
        select(Call, Task, exists().where(Feedback.call_id == Call.id))
        .join(Task, Task.id == Call.task_id)
        .options(joinedload(Task.task_type).selectinload(TaskType.result_codes))
        .where(Call.id == call_id)).first() if call_id else None
    call, task, filed = row if row is not None else (None, None, False)
    if call is None or task is None or call.direction != "outbound" or call.manager_id is None:
        return _say("keypad-unavailable")
    if task.status not in tasks.OPEN or filed:  # already_filed, as read above
        return _say("keypad-already-filed")
    codes = sorted(task.task_type.result_codes, key=lambda c: (len(c.code), c.code))
    if not codes:
        return _say("keypad-refused")
    m = _STATE.fullmatch(state or "")
    if m is None:  # the start (or a state we never wrote): ask
        return _ask(codes, 1)
    pressed = digits if _DIGITS.fullmatch(digits or "") else None
    if m.group(1) is not None:  # asked for a code
        tries = int(m.group(1))
        code = next((c for c in codes if c.code == pressed), None)
        if code is not None:
            return _confirm(code, 1)
        if tries >= MAX_TRIES:
            return _give_up(digits)
        return _ask(codes, tries + 1, *(("keypad-invalid",) if digits else ()))
    code, tries = session.get(ResultCode, int(m.group(2))), int(m.group(3))
    if code is None or code.task_type_id != task.task_type_id:
        return _ask(codes, 1)
    if pressed == CHANGE:
        return _ask(codes, 1)
    if pressed != CONFIRM:
        return _give_up(digits) if tries >= MAX_TRIES else _confirm(code, tries + 1)
    user = session.scalar(select(User).join(Manager, Manager.user_id == User.id)
                          .where(Manager.id == call.manager_id))
    if user is None:  # managers.user_id is NOT NULL: only a damaged database
        return _say("keypad-refused")
    try:
        results.file_result(session, user, task.id, code.id, channel="keypad",
                            call_id=call.id, settings=settings, now=now)
    except ValidationError:
        # file_result wrote nothing; a task filed or closed meanwhile says so
        if already_filed(session, task, call.id):
            return _say("keypad-already-filed")
        return _say("keypad-refused")
    return _say("keypad-filed")
