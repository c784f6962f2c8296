"""The unified-number pool (khhf.services.number_pool): which number a call
shows, the caps, the admin's changes and the per-number report, on the
real database engines (the end-to-end proof through Asterisk is in
test_pbx_number_pool.py)."""

import dataclasses
import datetime as dt
import random
import threading

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from khhf import config, db
from khhf.calls.states import CallState
from khhf.models import AuditLog, Call, County, Customer, NumberState, UnifiedNumber, User
from khhf.services import Problems, ValidationError, number_pool
from khhf.services.dialing import request_call
from simkit import factories
from simkit.bridge_env import POOL, BridgeEnv, NoPbx

FIRST, SECOND = POOL
# 03:00 UTC is 11:00 in Asia/Shanghai: inside the default calling window
NOON = dt.datetime(2026, 11, 27, 3, 0)


@pytest.fixture
def env(tmp_path):
    env = BridgeEnv(NoPbx(tmp_path), tmp_path)  # database and seed only
    env.settings = dataclasses.replace(env.settings, calling_window="08:00-21:00")
    return env


def dial(env, phone, ext="8001", now=NOON, end=True) -> str:
    """Click-to-dial `phone` as the manager at `ext`; the number shown. With
    `end` the call then ends unanswered, after ringing the customer."""
    task_id = env.task_for(ext, phone)
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == f"m{ext}"))
        call = request_call(s, env.settings, user, task_id, now=now)
        if end:
            call.state, call.end_at, call.outcome = CallState.ENDED, now, "no_answer"
        return call.unified_number


def set_number(env, number, **values):
    with db.unit_of_work(env.sessions) as s:
        row = s.scalar(select(UnifiedNumber).where(UnifiedNumber.number == number))
        for k, v in values.items():
            setattr(row, k, v)


def refusal(env, phone, now=NOON) -> str:
    with pytest.raises(ValidationError) as err:
        dial(env, phone, now=now)
    return str(err.value)


def test_numbers_alternate_by_use_and_a_customer_keeps_the_one_they_saw(env):
    minute = dt.timedelta(minutes=1)
    # a tie: the primary (published) number first
    assert dial(env, "13800000001") == FIRST
    # the least used today
    assert dial(env, "13800000002", now=NOON + minute) == SECOND
    # the customer who saw the first sees it again, though it is the more used
    assert dial(env, "13800000001", now=NOON + 2 * minute) == FIRST
    assert dial(env, "13800000003", now=NOON + 3 * minute) == SECOND
    assert dial(env, "13800000002", now=NOON + 4 * minute) == SECOND
    assert dial(env, "13800000004", now=NOON + 5 * minute) == FIRST
    # a customer who called the hotline on the second number learned it
    with db.unit_of_work(env.sessions) as s:
        customer = factories.customer(s, s.scalar(select(County)), "13800000005")
        s.add(Call(direction="inbound", customer_id=customer.id, county_id=customer.county_id,
                   customer_number=customer.phone, unified_number=SECOND,
                   state=CallState.ENDED, requested_at=NOON))
    assert dial(env, "13800000005", now=NOON + 6 * minute) == SECOND
    with env.sessions() as s:
        used = {n.number: n.last_used_at for n in s.scalars(select(UnifiedNumber))}
    assert used == {FIRST: NOON + 5 * minute, SECOND: NOON + 6 * minute}


def test_a_call_that_never_reached_the_customer_teaches_no_number(env):
    assert dial(env, "13800000001") == FIRST
    with db.unit_of_work(env.sessions) as s:
        s.scalar(select(Call)).state = CallState.FAILED   # the manager never answered
    # neither counted against the first nor seen by the customer: the tie again,
    # then the longest unused (the first was used at NOON)
    assert dial(env, "13800000001", now=NOON + dt.timedelta(minutes=1)) == SECOND


def test_a_resting_or_retired_number_takes_no_new_call_even_from_its_customer(env):
    assert dial(env, "13800000001") == FIRST
    for state in (NumberState.RESTING, NumberState.RETIRED):
        set_number(env, FIRST, state=state)
        assert dial(env, "13800000001", now=NOON + dt.timedelta(minutes=1)) == SECOND
    set_number(env, SECOND, state=NumberState.RESTING)
    assert "resting or retired" in refusal(env, "13800000001")
    # nothing was written by the refusal
    with env.sessions() as s:
        assert len(s.scalars(select(Call)).all()) == 3


