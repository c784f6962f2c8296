"""Drills 1 and 2 (issue 19): the database goes away during calls.

    row = postgres_outage(short=True, harness=pbx_harness, workdir=tmp_path)
    row = sqlite_held(short=True, harness=pbx_harness, workdir=tmp_path)

Both run the real parts: Asterisk (simkit.harness.PbxHarness; the tests
pass the session's, the bench lets the drill start its own), SIPp desk
phones and carrier, the AMI bridge and its command channel
(simkit.bridge_env.BridgeEnv, in a thread), the web app (its WSGI app, driven
by Flask's test client: log-ins and 呼叫 as the browser sends them), and,
for PostgreSQL, the jobs and FastAGI daemons as processes. Managers click
呼叫 at a steady pace; once calls are up the fault starts:

- postgres_outage: a private PostgreSQL cluster (simkit.pg_cluster) is
  stopped (`pg_ctl stop -m fast`), then started again;
- sqlite_held: another process takes SQLite's write lock (BEGIN IMMEDIATE)
  and holds it.

During the fault the drill looks as an operator would (/healthz, `khhf
status`, the staff banner) and as a manager would (log-in, 呼叫), keeps
clicking 呼叫, and after it checks that every call the web accepted has
exactly one final row with the right outcome and a complete recording,
that no refused click left a row, and that the bridge held the AMI events
it got during the fault and stored them afterwards.

Short forms (the tests): 3 calls up across a ~12 s fault, a few refused
clicks. Long forms (bench/drills.py): ~5 clicks a second for 15 s, a 60 s
fault (PostgreSQL) or 30 s hold (SQLite) with the clicks going on, 15 s more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

from khhf import config, db
from khhf.calls.states import FINAL_STATES
from khhf.models import Call, CallEvent, County, Manager
from khhf.phones import mask_phone
from simkit import factories
from simkit.bridge_env import BridgeEnv
from simkit.drills import RECORDING_TOLERANCE_S, DrillRow, account_calls, wav_seconds
from simkit.drills.media import damaged
from simkit.harness import PbxHarness
from simkit.sipp import SIPP_DIR, Sipp, free_port
from simkit.web import csrf_token, log_in, log_in_as
from webui.health import CACHE_SECONDS

# what nobody may ever read: a driver's message or a traceback
RAW_ERRORS = ("database is locked", "Traceback", "OperationalError", "psycopg",
              "Internal Server Error")
CHINESE = re.compile(r"[\u4e00-\u9fff]")


@dataclasses.dataclass
class Plan:
    desks: int            # desk phones (each manager one; a manager on a call is busy)
    rate: float           # clicks on 呼叫 per second, over all managers
    before_s: float       # clicking before the fault
    fault_s: float        # how long the fault lasts
    after_s: float        # clicking after it
    talk_s: float         # the customer hangs up after this


SHORT = Plan(desks=3, rate=3, before_s=1, fault_s=12, after_s=1, talk_s=8)
LONG_PG = Plan(desks=60, rate=5, before_s=15, fault_s=60, after_s=15, talk_s=8)
LONG_SQLITE = dataclasses.replace(LONG_PG, fault_s=30)


# -- the faults -------------------------------------------------------------------------
class PostgresStopped:
    """Stop the private cluster; start it again."""

    what = "PostgreSQL stopped"

    def __init__(self, cluster):
        self.cluster = cluster

    def begin(self) -> None:
        self.cluster.stop()

    def end(self) -> None:
        self.cluster.start()


class SqliteHeld:
    """Another process holds SQLite's write lock (BEGIN IMMEDIATE) until told."""

    what = "SQLite write lock held by another process"

    def __init__(self, path: Path):
        self.path = path
        self.proc: subprocess.Popen | None = None

    def begin(self) -> None:
        code = ("import sqlite3, sys\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "c.execute('BEGIN IMMEDIATE')\n"
                "print('held', flush=True)\n"
                "sys.stdin.readline()\n"
                "c.execute('ROLLBACK')\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(self.path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "held":
            raise RuntimeError("the outside writer did not take the write lock")

    def end(self) -> None:
        if self.proc is not None:
            self.proc.communicate("\n", timeout=30)
            self.proc = None


# -- the stack --------------------------------------------------------------------------
class Stack:
    """Asterisk (given or own), the bridge on `database_url`, the web app,
    managers m8001.. with a registered desk phone each, an administrator."""

    def __init__(self, harness: PbxHarness, workdir: Path, database_url: str, plan: Plan):
        self.harness, self.workdir, self.plan = harness, workdir, plan
        self.desks = [str(8001 + i) for i in range(plan.desks)]
        self.env = BridgeEnv(harness, workdir, database_url)
        with db.unit_of_work(self.env.sessions) as s:
            county = s.scalar(select(County))
            have = set(s.scalars(select(Manager.desk_extension)))
            for ext in self.desks:
                if ext not in have:
                    factories.manager(s, county, f"m{ext}", employee_no=f"E{ext}", desk=ext,
                                      mobile=f"1370000{ext}")
            factories.user(s, "admin", "admin", display_name="管理员")
        self.env.start()
        self.daemons: list[subprocess.Popen] = []
        try:
            self.app, self.admin_password = self.env.web_app("admin")
        except BaseException:
            self.env.stop()
            raise
        self.banner_client = self.app.test_client()  # the administrator's (run_drill)
        # the daemons' and `khhf status`'s config: this stack's settings, the
        # AGI service on a port of its own
        self.config_path = workdir / "khhf.conf"
        s = self.env.settings
        values = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                  if f.name != "config_path" and getattr(s, f.name) not in (None, "")}
        config.write_new(self.config_path, **{**values, "agi_port": free_port(kind=1)})

    def start_phones(self, calls: int) -> tuple[Sipp, Sipp]:
        """One SIPp answering for every desk phone, one carrier answering as
        the customers (hanging up after the talk time)."""
        port = free_port()
        register_desks(self.harness, self.desks, port, self.workdir / "sipp")
        limit = f"{int(self.plan.before_s + self.plan.fault_s + self.plan.after_s) + 600}s"
        desk = self.harness.party("answer.xml", local_ip="127.0.0.1", port=port, calls=calls,
                                  run_limit=limit).start()
        carrier = self.harness.trunk("answer_hangup.xml", calls=calls, run_limit=limit,
                                     duration_ms=int(self.plan.talk_s * 1000))
        return desk, carrier

    def start_daemon(self, package: str) -> subprocess.Popen:
        """`python -m <package>` on this stack's config (its log under workdir)."""
        log = open(self.workdir / f"{package}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", package, "--config",
                                 str(self.config_path)], stdout=log, stderr=log,
                                env={**os.environ, "KHHF_CONFIG": str(self.config_path)})
        log.close()
        self.daemons.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.daemons:
            proc.terminate()
        for proc in self.daemons:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.env.stop()
        self.env.engine.dispose()
        self.app.extensions["khhf_engine"].dispose()


