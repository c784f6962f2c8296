"""Generated history for the reports: tasks, outbound calls, results (with
call-backs), hotline calls (answered, missed, called back), spread over
some days, written as rows (the way the services leave them), with the
awkward cases on purpose: rows at local midnight, results before the call
ended, calls without a task or manager, a customer called back late.

Used by tests/test_reports.py and tests/test_web_reports*.py; the
benchmark (bench/reports.py) generates its millions in SQL instead.
"""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import select
from sqlalchemy.orm import Session

from khhf.calls.states import CallOutcome, answered_by_colleague
from khhf.models import Call, Campaign, County, Customer, Feedback, Manager, ResultCode, Task
from simkit import factories

CHANNELS = ("web", "sms", "keypad")
INBOUND_OUTCOMES = (CallOutcome.DESK, CallOutcome.MOBILE, answered_by_colleague("8001"),
                    CallOutcome.MISSED, CallOutcome.MISSED, CallOutcome.LOST)
OUTBOUND_FAILS = (CallOutcome.BUSY, CallOutcome.NO_ANSWER, CallOutcome.EMPTY_NUMBER,
                  CallOutcome.MANAGER_NO_ANSWER)


def _moment(rng: random.Random, start: dt.datetime, days: int) -> dt.datetime:
    if rng.random() < 0.05:  # exactly on a local midnight (16:00 UTC in Beijing)
        return start + dt.timedelta(days=rng.randrange(days))
    at = start + dt.timedelta(seconds=rng.randrange(days * 86400))
    return at.replace(microsecond=rng.choice((0, 0, 500_000)))


def generate(s: Session, *, start: dt.datetime, days: int = 10, seed: int = 7,
             counties: list[County] | None = None, tasks_per_manager: int = 25) -> dict:
    """Write a generated history from `start` (naive UTC) over `days` days
    for the managers of `counties` (default: two new counties with three
    managers each); returns what it made."""
    rng = random.Random(seed)
    if counties is None:
        counties = []
        for n in (1, 2):
            county = factories.county(s, f"rc{n}", f"报表县{n}")
            for k in (1, 2, 3):
                factories.manager(s, county, f"rm{n}{k}", desk=f"9{n}{k}0")
            counties.append(county)
    revisit = factories.task_type(s)
    survey = factories.task_type(s, "survey", "调查", codes=(
        ("1", "调查成功", True, True), ("2", "拒绝调查", False, True),
        ("6", "预约再拨", False, False)))
    codes = {t.id: list(s.scalars(select(ResultCode).where(ResultCode.task_type_id == t.id)))
             for t in (revisit, survey)}
    made = dict(tasks=0, calls=0, feedback=0)
    phone = 13500000000 + rng.randrange(100_000) * 1000
    for county in counties:
        managers = list(s.scalars(select(Manager).where(Manager.county_id == county.id)))
        campaigns = [Campaign(county_id=county.id, task_type_id=t.id, name=f"{county.name}{t.name}",
                              status="closed", starts_on=start.date()) for t in (revisit, survey)]
        s.add_all(campaigns)
        s.flush()
        for manager in managers + [None]:
            for _ in range(tasks_per_manager if manager else 3):
                phone += 1
                customer = Customer(phone=str(phone), name="", county_id=county.id,
                                    manager_id=manager.id if manager else None)
                s.add(customer)
                s.flush()
                campaign = rng.choice(campaigns + [None])
                type_id = campaign.task_type_id if campaign else revisit.id
                created = _moment(rng, start, days)
                task = Task(campaign_id=campaign.id if campaign else None, task_type_id=type_id,
                            customer_id=customer.id, manager_id=manager.id if manager else None,
                            created_at=created, updated_at=created)
                s.add(task)
                s.flush()
                made["tasks"] += 1
                if manager is None:
                    continue
                _calls_and_results(s, rng, task, manager, county, codes[type_id], start, days,
                                   made)
                if rng.random() < 0.3:
                    _hotline(s, rng, customer, manager, county, start, days, made)
        # a hotline call from an unknown number, nobody's customer
        s.add(Call(direction="inbound", county_id=county.id, customer_number="",
                   requested_at=_moment(rng, start, days), state="ended", outcome="missed",
                   end_at=start + dt.timedelta(days=days)))
        made["calls"] += 1
    s.flush()
    return dict(made, counties=counties, task_types=(revisit, survey))