def test_each_cap_holds_and_frees_in_its_time(env):
    set_number(env, SECOND, state=NumberState.RESTING)
    # concurrent: an open call holds a line; one older than the horizon does not
    set_number(env, FIRST, concurrent_cap=1)
    assert dial(env, "13800000001", ext="8002", end=False) == FIRST
    assert "concurrent-call cap" in refusal(env, "13800000002", now=NOON + dt.timedelta(seconds=5))
    later = NOON + number_pool.OPEN_HORIZON + dt.timedelta(minutes=1)
    assert dial(env, "13800000002", now=later) == FIRST
    # hourly: a rolling hour
    set_number(env, FIRST, concurrent_cap=0, hourly_cap=1)
    assert "hourly" in refusal(env, "13800000003", now=later + dt.timedelta(minutes=59))
    assert dial(env, "13800000003", now=later + dt.timedelta(minutes=61)) == FIRST
    # daily: the local day (Asia/Shanghai): 00:30 UTC is 08:30 tomorrow
    set_number(env, FIRST, hourly_cap=0, daily_cap=3)
    with env.sessions() as s:
        assert number_pool.usage(s, env.settings, [FIRST], later + dt.timedelta(hours=2)) \
            == {FIRST: number_pool.Use(today=3, last_hour=1, open=0)}
    assert "daily" in refusal(env, "13800000004", now=later + dt.timedelta(hours=2))
    tomorrow = dt.datetime(2026, 11, 28, 0, 30)
    assert dial(env, "13800000004", now=tomorrow) == FIRST


def test_the_choices_capped_counts_block_exactly_as_the_full_counts(env):
    """capped_usage (each count stops at its cap) blocks and orders the
    numbers exactly as usage (every call counted) does, over random calls:
    open and ended, failed, inbound, across the day and the hour."""
    rng = random.Random(21)
    with db.unit_of_work(env.sessions) as s:
        county = s.scalar(select(County))
        number_pool.add_number(s, None, "cli", env.settings, county, THIRD)
        for k in range(600):
            s.add(Call(direction=rng.choice(["outbound"] * 5 + ["inbound"]),
                       county_id=county.id, customer_number=f"1380000{k:04d}",
                       unified_number=rng.choice((FIRST, SECOND, THIRD)),
                       state=rng.choice([CallState.ENDED] * 4 + [CallState.FAILED,
                                                                 CallState.CONNECTED]),
                       requested_at=NOON - dt.timedelta(minutes=rng.randrange(0, 600))))
    for _ in range(60):
        with db.unit_of_work(env.sessions) as s:
            pool = s.scalars(select(UnifiedNumber).order_by(UnifiedNumber.id)).all()
            for n in pool:
                n.daily_cap, n.hourly_cap, n.concurrent_cap = (
                    rng.choice((0, 50, 120, 300)), rng.choice((0, 5, 15, 40)),
                    rng.choice((0, 3, 10, 30)))
                n.state = rng.choice([NumberState.ACTIVE] * 3 + [NumberState.RESTING])
            now = NOON - dt.timedelta(minutes=rng.randrange(0, 300))
            full = number_pool.usage(s, env.settings, [n.number for n in pool], now)
            capped = number_pool.capped_usage(s, env.settings, pool, now)
            for n in pool:
                whole, bounded = full.get(n.number, number_pool.Use()), \
                    capped.get(n.number, number_pool.Use())
                assert number_pool.blocked_by(n, bounded) == number_pool.blocked_by(n, whole)
                if number_pool.blocked_by(n, whole) is None:
                    assert bounded.today == whole.today


def test_two_managers_dialing_at_once_do_not_both_take_the_last_line(pg_database):
    """PostgreSQL: the choice locks the pool; the second waits for the first's
    call row and counts it."""
    engine = pg_database("pool")
    db.create_schema(engine)
    sessions = db.session_factory(engine)
    settings = config.Settings(home="/nonexistent", database_url="postgresql://x/y")
    with db.unit_of_work(sessions) as s:
        county = factories.county(s, "race", unified=FIRST, more=(SECOND,))
        for n in county.unified_numbers:
            n.concurrent_cap = 1
        customers = [factories.customer(s, county, f"1380000000{i}").id for i in range(3)]
        county_id = county.id
    first_chose = threading.Event()
    results = {}

    def place(i, hold):
        with db.unit_of_work(sessions) as s:
            county = s.get(County, county_id)
            problems = Problems()
            row = number_pool.choose(s, settings, county, customers[i], NOON, problems)
            if row is not None:
                s.add(Call(direction="outbound", county_id=county_id, customer_id=customers[i],
                           customer_number=f"1380000000{i}", unified_number=row.number,
                           requested_at=NOON))
            results[i] = row.number if row else problems.items[0].message
            if hold:
                first_chose.set()
                threading.Event().wait(0.5)   # hold the lock: the others must wait

    first = threading.Thread(target=place, args=(0, True))
    first.start()
    assert first_chose.wait(10)
    others = [threading.Thread(target=place, args=(i, False)) for i in (1, 2)]
    for t in others:
        t.start()
    for t in (first, *others):
        t.join(20)
    shown = [results[i] for i in range(3)]
    assert shown[0] == FIRST and sorted(r for r in shown if r in POOL) == sorted(POOL), shown
    assert sum("concurrent-call cap" in r for r in shown) == 1, shown


