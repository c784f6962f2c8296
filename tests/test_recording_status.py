"""A call's recording is judged complete, partial or missing from its file
once the call has ended (ami_bridge.bridge.Bridge.fill_recordings), so a
recording cut off by a full disk is never a silent half file; the recording
review pages say 录音不完整 and 无录音. Real WAV files, cut the ways a full
disk cuts them; the drill with the real Asterisk is tests/test_drill_media.py."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from ami_bridge.bridge import RECORDING_SETTLE, Bridge
from khhf import db
from khhf.calls.states import RecordingStatus
from khhf.models import Call, Customer, Manager, User, utcnow
from simkit import factories
from simkit.web import log_in_as, make_app, session_for

TALK = 3


@pytest.fixture
def app(tmp_path):
    app, _ = make_app(tmp_path, WTF_CSRF_ENABLED=False)
    return app


def _recorded(app, seconds: float, cut_to: int | None = None, remove: bool = False) -> int:
    """A finished call of TALK s whose recording holds `seconds`, not yet judged;
    `cut_to` truncates the file to that many bytes after it was written whole
    (its header still claims the whole length), `remove` deletes it."""
    settings = app.extensions["khhf_settings"]
    with session_for(app) as s:
        manager = s.scalar(select(Manager).join(User).where(User.username == "manager1"))
        customer = s.scalar(select(Customer).where(Customer.manager_id == manager.id))
        call = factories.recorded_call(s, settings.recordings_dir, manager, customer,
                                       seconds=seconds)
        call.talk_seconds, call.end_at = TALK, utcnow()
        call.recording_status = call.recording_seconds = call.recording_sha256 = None
        path = settings.recordings_dir / call.recording_path
        if cut_to is not None:
            with open(path, "r+b") as fh:
                fh.truncate(cut_to)
        if remove:
            path.unlink()
        s.commit()
        return call.id


def _judge(app, now=None) -> dict[int, tuple]:
    settings = app.extensions["khhf_settings"]
    engine = db.make_engine(settings.database_url)
    try:
        Bridge(settings, engine, state_dir=settings.home / "bridge").fill_recordings(now)
        with db.session_factory(engine)() as s:
            return {c.id: (c.recording_status, c.recording_seconds) for c in s.scalars(select(Call))}
    finally:
        engine.dispose()


def test_each_recording_is_judged_from_what_its_file_holds(app):
    whole = _recorded(app, TALK)
    short = _recorded(app, 1.0)                           # closed after 1 s: the disk filled
    header_lies = _recorded(app, TALK, cut_to=44 + 16000)  # header says 3 s, 1 s on disk
    header_only = _recorded(app, TALK, cut_to=44)
    absent = _recorded(app, TALK, remove=True)

    judged = _judge(app)
    assert judged[whole] == (RecordingStatus.COMPLETE, TALK)
    # short of the talk time, the file may still be being closed: judged later
    for call_id in (short, header_lies, header_only, absent):
        assert judged[call_id] == (None, None)

    judged = _judge(app, now=utcnow() + RECORDING_SETTLE + dt.timedelta(seconds=1))
    assert judged[short] == (RecordingStatus.PARTIAL, 1.0)
    assert judged[header_lies] == (RecordingStatus.PARTIAL, 1.0)
    assert judged[header_only] == (RecordingStatus.MISSING, 0.0)
    assert judged[absent] == (RecordingStatus.MISSING, None)
    assert judged[whole] == (RecordingStatus.COMPLETE, TALK)


def test_the_recording_pages_say_incomplete_and_no_recording(app):
    short = _recorded(app, 1.0)
    absent = _recorded(app, TALK, remove=True)
    _judge(app, now=utcnow() + RECORDING_SETTLE + dt.timedelta(seconds=1))
    client = app.test_client()
    log_in_as(client, app, "supervisor")
    listing = client.get("/recordings/").get_data(as_text=True)
    assert 'data-recording-status="partial">录音不完整' in listing
    assert 'data-recording-status="missing">无录音' in listing
    page = client.get(f"/recordings/{short}").get_data(as_text=True)
    assert f"录音不完整：通话 {TALK} 秒，只录下了 1 秒" in page and 'id="player"' in page
    page = client.get(f"/recordings/{absent}").get_data(as_text=True)
    assert "无录音：录音未能保存" in page and 'id="player"' not in page
    # nothing to play: the play button's POST is refused
    assert client.post(f"/recordings/{absent}/play").status_code == 404
