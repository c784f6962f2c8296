"""Recording review (webui/recordings.py, khhf/services/recordings.py):
who finds and hears which recording, HTTP Range on the audio, one audit
entry per play or download, no file outside the recordings directory, and
the retention purge (boundary, dry run, missing files), on the demo data
with real WAV files. The browser, the real Asterisk and SIPp are in
tests/test_recordings_browser.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import time

import pytest
from sqlalchemy import func, select

from khhf import config, db
from khhf.models import AuditLog, Call, Customer, Feedback, Manager, ResultCode, User, utcnow
from khhf.services import accounts, counties, recordings
from simkit import factories
from simkit.web import log_in_as, make_app, session_for


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, _ = make_app(tmp_path_factory.mktemp("recordings"), WTF_CSRF_ENABLED=False)
    return app


def _settings(app):
    return app.extensions["khhf_settings"]


def _manager(s, username) -> Manager:
    return s.scalar(select(Manager).join(User).where(User.username == username))


@pytest.fixture(scope="module")
def calls(app):
    """Recorded calls: two of manager1's (one outbound with a result, one
    hotline), one of manager2's, and one in another county (supervisor2,
    manager9)."""
    root = _settings(app).recordings_dir
    with session_for(app) as s:
        m1, m2 = _manager(s, "manager1"), _manager(s, "manager2")
        other = counties.create_county(s, None, "", code="other", name="邻县",
                                       fallback_strategy="hunt", numbers=["13900000001"],
                                       primary="")
        accounts.create_user(s, None, "", username="supervisor2", display_name="钱主任",
                             password="secret-pass", role="supervisor", county_id=other.id)
        m9 = accounts.create_manager(
            s, None, "", username="manager9", display_name="孙经理", password="secret-pass",
            county_id=other.id, employee_no="O009", desk_extension="8009", mobile="")
        c1 = s.scalar(select(Customer).where(Customer.manager_id == m1.id).order_by(Customer.id))
        c2 = s.scalar(select(Customer).where(Customer.manager_id == m2.id).order_by(Customer.id))
        c9 = factories.customer(s, other, "13900009999", m9, name="远客")
        day = utcnow() - dt.timedelta(days=3)
        outbound = factories.recorded_call(s, root, m1, c1, seconds=3.0, requested_at=day)
        hotline = factories.recorded_call(s, root, m1, c1, seconds=1.0, direction="inbound",
                                          requested_at=day + dt.timedelta(hours=1))
        colleague = factories.recorded_call(s, root, m2, c2, seconds=2.0, requested_at=day)
        far = factories.recorded_call(s, root, m9, c9, seconds=2.0, requested_at=day)
        code = s.scalar(select(ResultCode).order_by(ResultCode.id))
        from khhf.models import Task
        task = s.scalar(select(Task).where(Task.customer_id == c1.id))
        s.add(Feedback(task_id=task.id, call_id=outbound.id, manager_id=m1.id,
                       result_code_id=code.id, channel="web"))
        s.commit()
        return {"outbound": outbound.id, "hotline": hotline.id, "colleague": colleague.id,
                "far": far.id, "number": c1.phone, "result_code": code.id}


def _client(app, username):
    client = app.test_client()
    log_in_as(client, app, username)
    return client


def _listed(client, **query) -> list[int]:
    html = client.get("/recordings/", query_string=query).get_data(as_text=True)
    return [int(x) for x in re.findall(r'<tr data-call="(\d+)"', html)]


def _audits(app, action="play_recording") -> list[AuditLog]:
    with session_for(app) as s:
        return s.scalars(select(AuditLog).where(AuditLog.action == action)
                         .order_by(AuditLog.id)).all()


def _play(client, call_id) -> str:
    response = client.post(f"/recordings/{call_id}/play",
                           headers={"Accept": "application/json"})
    assert response.status_code == 200, response.status_code
    return response.json["url"]


# -- who finds what --------------------------------------------------------------------

def test_each_role_finds_the_recordings_it_may_hear(app, calls):
    assert set(_listed(_client(app, "admin"))) >= set(calls[k] for k in
                                                      ("outbound", "hotline", "colleague", "far"))
    supervisor = _listed(_client(app, "supervisor"))
    assert {calls["outbound"], calls["hotline"], calls["colleague"]} <= set(supervisor)
    assert calls["far"] not in supervisor
    assert _listed(_client(app, "supervisor2")) == [calls["far"]]
    # a manager hears their own calls only
    assert set(_listed(_client(app, "manager1"))) == {calls["outbound"], calls["hotline"]}


def test_the_filters(app, calls):
    client = _client(app, "supervisor")
    number = calls["number"]
    mine = {calls["outbound"], calls["hotline"]}
    assert set(_listed(client, number=number)) == mine
    assert set(_listed(client, number=f"{number[:3]} {number[3:7]}-{number[7:]}")) == mine
    assert set(_listed(client, number=number[-5:])) == mine
    assert _listed(client, direction="inbound") == [calls["hotline"]]
    assert calls["hotline"] not in _listed(client, direction="outbound")
    assert _listed(client, result=str(calls["result_code"])) == [calls["outbound"]]
    assert calls["outbound"] not in _listed(client, result="none")
    assert set(_listed(client, min_seconds=3)) == {calls["outbound"]}
    assert calls["outbound"] not in _listed(client, max_seconds=2)
    with session_for(app) as s:
        m2 = _manager(s, "manager2")
    assert _listed(client, manager=m2.id) == [calls["colleague"]]
    day = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=8)).date()
    assert _listed(client, since=day.isoformat()) == []
    assert set(_listed(client, since=(day - dt.timedelta(days=4)).isoformat(),
                       until=(day - dt.timedelta(days=2)).isoformat())) >= mine
    # a number with letters is not searched, and the page says how to write it
    html = client.get("/recordings/", query_string={"number": "138abc"}).get_data(as_text=True)
    assert "请按数字搜索号码" in html


def test_numbers_are_masked_in_the_list_and_whole_on_the_recording_page(app, calls):
    client = _client(app, "supervisor")
    number = calls["number"]
    listing = client.get("/recordings/").get_data(as_text=True)
    assert number not in listing and f"{number[:3]}****{number[-4:]}" in listing
    page = client.get(f"/recordings/{calls['outbound']}").get_data(as_text=True)
    assert number in page and "播放" in page and "下载" in page


def test_keyset_pages_cover_every_recording_once(app, calls):
    client = _client(app, "admin")
    everything = _listed(client)
    with session_for(app) as s:
        m1, c1 = _manager(s, "manager1"), None
        c1 = s.scalar(select(Customer).where(Customer.manager_id == m1.id))
        start = utcnow() - dt.timedelta(days=10)
        for i in range(recordings.PAGE_SIZE + 5):
            # every second pair shares a moment: the id breaks the tie
            factories.recorded_call(s, _settings(app).recordings_dir, m1, c1,
                                    requested_at=start + dt.timedelta(minutes=i // 2),
                                    write_file=False, path=f"page/{i}.wav")
        s.commit()
        total = s.scalar(select(func.count()).select_from(Call).where(recordings.recorded()))
    seen, after = [], None
    while True:
        html = client.get("/recordings/", query_string={"after": after} if after else {}) \
            .get_data(as_text=True)
        seen += [int(x) for x in re.findall(r'<tr data-call="(\d+)"', html)]
        nxt = re.search(r'id="next" href="[^"]*after=(\d+)', html)
        if not nxt:
            break
        after = nxt.group(1)
    assert len(seen) == len(set(seen)) == total
    assert seen[:len(everything)] == everything


# -- playing and downloading -----------------------------------------------------------

def test_play_is_audited_once_and_the_audio_answers_ranges(app, calls):
    client = _client(app, "supervisor")
    before = len(_audits(app))
    url = _play(client, calls["outbound"])
    entries = _audits(app)[before:]
    assert len(entries) == 1
    assert (entries[0].object_type, entries[0].object_id) == ("call", str(calls["outbound"]))
    assert "****" in entries[0].object_name and calls["number"] not in entries[0].object_name
    with session_for(app) as s:
        call = s.get(Call, calls["outbound"])
        data = (_settings(app).recordings_dir / call.recording_path).read_bytes()
    # the whole file, then ranges: as a browser's audio element asks
    with client.get(url) as whole:
        assert whole.status_code == 200 and whole.data == data
        assert whole.headers["Accept-Ranges"] == "bytes"
        assert whole.mimetype == "audio/wav"
        assert "no-store" in whole.headers["Cache-Control"]
    with client.get(url, headers={"Range": "bytes=0-"}) as first:
        assert first.status_code == 206 and first.data == data
        assert first.headers["Content-Range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    with client.get(url, headers={"Range": "bytes=1000-1999"}) as middle:
        assert middle.status_code == 206 and middle.data == data[1000:2000]
        assert middle.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    with client.get(url, headers={"Range": "bytes=-100"}) as tail:
        assert tail.status_code == 206 and tail.data == data[-100:]
    for bad in (f"bytes={len(data)}-", f"bytes={len(data) + 10}-{len(data) + 20}",
                "bytes=500-100", "bytes=abc", "pages=1-2"):
        with client.get(url, headers={"Range": bad}) as response:
            assert response.status_code == 416, bad
            assert response.headers["Content-Range"] == f"bytes */{len(data)}", bad
    # none of the byte ranges wrote an audit entry
    assert len(_audits(app)) == before + 1


def test_download_is_audited_and_named_without_the_number(app, calls):
    client = _client(app, "manager1")
    before = len(_audits(app))
    with client.post(f"/recordings/{calls['hotline']}/download") as response:
        assert response.status_code == 200 and response.mimetype == "audio/wav"
        disposition = response.headers["Content-Disposition"]
        assert disposition.startswith("attachment;")
        name = re.search(r"filename=(\S+)", disposition).group(1)
        assert re.fullmatch(rf"recording-{calls['hotline']}-\d{{8}}-\d{{6}}\.wav", name)
        assert calls["number"] not in disposition and response.data[:4] == b"RIFF"
    [entry] = _audits(app)[before:]
    assert '"download"' in entry.detail
    # the operation log says it in words, filtered by 播放录音
    html = _client(app, "admin").get("/audit/", query_string={"action": "play_recording"}) \
        .get_data(as_text=True)
    assert "张伟 下载了通话" in html and "的录音" in html


def test_the_audio_needs_a_play_token_of_this_user_and_call(app, calls):
    client = _client(app, "supervisor")
    url = _play(client, calls["outbound"])
    token = url.split("t=", 1)[1]
    # no token, a forged one, or another call's: back to the recording's page
    # the last character may hold only padding bits: forge the one before it, never equal
    forged = token[:-2] + ("BB" if token[-2] == "A" else "AA")
    for bad in ("", "x", forged):
        response = client.get(f"/recordings/{calls['outbound']}/audio?t={bad}")
        assert response.status_code == 302 and response.location.endswith(
            f"/recordings/{calls['outbound']}")
    assert client.get(f"/recordings/{calls['colleague']}/audio?t={token}").status_code == 302
    # another user of the same county, with the supervisor's token: not theirs
    admin = _client(app, "admin")
    assert admin.get(url).status_code == 302
    # after a log-out the token is worth nothing, even in a session copied before
    with session_for(app) as s:
        user = s.scalar(select(User).where(User.username == "supervisor"))
        user.end_sessions()
        s.commit()
    fresh = _client(app, "supervisor")
    assert fresh.get(url).status_code == 302


def test_a_manager_cannot_hear_another_managers_recording(app, calls):
    client = _client(app, "manager1")
    other = calls["colleague"]
    assert client.get(f"/recordings/{other}").status_code == 404
    assert client.post(f"/recordings/{other}/play").status_code == 404
    assert client.post(f"/recordings/{other}/download").status_code == 404
    # not even with a token the supervisor was given for it
    url = _play(_client(app, "supervisor"), other)
    assert client.get(url).status_code == 404


def test_a_supervisor_cannot_hear_another_countys_recording(app, calls):
    client = _client(app, "supervisor")
    far = calls["far"]
    for method, path in (("GET", ""), ("POST", "/play"), ("POST", "/download"),
                         ("GET", "/audio")):
        assert client.open(f"/recordings/{far}{path}", method=method).status_code == 404
    assert calls["far"] not in _listed(client, number="13900009999")


@pytest.fixture
def escape(app, calls, tmp_path):
    """A call whose recording path is set to `path` (restored afterwards)."""
    call_id = calls["hotline"]
    with session_for(app) as s:
        saved = s.get(Call, call_id).recording_path

    def set_path(path):
        with session_for(app) as s:
            s.get(Call, call_id).recording_path = path
            s.commit()
        return call_id
    yield set_path
    set_path(saved)


def test_no_request_reaches_a_file_outside_the_recordings_directory(app, calls, escape,
                                                                      tmp_path):
    root = _settings(app).recordings_dir
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF-not-for-you")
    (root / "links").mkdir(exist_ok=True)
    out = root / "links" / "out.wav"
    out.unlink(missing_ok=True)
    out.symlink_to(secret)
    (root / "links" / "dir").unlink(missing_ok=True)
    (root / "links" / "dir").symlink_to(tmp_path, target_is_directory=True)
    inside = root / "links" / "inside.wav"
    inside.unlink(missing_ok=True)
    with session_for(app) as s:
        inside.symlink_to(root / s.get(Call, calls["outbound"]).recording_path)
    relative = os.path.relpath(secret, root)
    client = _client(app, "manager1")
    for path in (relative, str(secret), "links/out.wav", "links/dir/secret.wav",
                 "links/inside.wav", "../" * 12 + str(secret).lstrip("/"), "/etc/passwd",
                 "2026/../../../etc/passwd", "links", "nothing/here.wav"):
        call_id = escape(path)
        page = client.get(f"/recordings/{call_id}")
        assert page.status_code == 200 and "播放" not in page.get_data(as_text=True), path
        assert client.post(f"/recordings/{call_id}/play").status_code == 404, path
        with client.post(f"/recordings/{call_id}/download") as response:
            assert response.status_code == 404, path
            assert b"not-for-you" not in response.data
        with pytest.raises(recordings.RecordingUnavailable):
            with session_for(app) as s:
                recordings.open_file(_settings(app), s.get(Call, call_id))


# -- retention --------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """(sessions, settings with 30 days' retention, a manager and customer) on a fresh
    database: SQLite and PostgreSQL."""
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'purge.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("purge")
    db.create_schema(engine)
    sessions = db.session_factory(engine)
    with db.unit_of_work(sessions) as s:
        county = factories.county(s, "p", "P")
        m = factories.manager(s, county, "p1")
        c = factories.customer(s, county, "13812340000", m)
        ids = (m.id, c.id)
    url = engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path / "home",
                                database_url=url, recording_retention_days=30)
    yield sessions, settings, ids
    engine.dispose()


def _engine(sessions):
    return sessions.kw["bind"]


def _aged(store, ages: dict[str, dt.timedelta], now, write_file=True) -> dict[str, int]:
    """A recorded call per name, whose call ended `age` before `now`."""
    sessions, settings, (manager_id, customer_id) = store
    out = {}
    with db.unit_of_work(sessions) as s:
        m, c = s.get(Manager, manager_id), s.get(Customer, customer_id)
        for name, age in ages.items():
            call = factories.recorded_call(s, settings.recordings_dir, m, c, seconds=0.5,
                                           requested_at=now - age - dt.timedelta(seconds=5.5),
                                           write_file=write_file)
            call.end_at = now - age
            out[name] = call.id
    return out


def _state(store, call_ids) -> dict[int, tuple[bool, bool]]:
    """call id -> (its file exists, its row is marked deleted)."""
    sessions, settings, _ = store
    with sessions() as s:
        return {cid: ((settings.recordings_dir / s.get(Call, cid).recording_path).exists(),
                      s.get(Call, cid).recording_deleted_at is not None) for cid in call_ids}


def test_retention_keeps_exactly_n_days_and_deletes_older(store):
    sessions, settings, _ = store
    now = utcnow().replace(microsecond=0)
    ids = _aged(store, {"young": dt.timedelta(days=1), "exactly": dt.timedelta(days=30),
                        "just_over": dt.timedelta(days=30, seconds=1),
                        "old": dt.timedelta(days=400)}, now)
    done = recordings.purge(sessions, settings, dry_run=False, now=now)
    assert sorted(item.call_id for item in done) == sorted([ids["just_over"], ids["old"]])
    assert {item.outcome for item in done} == {"deleted"}
    state = _state(store, ids.values())
    assert state[ids["young"]] == state[ids["exactly"]] == (True, False)
    assert state[ids["just_over"]] == state[ids["old"]] == (False, True)
    with sessions() as s:
        [entry] = s.scalars(select(AuditLog).where(AuditLog.action == "purge_recordings"))
        assert '"deleted": 2' in entry.detail and entry.username == "system"
    # a second run has nothing left to do, and writes no second entry
    assert recordings.purge(sessions, settings, dry_run=False, now=now) == []
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 1


def test_a_dry_run_lists_and_writes_nothing(store):
    sessions, settings, _ = store
    now = utcnow()
    ids = _aged(store, {"old": dt.timedelta(days=31), "young": dt.timedelta(days=29)}, now)
    listed = recordings.purge(sessions, settings, dry_run=True, now=now)
    assert [item.call_id for item in listed] == [ids["old"]] and listed[0].outcome == ""
    assert _state(store, ids.values()) == {ids["old"]: (True, False),
                                           ids["young"]: (True, False)}
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 0


def test_a_missing_file_is_marked_and_a_path_outside_is_left_alone(store, tmp_path):
    sessions, settings, _ = store
    now = utcnow()
    ids = _aged(store, {"gone": dt.timedelta(days=40), "kept": dt.timedelta(days=41)}, now,
                write_file=False)
    ids |= _aged(store, {"present": dt.timedelta(days=42)}, now)
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(b"RIFF")
    link = settings.recordings_dir / "link.wav"
    link.symlink_to(outside)
    with db.unit_of_work(sessions) as s:
        s.get(Call, ids["kept"]).recording_path = "link.wav"
    done = {item.call_id: item.outcome
            for item in recordings.purge(sessions, settings, dry_run=False, now=now)}
    assert done == {ids["gone"]: "missing", ids["kept"]: "refused", ids["present"]: "deleted"}
    assert outside.exists() and link.is_symlink()
    with sessions() as s:
        assert s.get(Call, ids["gone"]).recording_deleted_at is not None
        assert s.get(Call, ids["kept"]).recording_deleted_at is None
        assert s.get(Call, ids["present"]).recording_deleted_at is not None


def test_retention_zero_keeps_everything(store):
    sessions, settings, _ = store
    now = utcnow()
    ids = _aged(store, {"ancient": dt.timedelta(days=5000)}, now)
    forever = config.load(settings.config_path, environ={"KHHF_RECORDING_RETENTION_DAYS": "0"})
    assert recordings.purge(sessions, forever, dry_run=False, now=now) == []
    assert _state(store, ids.values()) == {ids["ancient"]: (True, False)}
    negative = config.load(settings.config_path,
                           environ={"KHHF_RECORDING_RETENTION_DAYS": "-1"})
    with pytest.raises(config.ConfigError, match="recording_retention_days"):
        recordings.purge(sessions, negative, now=now)


def _khhf(capsys, settings, *args):
    from khhfcli import main as cli
    code = cli.main(["--config", str(settings.config_path), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_command_lists_by_default_and_deletes_with_commit(store, capsys):
    sessions, settings, _ = store
    ids = _aged(store, {"old": dt.timedelta(days=60), "young": dt.timedelta(days=2)}, utcnow())
    for bare in ([], ["--dry-run"]):
        code, out, err = _khhf(capsys, settings, "recordings", "purge", *bare)
        assert code == 0, err
        assert f"call {ids['old']}\t" in out and f"call {ids['young']}\t" not in out
        assert "1 recordings" in out and "would be deleted; nothing was changed" in out
        assert "khhf recordings purge --commit" in out
        assert _state(store, [ids["old"]]) == {ids["old"]: (True, False)}
    code, out, err = _khhf(capsys, settings, "recordings", "purge", "--commit")
    assert code == 0, err
    assert f"call {ids['old']}\t" in out and "1 recordings (30 days) deleted" in out
    assert _state(store, ids.values()) == {ids["old"]: (False, True),
                                           ids["young"]: (True, False)}
    with pytest.raises(SystemExit) as refused:
        _khhf(capsys, settings, "recordings", "purge", "--dry-run", "--commit")
    assert refused.value.code == 2


def test_the_jobs_daemon_purges_when_it_starts(store):
    from jobs.scheduler import PURGE_JOB, Jobs
    sessions, settings, _ = store
    ids = _aged(store, {"old": dt.timedelta(days=31), "young": dt.timedelta(days=29)}, utcnow())
    jobs = Jobs(_engine(sessions), settings.timezone, settings=settings)
    jobs.start()
    try:
        job = jobs.scheduler.get_job(PURGE_JOB, jobstore="memory")
        assert "cron" in str(job.trigger) and "hour='3'" in str(job.trigger)
        deadline = dt.datetime.now() + dt.timedelta(seconds=60)
        while _state(store, [ids["old"]])[ids["old"]] != (False, True):
            assert dt.datetime.now() < deadline, "the purge did not run at start"
            time.sleep(0.1)
    finally:
        jobs.shutdown()
    assert _state(store, [ids["young"]]) == {ids["young"]: (True, False)}


def test_the_pages_speak_chinese_in_every_state(app, calls, escape):
    from tests.test_web_i18n import problems_in, translated_msgids, visible_text
    msgids = translated_msgids()
    client = _client(app, "supervisor")
    pages = {"list": client.get("/recordings/").get_data(as_text=True),
             "ready": client.get(f"/recordings/{calls['outbound']}").get_data(as_text=True)}
    with session_for(app) as s:
        hotline = s.get(Call, calls["hotline"])
        hotline.recording_deleted_at = utcnow()
        s.commit()
    pages["deleted"] = client.get(f"/recordings/{calls['hotline']}").get_data(as_text=True)
    with session_for(app) as s:
        s.get(Call, calls["hotline"]).recording_deleted_at = None
        s.commit()
    escape("nothing/here.wav")
    pages["missing"] = client.get(f"/recordings/{calls['hotline']}").get_data(as_text=True)
    escape("/etc/passwd")
    pages["refused"] = client.get(f"/recordings/{calls['hotline']}").get_data(as_text=True)
    with session_for(app) as s:
        answered = s.get(Call, calls["outbound"])
        busy = Call(direction="outbound", customer_id=answered.customer_id,
                    manager_id=answered.manager_id, county_id=answered.county_id,
                    customer_number=answered.customer_number, state="failed", outcome="busy")
        s.add(busy)
        s.commit()
        pages["none"] = client.get(f"/recordings/{busy.id}").get_data(as_text=True)
    expected = {"ready": "播放", "deleted": "已超过保留期", "missing": "找不到此录音文件",
                "refused": "不在录音目录内", "list": "录音调听", "none": "没有录音"}
    for state, page in pages.items():
        text = visible_text(page)
        assert expected[state] in text, state
        assert not problems_in(text, msgids), (state, problems_in(text, msgids))


def test_a_node_behind_an_edge_purges_its_own_calls_recordings_only(store):
    """Recordings stay on the node that recorded them (docs/cluster.md): a
    node marking another node's call 'missing' would leave its file forever."""
    sessions, settings, _ = store
    now = utcnow()
    ids = _aged(store, {"here": dt.timedelta(days=40), "there": dt.timedelta(days=41)}, now)
    with db.unit_of_work(sessions) as s:
        s.get(Call, ids["there"]).pbx_node = "node-2"
    settings = dataclasses.replace(settings, edge_host="127.0.0.1")
    done = recordings.purge(sessions, settings, dry_run=False, now=now)
    assert [item.call_id for item in done] == [ids["here"]]
    assert _state(store, ids.values()) == {ids["here"]: (False, True),
                                           ids["there"]: (True, False)}