THIRD = "13900000003"
CROWD = 16


@pytest.fixture(params=["sqlite", "postgresql"])
def crowd_env(request, tmp_path):
    """The pool of env, a third number and CROWD managers, on both engines."""
    yield from _crowd(tmp_path, None if request.param == "sqlite" else
                      request.getfixturevalue("pg_database")("crowd"))


@pytest.fixture
def pg_crowd_env(tmp_path, pg_database):
    yield from _crowd(tmp_path, pg_database("crowd"))


def _crowd(tmp_path, pg_engine):
    url = pg_engine.url.render_as_string(hide_password=False) if pg_engine else None
    env = BridgeEnv(NoPbx(tmp_path), tmp_path, database_url=url)
    env.settings = dataclasses.replace(env.settings, calling_window="08:00-21:00")
    with db.unit_of_work(env.sessions) as s:
        county = s.scalar(select(County))
        number_pool.add_number(s, None, "cli", env.settings, county, THIRD)
        for i in range(4, CROWD + 1):
            factories.manager(s, county, f"m{8000 + i}", desk=str(8000 + i))
    yield env
    env.engine.dispose()


def test_many_dials_of_one_county_at_once_keep_every_cap_exactly(crowd_env):
    """CROWD managers of one county click at the same instant: each number
    takes exactly its cap (daily, hourly, concurrent: one cap each), the
    rest are refused by the pool's rule, none by a lock, and a refusal
    leaves nothing behind."""
    env = crowd_env
    caps = {FIRST: {"daily_cap": 4, "hourly_cap": 0, "concurrent_cap": 0},
            SECOND: {"daily_cap": 0, "hourly_cap": 3, "concurrent_cap": 0},
            THIRD: {"daily_cap": 0, "hourly_cap": 0, "concurrent_cap": 2}}
    for number, values in caps.items():
        set_number(env, number, **values)
    tasks = [env.task_for(str(8000 + i), f"138000001{i:02d}") for i in range(1, CROWD + 1)]
    start = threading.Barrier(CROWD)
    shown, refused, failed = [], [], []

    def click(i):
        start.wait(30)
        try:
            with db.unit_of_work(env.sessions) as s:
                user = s.scalar(select(User).where(User.username == f"m{8001 + i}"))
                shown.append(request_call(s, env.settings, user, tasks[i], now=NOON)
                             .unified_number)
        except ValidationError as error:
            refused.append(str(error))
        except Exception as error:  # noqa: BLE001 - a lock error is the failure looked for
            failed.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=click, args=(i,)) for i in range(CROWD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failed == []
    assert sorted(shown) == sorted([FIRST] * 4 + [SECOND] * 3 + [THIRD] * 2), shown
    assert len(refused) == CROWD - 9 and all("reached its daily, hourly or concurrent-call cap"
                                             in r for r in refused), refused
    with env.sessions() as s:
        placed = s.scalars(select(Call)).all()
        assert sorted(c.unified_number for c in placed) == sorted(shown)
        assert s.scalar(select(func.count()).select_from(AuditLog).where(
            AuditLog.object_type == "call")) == len(shown)
        # and the pool says so too
        county = s.scalar(select(County))
        blocked = {row.number.number: row.blocked
                   for row in number_pool.pool(s, env.settings, county, NOON)}
    assert blocked == {FIRST: "daily_cap", SECOND: "hourly_cap", THIRD: "concurrent_cap"}


def test_a_dial_waits_for_the_pool_lock_a_bounded_time_then_is_busy(pg_crowd_env, monkeypatch):
    """A county's pool held locked (PostgreSQL; on SQLite the whole write
    lock, whose busy timeout tests/test_web_concurrency.py covers): the
    dial gives up after the lock timeout as "busy" (the web's 503), and
    writes nothing."""
    env = pg_crowd_env
    monkeypatch.setattr(number_pool, "_LOCK_TIMEOUT", text("SET LOCAL lock_timeout = '300ms'"))
    task_id = env.task_for("8001", "13800000001")
    with env.sessions() as holder:
        holder.scalars(select(UnifiedNumber).with_for_update()).all()
        with pytest.raises(OperationalError) as busy:
            with db.unit_of_work(env.sessions) as s:
                user = s.scalar(select(User).where(User.username == "m8001"))
                request_call(s, env.settings, user, task_id, now=NOON)
        holder.rollback()
    assert db.is_busy(busy.value)
    assert dial(env, "13800000001") == FIRST
    with env.sessions() as s:
        assert len(s.scalars(select(Call)).all()) == 1


def test_the_admins_changes_are_checked_and_audited(env):
    with db.unit_of_work(env.sessions) as s:
        county = s.scalar(select(County))
        row = number_pool.add_number(s, None, "cli", env.settings, county, "139-0000-0003",
                                     daily_cap="50")
        assert (row.number, row.state, row.daily_cap, row.hourly_cap, row.concurrent_cap,
                row.is_primary) == ("13900000003", "active", 50, env.settings.number_hourly_cap,
                                    env.settings.number_concurrent_cap, False)
        number_pool.set_state(s, None, "cli", row, NumberState.RESTING)
        number_pool.set_caps(s, None, "cli", row, hourly_cap=0)
    bad = [("add", "13900000003", "already a unified number of 示范县"),
           ("add", "12345", "is not a unified number"),
           ("caps", "-1", "whole number from 0"),
           ("retire", FIRST, r"primary \(published\) number")]
    for what, value, message in bad:
        with pytest.raises(ValidationError, match=message):
            with db.unit_of_work(env.sessions) as s:
                county = s.scalar(select(County))
                if what == "add":
                    number_pool.add_number(s, None, "cli", env.settings, county, value)
                elif what == "caps":
                    number_pool.set_caps(s, None, "cli", number_pool.find(s, SECOND),
                                         daily_cap=value)
                else:
                    number_pool.set_state(s, None, "cli", number_pool.find(s, value), "retired")
    with env.sessions() as s:
        entries = s.scalars(select(AuditLog).where(AuditLog.object_type == "unified_number")
                            .order_by(AuditLog.id)).all()
        assert [(e.action, e.object_name, e.ip) for e in entries] == \
            [("create", "13900000003", "cli")] + [("update", "13900000003", "cli")] * 2
        assert '"number_state": ["active", "resting"]' in entries[1].detail
        assert '"hourly_cap": [' in entries[2].detail


def test_the_report_by_number_and_day_warns_of_a_number_going_bad(env):
    settings = dataclasses.replace(env.settings, number_watch_days=3, number_watch_min_calls=10,
                                   number_watch_percent=60)
    day = dt.timedelta(days=1)
    with db.unit_of_work(env.sessions) as s:
        county = s.scalar(select(County))
        customer = s.scalar(select(Customer)) or factories.customer(s, county, "13800000001")
        # 10 calls a day on each number for 4 days; the first answers 5 of
        # them each day, the second 5 on the first day, then 1 a day
        for d in range(4):
            for number in POOL:
                answered = 5 if number == FIRST or d == 0 else 1
                for k in range(10):
                    at = NOON - (3 - d) * day + dt.timedelta(minutes=k)
                    s.add(Call(direction="outbound", county_id=county.id,
                               customer_id=customer.id, customer_number=customer.phone,
                               unified_number=number, state=CallState.ENDED, requested_at=at,
                               answer_at=at if k < answered else None,
                               talk_seconds=60 if k < answered else None))
        # not counted: a call the manager never answered, and an inbound call
        s.add(Call(direction="outbound", county_id=county.id, customer_number="13800000001",
                   unified_number=SECOND, state=CallState.FAILED, requested_at=NOON))
        s.add(Call(direction="inbound", county_id=county.id, customer_number="13800000001",
                   unified_number=SECOND, state=CallState.ENDED, requested_at=NOON))
    with env.sessions() as s:
        county = s.scalar(select(County))
        today = settings.local(NOON).date()
        days = number_pool.by_day(s, settings, county, today - 3 * day, today)
        second = [days[(today - k * day, SECOND)] for k in (3, 2, 1, 0)]
        assert [f.answer_rate for f in second] == [0.5, 0.1, 0.1, 0.1]
        assert second[0].average_talk == 60 and days[(today, FIRST)].calls == 10
        [warning] = number_pool.warnings(s, settings, county, NOON)
        # the last 3 days: 3/30 against the county's 18/60
        assert (warning.number, warning.figures.calls, warning.figures.answered) == \
            (SECOND, 30, 3)
        assert warning.county_rate == pytest.approx(0.3)
        # the day the carrier still answered: no warning
        assert number_pool.warnings(s, settings, county, NOON - 3 * day) == []
        # too few calls to judge
        assert number_pool.warnings(
            s, dataclasses.replace(settings, number_watch_min_calls=31), county, NOON) == []
