"""The API's writes on PostgreSQL: a 10,000-row customer upsert through the
import's rules (no COPY stream: updates share the transaction), and the
webhook outbox's INSERT ... ON CONFLICT DO NOTHING in the cause's flush."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select

from khhf import db
from khhf.models import Customer, WebhookDelivery
from khhf.services import api_clients, api_ops
from tests.test_api_webhooks import causes


@pytest.fixture
def env(tmp_path, pg_database):
    from simkit.bridge_env import BridgeEnv, NoPbx
    url = pg_database("api").url.render_as_string(hide_password=False)
    env = BridgeEnv(NoPbx(tmp_path), tmp_path, database_url=url)
    env.settings = dataclasses.replace(env.settings, calling_window="08:00-21:00")
    with db.unit_of_work(env.sessions) as s:
        _, env.token = api_clients.create(s, None, "", name="crm", county_code="demo",
                                          webhook_url="http://127.0.0.1:9/hook")
    yield env
    env.engine.dispose()


def test_a_10000_row_upsert_and_the_outbox_on_postgresql(env):
    rows = [{"phone": f"1350000{i:04d}", "name": f"客户{i}"} for i in range(10_000)]
    rows[7] = {"phone": "1"}
    with db.unit_of_work(env.sessions) as s:
        client = api_clients.by_name(s, "crm")
        first = api_ops.upsert_customers(s, client, rows)
    assert (first["created"], first["updated"], first["rejected"]) == (9_999, 0, 1)
    rows[7] = {"phone": "13500000007", "name": "改名"}
    with db.unit_of_work(env.sessions) as s:
        again = api_ops.upsert_customers(s, api_clients.by_name(s, "crm"), rows[:100])
    assert (again["created"], again["updated"], again["rejected"]) == (1, 99, 0)
    with env.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 10_000
    expected = causes(env)
    with env.sessions() as s:
        assert set(s.scalars(select(WebhookDelivery.event_id))) == expected
