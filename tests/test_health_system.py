"""`GET /healthz` and `khhf status` on a real system: Asterisk, the five
daemons as processes started the way their systemd units start them, a
PostgreSQL server of the test's own and the SMSC simulator. Green when all
run; red when the bridge, the PBX or the database server is stopped, and
green again when each returns. Then the daemons' logs of it all (a real
click-to-dial call, an SMS result prompt and a reply included): one line
per event with its level, and no customer or manager number whole."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import select

from khhf import bridge_client, config, db
from khhf.calls.states import FINAL_STATES
from khhf.models import Call, User
from khhf.services.dialing import request_call
from pbxctl import pbx
from simkit import factories
from simkit.harness import PbxHarness
from simkit.pg_cluster import PrivatePostgres
from simkit.sipp import free_port
from simkit.smsc import SmscProcess

KHHF = [sys.executable, "-m", "khhfcli.main"]
DAEMONS = {"agi": "agi", "bridge": "ami_bridge", "web": "webui", "smsgw": "smsgw",
           "jobs": "jobs"}
MANAGER_MOBILE = "13700008001"
CUSTOMER = "13912345678"
UNMASKED_MOBILE = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def _env():
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith("KHHF_") or k == "KHHF_TEST_RUN"}
    return keep


class System:
    """The daemons as processes, each with its log file."""

    def __init__(self, workdir, conf):
        self.workdir, self.conf = workdir, conf
        self.procs: dict[str, subprocess.Popen] = {}
        self.settings = config.load(conf, environ={})

    def start(self, name):
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", DAEMONS[name], "--config", str(self.conf)],
            stdout=log, stderr=subprocess.STDOUT, env=_env())
        log.close()

    def stop(self, name):
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, f"{name} did not stop cleanly"

    def stop_all(self):
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def status(self) -> tuple[int, dict[str, bool], str]:
        """`khhf status`: (exit code, {check: ok}, output)."""
        proc = subprocess.run(KHHF + ["--config", str(self.conf), "status"], env=_env(),
                              capture_output=True, text=True, timeout=60)
        table = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] in ("ok", "FAIL"):
                table[parts[0]] = parts[1] == "ok"
        return proc.returncode, table, proc.stdout + proc.stderr

    def healthz(self) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{self.settings.web_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except urllib.error.URLError:
            return 0, {"ok": False, "checks": []}   # the web UI is not listening (yet)

    def wait(self, want_ok: bool, failing: set[str] = frozenset(), timeout: float = 120):
        """Until `khhf status` and /healthz agree: all green (want_ok), or
        red with at least the checks `failing` not ok. /healthz is asked
        often; `khhf status` (a process of its own, about 2 s) once /healthz
        says so."""
        deadline = time.monotonic() + timeout
        while True:
            http, body = self.healthz()
            checks = {c["name"]: c["ok"] for c in body["checks"]}
            if want_ok:
                web_agrees = http == 200 and body["ok"]
            else:
                web_agrees = http == 503 and all(not checks.get(name, True) for name in failing)
            output = ""
            if web_agrees:
                code, table, output = self.status()
                if want_ok and code == 0 and all(table.values()):
                    return body
                if not want_ok and code == 1 and all(not table.get(name, True)
                                                     for name in failing):
                    return body
            assert time.monotonic() < deadline, (want_ok, failing, output, body)
            time.sleep(0.3)


@pytest.fixture
def postgres():
    server = PrivatePostgres().start()
    server.create_database()
    yield server
    server.remove()


def _seed(settings):
    engine = db.make_engine(settings.database_url)
    sessions = db.session_factory(engine)
    with db.unit_of_work(sessions) as s:
        county = factories.county(s, "demo", "示范县", unified="13900000000")
        factories.task_type(s)
        manager = factories.manager(s, county, "m8001", employee_no="E8001", desk="8001",
                                    mobile=MANAGER_MOBILE, display_name="经理8001")
        customer = factories.customer(s, county, CUSTOMER, manager, name="客户")
        task_id = factories.task(s, customer, manager).id
    return engine, sessions, task_id


def _dial(settings, sessions, task_id) -> int:
    with db.unit_of_work(sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8001"))
        call_id = request_call(s, settings, user, task_id,
                               live=bridge_client.live(settings)).id
    bridge_client.dial(settings, call_id)
    return call_id


def _wait_final(sessions, call_id, timeout=60) -> Call:
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as s:
            call = s.get(Call, call_id)
            if call.state in FINAL_STATES:
                return call
        assert time.monotonic() < deadline, call.state
        time.sleep(0.2)


def test_health_turns_red_and_green_with_the_system(tmp_path, postgres):
    smsc = SmscProcess(tmp_path).start()
    harness = PbxHarness(tmp_path / "pbx", name=f"health{os.getpid()}", desk_extensions=("8001",))
    conf = harness.settings.config_path
    config.write_new(conf, database_url=postgres.url, agi_port=free_port(kind=1),
                     bridge_port=free_port(kind=1), web_port=free_port(kind=1),
                     calling_window="00:00-24:00", manager_ring_seconds=4,
                     customer_ring_seconds=3, reconcile_seconds=1, smsc_host="127.0.0.1",
                     smsc_port=smsc.port, sms_prompt_delay_seconds=2,
                     recordings_min_free_mb=1)
    subprocess.run(KHHF + ["--config", str(conf), "init", "--no-admin"], env=_env(),
                   check=True, capture_output=True)
    harness.settings = config.load(conf, environ={})
    harness.pbx = pbx.Pbx(harness.settings, ["8001"])
    system = System(tmp_path, conf)
    engine, sessions, task_id = _seed(system.settings)
    try:
        with harness:
            for name in DAEMONS:
                system.start(name)
            harness.desk_phone("8001")
            body = system.wait(True)
            # a real call and an SMS prompt and reply through the running daemons
            harness.trunk("answer_hangup.xml", duration_ms=2000)
            call = _wait_final(sessions, _dial(system.settings, sessions, task_id))
            assert (call.state, call.outcome) == ("ended", "answered")
            deadline = time.monotonic() + 60
            while not smsc.received():
                assert time.monotonic() < deadline, "no result prompt reached the SMSC"
                time.sleep(0.5)
            smsc.deliver(MANAGER_MOBILE, "1")
            body = system.wait(True)
            details = {c["name"]: c["detail"] for c in body["checks"]}
            assert details["smsc"].startswith("bound since"), details
            assert "desk phones registered: " in details["pbx"], details

            system.stop("bridge")
            system.wait(False, {"bridge", "bridge_lag"})
            system.start("bridge")
            system.wait(True)

            harness.pbx.down()
            system.wait(False, {"pbx"})
            harness.pbx.up()
            system.wait(True)

            postgres.stop()
            body = system.wait(False, {"database"})
            assert next(c for c in body["checks"] if c["name"] == "database")["todo"]
            postgres.start()
            system.wait(True)
    finally:
        system.stop_all()
        smsc.stop()
        engine.dispose()
    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in DAEMONS}
    for name, text in logs.items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{name} logged nothing"
        assert all(LOG_LINE.match(line) for line in lines), \
            (name, [line for line in lines if not LOG_LINE.match(line)][:5])
        assert not UNMASKED_MOBILE.findall(text), (name, UNMASKED_MOBILE.findall(text)[:5])
    # the scan saw lines that carried numbers: masked
    assert "137****8001" in logs["smsgw"], logs["smsgw"][-2000:]