def register_desks(harness: PbxHarness, extensions: list[str], port: int, workdir: Path) -> None:
    """Register every desk phone with its Contact on one answering SIPp's
    `port` (SIPp cannot take per-call digest credentials from a CSV, so one
    register.xml run per desk, in parallel; the desk endpoints keep the
    Contact as sent)."""
    from pbxctl import pbx
    scenario = workdir / "register_to_desk_port.xml"
    workdir.mkdir(parents=True, exist_ok=True)
    scenario.write_text((SIPP_DIR / "register.xml").read_text().replace(
        "[local_ip]:[local_port]>", f"[local_ip]:{port}>"))

    def register(ext: str) -> None:
        for _attempt in range(3):  # a port picked by two threads at once: try again
            reg = Sipp(str(scenario), workdir, local_ip="127.0.0.1", port=free_port(),
                       remote=harness.sip_target, service=ext,
                       auth=(ext, pbx.phone_password(harness.settings, ext)),
                       keys={"expires": 3600})
            try:
                if reg.start().wait(20) == 0:
                    return
            except RuntimeError:
                pass
            finally:
                reg.stop()
        raise RuntimeError(f"desk phone {ext} failed to register:\n{reg.trace_summary()}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(register, extensions))


# -- what people see --------------------------------------------------------------------
@dataclasses.dataclass
class Seen:
    """What the clicks and the operator's looks got, with what went wrong."""
    placed: dict[str, int] = dataclasses.field(default_factory=dict)   # number -> call id
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # number -> message
    operator: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def problem(self, text: str) -> None:
        with self.lock:
            if text not in self.problems:
                self.problems.append(text)


def raw_error_in(text: str) -> str | None:
    return next((raw for raw in RAW_ERRORS if raw in text), None)


class Clicker:
    """Managers clicking 呼叫 on their tasks at `rate` a second, round robin,
    each a logged-in test client; a fresh customer number per click."""

    def __init__(self, stack: Stack, seen: Seen, prefix: str):
        self.stack, self.seen = stack, seen
        self.clients = {}
        for ext in stack.desks:
            client = stack.app.test_client()
            log_in_as(client, stack.app, f"m{ext}")
            # the workspace's script sends its page's CSRF token with each click
            client.environ_base["HTTP_X_CSRFTOKEN"] = csrf_token(client, "/manager/")
            self.clients[ext] = client
        self.numbers = (f"{prefix}{i:05d}" for i in itertools.count())
        self.busy_until: dict[str, float] = {}
        self.tasks: list[tuple[str, str, int]] = []

    def prepare(self, count: int) -> None:
        """The tasks exist before anyone clicks (making them writes)."""
        desks = itertools.cycle(self.stack.desks)
        for _ in range(count):
            ext, number = next(desks), next(self.numbers)
            self.tasks.append((ext, number, self.stack.env.task_for(ext, number)))

    def click(self, ext: str, number: str, task_id: int) -> None:
        """Click 呼叫 as the manager at `ext`; until the answer the manager
        waits (clicks nothing else), then talks if the call was placed."""
        self.busy_until[ext] = float("inf")
        try:
            response = self.clients[ext].post(f"/calls/dial/{task_id}",
                                              headers={"Accept": "application/json"})
        finally:
            self.busy_until[ext] = time.monotonic()
        text = response.get_data(as_text=True)
        if raw_error_in(text):
            self.seen.problem(f"a click got {raw_error_in(text)!r} (HTTP {response.status_code})")
        if response.status_code == 200:
            # ring, answer and talk, and a little more before the desk is free
            self.busy_until[ext] = time.monotonic() + self.stack.plan.talk_s + 4
            with self.seen.lock:
                self.seen.placed[number] = response.get_json()["call_id"]
            return
        try:
            message = response.get_json()["message"]
        except (TypeError, KeyError, ValueError):
            message = ""
        if response.status_code == 500 or not CHINESE.search(message):
            self.seen.problem(f"a click got HTTP {response.status_code} without a Chinese "
                              f"message: {text[:120]!r}")
        with self.seen.lock:
            self.seen.refused[number] = f"{response.status_code} {message}"

    def run(self, seconds: float, rate: float, stop: threading.Event | None = None) -> None:
        """Click for `seconds` at `rate`, skipping a manager still on a call."""
        started, pool = time.monotonic(), ThreadPoolExecutor(8)
        try:
            for i in itertools.count():
                at = started + i / rate
                if at - started >= seconds or (stop is not None and stop.is_set()):
                    break
                time.sleep(max(0.0, at - time.monotonic()))
                task = self._next_free()
                if task is not None:
                    pool.submit(self.click, *task)
        finally:
            pool.shutdown(wait=True)

    def _next_free(self):
        now = time.monotonic()
        for index, (ext, _number, _task) in enumerate(self.tasks):
            if self.busy_until.get(ext, 0) <= now:
                self.busy_until[ext] = float("inf")  # clicking (click() says until when)
                return self.tasks.pop(index)
        return None


def look_as_operator(stack: Stack, seen: Seen, during: bool) -> None:
    """/healthz, `khhf status` and the staff banner: what they say of the
    database (`during` the fault it must be red, after it green)."""
    client = stack.app.test_client()
    # /healthz answers from a cache of CACHE_SECONDS: it may take that long to turn
    started = time.monotonic()
    while True:
        response = client.get("/healthz")
        database = {c["name"]: c for c in response.get_json()["checks"]}["database"]
        took = time.monotonic() - started
        if database["ok"] != during or took > 3 * CACHE_SECONDS:
            break
        time.sleep(0.5)
    if database["ok"] == during:
        seen.problem(f"/healthz said database ok={database['ok']} "
                     f"{'during' if during else 'after'} the fault: {database['detail']}")
    started = time.monotonic()
    status = subprocess.run([sys.executable, "-m", "khhfcli.main", "--config",
                             str(stack.config_path), "status"], capture_output=True, text=True, timeout=60)
    status_took = time.monotonic() - started
    line = next((x for x in status.stdout.splitlines() if x.startswith("database")), "")
    if ("FAIL" in line) != during:
        seen.problem(f"`khhf status` {'during' if during else 'after'} the fault: {line!r}")
    banner = staff_banner(stack, want=during)
    if during and not banner:
        seen.problem("no staff banner named the database during the fault")
    if not during and banner:
        seen.problem(f"the staff banner still named the database after the fault: {banner}")
    if during:
        seen.operator.append(
            f"/healthz {response.status_code} after {took:.1f} s ({database['detail']}); "
            f"`khhf status` database FAIL in {status_took:.1f} s; "
            f"banner: {banner.split('。')[0]}。")


def staff_banner(stack: Stack, want: bool, timeout: float = 20) -> str:
    """The database's line of the banner on an administrator's page (the
    busy page when the page cannot be read), once it is there if `want`,
    gone if not: the banner is refreshed in the background."""
    deadline = time.monotonic() + timeout
    while True:
        html = stack.banner_client.get("/admin/").get_data(as_text=True)
        found = re.search(r'data-check="database">([^<]*)<', html)
        text = found.group(1).strip() if found else ""
        if bool(text) == want or time.monotonic() > deadline:
            return text
        time.sleep(1)


def refused_log_in(stack: Stack, seen: Seen) -> None:
    """A manager logging in during the fault gets a page in Chinese, not a crash."""
    client = stack.app.test_client()
    try:
        token = csrf_token(client, "/login")  # the log-in page reads nothing
    except AttributeError:
        seen.problem("the log-in page did not open during the fault")
        return
    ext = stack.desks[0]
    response = client.post("/login", data={"username": f"m{ext}", "password": "wrong",
                                           "csrf_token": token})
    text = response.get_data(as_text=True)
    if raw_error_in(text) or response.status_code == 500:
        seen.problem(f"a log-in during the fault got HTTP {response.status_code}: "
                     f"{raw_error_in(text)}")
    elif response.status_code == 503 and not CHINESE.search(text):
        seen.problem("a log-in during the fault got a 503 without Chinese")
    else:
        with seen.lock:
            seen.operator.append(f"log-in {response.status_code}")


# -- the drill --------------------------------------------------------------------------
def run_drill(name: str, engine: str, stack: Stack, fault, plan: Plan,
              held_events_expected: bool = True) -> DrillRow:
    row = DrillRow(name, engine)
    started = time.monotonic()
    seen = Seen()
    rate = plan.rate
    planned = int(rate * (plan.before_s + plan.fault_s + plan.after_s)) + len(stack.desks)
    clicker = Clicker(stack, seen, prefix=f"139{os.getpid() % 100:02d}"
                      f"{'1' if engine == 'postgresql' else '2'}")
    clicker.prepare(planned)
    desk, carrier = stack.start_phones(planned)
    # the administrator logs in before the fault: the session remembers the role
    log_in(stack.banner_client, "admin", stack.admin_password)
    look_as_operator(stack, seen, during=False)
    clicker.run(max(plan.before_s, len(stack.desks) / rate), rate)
    wait_connected(stack, seen)
    bridge = stack.env.bridge
    fault.begin()
    fault_started = time.monotonic()
    stop = threading.Event()
    clicking = threading.Thread(target=clicker.run, args=(plan.fault_s, rate, stop))
    # managers on a call click again too: the database refuses them first
    forced = [threading.Thread(target=clicker.click, args=clicker.tasks.pop())
              for _ in range(2)]
    try:
        for thread in (clicking, *forced):
            thread.start()
        refused_log_in(stack, seen)
        look_as_operator(stack, seen, during=True)
        while time.monotonic() - fault_started < plan.fault_s:
            time.sleep(0.2)
        held_max = len(bridge.backlog)
    finally:
        fault.end()  # on time: clicks still waiting for an answer get it after
        stop.set()
        for thread in (clicking, *forced):
            if thread.ident is not None:  # started
                thread.join()
    clicker.run(plan.after_s, rate)
    wait_final(stack, seen, list(seen.placed.values()), timeout=plan.talk_s + 120)
    look_as_operator(stack, seen, during=False)
    for party in (desk, carrier):
        party.stop()
    account(stack, seen, row, held_events_expected, held_max)
    row.operator_saw = "; ".join(seen.operator)
    row.notes += seen.problems
    row.seconds = round(time.monotonic() - started, 1)
    return row


def wait_connected(stack: Stack, seen: Seen, timeout: float = 30) -> None:
    """Until every placed call is up (or over): the fault must find calls in talk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = list(seen.placed.values())
        with stack.env.sessions() as s:
            waiting = s.scalar(select(func.count()).select_from(Call).where(
                Call.id.in_(ids), Call.answer_at.is_(None), Call.state.not_in(FINAL_STATES)))
        if ids and not waiting:
            return
        time.sleep(0.1)
    seen.problem("the calls placed before the fault did not all connect")


def wait_final(stack: Stack, seen: Seen, ids: list[int], timeout: float) -> None:
    """Until every placed call's row is final and its recording judged."""
    deadline = time.monotonic() + timeout
    pending = len(ids)
    while time.monotonic() < deadline:
        with stack.env.sessions() as s:
            pending = s.scalar(select(func.count()).select_from(Call).where(
                Call.id.in_(ids), Call.state.not_in(FINAL_STATES) | (
                    Call.recording_path.is_not(None) & Call.recording_status.is_(None))))
        if not pending:
            return
        time.sleep(0.5)
    seen.problem(f"{pending} calls not final (with their recording) {timeout:.0f} s after")


def account(stack: Stack, seen: Seen, row: DrillRow, held_events_expected: bool,
            held_max: int) -> None:
    """Rows against clicks; outcomes; refused clicks left no row; AMI events
    of the fault stored from the bridge's backlog."""
    env = stack.env
    numbers = set(seen.placed) | set(seen.refused)
    with env.sessions() as s:
        calls = list(s.scalars(select(Call).where(Call.customer_number.in_(numbers))))
        hangups = dict(s.execute(select(CallEvent.call_id, func.count()).where(
            CallEvent.call_id.in_([c.id for c in calls]), CallEvent.source == "ami",
            CallEvent.event == "Hangup").group_by(CallEvent.call_id)).all())
        for call in calls:
            s.expunge(call)
    row.add(account_calls(calls, {n: 1 for n in seen.placed}, env.settings.recordings_dir,
                          damaged=damaged))
    wrong = [f"{c.id}:{c.state}/{c.outcome}/{c.hangup_by}" for c in calls
             if c.customer_number in seen.placed
             and (c.state, c.outcome, c.hangup_by) != ("ended", "answered", "customer")]
    if wrong:
        seen.problem(f"{len(wrong)} calls with the wrong outcome: {', '.join(wrong[:5])}")
    talk = [f"{c.id}:{c.talk_seconds}" for c in calls if c.customer_number in seen.placed
            and c.talk_seconds is not None and abs(c.talk_seconds - stack.plan.talk_s) > 1]
    if talk:
        seen.problem(f"{len(talk)} calls' talk time is not {stack.plan.talk_s} s ±1 "
                     f"(call:seconds {', '.join(talk[:5])})")
    bad_audio = []
    for c in calls:
        if c.customer_number in seen.placed and c.answer_at and c.talk_seconds \
                and not damaged(c):
            seconds = (wav_seconds(env.settings.recordings_dir / c.recording_path)
                       if c.recording_path else None)
            if seconds is None or abs(seconds - c.talk_seconds) > RECORDING_TOLERANCE_S:
                bad_audio.append(f"{c.id}:{seconds if seconds is None else round(seconds, 1)}"
                                 f"/{c.talk_seconds}")
    if bad_audio:
        seen.problem(f"recordings not as long as the talk (call:file/talk s) "
                     f"{', '.join(bad_audio[:6])}")
    # a click the bridge refused leaves a closed row ("not placed"); none may stay open
    ghosts = [mask_phone(c.customer_number) for c in calls
              if c.customer_number in seen.refused and c.state not in FINAL_STATES]
    if ghosts:
        seen.problem(f"refused clicks left {len(ghosts)} open rows: {', '.join(ghosts[:5])}")
    no_hangup = [c.id for c in calls if c.customer_number in seen.placed
                 and c.answer_at is not None and not hangups.get(c.id)]
    if no_hangup:
        seen.problem(f"{len(no_hangup)} calls have no AMI Hangup stored: the bridge lost "
                     "events (the CEL record alone completed them)")
    if held_events_expected and not held_max:
        seen.problem("the bridge held no events during the fault")
    refused = len(seen.refused)
    seen.operator.append(f"bridge held up to {held_max} events "
                         f"({env.bridge.backlog.spills} spills to disk); "
                         f"{refused} clicks refused with 503 in Chinese")


@contextlib.contextmanager
def _harness(harness: PbxHarness | None, workdir: Path, plan: Plan) -> Iterator[PbxHarness]:
    """The given Asterisk (if it has the desks), else one of our own."""
    desks = [str(8001 + i) for i in range(plan.desks)]
    if harness is not None and len(desks) <= 3:
        yield harness
        return
    from pbxctl import pbx
    own = PbxHarness(workdir / "pbx", name=f"drill{os.getpid()}", desk_extensions=desks)
    span = 4 * plan.desks * 2 + 100
    rtp = free_port(span=span + 1)
    rtp += rtp % 2
    own.settings = dataclasses.replace(own.settings, rtp_start=rtp, rtp_end=rtp + span - 1)
    own.pbx = pbx.Pbx(own.settings, desks)
    with own:
        yield own


def _workdir(workdir: Path | None) -> Path:
    return Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="khhf-drill-db-"))


