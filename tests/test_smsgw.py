"""The SMS gateway against a real SMPP server process on loopback
(simkit/smsc.py): UCS-2 and concatenation, receipts, replies, throttling,
the SMSC dying mid-run, and the daemon's restart."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from khhf import config, db
from khhf.models import AuditLog, SmsMessage, SmsPart
from simkit import factories
from simkit.smsc import SmscProcess
from smsgw import encoding
from smsgw.gateway import Gateway
from smsgw.transport import SmppTransport

MOBILE = "13900000001"


@pytest.fixture
def smsc(tmp_path):
    server = SmscProcess(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def factory(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    yield db.session_factory(engine, writer=True)
    engine.dispose()


def queue(factory, *bodies, to=MOBILE) -> list[int]:
    with factory() as s:
        rows = [SmsMessage(direction="out", peer_number=to, body=b, status="queued")
                for b in bodies]
        s.add_all(rows)
        s.commit()
        return [r.id for r in rows]


class Running:
    """A gateway in a thread, bound to `smsc`."""

    def __init__(self, factory, smsc, rate=50, **kwargs):
        self.gateway = Gateway(factory, SmppTransport("127.0.0.1", smsc.port, "khhf", "pw"),
                               source_addr="10658", rate_per_second=rate, **kwargs)
        self.thread = threading.Thread(target=self.gateway.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.gateway

    def __exit__(self, *exc):
        self.gateway.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rows(factory) -> dict[int, SmsMessage]:
    with factory() as s:
        return {r.id: r for r in s.scalars(select(SmsMessage))}


def test_chinese_message_goes_out_in_ucs2_and_its_receipt_marks_it_delivered(factory, smsc):
    [sms_id] = queue(factory, "您好，今天的回访任务已完成。")
    with Running(factory, smsc):
        wait_for(lambda: rows(factory)[sms_id].receipt_status == "DELIVRD", what="receipt")
    [got] = smsc.received()
    assert got["to"] == MOBILE and got["from"] == "10658"
    assert got["data_coding"] == 8 and got["esm_class"] == 0
    assert bytes.fromhex(got["sm"]).decode("utf-16-be") == "您好，今天的回访任务已完成。"
    row = rows(factory)[sms_id]
    assert row.status == "sent" and row.smpp_message_id == got["id"]
    assert row.client_ref == f"{sms_id}.1" and row.attempts == 1 and row.sent_at


def test_long_chinese_message_arrives_as_concatenated_parts(factory, smsc):
    # 66 characters, then one beyond the BMP (two UCS-2 units) where the first
    # part would end: it must move whole to the second part
    text = "【客户回访】" + "请回复结果代码：1回访成功2营销成功3调查成功4拒绝。" * 2 + "回" * 6 + "😀" + "访" * 80
    [sms_id] = queue(factory, text)
    with Running(factory, smsc):
        wait_for(lambda: rows(factory)[sms_id].receipt_status == "DELIVRD", what="receipts")
    got = smsc.received()
    assert len(got) == 3 and all(g["esm_class"] == 0x40 and g["data_coding"] == 8 for g in got)
    udh = [bytes.fromhex(g["sm"])[:6] for g in got]
    assert {u[:4] for u in udh} == {bytes([5, 0, 3, sms_id % 256])}  # one 8-bit reference
    assert [(u[4], u[5]) for u in udh] == [(3, 1), (3, 2), (3, 3)]
    assert all(len(bytes.fromhex(g["sm"])) <= 140 for g in got)
    assert encoding.join([(g["data_coding"], g["esm_class"], bytes.fromhex(g["sm"]))
                          for g in got]) == text
    with factory() as s:
        parts = s.scalars(select(SmsPart).where(SmsPart.sms_id == sms_id)
                          .order_by(SmsPart.part_no)).all()
        assert [p.smpp_message_id for p in parts] == [g["id"] for g in got]
        assert all(p.receipt_status == "DELIVRD" for p in parts)


def test_reply_injected_at_the_smsc_becomes_an_inbound_row(factory, smsc):
    with factory() as s:
        county = factories.county(s)
        manager = factories.manager(s, county, "li", mobile=MOBILE)
        s.commit()
        manager_id = manager.id
    with Running(factory, smsc):
        wait_for(lambda: smsc.command({"op": "ping"})["sessions"] >= 1, what="bind")
        assert smsc.deliver(MOBILE, "１ 回访成功")["ok"]
        inbound = wait_for(lambda: [r for r in rows(factory).values() if r.direction == "in"],
                           what="inbound row")
    [row] = inbound
    assert (row.peer_number, row.body, row.status, row.manager_id) == \
        (MOBILE, "１ 回访成功", "processed", manager_id)
    assert row.reply_outcome == "no_prompt"  # handled as a reply: nothing to answer
    with factory() as s:
        entry = s.scalar(select(AuditLog).where(AuditLog.object_type == "sms"))
        assert entry.object_id == str(row.id) and "139****0001" in entry.object_name


def test_throttle_spaces_submits_at_the_configured_rate(factory, smsc):
    rate = 5
    ids = queue(factory, *[f"第{i}条" for i in range(16)])
    with Running(factory, smsc, rate=rate):
        wait_for(lambda: all(rows(factory)[i].status == "sent" for i in ids), what="all sent")
    times = [g["at"] for g in smsc.received()]
    assert len(times) == 16
    # in any one-second window the SMSC saw at most `rate` submits (one more
    # for a window touching both ends of the spacing); unthrottled, all 16
    # land within a fraction of a second
    worst = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert worst <= rate + 1, f"{worst} submits within one second at rate {rate}"


def test_smsc_killed_mid_run_and_restarted_loses_and_duplicates_nothing(factory, smsc):
    ids = queue(factory, *[f"通知{i:02d}：请回电客户。" for i in range(30)])
    with Running(factory, smsc, rate=20):
        wait_for(lambda: len(smsc.received()) >= 8, what="first submits")
        smsc.kill()
        time.sleep(1.0)  # the gateway notices, backs off and retries the bind
        smsc.start()
        wait_for(lambda: all(rows(factory)[i].status not in ("queued", "sending") for i in ids),
                 timeout=60, what="every message settled")
    got = smsc.received()
    bodies = [bytes.fromhex(g["sm"]).decode("utf-16-be") for g in got]
    assert len(bodies) == len(set(bodies)), "a message reached the SMSC twice"
    final = rows(factory)
    for i in ids:
        row = final[i]
        if row.status == "sent":
            assert bodies.count(row.body) == 1 and row.smpp_message_id in {g["id"] for g in got}
        else:
            # in flight when the SMSC died: at most once there, never resent
            assert row.status == "unknown" and bodies.count(row.body) <= 1, row.status
    assert sum(1 for r in final.values() if r.status == "unknown") <= 1
    assert sum(1 for r in final.values() if r.status == "sent") >= 29


def test_a_full_window_in_flight_when_the_smsc_dies_is_unknown_and_nothing_goes_twice(
        factory, smsc):
    window = 16
    ids = queue(factory, *[f"批量{i:04d}" for i in range(2000)])
    with Running(factory, smsc, rate=100000, window=window):
        wait_for(lambda: len(smsc.received()) >= 200, what="first submits")
        smsc.kill()
        time.sleep(0.5)
        smsc.start()
        wait_for(lambda: all(r.status in ("sent", "unknown") for r in rows(factory).values()),
                 timeout=120, what="every message settled")
    got = smsc.received()
    bodies = [bytes.fromhex(g["sm"]).decode("utf-16-be") for g in got]
    assert len(bodies) == len(set(bodies)), "a message reached the SMSC twice"
    assert len({g["session"] for g in got}) == 2  # killed mid-burst: some went after
    final = rows(factory)
    unknown = [r for r in final.values() if r.status == "unknown"]
    # only what was in flight, unanswered, when the link went: at most the window
    assert len(unknown) <= window
    accepted = {g["id"] for g in got}
    for i in ids:
        row = final[i]
        if row.status == "sent":
            assert bodies.count(row.body) == 1 and row.smpp_message_id in accepted
        else:
            assert bodies.count(row.body) <= 1 and "requeue" in row.error


ESME_RTHROTTLED, ESME_RINVDSTADR = 0x58, 0x0B


def test_a_throttled_submit_is_retried_after_a_backoff_and_an_invalid_number_fails(
        factory, smsc):
    smsc.command({"op": "reject", "count": 2, "status": ESME_RTHROTTLED})
    [retried] = queue(factory, "稍后重试")
    with Running(factory, smsc, retry_base_seconds=0.2):
        row = wait_for(lambda: (r := rows(factory)[retried]).status == "sent" and r,
                       what="sent after retries")
        assert row.attempts == 3 and row.client_ref == f"{retried}.3" and row.error is None
        smsc.command({"op": "reject", "count": 1, "status": ESME_RINVDSTADR})
        [bad] = queue(factory, "号码错误")
        row = wait_for(lambda: (r := rows(factory)[bad]).status == "failed" and r,
                       what="failed")
    assert row.attempts == 1 and "0x0b" in row.error
    assert [bytes.fromhex(g["sm"]).decode("utf-16-be") for g in smsc.received()] == ["稍后重试"]


def test_a_receipt_that_comes_before_the_submit_answer_is_still_filed(factory, smsc):
    smsc.command({"op": "receipt_first", "on": True})
    [sms_id] = queue(factory, "先到的回执")
    with Running(factory, smsc):
        row = wait_for(lambda: (r := rows(factory)[sms_id]).receipt_status and r,
                       what="receipt filed")
    assert (row.status, row.receipt_status) == ("sent", "DELIVRD")


@pytest.mark.postgres
def test_on_postgresql_the_same_send_receipt_and_reply(pg_database, smsc):
    engine = pg_database("smsgw")
    db.create_schema(engine)
    factory = db.session_factory(engine, writer=True)
    ids = queue(factory, "您好", "【客户回访】" + "请回复" * 30)
    with Running(factory, smsc):
        wait_for(lambda: all(rows(factory)[i].receipt_status == "DELIVRD" for i in ids),
                 what="receipts")
        assert smsc.deliver(MOBILE, "2")["ok"]
        wait_for(lambda: any(r.direction == "in" for r in rows(factory).values()),
                 what="inbound row")
    # the reply came from no manager's phone: stored, ignored
    assert [(r.status, r.kind, r.reply_outcome) for _, r in sorted(rows(factory).items())] == \
        [("sent", None, None), ("sent", None, None), ("processed", None, "stranger")]
    assert len(smsc.received()) == 3  # one part, then two
