"""The dialing rules (khhf.services.dial_rules): each refusal, its Chinese
message saying when the customer may be called, and 10,000 simulated
attempts after which an independent checker finds no call that broke the
calling window, the per-customer limits, the campaign gap, the
do-not-call register or consent."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
from collections import defaultdict

import pytest
from sqlalchemy import select

from khhf import config, db
from khhf.calls.states import DESK_SIDE_OUTCOMES, CallOutcome, CallState
from khhf.i18n import translator
from khhf.models import Call, Campaign, Customer, DncChannel, DncEntry, Manager, Task, TaskKind
from khhf.services import ValidationError, dial_rules, dnc, workspace
from khhf.services.dialing import request_call
from simkit import factories

# 03:00 UTC is 11:00 in Asia/Shanghai
NOON = dt.datetime(2026, 11, 27, 3, 0)
ZH = translator("zh")


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, tmp_path):
    """A county, three managers, a revisit and a marketing type (requires
    consent), three campaigns; on SQLite and on PostgreSQL."""
    engine = (db.make_engine(f"sqlite:///{tmp_path / 'k.db'}") if request.param == "sqlite"
              else request.getfixturevalue("pg_database")("rules"))
    yield from _world(tmp_path, engine)


@pytest.fixture
def sqlite_world(tmp_path):
    yield from _world(tmp_path, db.make_engine(f"sqlite:///{tmp_path / 'k.db'}"))


def _world(tmp_path, engine):
    settings = config.Settings(home=tmp_path, database_url=str(engine.url))
    db.create_schema(engine)
    sessions = db.session_factory(engine)
    with db.unit_of_work(sessions) as s:
        county = factories.county(s, "demo", "示范县", unified="13900000000")
        for i in (1, 2, 3):
            factories.manager(s, county, f"m{i}", desk=f"800{i}")
        revisit = factories.task_type(s)
        market = factories.task_type(s, "market", "营销")
        market.kind, market.requires_consent = TaskKind.MARKETING, True
        campaigns = [Campaign(county_id=county.id, task_type_id=t.id, name=n,
                              starts_on=NOON.date(), status="active")
                     for t, n in ((revisit, "回访一"), (revisit, "回访二"), (market, "营销"))]
        s.add_all(campaigns)
        s.flush()
    yield dataclasses.make_dataclass("World", ["settings", "sessions", "engine"])(
        settings, sessions, engine)
    engine.dispose()


def _task(s, phone, campaign_no=0, manager_no=0, **fields):
    manager = s.scalars(select(Manager).order_by(Manager.id)).all()[manager_no]
    customer = s.scalar(select(Customer).where(Customer.phone == phone)) or \
        factories.customer(s, manager.county, phone, manager, name="客户")
    campaign = s.scalars(select(Campaign).order_by(Campaign.id)).all()[campaign_no]
    return factories.task(s, customer, manager, campaign.task_type, campaign_id=campaign.id,
                          **fields)


def _call(s, task, at, outcome=CallOutcome.NO_ANSWER):
    """A call row as the bridge leaves it once the call is over."""
    final = CallState.FAILED if outcome in DESK_SIDE_OUTCOMES else CallState.ENDED
    s.add(Call(direction="outbound", task_id=task.id, customer_id=task.customer_id,
               manager_id=task.manager_id, county_id=task.customer.county_id,
               customer_number=task.customer.phone, unified_number="13900000000",
               state=final, outcome=outcome, requested_at=at, end_at=at))
    s.flush()


def refusals(world, s, task, now):
    return {r.rule: ZH(r.message, r.params) for r in
            dial_rules.check(s, world.settings, task, now)}


def test_three_calls_in_five_minutes_refuse_a_fourth_saying_when(world):
    with db.unit_of_work(world.sessions) as s:
        task = _task(s, "13812345678")
        for minutes in (0, 1, 2):
            _call(s, task, NOON + dt.timedelta(minutes=minutes))
        # a desk-side failure never rang the customer: it does not count
        _call(s, task, NOON + dt.timedelta(minutes=3), CallOutcome.MANAGER_NO_ANSWER)
        said = refusals(world, s, task, NOON + dt.timedelta(minutes=3, seconds=30))
        assert list(said) == [dial_rules.Rule.PER_5MIN]
        # the oldest leaves the 5 minutes at 11:05 local
        assert said[dial_rules.Rule.PER_5MIN] == \
            "该客户最近5分钟内已被呼叫3次（最多3次）：2026-11-27 11:05之后可以再呼叫。"
        assert not refusals(world, s, task, NOON + dt.timedelta(minutes=5, seconds=1))


def test_five_calls_a_day_and_the_window_say_the_next_morning(world):
    with db.unit_of_work(world.sessions) as s:
        task = _task(s, "13812345678")
        for hours in range(5):   # 10:00 .. 14:00 local
            _call(s, task, NOON - dt.timedelta(hours=1) + dt.timedelta(hours=hours))
        said = refusals(world, s, task, NOON + dt.timedelta(hours=5))
        assert list(said) == [dial_rules.Rule.PER_DAY]
        # 24 h after the first: 10:00 the next day, inside the window
        assert "2026-11-28 10:00" in said[dial_rules.Rule.PER_DAY]
        evening = NOON + dt.timedelta(hours=10, minutes=30)   # 21:30 local
        said = refusals(world, s, task, evening)
        assert set(said) == {dial_rules.Rule.PER_DAY, dial_rules.Rule.WINDOW}
        assert "2026-11-28 10:00" in said[dial_rules.Rule.WINDOW]
        assert "08:00-21:00" in said[dial_rules.Rule.WINDOW]


def test_another_campaign_waits_two_hours_unless_the_customer_booked_the_call_back(world):
    with db.unit_of_work(world.sessions) as s:
        first = _task(s, "13812345678", campaign_no=0)
        second = _task(s, "13812345678", campaign_no=1, manager_no=1)
        _call(s, first, NOON)
        said = refusals(world, s, second, NOON + dt.timedelta(minutes=3))
        assert list(said) == [dial_rules.Rule.CAMPAIGN_GAP]
        assert "11:00" in said[dial_rules.Rule.CAMPAIGN_GAP] and \
            "2026-11-27 13:00" in said[dial_rules.Rule.CAMPAIGN_GAP]
        # the same campaign again is no gap matter
        assert not refusals(world, s, first, NOON + dt.timedelta(minutes=6))
        second.appointment_at = NOON + dt.timedelta(minutes=5)
        assert not refusals(world, s, second, NOON + dt.timedelta(minutes=6))


def test_do_not_call_register_and_consent(world):
    with db.unit_of_work(world.sessions) as s:
        revisit = _task(s, "13812345678")
        market = _task(s, "13812345678", campaign_no=2)
        assert list(refusals(world, s, market, NOON)) == [dial_rules.Rule.CONSENT]
        assert not refusals(world, s, revisit, NOON)
        market.customer.consent = True
        assert not refusals(world, s, market, NOON)
        dnc.add(s, None, "", "+86 138-1234-5678", channel=DncChannel.MANUAL, reason="投诉")
        assert revisit.customer.do_not_call
        said = refusals(world, s, revisit, NOON)
        assert list(said) == [dial_rules.Rule.DO_NOT_CALL] and "免打扰" in said["do_not_call"]
        assert dial_rules.callable_at(s, world.settings, revisit, NOON) is None


def test_request_call_asks_the_rules_and_progressive_dial_skips_and_comes_back(world):
    with db.unit_of_work(world.sessions) as s:
        first = _task(s, "13812345678")
        for minutes in (0, 1, 2):
            _call(s, first, NOON + dt.timedelta(minutes=minutes))
        later = _task(s, "13812345679")
        manager_id, first_id, later_id = first.manager_id, first.id, later.id
        user = s.get(Manager, manager_id).user
        with pytest.raises(ValidationError) as refused:
            request_call(s, world.settings, user, first_id, now=NOON + dt.timedelta(minutes=3))
        assert "at most 3" in str(refused.value)
        at = NOON + dt.timedelta(minutes=3)
        assert workspace.next_due(s, manager_id, at).id == first_id   # without the rules
        assert workspace.next_due(s, manager_id, at, settings=world.settings).id == later_id
        back = NOON + dt.timedelta(minutes=6)
        assert workspace.next_due(s, manager_id, back, settings=world.settings).id == first_id


def test_the_settings_are_checked_with_clear_errors(tmp_path):
    with pytest.raises(config.ConfigError, match="customer_calls_per_5min .* more than"):
        config.Settings(home=tmp_path, customer_calls_per_day=2, customer_calls_per_5min=3)
    with pytest.raises(config.ConfigError, match="customer_calls_per_day is 0"):
        config.Settings(home=tmp_path, customer_calls_per_day=0)
    with pytest.raises(config.ConfigError, match="campaign_gap_minutes is -1"):
        config.Settings(home=tmp_path, campaign_gap_minutes=-1)
    with pytest.raises(config.ConfigError, match="calling_window '9-8'"):
        config.Settings(home=tmp_path, calling_window="9-8")


# -- 10,000 simulated attempts, then an independent check of the calls table ---------

ATTEMPTS = int(os.environ.get("KHHF_SIM_ATTEMPTS", 10_000))
CUSTOMERS = 80


def test_ten_thousand_attempts_leave_no_call_that_breaks_a_rule(sqlite_world):
    world = sqlite_world
    rng = random.Random(20261207)
    settings = world.settings
    placed = refused = 0
    by_rule: dict[str, int] = defaultdict(int)
    with db.unit_of_work(world.sessions) as s:
        phones = [f"1381234{n:04d}" for n in range(CUSTOMERS)]
        tasks = [_task(s, phone, campaign_no=c, manager_no=rng.randrange(3))
                 for phone in phones for c in range(3)]
        for task in rng.sample(tasks, 30):   # call-backs some customers booked
            task.appointment_at = NOON + dt.timedelta(minutes=rng.randrange(3 * 24 * 60))
        for customer in rng.sample(list(s.scalars(select(Customer))), 30):
            customer.consent = True
        for phone in rng.sample(phones, 4):
            dnc.add(s, None, "", phone, channel=DncChannel.IMPORT, reason="12321",
                    now=NOON - dt.timedelta(days=1))
        late_dnc = rng.sample(phones, 4)
        outcomes = [CallOutcome.ANSWERED, CallOutcome.NO_ANSWER, CallOutcome.BUSY,
                    CallOutcome.UNREACHABLE, CallOutcome.MANAGER_NO_ANSWER]
        managers = list(s.scalars(select(Manager.id)))
        last = None
        now = NOON - dt.timedelta(hours=6)  # from 05:00 local, outside the window
        for n in range(ATTEMPTS):
            # bursts of redials and quiet spells, over about four days
            now += dt.timedelta(seconds=rng.choice((5, 20, 40, 90, 120)) if rng.random() < 0.7
                                else rng.expovariate(1 / 120))
            if n % 2500 == 1000 and late_dnc:   # numbers listed while calls go on
                dnc.add(s, None, "", late_dnc.pop(), channel=DncChannel.RESULT,
                        reason="9 不再联系", now=now)
            if last is not None and rng.random() < 0.15:
                task = last   # the manager redials at once
            else:
                task = rng.choice(tasks[:30]) if rng.random() < 0.5 else rng.choice(tasks)
            said = dial_rules.check(s, settings, task, now)
            if said:
                refused += 1
                for r in said:
                    by_rule[r.rule] += 1
                continue
            placed += 1
            last = task
            task.manager_id = rng.choice(managers)
            _call(s, task, now, rng.choice(outcomes))
    assert placed + refused == ATTEMPTS
    # the simulation exercised every rule, and placed a fair number of calls
    assert placed > 1000 and set(by_rule) == set(dial_rules.Rule), (placed, dict(by_rule))
    assert independent_violations(world) == []


def independent_violations(world) -> list[str]:
    """Every counted outbound call in the calls table that breaks a rule,
    by its own reading of the rules (no code shared with dial_rules): in
    the window (local time); at most N in any 24 h and M in any 5 min per
    number, itself included; not from a campaign other than the number's
    call of the last gap minutes unless its task's call-back was due; not
    to a number listed before it; not for a consent type without consent."""
    st = world.settings
    start, end = (dt.time.fromisoformat(p) for p in st.calling_window.split("-"))
    gap = dt.timedelta(minutes=st.campaign_gap_minutes)
    bad: list[str] = []
    with world.sessions() as s:
        listed = {e.number: e.created_at for e in s.scalars(select(DncEntry))}
        rows = s.execute(
            select(Call, Task, Customer).join(Task, Task.id == Call.task_id)
            .join(Customer, Customer.id == Task.customer_id)
            .where(Call.direction == "outbound").order_by(Call.requested_at)).all()
        counted = [(c, t, cu) for c, t, cu in rows if c.outcome not in DESK_SIDE_OUTCOMES]
        history: dict[str, list[tuple[dt.datetime, tuple]]] = defaultdict(list)
        for call, task, customer in counted:
            at, number = call.requested_at, call.customer_number
            key = (task.campaign_id, None) if task.campaign_id else (None, task.task_type_id)
            local = at.replace(tzinfo=dt.UTC).astimezone(st.local(at).tzinfo).time()
            if not start <= local < end:
                bad.append(f"call {call.id} at {local} outside the window")
            before = history[number]
            if sum(1 for t, _ in before if t > at - dt.timedelta(minutes=5)) + 1 > \
                    st.customer_calls_per_5min:
                bad.append(f"call {call.id}: over the 5-minute limit")
            if sum(1 for t, _ in before if t > at - dt.timedelta(hours=24)) + 1 > \
                    st.customer_calls_per_day:
                bad.append(f"call {call.id}: over the daily limit")
            callback = task.appointment_at is not None and \
                task.appointment_at <= at + dt.timedelta(minutes=10)
            if not callback and any(k != key and t > at - gap for t, k in before):
                bad.append(f"call {call.id}: inside another campaign's gap")
            if number in listed and listed[number] <= at:
                bad.append(f"call {call.id}: to a do-not-call number")
            if task.task_type.requires_consent and not customer.consent:
                bad.append(f"call {call.id}: no consent")
            before.append((at, key))
    return bad


def test_a_window_to_24_00_is_open_in_the_days_last_minute():
    """'00:00-23:59' shut 23:59-24:00 local (a CI run at 23:59 Beijing time
    was refused): 24:00 ends a window at the day's end."""
    settings = config.Settings(timezone="Asia/Shanghai", calling_window="00:00-24:00")
    last_minute = dt.datetime(2026, 12, 7, 15, 59, 30)   # 23:59:30 in Beijing
    assert dial_rules.in_calling_window(settings, last_minute)
    assert dial_rules.in_calling_window(settings, dt.datetime(2026, 12, 7, 16, 0))   # 00:00
    shut = dataclasses.replace(settings, calling_window="00:00-23:59")
    assert not dial_rules.in_calling_window(shut, last_minute)
    with pytest.raises(ValueError, match="24:00 may end it"):
        config.parse_window("08:00-25:00")
    with pytest.raises(ValueError, match="start before it ends"):
        config.parse_window("24:00-08:00")
