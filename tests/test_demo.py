"""The README's demo, as a newcomer runs it (after scripts/install): `khhf
init` then `khhf demo run` start the whole system; a manager logs in with
the printed password and clicks 呼叫; the call goes through the real
Asterisk to the simulated customer and comes back as an answered call row;
Ctrl-C stops everything, the PBX included."""

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from sqlalchemy import create_engine, text

from simkit.harness import free_port

pytestmark = pytest.mark.pbx   # `khhf demo run` starts Asterisk


def test_demo_runs_a_call_end_to_end(tmp_path):
    conf = tmp_path / "khhf.conf"
    rtp = free_port(span=201)
    env = dict(os.environ, KHHF_CONFIG=str(conf), KHHF_PBX_NAME=f"demo{os.getpid()}",
               KHHF_SIP_PORT=str(free_port()), KHHF_AMI_PORT=str(free_port(kind=socket.SOCK_STREAM)),
               KHHF_RTP_START=str(rtp + rtp % 2), KHHF_RTP_END=str(rtp + 200),
               KHHF_TRUNK_PORT=str(free_port("127.0.0.2")),
               KHHF_AGI_PORT=str(free_port(kind=socket.SOCK_STREAM)),
               KHHF_BRIDGE_PORT=str(free_port(kind=socket.SOCK_STREAM)),
               KHHF_WEB_PORT=str(free_port(kind=socket.SOCK_STREAM)),
               KHHF_CALLING_WINDOW="00:00-24:00", KHHF_SMS_PROMPT_DELAY_SECONDS="1")
    khhf = [sys.executable, "-m", "khhfcli.main"]
    subprocess.run(khhf + ["init", "--home", str(tmp_path)], env=env, check=True,
                   capture_output=True)
    out = open(tmp_path / "demo.out", "w+")
    demo = subprocess.Popen(khhf + ["demo", "run", "--talk", "2"], env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "press Ctrl-C" not in (printed := (tmp_path / "demo.out").read_text()):
            assert demo.poll() is None, printed
            assert time.monotonic() < deadline, printed
            time.sleep(0.2)
        url = re.search(r"KHHF demo: (http://\S+)/", printed).group(1)
        password = re.search(r"log in as manager1\s+password (\S+)", printed).group(1)

        jar = http.cookiejar.CookieJar()
        web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        token = lambda html: re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)  # noqa: E731
        login = web.open(f"{url}/login").read().decode()
        home = web.open(f"{url}/login", urllib.parse.urlencode(
            {"username": "manager1", "password": password, "csrf_token": token(login)}).encode())
        page = home.read().decode()
        task_id = re.search(r'data-task="(\d+)"', page).group(1)
        answer = web.open(urllib.request.Request(
            f"{url}/calls/dial/{task_id}", urllib.parse.urlencode(
                {"csrf_token": token(page)}).encode(), {"Accept": "application/json"}))
        call_id = json.loads(answer.read())["call_id"]

        engine = create_engine(f"sqlite:///{tmp_path / 'khhf.db'}")
        deadline = time.monotonic() + 40
        while True:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT state, outcome, recording_sha256 FROM calls "
                                        "WHERE id = :id"), {"id": call_id}).one()
            if row.state == "ended" and row.recording_sha256:
                break
            assert time.monotonic() < deadline, row
            time.sleep(0.2)
        assert row.outcome == "answered"
        # the SMS gateway runs embedded (no SMSC in the demo's config)
        assert "no smsc_host set" in (tmp_path / "logs" / "smsgw.log").read_text()

        # the result prompt (jobs daemon) waits in the admin's SMS outbox; the
        # admin types the manager's reply in the inject form: the result is filed
        deadline = time.monotonic() + 40
        while True:
            with engine.connect() as conn:
                prompt = conn.execute(text("SELECT ref, peer_number FROM sms_messages "
                                           "WHERE kind = 'prompt' AND call_id = :id"),
                                      {"id": call_id}).one_or_none()
            if prompt is not None:
                break
            assert time.monotonic() < deadline, "no result prompt queued"
            time.sleep(0.2)
        admin = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        admin_password = re.search(r"log in as admin\s+password (\S+)", printed).group(1)
        login = admin.open(f"{url}/login").read().decode()
        admin.open(f"{url}/login", urllib.parse.urlencode(
            {"username": "admin", "password": admin_password,
             "csrf_token": token(login)}).encode()).read()
        outbox = admin.open(f"{url}/admin/sms/").read().decode()
        assert f"#{prompt.ref} " in outbox and "回访成功" in outbox and "结果提示" in outbox
        admin.open(f"{url}/admin/sms/inject", urllib.parse.urlencode(
            {"mobile": prompt.peer_number, "text": f"1 #{prompt.ref}",
             "csrf_token": token(outbox)}).encode()).read()
        with engine.connect() as conn:
            filed = conn.execute(text(
                "SELECT t.status, f.channel FROM tasks t JOIN feedback f ON f.task_id = t.id "
                "WHERE t.id = :id"), {"id": int(task_id)}).one()
        assert tuple(filed) == ("done", "sms")
        engine.dispose()
    finally:
        demo.send_signal(signal.SIGINT)
        rc = demo.wait(60)
        out.close()
    assert rc == 0, (tmp_path / "demo.out").read_text()
    status = subprocess.run(khhf + ["pbx", "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 1 and "not running" in status.stderr
