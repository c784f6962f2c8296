"""One time zone, from the settings: outbound and inbound recordings are
filed under the local day, the missed-call SMS names the local time, and a
site in another zone sees its own times and its zone's name (not 北京时间)
on pages, exports, reports and refusals, and starts campaigns on its own day."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from khhf import config, db, local_time
from khhf.calls.states import CallOutcome, CallState
from khhf.models import Call, Campaign, County, Manager, SmsMessage, Task, TaskType, User
from khhf.services import ValidationError, campaigns, hotline, reports
from khhf.services.dialing import request_call
from simkit import factories
from simkit.web import log_in_as, make_app, session_for
from webui.forms import problem_text

# 17:30 UTC on the 27th is 01:30 on the 28th in Beijing
LATE = dt.datetime(2026, 11, 27, 17, 30)


def test_recordings_and_sms_use_the_sites_local_day(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path, calling_window="00:00-24:00",
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
        assert routing.recording_file == "2026/11/28/in-u1.wav"  # the channel's uniqueid
        assert s.get(Call, routing.call_id).pbx_node == "node2"
        hotline.finish_call(s, uniqueid="u1", call_id=routing.call_id, now=LATE,
                            hangup=hotline.Hangup(stage="group", dial_status="NOANSWER"),
                            settings=settings)
        [sms] = s.scalars(select(SmsMessage)).all()
        assert "11-28 01:30" in sms.body
    engine.dispose()


# -- a site in another zone: nothing says Beijing time, every time is its own ----------
URUMQI = "Asia/Urumqi"  # UTC+6 all year; 17:30 UTC on the 27th is 23:30 there, on the 27th


def _answered_call(s, task, at):
    call = Call(direction="outbound", task_id=task.id, customer_id=task.customer_id,
                manager_id=task.manager_id, county_id=task.customer.county_id,
                customer_number=task.customer.phone, state=CallState.ENDED,
                outcome=CallOutcome.ANSWERED, requested_at=at, answer_at=at,
                end_at=at + dt.timedelta(minutes=1), talk_seconds=60)
    s.add(call)
    s.flush()
    return call


def test_pages_exports_and_reports_show_the_sites_zone(tmp_path):
    app, _ = make_app(tmp_path, {"timezone": URUMQI, "calling_window": "08:00-20:00"})
    with session_for(app) as s:
        manager = s.scalar(select(Manager).join(User).where(User.username == "manager1"))
        task = factories.task(s, factories.customer(s, manager.county, "13800000009", manager),
                              manager)
        _answered_call(s, task, LATE)
        reports.refresh(s, URUMQI, dt.date(2026, 11, 26), dt.date(2026, 11, 29))
        s.commit()
        task_id = task.id
    client = app.test_client()
    log_in_as(client, app, "manager1")
    page = client.get(f"/manager/tasks/{task_id}").get_data(as_text=True)
    assert "2026-11-27 23:30" in page and "2026-11-28 01:30" not in page
    assert "Asia/Urumqi" in page and "北京时间" not in page  # the footer, the call-back hint
    client = app.test_client()
    log_in_as(client, app, "supervisor")
    day = {"figure": "calls_out", "start": "2026-11-27", "end": "2026-11-27"}
    export = client.get("/reports/drill.csv", query_string=day).get_data(as_text=True)
    assert "2026-11-27 23:30:00" in export
    # the report counts the call on the site's day (in Beijing it would be the 28th)
    with session_for(app) as s:
        assert reports.summary(s, reports.Filter(LATE.date(), LATE.date())).calls_out == 1
        assert reports.summary(s, reports.Filter(dt.date(2026, 11, 28),
                                                 dt.date(2026, 11, 28))).calls_out == 0
    report = client.get("/reports/", query_string={"start": "2026-11-27", "end": "2026-11-27"})
    assert "北京时间" not in report.get_data(as_text=True)


@pytest.mark.parametrize("zone,word", [(URUMQI, "Asia/Urumqi"), ("Asia/Shanghai", "北京时间")])
def test_the_calling_window_is_named_in_the_sites_zone(tmp_path, zone, word):
    """A dial refused outside the calling window says whose clock the window
    is on: the configured zone's, named as people say it."""
    app, _ = make_app(tmp_path, {"timezone": zone, "calling_window": "08:00-20:00"})
    with session_for(app) as s:
        user = s.scalar(select(User).where(User.username == "manager1"))
        task = factories.task(s, factories.customer(s, user.manager.county, "13800000009",
                                                    user.manager), user.manager)
        with pytest.raises(ValidationError) as refused:
            request_call(s, app.extensions["khhf_settings"], user, task.id, now=LATE)
    with app.test_request_context("/"):
        text = " ".join(map(problem_text, refused.value.problems))
    assert word in text and "08:00-20:00" in text
    if zone != "Asia/Shanghai":
        assert "北京时间" not in text


def test_a_campaign_starts_on_the_sites_day(tmp_path):
    """Started from the web, a campaign makes its first round when its first
    day has come where the site is, not in Beijing."""
    shanghai = local_time.today("Asia/Shanghai")
    # a zone whose day is not Beijing's now (one of the two always is)
    zone = next(z for z in ("Etc/GMT-14", "Etc/GMT+12") if local_time.today(z) != shanghai)
    first_day = max(local_time.today(zone), shanghai)
    app, _ = make_app(tmp_path, {"timezone": zone}, WTF_CSRF_ENABLED=False)
    with session_for(app) as s:
        admin = s.scalar(select(User).where(User.username == "admin"))
        county = s.scalar(select(County).where(County.code == "demo"))
        revisit = s.scalar(select(TaskType).where(TaskType.code == "revisit"))
        campaign = campaigns.create_campaign(s, admin, "", county_id=county.id,
                                             task_type_id=revisit.id, name="本地日", cycle="once",
                                             starts_on=first_day,
                                             ends_on=first_day + dt.timedelta(days=6))
        s.commit()
        campaign_id = campaign.id
    client = app.test_client()
    log_in_as(client, app, "admin")
    client.post(f"/campaigns/{campaign_id}/activate")
    with session_for(app) as s:
        assert s.get(Campaign, campaign_id).status == "active"
        made = s.scalar(select(func.count(Task.id)).where(Task.campaign_id == campaign_id))
    assert (made > 0) == (first_day <= local_time.today(zone)), (zone, first_day)


def test_an_unknown_time_zone_is_refused_in_one_sentence(tmp_path):
    path = tmp_path / "khhf.conf"
    path.write_text("[khhf]\ntimezone = Beijing\n")
    with pytest.raises(config.ConfigError, match="timezone 'Beijing' is not a time zone: "
                                                 "give an IANA name such as Asia/Shanghai"):
        config.load(path, environ={})
