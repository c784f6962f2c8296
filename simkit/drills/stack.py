"""The whole system for the chaos drill and the soak: a real Asterisk and
every daemon as its own process (`python -m <daemon> --config PATH`, as
systemd and `khhf demo run` start them), on free loopback ports, with
simulated parties around it:

- one answering SIPp plays every desk phone (each desk registers with its
  own credentials but names that SIPp's port as its contact, as
  bench/concurrency.py does); it hangs up `talk + DESK_EXTRA_S` seconds
  after answering, so on an outbound call the customer hangs up first and
  a hotline call ends when the manager hangs up;
- one SIPp on the trunk's address answers as every customer and hangs up
  after `talk` seconds;
- hotline callers are SIPp processes on the trunk's address, one per call;
- managers are HTTP clients of the web UI (`ManagerClient`): log in, open
  the task list, click 呼叫, watch the call, file the result;
- optionally the SMSC simulator (simkit.smsc) for the SMS gateway.

Each customer number is used for one call only, so the drills count rows
per number (simkit.drills.account_calls).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select

from khhf import config, db
from khhf.daemon import DEBUG_LOGGERS_ENV
from khhf.models import Customer, Manager, ResultCode, Task, TaskType, User
from khhf.services.accounts import hash_password
from pbxctl import pbx
from simkit import factories
from simkit.sipp import SIPP_DIR, Sipp, free_port

UNIFIED = "13900000000"
# the desk phone stays on this much longer than the customer talks
DESK_EXTRA_S = 2
PASSWORD = "drill-password-1"
ROOT = Path(__file__).resolve().parents[2]
DAEMONS = ("ami_bridge", "agi", "webui", "smsgw", "jobs")


class Daemon:
    """One KHHF daemon as a child process, its output in logs/<module>.log."""

    def __init__(self, module: str, settings, logs: Path):
        self.module, self.settings = module, settings
        self.log = logs / f"{module}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Daemon:
        # not the caller's KHHF settings; its choice of debug loggers, yes
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KHHF_") or k == DEBUG_LOGGERS_ENV}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--config", str(self.settings.config_path)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_listening(host: str, port: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=1).close()
            return True
        time.sleep(0.1)
    return False


def register_desks(settings, desks: list[str], contact_port: int, workdir: Path,
                   expires: int = 3600, remote: str | None = None) -> None:
    """Register every desk extension with its own credentials, each naming
    `contact_port` (one answering SIPp) as its contact, with the PBX of
    `settings` or with `remote` (the SIP edge). SIPp cannot take per-call
    digest credentials from a CSV: one register.xml run per desk."""
    scenario = workdir / "register_to_desk_port.xml"
    scenario.write_text((SIPP_DIR / "register.xml").read_text().replace(
        "[local_ip]:[local_port]>", f"[local_ip]:{contact_port}>"))
    target = remote or f"{settings.sip_host}:{settings.sip_port}"

    def register(ext: str) -> None:
        for _attempt in range(3):  # a port picked by two threads at once: try again
            reg = Sipp(str(scenario), workdir / "sipp", local_ip="127.0.0.1", port=free_port(),
                       remote=target, service=ext, auth=(ext, pbx.phone_password(settings, ext)),
                       keys={"expires": expires})
            try:
                if reg.start().wait(30) == 0:
                    return
            except (RuntimeError, AssertionError):
                pass
            finally:
                reg.stop()   # closes its output file
        raise RuntimeError(f"desk phone {ext} failed to register:\n{reg.trace_summary()}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(register, desks))


@dataclasses.dataclass
class Plan:
    """Who is in the drill's county: managers who dial out (each with
    `tasks` tasks, one new customer each) and on-duty managers whose
    customers call the hotline (each with `callers` customers)."""
    outbound: int = 4
    tasks: int = 20
    inbound: int = 2
    callers: int = 20

    def out_desks(self) -> list[str]:
        return [str(8001 + i) for i in range(self.outbound)]

    def in_desks(self) -> list[str]:
        return [str(8501 + i) for i in range(self.inbound)]


class Stack:
    """Start with `with Stack(...) as stack:`; everything stops on exit."""

    def __init__(self, workdir: Path, plan: Plan, *, talk_s: float = 4.0,
                 database_url: str | None = None, smsc: bool = False, **settings):
        self.workdir = Path(workdir)
        self.plan, self.talk_s = plan, talk_s
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        desks = plan.out_desks() + plan.in_desks()
        # 2 legs x (RTP + RTCP) per call, and room
        span = 4 * len(desks) + 200
        rtp = free_port(span=span + 1)
        rtp += rtp % 2
        self.smsc = None
        if smsc:
            from simkit.smsc import SmscProcess
            self.smsc = SmscProcess(self.workdir)
            settings.update(smsc_host="127.0.0.1", smsc_port=self.smsc.port)
        self.settings = config.write_new(
            self.workdir / "khhf.conf", home=self.workdir, pbx_name=f"drill{os.getpid()}",
            database_url=database_url, sip_port=free_port(),
            ami_port=free_port(kind=socket.SOCK_STREAM), rtp_start=rtp, rtp_end=rtp + span - 1,
            trunk_host="127.0.0.2", trunk_port=free_port("127.0.0.2"),
            agi_port=free_port(kind=socket.SOCK_STREAM),
            bridge_port=free_port(kind=socket.SOCK_STREAM),
            web_port=free_port(kind=socket.SOCK_STREAM), calling_window="00:00-24:00",
            manager_ring_seconds=10, reconcile_seconds=2, sync_desk_phones=0,
            asterisk_root=os.environ.get("KHHF_ASTERISK_ROOT", config.Settings.asterisk_root),
            **settings)
        self.url = f"http://{self.settings.web_host}:{self.settings.web_port}"
        self.pbx = pbx.Pbx(self.settings, desks)
        self.daemons = {m: Daemon(m, self.settings, self.logs) for m in DAEMONS}
        self.parties: list[Sipp] = []
        self.engine = None

    # -- life cycle ---------------------------------------------------------------
    def __enter__(self) -> Stack:
        try:
            self.engine = db.make_engine(self.settings.database_url)
            db.create_schema(self.engine)
            self.sessions = db.session_factory(self.engine)
            self.seed()
            if self.smsc:
                self.smsc.start()
            self.pbx.up()
            desks = self.plan.out_desks() + self.plan.in_desks()
            self.desk_port = free_port()
            register_desks(self.settings, desks, self.desk_port, self.workdir)
            self.desk_sipp = self.party("answer_hangup.xml", local_ip="127.0.0.1",
                                        port=self.desk_port, calls=None, run_limit=None,
                                        duration_ms=int((self.talk_s + DESK_EXTRA_S) * 1000))
            self.carrier = self.party("answer_hangup.xml", local_ip=self.settings.trunk_host,
                                      port=self.settings.trunk_port, calls=None, run_limit=None,
                                      duration_ms=int(self.talk_s * 1000))
            for daemon in self.daemons.values():
                daemon.start()
            self.wait_ready()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        """The web UI and the bridge's command channel accept connections,
        the AGI service beats, and the bridge can say what the PBX has live."""
        from khhf import bridge_client
        from khhf.daemon import run_dir
        s = self.settings
        for name, host, port in (("webui", s.web_host, s.web_port),
                                 ("ami_bridge", s.bridge_host, s.bridge_port)):
            if not wait_listening(host, port, timeout):
                raise RuntimeError(f"{name} did not start listening on {host}:{port}; "
                                   f"see {self.daemons[name].log}")
        deadline = time.monotonic() + timeout
        # the AGI service: its heartbeat (a probe of its port would be a junk
        # FastAGI request in its log)
        while not (run_dir(s) / "agi.json").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"agi did not start; see {self.daemons['agi'].log}")
            time.sleep(0.2)
        while True:
            try:
                bridge_client.live(s, timeout=5)
                return
            except bridge_client.BridgeUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        for daemon in reversed(self.daemons.values()):
            daemon.stop()
        for party in self.parties:
            party.stop()
        with contextlib.suppress(Exception):
            self.pbx.down()
        if self.smsc:
            self.smsc.stop()
        if self.engine is not None:
            self.engine.dispose()

    def party(self, scenario: str, **kwargs) -> Sipp:
        sipp = Sipp(scenario, self.workdir / "sipp", **kwargs).start()
        self.parties.append(sipp)
        return sipp

    # -- data -----------------------------------------------------------------------
    def seed(self) -> None:
        """The county, its managers (password PASSWORD), their customers and
        tasks: outbound customers 136<desk><seq>, hotline callers 137<desk><seq>."""
        password_hash = hash_password(PASSWORD)
        with db.unit_of_work(self.sessions) as s:
            county = factories.county(s, "drill", "演练县", unified=UNIFIED)
            revisit = factories.task_type(s)
            for ext in self.plan.out_desks():
                m = factories.manager(s, county, f"m{ext}", employee_no=f"E{ext}", desk=ext,
                                      mobile=f"1380000{ext}", on_duty=True,
                                      display_name=f"经理{ext}")
                s.get(User, m.user_id).password_hash = password_hash
                for i in range(self.plan.tasks):
                    customer = factories.customer(s, county, f"136{ext}{i:04d}", m, name="客户")
                    factories.task(s, customer, m, revisit)
            for ext in self.plan.in_desks():
                m = factories.manager(s, county, f"m{ext}", employee_no=f"E{ext}", desk=ext,
                                      mobile=f"1380000{ext}", on_duty=True,
                                      display_name=f"经理{ext}")
                for i in range(self.plan.callers):
                    factories.customer(s, county, f"137{ext}{i:04d}", m, name="来电客户")
            self.final_code = s.scalar(select(ResultCode.id).join(TaskType).where(
                TaskType.id == revisit.id, ResultCode.is_final.is_(True),
                ResultCode.is_success.is_(True)))

    def tasks_of(self, ext: str) -> list[tuple[int, str]]:
        """(task id, customer number) of the manager at `ext`, in order."""
        with self.sessions() as s:
            return list(s.execute(select(Task.id, Customer.phone).join(Customer).join(
                Manager, Manager.id == Task.manager_id).where(Manager.desk_extension == ext)
                .order_by(Task.id)).all())

    def callers_of(self, ext: str) -> list[str]:
        return [f"137{ext}{i:04d}" for i in range(self.plan.callers)]

    # -- parties ----------------------------------------------------------------------
    def hotline_call(self, caller: str) -> Sipp:
        """A customer calling the unified number from the carrier's address."""
        return Sipp("hotline_call.xml", self.workdir / "sipp", local_ip=self.settings.trunk_host,
                    port=free_port(self.settings.trunk_host),
                    remote=f"{self.settings.sip_host}:{self.settings.sip_port}",
                    service=UNIFIED, keys={"caller": caller},
                    run_limit=f"{int(self.talk_s + DESK_EXTRA_S + 60)}s").start()

    def invited_numbers(self) -> set[str]:
        """The customer numbers the carrier got an INVITE for."""
        numbers = set()
        for m in self.carrier.received("INVITE"):
            found = re.match(r"INVITE sip:(\+?\d+)@", m.first_line)
            if found:
                numbers.add(found.group(1))
        return numbers

    # -- what a process uses ------------------------------------------------------------
    def pids(self) -> dict[str, int | None]:
        out = {"asterisk": self.pbx.pid()}
        out.update({m: d.pid for m, d in self.daemons.items()})
        bridge = out.get("ami_bridge")
        if bridge is not None:   # the bridge's writer process (ami_bridge/writer.py)
            out["ami_bridge.writer"] = next(iter(child_pids(bridge)), None)
        return out


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started that still run (none if it is gone); each
    of its threads lists the children it started itself."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in children.read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def process_usage(pid: int | None) -> tuple[int, int] | None:
    """(RSS in KiB, open file descriptors) of process `pid`, or None if gone."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, AttributeError):
        return None


class WebError(Exception):
    """The web UI could not be reached, or answered 5xx."""


class ManagerClient:
    """A manager at a browser: plain HTTP against the web UI, with cookies."""

    def __init__(self, url: str, username: str, password: str = PASSWORD, timeout: float = 20):
        self.url, self.username, self.password, self.timeout = url, username, password, timeout
        self.web = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""

    def _open(self, path: str, form: dict | None = None, json_answer: bool = False):
        data = None if form is None else urllib.parse.urlencode(form).encode()
        headers = {"Accept": "application/json"} if json_answer else {}
        request = urllib.request.Request(f"{self.url}{path}", data, headers)
        try:
            with self.web.open(request, timeout=self.timeout) as answer:
                return answer.status, answer.geturl(), answer.read().decode()
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            if error.code >= 500 and not json_answer:
                raise WebError(f"HTTP {error.code}") from None
            return error.code, error.geturl(), body
        except (OSError, http.client.HTTPException) as error:
            raise WebError(str(error) or error.__class__.__name__) from None

    def _remember_token(self, html: str) -> None:
        found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
        if found:
            self.token = found.group(1)

    def login(self) -> None:
        _, _, page = self._open("/login")
        self._remember_token(page)
        _, where, page = self._open("/login", {"username": self.username,
                                               "password": self.password,
                                               "csrf_token": self.token})
        if where.rstrip("/").endswith("/login"):
            raise WebError(f"log-in of {self.username} refused")
        self._remember_token(page)

    def home(self) -> str:
        """The task list (a manager looks at it before each call)."""
        status, where, page = self._open("/")
        if "/login" in where:
            self.login()
            status, where, page = self._open("/")
        self._remember_token(page)
        return page

    def dial(self, task_id: int) -> tuple[int, dict]:
        """Click 呼叫: (HTTP status, the JSON answer)."""
        status, _, body = self._open(f"/calls/dial/{task_id}", {"csrf_token": self.token},
                                     json_answer=True)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"message": body[:200]}

    def call_status(self, call_id: int) -> dict:
        status, _, body = self._open(f"/calls/{call_id}", json_answer=True)
        if status != 200:
            raise WebError(f"HTTP {status}")
        return json.loads(body)

    def file_result(self, task_id: int, code_id: int, call_id: int) -> str:
        """Post the result form: 'saved', 'closed' (the task had its result
        already: a retried post) or 'refused: ...'."""
        _, where, page = self._open(f"/manager/tasks/{task_id}/result", {
            "csrf_token": self.token, "result_code": code_id, "call_id": call_id,
            "note": "", "while_live": "y"})
        self._remember_token(page)
        if not where.rstrip("/").endswith("/result"):
            return "saved"
        if "任务已关闭" in page or "already closed" in page:
            return "closed"
        why = re.findall(r'class="invalid-feedback[^"]*">([^<]+)<', page)
        return "refused: " + ("; ".join(why) or page[:300])


@contextlib.contextmanager
def fresh_database(engine: str, workdir: Path, pg_url: str | None = None):
    """A URL for an empty database: an SQLite file in `workdir`, or a new
    PostgreSQL database on the server of `pg_url` (KHHF_TEST_PG_URL),
    dropped afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{Path(workdir) / 'khhf.db'}"
        return
    if engine != "postgresql":
        raise ValueError(f"engine must be sqlite or postgresql, not {engine!r}")
    pg_url = pg_url or os.environ.get("KHHF_TEST_PG_URL")
    if not pg_url:
        raise RuntimeError("PostgreSQL needs KHHF_TEST_PG_URL (. /work/testenv.sh or bench/run "
                           "sets it)")
    import uuid

    from sqlalchemy import text
    admin = db.make_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"khhf_drill_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
