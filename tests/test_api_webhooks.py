"""Webhooks: written with their causes, sent by the timed-jobs daemon's
delivery to a real HTTP receiver on loopback, signed; a receiver that is
down for an hour gets every event afterwards, once each by id."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading

import pytest
from sqlalchemy import select

from jobs.scheduler import Jobs
from khhf import db, webhooks
from khhf.calls import store
from khhf.models import Call, ResultCode, Task, User, WebhookDelivery, utcnow
from khhf.services import api_clients, dialing, hotline, results, sms
from simkit.bridge_env import UNIFIED, BridgeEnv, NoPbx

NOON = dt.datetime(2026, 11, 27, 3, 0)  # 11:00 in Shanghai


class Receiver:
    """A webhook receiver on loopback that can go down and come back on its port."""

    def __init__(self):
        self.got: list[tuple[dict, bytes]] = []
        self.port = 0
        self.server = None
        self.up()

    def up(self):
        got = self.got

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append((self.headers, body))  # names case-insensitive
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def env(tmp_path):
    env = BridgeEnv(NoPbx(tmp_path), tmp_path)  # database and seed only
    env.settings = dataclasses.replace(env.settings, calling_window="08:00-21:00")
    env.receiver = Receiver()
    with db.unit_of_work(env.sessions) as s:
        _, env.token = api_clients.create(s, None, "", name="crm", county_code="demo",
                                          webhook_url=env.receiver.url)
        # a client without webhooks, and one of another county: they get nothing
        api_clients.create(s, None, "", name="quiet", county_code="demo",
                           operations=["tasks:read"], webhook_url=env.receiver.url)
    yield env
    env.receiver.down()


def verify(token: str, headers: dict, body: bytes) -> bool:
    """What a receiver does (docs/api.md)."""
    key = hmac.new(token.encode(), b"khhf-webhook", hashlib.sha256).digest()
    mac = hmac.new(key, headers["X-KHHF-Timestamp"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("v1=" + mac.hexdigest(), headers["X-KHHF-Signature"])


def causes(env) -> set[str]:
    """A call that ends (never placed), a result filed, an SMS reply: the
    event ids they queue."""
    task_id = env.task_for("8001", "13812345678")
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8001"))
        call = dialing.request_call(s, env.settings, user, task_id, now=NOON)
        s.flush()
        call_id = call.id
    with db.unit_of_work(env.sessions) as s:
        dialing.mark_not_placed(s, s.get(Call, call_id))
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8001"))
        task = s.get(Task, task_id)
        code = s.scalar(select(ResultCode).where(ResultCode.task_type_id == task.task_type_id,
                                                 ResultCode.is_final))
        feedback = results.file_result(s, user, task_id, code.id, settings=env.settings,
                                       while_live=False)
        s.flush()
        feedback_id = feedback.id
    with db.unit_of_work(env.sessions) as s:
        reply = sms.receive(s, "13700008001", "1")
        s.flush()
        reply_id = reply.id
    return {f"call.ended:{call_id}", f"result.filed:{feedback_id}", f"sms.reply:{reply_id}"}


def test_a_missed_hotline_call_is_an_event_of_its_own(env):
    with db.unit_of_work(env.sessions) as s:
        call = hotline.finish_call(s, uniqueid="hotline-1", caller="13812340000",
                                   unified_number=UNIFIED, settings=env.settings,
                                   hangup=hotline.Hangup(stage="group", dial_status="NOANSWER"))
        s.flush()
        call_id = call.id
    with env.sessions() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.client.has(name="crm"))
                         ).all()
        assert {r.event_id for r in rows} == {f"call.ended:{call_id}",
                                             f"hotline.missed:{call_id}"}
        data = json.loads(rows[0].payload)["data"]
        assert (data["direction"], data["outcome"]) == ("inbound", "missed")


def deliver(env, now):
    writer = db.session_factory(env.engine, writer=True)
    return webhooks.deliver_due(env.sessions, writer, now=now)


def test_events_are_queued_with_their_causes_once_and_only_for_takers(env):
    expected = causes(env)
    with env.sessions() as s:
        rows = s.scalars(select(WebhookDelivery)).all()
        assert {r.event_id for r in rows} == expected
        assert {r.client.name for r in rows} == {"crm"}
        call_id = int(next(e for e in expected if e.startswith("call.")).split(":")[1])
    # the call recomputed again (a replay, a reconcile): its event is not queued twice
    with db.unit_of_work(env.sessions) as s:
        store.recompute(s, call_id)
        dialing.mark_not_placed(s, s.get(Call, call_id))
    # a cause rolled back takes its event with it
    s = env.sessions()
    sms.receive(s, "13700008002", "2")
    s.flush()
    s.rollback()
    s.close()
    with env.sessions() as s:
        assert len(s.scalars(select(WebhookDelivery)).all()) == len(expected)


def test_a_receiver_down_for_an_hour_gets_every_event_afterwards_once(env):
    env.receiver.down()
    expected = causes(env)
    now = utcnow()
    for minute in range(0, 60, 5):   # an hour of the daemon's passes, the receiver down
        sent = deliver(env, now + dt.timedelta(minutes=minute))
        assert sent.delivered == 0
    with env.sessions() as s:
        first, *rest = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert {r.status for r in (first, *rest)} == {"pending"} and first.last_error
        # back-off: the oldest event was tried, at most once a pass, while the
        # client's later ones waited with it
        assert 1 < first.attempts <= 12 and {r.attempts for r in rest} == {0}
    env.receiver.up()
    sent = deliver(env, now + dt.timedelta(minutes=75))
    assert sent.delivered == len(expected)
    assert deliver(env, now + dt.timedelta(minutes=90)).delivered == 0
    ids = [headers["X-KHHF-Event-Id"] for headers, _ in env.receiver.got]
    assert sorted(ids) == sorted(expected)     # every event, once each
    for headers, body in env.receiver.got:
        assert verify(env.token, headers, body)
        event = json.loads(body)
        assert event["id"] == headers["X-KHHF-Event-Id"] and event["type"] == \
            headers["X-KHHF-Event"]
    call_event = next(json.loads(b) for h, b in env.receiver.got
                      if h["X-KHHF-Event"] == "call.ended")
    assert call_event["data"]["outcome"] == "not_placed"
    assert call_event["data"]["customer_number"] == "13812345678"


def test_an_event_undelivered_for_days_is_failed_and_can_be_retried(env):
    env.receiver.down()
    causes(env)
    later = utcnow() + webhooks.GIVE_UP_AFTER + dt.timedelta(minutes=1)
    for _ in range(3):
        deliver(env, later)
        later += webhooks.MAX_DELAY
    with env.sessions() as s:
        assert webhooks.counts(s)["failed"] >= 1
        failed = s.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.status == "failed")).all()
    env.receiver.up()
    with db.unit_of_work(env.sessions) as s:
        assert webhooks.retry(s, failed) == len(failed)
    deliver(env, utcnow())
    with env.sessions() as s:
        assert webhooks.counts(s)["delivered"] == len(failed)


def test_the_jobs_daemon_sends_them(env):
    expected = causes(env)
    jobs = Jobs(env.engine, env.settings.timezone, webhook_seconds=0.2)
    jobs.start()
    try:
        deadline = utcnow() + dt.timedelta(seconds=30)
        while len(env.receiver.got) < len(expected):
            assert utcnow() < deadline, "the jobs daemon sent no webhooks"
            threading.Event().wait(0.1)
    finally:
        jobs.shutdown()
    assert {h["X-KHHF-Event-Id"] for h, _ in env.receiver.got} == expected
