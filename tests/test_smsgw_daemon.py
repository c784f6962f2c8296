"""`python -m smsgw` as the process systemd and the demo run: killed while
sending and started again, it sends nothing twice and loses nothing."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import select

from khhf import config, db
from khhf.models import SmsMessage
from simkit.smsc import SmscProcess
from tests.test_smsgw import wait_for


def start_gateway(conf, workdir, n):
    err = open(workdir / f"smsgw{n}.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "smsgw", "--config", str(conf)],
                            stderr=err)
    err.close()
    return proc


def test_gateway_killed_mid_run_and_restarted_sends_each_message_at_most_once(tmp_path):
    smsc = SmscProcess(tmp_path).start()
    conf = tmp_path / "khhf.conf"
    settings = config.write_new(conf, home=tmp_path, smsc_host="127.0.0.1",
                                smsc_port=smsc.port, sms_rate_per_second=10)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    factory = db.session_factory(engine)
    with factory() as s:
        s.add_all([SmsMessage(direction="out", peer_number="13900000002",
                              body=f"提醒{i:02d}", status="queued") for i in range(40)])
        s.commit()

    def statuses():
        with factory() as s:
            return {r.id: r for r in s.scalars(select(SmsMessage))}
    try:
        gateway = start_gateway(conf, tmp_path, 1)
        wait_for(lambda: len(smsc.received()) >= 10, what="first submits")
        gateway.kill()  # no goodbye: whatever was in flight stays 'sending'
        gateway.wait()
        left = [r for r in statuses().values() if r.status == "sending"]
        assert len(left) <= 1
        gateway = start_gateway(conf, tmp_path, 2)
        wait_for(lambda: all(r.status in ("sent", "unknown") for r in statuses().values()),
                 timeout=60, what="every message settled")
        gateway.terminate()
        assert gateway.wait(10) == 0
    finally:
        smsc.stop()
        engine.dispose()
    bodies = [bytes.fromhex(g["sm"]).decode("utf-16-be") for g in smsc.received()]
    assert len(bodies) == len(set(bodies)), "a message reached the SMSC twice"
    final = statuses()
    for row in final.values():
        if row.status == "sent":
            assert bodies.count(row.body) == 1
    for row in left:
        # the one in flight at the kill: unknown after the restart, never resent
        assert final[row.id].status == "unknown" and bodies.count(row.body) <= 1
    assert sum(1 for r in final.values() if r.status == "sent") >= 39
    assert "marked unknown, not resent" in (tmp_path / "smsgw2.err").read_text() or not left