def _calls_and_results(s, rng, task, manager, county, codes, start, days, made):
    at = task.created_at
    for _attempt in range(rng.randrange(0, 4)):
        at = at + dt.timedelta(minutes=rng.randrange(1, 3 * 24 * 60))
        answered = rng.random() < 0.6
        talk = rng.randrange(5, 400) if answered else None
        end = at + dt.timedelta(seconds=20 + (talk or 0)) if rng.random() < 0.95 else None
        call = Call(direction="outbound", task_id=task.id, customer_id=task.customer_id,
                    manager_id=manager.id, county_id=county.id,
                    customer_number=task.customer.phone, requested_at=at,
                    answer_at=at + dt.timedelta(seconds=20) if answered else None,
                    end_at=end, talk_seconds=talk,
                    state="ended" if end else ("connected" if answered else "customer_ringing"),
                    outcome=("answered" if answered else rng.choice(OUTBOUND_FAILS))
                    if end else None)
        s.add(call)
        s.flush()
        made["calls"] += 1
        if answered and rng.random() < 0.75:
            for _n in range(rng.choice((1, 1, 1, 2))):
                code = rng.choice(codes)
                filed = (end or at) + dt.timedelta(seconds=rng.choice(
                    (-5, 30, 600, 3599, 3600, 3601, 7200, 90000)))
                appointment = None
                if not code.is_final and rng.random() < 0.6:
                    appointment = filed + dt.timedelta(hours=rng.choice((2, 20, 30)))
                s.add(Feedback(task_id=task.id, call_id=call.id, manager_id=manager.id,
                               result_code_id=code.id, channel=rng.choice(CHANNELS),
                               created_at=filed, appointment_at=appointment))
                made["feedback"] += 1
                if appointment is not None and rng.random() < 0.6:
                    # the call-back: on time, or late
                    cb_at = appointment + dt.timedelta(minutes=rng.choice((-60, 10, 30, 45)))
                    s.add(Call(direction="outbound", task_id=task.id,
                               customer_id=task.customer_id, manager_id=manager.id,
                               county_id=county.id, customer_number=task.customer.phone,
                               requested_at=cb_at, state="ended", outcome="no_answer",
                               end_at=cb_at + dt.timedelta(seconds=30)))
                    made["calls"] += 1
        s.flush()


def _hotline(s, rng, customer, manager, county, start, days, made):
    at = _moment(rng, start, days)
    outcome = rng.choice(INBOUND_OUTCOMES)
    end = at + dt.timedelta(seconds=rng.randrange(10, 120))
    s.add(Call(direction="inbound", customer_id=customer.id,
               manager_id=manager.id if rng.random() < 0.9 else None, county_id=county.id,
               customer_number=customer.phone, requested_at=at, state="ended",
               outcome=outcome, end_at=end,
               answer_at=at if outcome not in ("missed", "lost") else None))
    made["calls"] += 1
    if outcome == "missed" and rng.random() < 0.8:
        back = end + dt.timedelta(minutes=rng.choice((-1, 30, 60, 61, 200, 240, 1000, 1440,
                                                      1441, 3000)))
        s.add(Call(direction="outbound", customer_id=customer.id, manager_id=manager.id,
                   county_id=county.id, customer_number=customer.phone, requested_at=back,
                   state="ended", outcome="no_answer", end_at=back + dt.timedelta(seconds=30)))
        made["calls"] += 1