def postgres_outage(short: bool, harness: PbxHarness | None = None,
                    workdir: Path | None = None, memory_events: int | None = None,
                    plan: Plan | None = None) -> DrillRow:
    """Drill 1: PostgreSQL stopped while calls are up and managers click
    呼叫, then started again. `memory_events`: the bridge's in-memory bound
    (the short form makes it small, so the spill to disk runs too)."""
    from simkit.pg_cluster import PrivatePostgres
    plan = plan or (SHORT if short else LONG_PG)
    workdir = _workdir(workdir)
    cluster = PrivatePostgres().start()
    try:
        cluster.create_database()
        with _harness(harness, workdir, plan) as pbx_harness:
            stack = Stack(pbx_harness, workdir, cluster.url, plan)
            try:
                if memory_events is not None or short:
                    stack.env.bridge.backlog.memory_events = memory_events or 5
                jobs, agi = stack.start_daemon("jobs"), stack.start_daemon("agi")
                row = run_drill("PostgreSQL stopped", "postgresql", stack,
                                PostgresStopped(cluster), plan)
                for name, proc in (("jobs", jobs), ("agi", agi)):
                    if proc.poll() is not None:
                        row.notes.append(f"the {name} daemon exited ({proc.returncode}) "
                                         "during the outage")
                    elif not _beats(stack, name):
                        row.notes.append(f"the {name} daemon stopped beating")
            finally:
                stack.close()
    finally:
        cluster.remove()
    return row


