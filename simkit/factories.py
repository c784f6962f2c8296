"""Test and benchmark data, one way: small factories that add rows to a
session and flush (so each has its id). Tests, bench/ and the harnesses
use these; the demo seed (simkit.seed) goes through the real services, as
an administrator would.

    county = factories.county(s, "demo", unified="13900000000")
    m = factories.manager(s, county, "m8001", desk="8001", mobile="13700008001")
    c = factories.customer(s, county, "13812345678", manager=m)
    t = factories.task(s, c, m)
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from khhf.models import (
    County,
    Customer,
    CustomerAssignment,
    Manager,
    ResultCode,
    Task,
    TaskStatus,
    TaskType,
    UnifiedNumber,
    User,
)
from khhf.services import campaigns, tasks

# a return visit's result codes: (code, label, success, final)
REVISIT_CODES = (("1", "回访成功", True, True), ("4", "客户拒绝", False, True),
                 ("5", "无人接听", False, False), ("6", "预约再拨", False, False))


def county(s: Session, code: str = "demo", name: str | None = None, *,
           unified: str | None = None, more: tuple[str, ...] = (),
           strategy: str = "ringall") -> County:
    """A county; `unified` its primary number, `more` the rest of its pool
    (active, no caps)."""
    row = County(code=code, name=name or code, fallback_strategy=strategy)
    if unified:
        row.unified_numbers = [UnifiedNumber(number=unified, is_primary=True),
                               *(UnifiedNumber(number=n) for n in more)]
    s.add(row)
    s.flush()
    return row


def user(s: Session, username: str, role: str, county: County | None = None, *,
         display_name: str | None = None, password_hash: str = "-") -> User:
    row = User(username=username, password_hash=password_hash,
               display_name=display_name or username, role=role,
               county_id=county.id if county is not None else None)
    s.add(row)
    s.flush()
    return row


def manager(s: Session, county: County, username: str, *, employee_no: str | None = None,
            desk: str | None = None, mobile: str | None = None, on_duty: bool = False,
            display_name: str | None = None) -> Manager:
    account = user(s, username, "manager", county, display_name=display_name)
    row = Manager(user_id=account.id, county_id=county.id, employee_no=employee_no or username,
                  desk_extension=desk, mobile=mobile, status="active", on_duty=on_duty)
    s.add(row)
    s.flush()
    return row


def customer(s: Session, county: County, phone: str, manager: Manager | None = None, *,
             name: str = "") -> Customer:
    """A customer; with a manager, also the open assignment the hand-over reads."""
    row = Customer(phone=phone, name=name, county_id=county.id,
                   manager_id=manager.id if manager is not None else None)
    s.add(row)
    s.flush()
    if manager is not None:
        s.add(CustomerAssignment(customer_id=row.id, manager_id=manager.id))
        s.flush()
    return row


def task_type(s: Session, code: str = "revisit", name: str = "回访", *,
              codes=REVISIT_CODES, max_attempts: int = 3) -> TaskType:
    """The task type `code`, made (with its result codes) if it is not there."""
    row = s.scalar(select(TaskType).where(TaskType.code == code))
    if row is None:
        row = TaskType(code=code, name=name, max_attempts=max_attempts)
        s.add(row)
        s.flush()
        for value, label, success, final in codes:
            s.add(ResultCode(task_type_id=row.id, code=value, label=label,
                             is_success=success, is_final=final))
        s.flush()
    return row


# a type an administrator makes (tests/test_web_browser_campaigns.py makes it in
# the browser): five codes, one of two digits, a booking code other than 6
CARE_CODES = (("1", "关怀成功", True, True), ("2", "客户拒绝", False, True),
              ("3", "无人接听", False, False), ("7", "预约再拨", False, False),
              ("12", "号码有误", False, True))


def custom_task_type(s: Session) -> TaskType:
    """关怀回访 (code care) with CARE_CODES, made as an administrator makes a
    type, through the service behind the web form and `khhf types import`."""
    return s.scalar(select(TaskType).where(TaskType.code == "care")) or \
        campaigns.save_task_type(s, None, "", None, code="care", name="关怀回访",
                                 max_attempts=3, script="您好，我是客户经理{经理}，来电关怀。",
                                 codes=[{"code": c, "label": label, "is_success": ok,
                                         "is_final": final}
                                        for c, label, ok, final in CARE_CODES])


def task(s: Session, customer_: Customer, manager_: Manager | None,
         type_: TaskType | None = None, *, status: str = TaskStatus.PENDING, **fields) -> Task:
    """A task, brought to `status` through the state machine as it would get there."""
    type_ = type_ or task_type(s)
    row = tasks.new_task(s, task_type_id=type_.id, customer_id=customer_.id,
                         manager_id=manager_.id if manager_ is not None else None,
                         max_attempts=type_.max_attempts, **fields)
    codes = {c.is_final: c for c in s.scalars(
        select(ResultCode).where(ResultCode.task_type_id == type_.id))}
    if status == TaskStatus.DIALING:
        tasks.dial(row)
    elif status == TaskStatus.NOT_REACHED:
        tasks.file_result(row, codes[False])
    elif status == TaskStatus.DONE:
        tasks.file_result(row, codes[True])
    elif status == TaskStatus.CANCELLED:
        tasks.cancel(row)
    elif status != TaskStatus.PENDING:
        raise ValueError(f"the factory cannot make a {status!r} task")
    s.flush()
    return row


def recorded_call(s: Session, recordings_dir, manager_: Manager, customer_: Customer, *,
                  seconds: float = 2.0, direction: str = "outbound", task_: Task | None = None,
                  requested_at=None, path: str | None = None, write_file: bool = True):
    """An answered, ended call with a recording: a real PCM WAV (8 kHz mono,
    a tone, as MixMonitor writes them) of `seconds` under `recordings_dir`
    at `path` (default 'YYYY/MM/DD/<call id>.wav'), its stats on the row."""
    import datetime as dt
    import hashlib
    import math
    import struct
    import wave
    from pathlib import Path

    from khhf.calls.states import CallOutcome, CallState, RecordingStatus
    from khhf.models import Call, utcnow
    at = requested_at or utcnow()
    call = Call(direction=direction, task_id=task_.id if task_ else None,
                customer_id=customer_.id, manager_id=manager_.id, county_id=manager_.county_id,
                customer_number=customer_.phone, state=CallState.ENDED,
                outcome=CallOutcome.ANSWERED,
                requested_at=at, answer_at=at + dt.timedelta(seconds=5),
                end_at=at + dt.timedelta(seconds=5 + seconds), talk_seconds=round(seconds))
    s.add(call)
    s.flush()
    call.recording_path = path or f"{at:%Y/%m/%d}/{call.id}.wav"
    if write_file:
        target = Path(recordings_dir) / call.recording_path
        target.parent.mkdir(parents=True, exist_ok=True)
        frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 8000)))
                          for n in range(int(8000 * seconds)))
        with wave.open(str(target), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(frames)
        data = target.read_bytes()
        call.recording_seconds, call.recording_bytes = seconds, len(data)
        call.recording_sha256 = hashlib.sha256(data).hexdigest()
        call.recording_status = RecordingStatus.COMPLETE
    s.flush()
    return call


def automatic_task_type(s: Session, code: str = "auto", *, retry_minutes: int = 30,
                        max_retries: int = 2, max_attempts: int = 5) -> TaskType:
    """A type with the standard codes and automatic outcomes (自动结果), every
    "try again" rule with `retry_minutes` and `max_retries` (tests want a
    short delay), made through the service behind the web form."""
    row = s.scalar(select(TaskType).where(TaskType.code == code))
    if row is not None:
        return row
    spec = campaigns.STANDARD_TYPES[0]
    return campaigns.save_task_type(
        s, None, "", None, code=code, name=f"自动{code}", max_attempts=max_attempts,
        codes=[{"code": c, "label": label, "is_success": ok, "is_final": final}
               for c, label, ok, final in spec["codes"]],
        rules=[{"outcome": o, "code": c, "retry_minutes": retry_minutes if z else 0,
                "max_retries": max_retries if z else 0, "close_code": z}
               for o, c, _minutes, _retries, z in campaigns.STANDARD_RULES])
