"""The bridge's writer process (ami_bridge/writer.py) and the raw insert of
call events (store.insert_events): the same rows as the bridge's own unit
of work, on SQLite and PostgreSQL; an event delivered twice stored once; a
writer that dies is started again and reads the calls' events again; a
database that cannot take the batch is said so, for the bridge to hold it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text

from ami_bridge.writer import Applier, WriterProcess, WriterUnavailable
from khhf import db
from khhf.calls import store
from khhf.models import Call, CallEvent, Feedback, WebhookDelivery
from khhf.services import api_clients
from simkit import factories
from simkit.bridge_env import BridgeEnv, NoPbx
from tests.test_bridge_live_facts import _recomputed, _row, _stored
from tests.test_task_states import ANSWERED, BUSY, NOON, _ami_events, _dial, _task


@pytest.fixture
def env(tmp_path):
    return BridgeEnv(NoPbx(tmp_path), tmp_path)  # SQLite, database and seed only


@pytest.fixture
def pg_env(tmp_path, pg_database):
    url = pg_database("writer").url.render_as_string(hide_password=False)
    env = BridgeEnv(NoPbx(tmp_path), tmp_path, database_url=url)
    yield env
    env.engine.dispose()


def _writer(env) -> WriterProcess:
    writer = WriterProcess(env.settings, env.engine.url.render_as_string(hide_password=False))
    writer.start()
    return writer


def _stored_times(env, call) -> list[dt.datetime]:
    with env.sessions() as s:
        return list(s.scalars(select(CallEvent.event_at).where(CallEvent.call_id == call)
                              .order_by(CallEvent.event_at, CallEvent.id)))


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_writer_process_stores_each_event_once_and_folds_the_row(engine, request):
    """Each engine: an event delivered twice in a batch and again in the
    next is stored once; on SQLite the writer is also killed between two
    batches, and the next batch starts another that reads the call again."""
    env = request.getfixturevalue("env" if engine == "sqlite" else "pg_env")
    call = _dial(env, env.task_for("8001", "13812345678"))
    events_ = _ami_events(env, call, *ANSWERED)
    writer = _writer(env)
    try:
        writer.apply(events_[:3] + [events_[2]])   # twice in one batch
        writer.apply(events_[2:4])                 # and again in the next
        assert _stored(env, call) == 4
        if engine == "sqlite":
            writer._process.kill()   # a crash of the writer alone
            writer._process.wait()
        writer.apply(events_[4:])
        assert writer.starts == (2 if engine == "sqlite" else 1)
    finally:
        writer.stop()
    assert not writer.alive and writer.cpu_seconds > 0
    assert _stored(env, call) == len(events_)
    assert _stored_times(env, call) == [store.raw_from_ami(e).at for e in events_]
    assert _row(env, call) == _recomputed(env, call)
    assert (_row(env, call)["state"], _row(env, call)["outcome"]) == ("ended", "answered")
    with env.sessions() as s:
        task = _task(env, s.get(Call, call).task_id)
    assert (task.status, task.attempts) == ("connected", 1)


@pytest.mark.parametrize("engine,unnest_from", [
    ("sqlite", db.UNNEST_FROM), ("postgresql", db.UNNEST_FROM), ("postgresql", 1)])
def test_a_batch_moves_its_tasks_files_outcomes_and_queues_webhooks(engine, unnest_from,
                                                                   request, monkeypatch):
    """The batch's call and task rows are written without the ORM
    (store.recompute_batch, one statement per set of changed columns): an
    answered call, then in one batch its last event again beside a busy
    call of a type with automatic outcomes. Rows as the fold gives them,
    tasks as the task machine moves them, the system's result filed once,
    one call.ended webhook per call. PostgreSQL: a few rows are updated
    by id, more by one UPDATE ... FROM unnest (both forms here)."""
    monkeypatch.setattr(db, "UNNEST_FROM", unnest_from)
    env = request.getfixturevalue("env" if engine == "sqlite" else "pg_env")
    with db.unit_of_work(env.sessions) as s:
        factories.automatic_task_type(s, retry_minutes=30, max_retries=1)
        api_clients.create(s, None, "", name="crm", county_code="demo",
                           webhook_url="http://127.0.0.1:9/hook")
    applier = Applier(env.settings, env.sessions)
    answered = _dial(env, env.task_for("8001", "13812345678"))
    first = _ami_events(env, answered, *ANSWERED)
    applier.apply_ami(first[:3])
    applier.apply_ami(first[3:])
    busy = _dial(env, env.task_for("8001", "13812340101", "auto"),
                 NOON + dt.timedelta(minutes=5))
    applier.apply_ami([first[-1], *_ami_events(env, busy, *BUSY)])
    applier.apply_ami(_ami_events(env, busy, *BUSY)[-1:])  # again: nothing moves
    for call, outcome in ((answered, "answered"), (busy, "busy")):
        assert _row(env, call) == _recomputed(env, call)
        assert (_row(env, call)["state"], _row(env, call)["outcome"]) == ("ended", outcome)
    with env.sessions() as s:
        first_task, busy_task = (s.get(Call, c).task_id for c in (answered, busy))
        filed = s.execute(select(Feedback.id, Feedback.call_id, Feedback.channel)).all()
        queued = sorted(s.scalars(select(WebhookDelivery.event_id)))
    assert (_task(env, first_task).status, _task(env, first_task).attempts) == ("connected", 1)
    task = _task(env, busy_task)
    assert (task.status, task.attempts, task.appointment_at is not None) == ("pending", 1, True)
    assert [tuple(f)[1:] for f in filed] == [(busy, "system")]
    assert queued == sorted([f"call.ended:{answered}", f"call.ended:{busy}",
                             f"result.filed:{filed[0].id}"])


def test_a_database_that_cannot_take_the_batch_is_said_so(env, tmp_path):
    call = _dial(env, env.task_for("8001", "13812345678"))
    # a directory: SQLite cannot open it (is_unavailable: OperationalError)
    writer = WriterProcess(env.settings, f"sqlite:///{tmp_path}")
    writer.start()
    try:
        with pytest.raises(WriterUnavailable):
            writer.apply(_ami_events(env, call, *ANSWERED))
        assert writer.alive   # it waits for the database, like the bridge
    finally:
        writer.stop()


def test_sqlite_stores_the_event_time_as_the_model_writes_it(env):
    """The raw insert writes SQLite's timestamp text itself: it must be the
    text SQLAlchemy writes (microseconds always), or ordering by time and
    comparing times across writers would go wrong."""
    call = _dial(env, env.task_for("8001", "13812345678"))
    event = _ami_events(env, call, *ANSWERED)[0]
    event["Timestamp"] = "1765108800.000000"   # a whole second: no microseconds to print
    with env.sessions.begin() as s:
        store.insert_events(s, [store.raw_from_ami(event)])
    with env.engine.connect() as conn:
        stored = conn.scalar(text("SELECT event_at FROM call_events"))
    assert stored == "2025-12-07 12:00:00.000000"
    assert dt.datetime.fromisoformat(stored) == store.raw_from_ami(event).at