def _beats(stack: Stack, name: str, timeout: float = 30) -> bool:
    from khhf import health
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health.live_state(stack.env.settings, name) is not None:
            return True
        time.sleep(0.5)
    return False


def sqlite_held(short: bool, harness: PbxHarness | None = None,
                workdir: Path | None = None, plan: Plan | None = None) -> DrillRow:
    """Drill 2: another process holds SQLite's write lock (BEGIN IMMEDIATE)
    while calls are up and managers log in and click 呼叫."""
    plan = plan or (SHORT if short else LONG_SQLITE)
    workdir = _workdir(workdir)
    path = workdir / "drill.db"
    with _harness(harness, workdir, plan) as pbx_harness:
        stack = Stack(pbx_harness, workdir, f"sqlite:///{path}", plan)
        try:
            row = run_drill("SQLite write lock held", "sqlite", stack, SqliteHeld(path), plan)
            js = "".join(p.read_text() for p in
                         (Path(__file__).parents[2] / "webui" / "static" / "js").glob("*.js"))
            if "locked" in js:
                row.notes.append("the workspace's scripts mention a lock")
        finally:
            stack.close()
    return row


def main(argv=None) -> int:
    """`python -m simkit.drills.database [--long]`: run both, print the table."""
    from simkit.drills import table
    short = "--long" not in (argv if argv is not None else sys.argv[1:])
    rows = [postgres_outage(short), sqlite_held(short)]
    print(table(rows))
    for r in rows:
        for v in r.violations():
            print(f"{r.drill}: {v}")
    print(json.dumps([dataclasses.asdict(r) for r in rows], ensure_ascii=False))
    return 1 if any(r.violations() for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
