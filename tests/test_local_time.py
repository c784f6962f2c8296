"""One time zone, from the settings: outbound and inbound recordings are
filed under the local day, and the missed-call SMS names the local time."""

import datetime as dt

from sqlalchemy import select

from khhf import config, db
from khhf.models import Call, SmsMessage, User
from khhf.services import hotline
from khhf.services.dialing import request_call
from simkit import factories

# 17:30 UTC on the 27th is 01:30 on the 28th in Beijing
LATE = dt.datetime(2026, 11, 27, 17, 30)


def test_recordings_and_sms_use_the_sites_local_day(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path, calling_window="00:00-23:59",
                                pbx_name="node2")
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    sessions = db.session_factory(engine)
    with db.unit_of_work(sessions) as s:
        county = factories.county(s, "c", unified="13900000001")
        m = factories.manager(s, county, "m1", desk="8001", mobile="13700000001", on_duty=True)
        task = factories.task(s, factories.customer(s, county, "13800000001", m), m)
        user = s.scalar(select(User).where(User.username == "m1"))
        out = request_call(s, settings, user, task.id, now=LATE)
        assert out.recording_path == f"2026/11/28/{out.id}.wav"
        assert out.pbx_node == "node2"
        routing = hotline.start_call(s, caller="13800000002", unified_number="13900000001",
                                     uniqueid="u1", now=LATE, settings=settings)
        assert routing.recording_file == f"2026/11/28/in-{routing.call_id}.wav"
        assert s.get(Call, routing.call_id).pbx_node == "node2"
        hotline.finish_call(s, uniqueid="u1", call_id=routing.call_id, now=LATE,
                            hangup=hotline.Hangup(stage="group", dial_status="NOANSWER"),
                            settings=settings)
        [sms] = s.scalars(select(SmsMessage)).all()
        assert "11-28 01:30" in sms.body
    engine.dispose()
