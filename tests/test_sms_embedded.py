"""The embedded default (no SMSC): the outbox and inbox in the database,
the admins' SMS page with its as-if-from-a-phone form, and `khhf sms`."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import select

from khhf import config, db
from khhf.models import AuditLog, Manager, SmsMessage
from khhfcli import main as cli
from simkit.web import csrf_token, log_in_as, make_app, session_for


def test_admin_types_a_reply_as_if_from_a_phone_and_sees_both_boxes(tmp_path):
    app, _ = make_app(tmp_path)
    with session_for(app) as s:
        manager = s.scalar(select(Manager).where(Manager.mobile.is_not(None)).order_by(Manager.id))
        mobile, manager_id = manager.mobile, manager.id
        s.add(SmsMessage(direction="out", peer_number=mobile, body="【客户回访】未接来电提醒",
                         status="queued"))
        s.commit()
    client = app.test_client()
    log_in_as(client, app, "admin")
    page = client.get("/admin/sms/").get_data(as_text=True)
    assert "未配置短信中心" in page and "【客户回访】未接来电提醒" in page and "排队中" in page
    assert mobile not in page  # numbers masked
    token = csrf_token(client, "/admin/sms/")
    bad = client.post("/admin/sms/inject", data={"csrf_token": token, "mobile": "abc",
                                                 "text": "1"})
    assert "不是手机号码" in bad.get_data(as_text=True)
    ok = client.post("/admin/sms/inject", data={"csrf_token": token, "mobile": mobile,
                                                "text": "１ 回访成功"})
    assert ok.status_code == 302
    with session_for(app) as s:
        [row] = s.scalars(select(SmsMessage).where(SmsMessage.direction == "in")).all()
        # handled as a reply (khhf.services.sms_feedback): no prompt is open
        assert (row.body, row.status, row.reply_outcome, row.manager_id) == \
            ("１ 回访成功", "processed", "no_prompt", manager_id)
        entry = s.scalar(select(AuditLog).where(AuditLog.object_type == "sms"))
        assert entry.username == "admin" and entry.object_id == str(row.id)
    page = client.get("/admin/sms/").get_data(as_text=True)
    assert "１ 回访成功" in page and "已处理" in page
    assert "已按回复处理：无待反馈提示。" in page and "无待反馈提示" in page


def test_cli_inject_and_outbox(tmp_path, capsys):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    conf = str(tmp_path / "khhf.conf")
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    with db.session_factory(engine)() as s:
        s.add(SmsMessage(direction="out", peer_number="13900000009", body="请回电", status="sent",
                         attempts=1, receipt_status="DELIVRD"))
        s.add(SmsMessage(direction="out", peer_number="13900000008", body="待发", status="queued"))
        s.commit()
    assert cli.main(["--config", conf, "sms", "inject", "--from", "13900000001",
                     "6", "1201", "1430"]) == 0
    assert "stored as received" in capsys.readouterr().out
    assert cli.main(["--config", conf, "sms", "inject", "--from", "12", "x"]) == 1
    assert "is not a mobile number" in capsys.readouterr().err
    assert cli.main(["--config", conf, "sms", "outbox"]) == 0
    out = capsys.readouterr().out
    assert "139****0009\tsent\tDELIVRD" in out and "139****0008\tqueued" in out
    assert "13900000009" not in out and "1201" not in out  # the inbound one is not listed
    assert cli.main(["--config", conf, "sms", "requeue", "1"]) == 1
    assert "only an unknown or failed" in capsys.readouterr().err
    with db.session_factory(engine)() as s:
        [row] = s.scalars(select(SmsMessage).where(SmsMessage.direction == "in")).all()
        # no manager has this mobile: stored, ignored
        assert (row.body, row.status, row.reply_outcome) == ("6 1201 1430", "processed", "stranger")
    engine.dispose()


def test_daemon_without_smsc_idles_and_stops_cleanly(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    engine.dispose()
    proc = subprocess.Popen([sys.executable, "-m", "smsgw", "--config",
                             str(tmp_path / "khhf.conf")], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "no smsc_host set" in line
    proc.terminate()
    assert proc.wait(10) == 0
    proc.stderr.close()
